"""The optional quantities a tracker records beside the walk, each at θ_{t+1} on its own schedule.

Each is declared once here: its schedule (``<name>_every``: the measured steps t with
t % every == 0, as ``sharpness_every``), its computation (the instrument function, called
as a user would call it at the same point) and the record fields it fills:

- ``hessian_trace_every`` → ``hessian_trace``, ``hessian_trace_se``: Hutch++ with
  ``hessian_trace_probes`` Hessian-vector products (``curvature.hessian_trace``);
- ``gradient_noise_scale_every`` → ``gradient_noise_scale``, ``gradient_noise_scale_se``:
  B_simple = tr(Σ)/|G|² from per-sample gradients, or from the gradients of minibatches of
  ``gradient_noise_batch`` samples (``gradient_noise.gradient_noise_scale``);
- ``top_eigenvalues_every`` → ``top_eigenvalues``: the ``top_eigenvalues_k`` largest
  Hessian eigenvalues (``curvature.top_hessian_eigenvalues``);
- ``preconditioned_sharpness_every`` → ``preconditioned_sharpness``, ``stability_threshold``:
  the top eigenvalue of P^{-1/2} H P^{-1/2} with the preconditioner of the optimizer the
  step was taken by, and 2/η (RMSprop) or (2 + 2β₁)/((1 − β₁)η) (Adam, AdamW)
  (``preconditioned_sharpness``).

Off its schedule a field is None and left out of the written record (``record.scheduled``).
Every random start and probe is drawn from numpy generators seeded with the tracker's
``sharpness_seed``: the same point gives the same value, and a resumed run the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers
from sgdwalk.instrument.curvature import hessian_trace, top_hessian_eigenvalues
from sgdwalk.instrument.distributed import Shard
from sgdwalk.instrument.gradient_noise import gradient_noise_scale
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.preconditioned_sharpness import (
    adam_stability_threshold,
    optimizer_preconditioner,
    preconditioned_sharpness,
    rmsprop_stability_threshold,
)
from sgdwalk.instrument.step_quantity_defaults import (
    HESSIAN_TRACE_PROBES,
    MINIMUM_HESSIAN_TRACE_PROBES,
    TOP_EIGENVALUES_K,
)
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR

# The tracker's settings that switch a quantity on.
SCHEDULES: Final = (
    "hessian_trace_every",
    "gradient_noise_scale_every",
    "top_eigenvalues_every",
    "preconditioned_sharpness_every",
)
ADAPTIVE_OPTIMIZERS: Final = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)


def _check_every(name: str, every: int | None) -> None:
    if every is not None and every < 1:
        raise ValueError(f"{name} must be positive or None, got {every}")


def check_adaptive_optimizer(optimizer: torch.optim.Optimizer | None) -> None:
    """Refuse an optimizer whose preconditioner and stability threshold are not known here."""
    if optimizer is None:
        raise ValueError(
            "preconditioned_sharpness_every reads the optimizer's preconditioner: pass "
            "tracker.step(optimizer=optimizer) or tracker.attach(optimizer)"
        )
    if not isinstance(optimizer, ADAPTIVE_OPTIMIZERS):
        raise TypeError(
            f"preconditioned sharpness needs Adam, AdamW or RMSprop (a diagonal preconditioner), not "
            f"{type(optimizer).__name__}: under SGD it is the plain sharpness (sharpness_every)"
        )
    if isinstance(optimizer, torch.optim.RMSprop) and any(float(g["momentum"]) != 0.0 for g in optimizer.param_groups):
        raise ValueError("preconditioned sharpness: RMSprop with momentum has no stability threshold here (use 0)")
    # One threshold for the whole operator: every group must step with the same η (and β₁).
    for setting in ("lr", "betas"):
        values = {str(group[setting]) for group in optimizer.param_groups if setting in group}
        if len(values) > 1:
            raise ValueError(f"preconditioned sharpness: the parameter groups' {setting} differ, so no one threshold")


def stability_threshold(optimizer: torch.optim.Optimizer) -> float:
    """The threshold of an optimizer ``check_adaptive_optimizer`` let through, at its learning
    rate: 2/η for RMSprop, (2 + 2β₁)/((1 − β₁)η) for Adam and AdamW."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.RMSprop):
        return rmsprop_stability_threshold(float(group["lr"]))
    return adam_stability_threshold(float(group["lr"]), float(group["betas"][0]))


