"""Run an optimizer on a landscape through ``sgdwalk.WalkTracker``, exactly as a user would.

    result = walk(Quadratic([1.0, 10.0]), "gd", lr=0.15, steps=20)
    result.records      # the tracker's StepRecords
    result.iterates     # θ_0 … θ_T, to compare with the landscape's exact answers

The loop is the documented one: zero_grad, a minibatch (or full-batch) loss, backward,
``with tracker.step(...): optimizer.step()``, stop when ``tracker.diverged``. No metric is
computed here: every number the synthetic tier checks comes out of the tracker, and the
iterates and gradients kept here are only what a test needs for the closed forms.

For "noisy-gd" the noise is drawn inside the optimizer's step (as ``sgdwalk.NoisyGD`` does),
so the tracker's cosine is that of the clean full-batch gradients, not of the noisy steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, cast, overload

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.optim import Optimizer

from landscapes.quadratic import as_vector
from sgdwalk import (
    MeasurementSchedule,
    MeasurementSet,
    NoisyGD,
    StepRecord,
    WalkTracker,
    flat_gradient,
    flat_parameters,
    full_batch_gradient_,
)

__all__ = ["CovarianceNoiseGD", "Walk", "WalkKind", "WalkLandscape", "walk"]

#: "gd": full-batch gradient, torch.optim.SGD; "sgd": a minibatch drawn with replacement,
#: torch.optim.SGD; "noisy-gd": full-batch gradient plus Gaussian noise (sgdwalk.NoisyGD for
#: isotropic noise, ``CovarianceNoiseGD`` for a given covariance).
WalkKind = Literal["gd", "sgd", "noisy-gd"]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
# eigh's backward error is a modest multiple of d·eps·‖C‖ (Golub & Van Loan §8.1); 64 covers it.
_EIGENVALUE_RESOLUTION_ULPS = 64.0


class WalkLandscape(Protocol):
    """What ``walk`` needs of a landscape (Quadratic, NoisyQuadratic and Valley have it)."""

    theta: nn.Parameter

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def measurement_set(self) -> MeasurementSet: ...

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


class CovarianceNoiseGD(Optimizer):
    """θ ← θ − η (g + ξ), ξ ~ N(0, C), drawn from the optimizer's own seeded generator.

    The covariance counterpart of ``sgdwalk.NoisyGD`` (which draws ξ ~ N(0, σ² I)): the noise
    is added inside ``step``, so ``.grad`` (what the tracker reads) stays the clean
    gradient for both. C must be positive semi-definite, of the size of the one parameter
    vector it moves; ξ = F z with F = V diag(√w) from C = V diag(w) Vᵀ, so a singular C
    (e.g. Hessian-shaped noise with flat directions) puts no noise in its null space beyond
    float64 rounding.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, covariance: ArrayLike, seed: int = 0) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, {"lr": lr})
        parameters = [p for group in self.param_groups for p in group["params"]]
        if len(parameters) != 1:
            raise ValueError(f"CovarianceNoiseGD moves a single parameter vector, got {len(parameters)} tensors")
        (parameter,) = parameters
        matrix = np.asarray(covariance, dtype=np.float64)
        if matrix.shape != (parameter.numel(), parameter.numel()):
            raise ValueError(f"covariance must be {parameter.numel()}x{parameter.numel()}, got {matrix.shape}")
        eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
        # eigh resolves eigenvalues only to ~d·eps·‖C‖: a null direction comes back as ±1e-16·‖C‖,
        # whose square root (1e-8·√‖C‖) would be real noise. Below that resolution it is zero.
        resolution = (
            _EIGENVALUE_RESOLUTION_ULPS * matrix.shape[0] * np.finfo(np.float64).eps * float(np.abs(eigenvalues).max())
        )
        if eigenvalues.min() < -resolution:
            raise ValueError(
                f"covariance must be positive semi-definite, its smallest eigenvalue is {eigenvalues.min()}"
            )
        factor = eigenvectors * np.sqrt(np.where(eigenvalues > resolution, eigenvalues, 0.0))
        self.noise_factor = torch.tensor(factor, dtype=parameter.dtype, device=parameter.device)
        self.generator = torch.Generator(device=parameter.device)
        self.generator.manual_seed(seed)

    # The overloads of torch.optim.Optimizer.step: no closure, no loss.
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                standard_normal = torch.randn(
                    parameter.numel(), generator=self.generator, dtype=parameter.dtype, device=parameter.device
                )
                noise = (self.noise_factor @ standard_normal).view_as(parameter)
                parameter.add_(parameter.grad + noise, alpha=-group["lr"])
        return loss


