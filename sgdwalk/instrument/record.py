"""One record per measured step: what the tracker emits and the writers store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """The walk at update t, from θ_t to θ_{t+1}. Field meanings are tabled in the README."""

    step: int
    lr: float | None
    minibatch_loss: float | None
    loss_start: float
    loss_end: float
    floor: float
    alpha_star: float
    interior_floor: bool
    floor_refined: float
    alpha_star_refined: float
    height_start: float
    height_end: float
    barrier: bool
    barrier_height: float
    barrier_alpha: float | None
    cosine: float | None
    grad_norm: float
    step_length: float
    distance_from_init: float
    param_norm: float
    sharpness: float | None
    segment_alphas: tuple[float, ...]
    segment_losses: tuple[float, ...]
    # How sure the measurement is (``uncertainty.SegmentUncertainty``). Defaults keep records
    # written before these fields existed readable; None where a standard error is undefined
    # (fewer than two samples).
    samples: int | None = None
    segment_loss_se: tuple[float, ...] | None = None
    segment_floor_se: tuple[float, ...] | None = None
    height_start_se: float | None = None
    height_end_se: float | None = None
    floor_depth: float | None = None
    floor_depth_se: float | None = None
    barrier_excess: float | None = None
    barrier_excess_se: float | None = None
    barrier_test: str | None = None
    sharpness_se: float | None = None
    # Hessian-vector products the sharpness estimate took (warm-started after the first).
    sharpness_products: int | None = None
    # Every parameter group's learning rate, in group order, when they differ (``lr`` is then
    # None); None when they agree or the loop passed ``lr`` itself.
    group_lrs: tuple[float, ...] | None = None
    # cos(θ_t − θ_{t−1}, θ_{t+1} − θ_t): the consecutive updates, beside ``cosine`` of the gradients
    # (they differ under momentum and Adam); None where ``cosine`` is.
    update_cosine: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))