@dataclass(frozen=True)
class StepQuantities:
    """Which optional quantities are measured when, and how (see the module's docstring)."""

    hessian_trace_every: int | None = None
    hessian_trace_probes: int = HESSIAN_TRACE_PROBES
    gradient_noise_scale_every: int | None = None
    gradient_noise_batch: int | None = None
    top_eigenvalues_every: int | None = None
    top_eigenvalues_k: int = TOP_EIGENVALUES_K
    preconditioned_sharpness_every: int | None = None
    seed: int = 0
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR

    def check(self, model: nn.Module, bn_mode: BatchNormMode) -> None:
        """Refuse settings that cannot be measured on ``model``, before the first step."""
        for name in SCHEDULES:
            _check_every(name, getattr(self, name))
        if self.hessian_trace_probes < MINIMUM_HESSIAN_TRACE_PROBES:
            raise ValueError(
                f"hessian_trace_probes: Hutch++ needs at least {MINIMUM_HESSIAN_TRACE_PROBES} products, "
                f"got {self.hessian_trace_probes}"
            )
        if self.top_eigenvalues_k < 1:
            raise ValueError(f"top_eigenvalues_k must be positive, got {self.top_eigenvalues_k}")
        if self.gradient_noise_batch is not None and self.gradient_noise_batch < 1:
            raise ValueError(f"gradient_noise_batch must be positive, got {self.gradient_noise_batch}")
        if (
            self.gradient_noise_scale_every is not None
            and self.gradient_noise_batch is None
            and bn_mode == "train"
            and batchnorm_layers(model)
        ):
            raise ValueError(
                "gradient_noise_scale_every needs per-sample gradients, which batch norm in bn_mode 'train' does "
                "not give (a sample is normalised with its chunk): use bn_mode 'eval' or 'recompute', or "
                "minibatch gradients (gradient_noise_batch)"
            )

    def _due(self, every: int | None, step: int) -> bool:
        return every is not None and step % every == 0

    def due(self, step: int) -> bool:
        """Whether any quantity is due at ``step`` (its record needs the point they are measured at)."""
        return any(self._due(getattr(self, name), step) for name in SCHEDULES)

    def needs_optimizer(self, step: int) -> bool:
        """Whether step ``step``'s record reads the optimizer (its preconditioned sharpness)."""
        return self._due(self.preconditioned_sharpness_every, step)

    def record_fields(
        self,
        step: int,
        model: nn.Module,
        point: torch.Tensor,
        measurement: MeasurementSet,
        bn_mode: BatchNormMode,
        shard: Shard,
        optimizer: torch.optim.Optimizer | None,
    ) -> dict[str, Any]:
        """The record fields of the quantities due at ``step``, measured at ``point``; the
        others are left to their default (None)."""
        fields: dict[str, Any] = {}
        if self._due(self.hessian_trace_every, step):
            trace = hessian_trace(
                model,
                point,
                measurement,
                probes=self.hessian_trace_probes,
                seed=self.seed,
                method="hutch++",
                bn_mode=bn_mode,
                shard=shard,
            )
            fields.update(hessian_trace=trace.value, hessian_trace_se=trace.standard_error)
        if self._due(self.gradient_noise_scale_every, step):
            # Computed whole on every process (it reads no shard): the same value on each.
            noise = gradient_noise_scale(
                model, point, measurement, bn_mode=bn_mode, minibatch_size=self.gradient_noise_batch
            )
            fields.update(gradient_noise_scale=noise.b_simple, gradient_noise_scale_se=noise.standard_error)
        if self._due(self.top_eigenvalues_every, step):
            top = top_hessian_eigenvalues(
                model,
                point,
                measurement,
                self.top_eigenvalues_k,
                bn_mode=bn_mode,
                seed=self.seed,
                relative_tolerance=self.relative_tolerance,
                shard=shard,
            )
            fields.update(top_eigenvalues=tuple(float(value) for value in top.values))
        if self.needs_optimizer(step):
            check_adaptive_optimizer(optimizer)
            assert optimizer is not None  # checked just above
            preconditioner = optimizer_preconditioner(optimizer, model).to(point.device)
            estimate = preconditioned_sharpness(
                model,
                point,
                measurement,
                preconditioner,
                bn_mode=bn_mode,
                seed=self.seed,
                relative_tolerance=self.relative_tolerance,
            )
            fields.update(preconditioned_sharpness=estimate.value, stability_threshold=stability_threshold(optimizer))
        return fields