@dataclass(frozen=True)
class Walk:
    """What a walk produced.

    Attributes:
        records: the tracker's records (``tracker.close()``).
        iterates: θ_0 … θ_T as rows, shape [T + 1, d] (T = steps taken; the last row may be
            non-finite after a divergence).
        gradients: the gradient in ``.grad`` at each step, shape [T, d] (the minibatch
            gradient for "sgd"; the clean full-batch gradient for "gd" and "noisy-gd").
        minibatch_losses: the loss the gradient was taken of, at each step.
        divergence: the tracker's divergence message, None when the run stayed finite.
    """

    records: list[StepRecord]
    iterates: torch.Tensor
    gradients: torch.Tensor
    minibatch_losses: list[float]
    divergence: str | None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    @property
    def steps_taken(self) -> int:
        return int(self.gradients.shape[0])


def _default_optimizer(
    kind: WalkKind,
    parameters: Iterable[nn.Parameter],
    lr: float,
    noise_variance: float | None,
    noise_covariance: ArrayLike | None,
    seed: int,
) -> Optimizer:
    if kind in ("gd", "sgd"):
        if noise_variance is not None or noise_covariance is not None:
            raise ValueError(f"kind {kind!r} takes no noise; use kind='noisy-gd'")
        return torch.optim.SGD(parameters, lr=lr)
    if (noise_variance is None) == (noise_covariance is None):
        raise ValueError("kind 'noisy-gd' needs exactly one of noise_variance (isotropic) and noise_covariance")
    if noise_variance is not None:
        return NoisyGD(parameters, lr=lr, noise_variance=noise_variance, seed=seed)
    assert noise_covariance is not None
    return CovarianceNoiseGD(parameters, lr=lr, covariance=noise_covariance, seed=seed)


def walk(
    landscape: WalkLandscape,
    kind: WalkKind = "gd",
    *,
    lr: float,
    steps: int,
    batch_size: int | None = None,
    noise_variance: float | None = None,
    noise_covariance: ArrayLike | None = None,
    optimizer_factory: OptimizerFactory | None = None,
    schedule: MeasurementSchedule | None = None,
    num_alphas: int = 10,
    seed: int = 0,
    start: ArrayLike | torch.Tensor | None = None,
    sharpness_every: int | None = None,
) -> Walk:
    """Train a copy of ``landscape`` for ``steps`` steps while a WalkTracker measures it.

    Args:
        landscape: left untouched; a deep copy is trained, starting from ``start`` (default:
            the landscape's current θ).
        kind: see ``WalkKind``; decides the gradient and the default optimizer.
        lr: the learning rate η.
        batch_size: B for "sgd" (required there, unused otherwise).
        noise_variance: σ² of isotropic noise for "noisy-gd" (``sgdwalk.NoisyGD``).
        noise_covariance: a d×d covariance for "noisy-gd" (``CovarianceNoiseGD``).
        optimizer_factory: replaces the default optimizer (it gets the parameters).
        schedule, num_alphas, sharpness_every: passed to the WalkTracker.
        seed: seeds the minibatch sampler and the noise generator.
    """
    if kind not in ("gd", "sgd", "noisy-gd"):
        raise ValueError(f"kind must be 'gd', 'sgd' or 'noisy-gd', got {kind!r}")
    if kind == "sgd" and (batch_size is None or batch_size < 1):
        raise ValueError(f"kind 'sgd' needs a positive batch_size, got {batch_size}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    model = copy.deepcopy(landscape)
    module = cast(nn.Module, model)  # every landscape is an nn.Module; the Protocol names the rest
    if start is not None:
        with torch.no_grad():
            model.theta.copy_(torch.as_tensor(as_vector(start, model.theta.numel()), dtype=model.theta.dtype))
    measurement = model.measurement_set()
    if optimizer_factory is not None:
        optimizer = optimizer_factory(module.parameters())
    else:
        optimizer = _default_optimizer(kind, module.parameters(), lr, noise_variance, noise_covariance, seed)
    tracker = WalkTracker(
        module, measurement, schedule=schedule, num_alphas=num_alphas, sharpness_every=sharpness_every
    )
    sampler = torch.Generator()
    sampler.manual_seed(seed)

    iterates = [flat_parameters(module)]
    gradients: list[torch.Tensor] = []
    minibatch_losses: list[float] = []
    for _ in range(steps):
        optimizer.zero_grad()
        if kind == "sgd":
            assert batch_size is not None
            inputs, targets = model.sample_batch(batch_size, sampler)
            loss_value = measurement.loss_fn(model(inputs), targets).mean()
            loss_value.backward()
            minibatch_loss = float(loss_value.detach())
        else:
            minibatch_loss = full_batch_gradient_(
                module, measurement.loss_fn, measurement.inputs, measurement.targets, measurement.chunk_size
            )
        gradients.append(flat_gradient(module))
        minibatch_losses.append(minibatch_loss)
        with tracker.step(minibatch_loss=minibatch_loss, lr=lr):
            optimizer.step()
        iterates.append(flat_parameters(module))
        if tracker.diverged:
            break
    records = tracker.close()
    d = iterates[0].numel()
    return Walk(
        records=records,
        iterates=torch.stack(iterates),
        gradients=torch.stack(gradients) if gradients else torch.zeros(0, d, dtype=iterates[0].dtype),
        minibatch_losses=minibatch_losses,
        divergence=tracker.divergence,
    )
