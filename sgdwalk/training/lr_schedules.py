"""Learning-rate schedules as pure functions of the 0-based step index.

- ``constant``: η at every step.
- ``step_decay``: η multiplied by γ at each milestone (a step index; the runner converts
  "after epoch m" to step m · steps_per_epoch, as torch's MultiStepLR does with epochs).
- ``triangular``: Smith (2017)'s cyclical learning rate, triangular policy: from base_lr up
  to max_lr over ``step_size`` steps (a half cycle), back down over the next ``step_size``,
  and again.
- ``trapezoid``: the paper's Appendix C null hypothesis to cycles: the first CLR ramp up
  (base_lr → max_lr over ``ramp_steps``), flat at max_lr, then a linear anneal to
  ``final_lr`` reached at ``total_steps`` (the step after the last one).

Nothing here knows a run's configuration: ``config.learning_rate_schedule`` binds a
``WalkConfig``'s parameters (given in epochs) to one of these.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

LRSchedule = Callable[[int], float]


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"steps are counted from 0, got {step}")


def constant(step: int, *, lr: float) -> float:
    _check_step(step)
    return lr


def step_decay(step: int, *, lr: float, gamma: float, milestones: Sequence[int]) -> float:
    """lr · γ^(number of milestones ≤ step): the rate changes *at* the milestone step."""
    _check_step(step)
    passed = bisect.bisect_right(sorted(milestones), step)
    return lr * gamma**passed


def triangular(step: int, *, base_lr: float, max_lr: float, step_size: int) -> float:
    """Smith (2017), eq. of the triangular policy, with ``step_size`` the half-cycle length.

    cycle = ⌊1 + t / (2 s)⌋, x = |t / s − 2 cycle + 1|, lr = base + (max − base) · max(0, 1 − x).
    """
    _check_step(step)
    if step_size < 1:
        raise ValueError(f"step_size must be at least one step, got {step_size}")
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - x)


def trapezoid(
    step: int,
    *,
    base_lr: float,
    max_lr: float,
    ramp_steps: int,
    anneal_steps: int,
    total_steps: int,
    final_lr: float,
) -> float:
    """Up (as the first CLR half cycle), flat, then down linearly to ``final_lr`` at ``total_steps``.

    Steps 0 … ramp_steps: base_lr + (max_lr − base_lr) · t / ramp_steps (the triangular
    schedule's first half cycle); then max_lr until the anneal begins at
    total_steps − anneal_steps; then linear, reaching final_lr at t = total_steps, so the last
    step taken (total_steps − 1) still moves. Beyond total_steps: final_lr.
    """
    _check_step(step)
    if ramp_steps < 1 or anneal_steps < 1:
        raise ValueError(f"ramp and anneal need at least one step each, got {ramp_steps} and {anneal_steps}")
    anneal_start = total_steps - anneal_steps
    if anneal_start < ramp_steps:
        raise ValueError(f"ramp ({ramp_steps}) and anneal ({anneal_steps}) exceed the {total_steps} steps")
    if step < ramp_steps:
        return triangular(step, base_lr=base_lr, max_lr=max_lr, step_size=ramp_steps)
    if step < anneal_start:
        return max_lr
    if step >= total_steps:
        return final_lr
    return max_lr + (final_lr - max_lr) * (step - anneal_start) / anneal_steps


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """A length in (possibly fractional) epochs as a whole number of steps, at least one."""
    return max(1, round(epochs * steps_per_epoch))


__all__ = [
    "LRSchedule",
    "constant",
    "epochs_to_steps",
    "step_decay",
    "trapezoid",
    "triangular",
]
