"""One record per measured step: what the tracker emits and the writers store."""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, get_args, get_origin, get_type_hints

import numpy as np

# The metadata key of a field measured on its own schedule (see ``scheduled``).
_SCHEDULED: Final = "scheduled"


def scheduled() -> Any:
    """A field measured on a schedule of its own, off by default: None off it, and then left
    out of ``as_dict``, so a run that never schedules it writes its records byte for byte as
    before the field existed (``record_from_dict`` gives a missing field its default)."""
    return field(default=None, metadata={_SCHEDULED: True})


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
    # The optional quantities at θ_{t+1}, each on its own schedule (``step_quantities``).
    # Hutch++ estimate of tr H and its standard error over the probes.
    hessian_trace: float | None = scheduled()
    hessian_trace_se: float | None = scheduled()
    # B_simple = tr(Σ)/|G|² over the measurement set and its jackknife standard error.
    gradient_noise_scale: float | None = scheduled()
    gradient_noise_scale_se: float | None = scheduled()
    # The k largest Hessian eigenvalues, descending (the first is the sharpness).
    top_eigenvalues: tuple[float, ...] | None = scheduled()
    # Top eigenvalue of P^{-1/2} H P^{-1/2} with the optimizer's preconditioner P, and the
    # value above which the optimizer, P frozen, is unstable on a quadratic.
    preconditioned_sharpness: float | None = scheduled()
    stability_threshold: float | None = scheduled()

    def as_dict(self) -> dict[str, Any]:
        """The fields by name; a scheduled field that is None is left out (see ``scheduled``)."""
        return {name: value for name, value in asdict(self).items() if not (value is None and name in SCHEDULED_FIELDS)}


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))
SCHEDULED_FIELDS: Final[frozenset[str]] = frozenset(f.name for f in fields(StepRecord) if f.metadata.get(_SCHEDULED))


def _admits(hint: Any, kind: type) -> bool:
    """Whether a field annotated ``hint`` may hold a ``kind`` (a union admits each of its members)."""
    members = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return any(member is kind or get_origin(member) is kind for member in members)


_RECORD_HINTS: Final = get_type_hints(StepRecord)
# Read from the annotations, so a tuple field added to the record is converted without being listed again.
TUPLE_FIELDS: Final[tuple[str, ...]] = tuple(name for name in RECORD_FIELDS if _admits(_RECORD_HINTS[name], tuple))
OPTIONAL_FIELDS: Final[tuple[str, ...]] = tuple(
    name for name in RECORD_FIELDS if _admits(_RECORD_HINTS[name], type(None))
)


def record_value(name: str, value: Any) -> Any:
    """A field's value as the tracker makes it, from what a serializer or pandas hands back:
    a sequence as a tuple of floats, NaN (pandas' fill for a missing value) as None where the
    field admits None, a numpy scalar as a Python one."""
    if name in TUPLE_FIELDS and isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(v) for v in value)
    if name in OPTIONAL_FIELDS and (value is None or (isinstance(value, float) and math.isnan(value))):
        return None
    return value.item() if isinstance(value, np.generic) else value


def record_from_dict(values: Mapping[str, Any]) -> StepRecord:
    """The inverse of ``StepRecord.as_dict`` after a round trip through JSON, pandas or a
    checkpoint; a field the record gained since ``values`` were written takes its default."""
    return StepRecord(**{name: record_value(name, values[name]) for name in RECORD_FIELDS if name in values})
