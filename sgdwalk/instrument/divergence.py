"""When a walk has diverged: one rule, applied by the tracker (each step's minibatch loss),
the runner (each epoch's training loss) and the claims engine (a run's recorded epochs).

The tracker applies the factor when it is given one (the runner gives it
``DIVERGENCE_LOSS_FACTOR``); by itself it checks finiteness only, because it also walks the
analytic landscapes, whose losses have no natural starting scale and whose tests follow a
divergence up to float64's overflow.

A walk has diverged when its loss is not finite, or when it exceeds
``DIVERGENCE_LOSS_FACTOR`` times its starting value: the first loss of the walk (a positive
one; a walk starting at zero loss is held to the finiteness rule only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

# 1000: far above the spikes of runs that recover, far below where a diverging run goes.
# Measured (minibatch loss over its first value, Fashion-MNIST, 5,000 images): GD at lr 0.9,
# the claims' edge setting, peaks at 2.9x (MLP) and 28x (half-width conv net, which then
# settles at the uniform prediction's loss); SGD at lr 0.2, the claims' high rate, never
# rises above its start on the MLP and peaks at 3.1x on the conv net; the MLP at lr 5
# peaks at 12x and still trains. A diverging run grows the loss geometrically (lr 50: x75,
# x2,000, x34,000 over its first three steps, then to 1e18), so 1000 rather than 100 costs
# it one step, while 100 would sit within 4x of the conv net's recovering 28x. For
# cross-entropy on 10 classes (a start near ln 10 = 2.3), 1000x is a geometric-mean
# probability of the right class below e^-2300: no network that is learning gets there.
DIVERGENCE_LOSS_FACTOR: Final[float] = 1000.0


def loss_divergence(
    loss: float, start: float | None, what: str = "loss", factor: float | None = DIVERGENCE_LOSS_FACTOR
) -> str | None:
    """Why ``loss`` says the walk diverged, or None.

    ``start`` is the walk's starting loss (None or not positive: only finiteness is
    checked); ``what`` names the loss in the reason, e.g. "minibatch loss"; ``factor`` None
    checks finiteness only.
    """
    if not math.isfinite(loss):
        return f"non-finite {what} {loss}"
    if factor is not None and start is not None and start > 0 and loss > factor * start:
        return f"{what} {loss:.4g} exceeds {factor:g} times its starting value {start:.4g}"
    return None


def losses_divergence(losses: Iterable[tuple[str, float | None]], what: str = "loss") -> str | None:
    """The first divergence along ``(label, loss)`` pairs (a None loss skipped), the first
    finite loss being the start, as "LABEL: reason"; None when the losses never diverge."""
    start: float | None = None
    for label, loss in losses:
        if loss is None:
            continue
        reason = loss_divergence(loss, start, what)
        if reason is not None:
            return f"{label}: {reason}"
        if start is None:
            start = loss
    return None


__all__ = ["DIVERGENCE_LOSS_FACTOR", "loss_divergence", "losses_divergence"]
