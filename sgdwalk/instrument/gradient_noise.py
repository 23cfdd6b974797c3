"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018), with its error.

G is the gradient of the mean loss over the distribution the measurement set was drawn
from and Σ the covariance of one sample's gradient: the batch size B_simple is where a
minibatch gradient's noise, tr(Σ)/B, equals the signal |G|². Below it a step is mostly
noise; far above it, a bigger batch buys little.

Per-sample gradients g_i come from ``torch.func`` (``vmap`` of ``grad`` through
``functional_call`` at the given parameter vector; the model is not touched), a chunk of
the set at a time, so memory is chunk_size × parameters. Where ``vmap`` cannot run the
model (an activation checkpoint's saved-tensor hooks, an ``autograd.Function`` without
``setup_context``, control flow on a tensor's value such as transformers' attention masks,
a hook that calls ``requires_grad_``), each sample's gradient is taken by plain autograd, one
sample at a time: the same gradients, slower, said once per model (before, the first
measured step stopped there, after the optimizer's step; found by a second pair of eyes).
Minibatch gradients always take plain autograd, which every model runs. Only sums are kept (Σ g_i as a
float64 vector, Σ |g_i|² as a float64 number, per part of the set), and from them the
unbiased estimators

    tr(Σ) = 1/(n − 1) Σ_i |g_i − ḡ|²,     |G|² = |ḡ|² − tr(Σ)/n

(E|ḡ|² = |G|² + tr(Σ)/n, so the plain |ḡ|² would overstate the signal by the noise).

The standard error is a delete-a-part jackknife over ``GRADIENT_NOISE_ERROR_PARTS``
disjoint parts of the set: B_simple is recomputed from the whole set less one part, and
SE² = (K − 1)/K Σ_k (B_(−k) − B̄)². Why not batch means of B per part: B is a ratio whose
denominator, |G|² at n/K samples, is K times noisier and biased as a ratio; the parts'
values would scatter around a biased centre. Why not the delta method: the variance of
|ḡ|² holds a term tr(Σ²)/n², which needs the n × n Gram matrix of the gradients (or a
product with Σ per term); it dominates exactly when B_simple is not small against n. The
jackknife recomputes the statistic itself from the kept sums, so it sees that term and the
ratio's curvature for the price of K vectors. It is a first-order (normal) error: it means
what it says while |G|² is resolved, i.e. while n is several times B_simple; near n ≈
B_simple the estimate of |G|² can reach zero or below and B_simple is then unresolved
(reported as computed: negative or infinite).

Batch norm in "train" mode normalises each sample with the others of its chunk: a sample
has no gradient of its own, so per-sample gradients are refused for models with batch norm
("eval" and "recompute" hold the statistics fixed, and every sample is its own). What such a
network has is the gradient of a minibatch, and that is what SGD steps along: with
``minibatch_size`` b the "samples" above are the set's consecutive minibatches of b, each
normalised by its own statistics, and

    tr(Σ) = b · tr(Σ_b),    Σ_b the covariance of one minibatch's mean gradient,

which for independent samples (no batch norm) is the same quantity, Σ_b = Σ/b, estimated
from fewer terms (McCandlish et al. estimate it from two batch sizes the same way). Under
batch norm in "train" mode it is the noise of batch-b steps expressed per sample: B_simple
then depends on b, as the network does.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import grad, vmap

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, check_batchnorm_mode, measuring
from sgdwalk.instrument.measurement import (
    Batch,
    MeasurementSet,
    ParameterLayout,
    map_tensors,
    model_call,
    recomputed_batchnorm_statistics,
)
from sgdwalk.instrument.tolerances import GRADIENT_NOISE_ERROR_PARTS

# tr(Σ) is an (n − 1)-denominator variance and the jackknife drops a part and keeps n − 1
# more: three samples is the least that defines both.
_MINIMUM_SAMPLES = 3


@dataclass(frozen=True)
class GradientNoiseScale:
    """B_simple = tr(Σ)/|G|² over the measurement set, its standard error, and its parts.

    Attributes:
        b_simple: tr(Σ)/|G|², both unbiased (a ratio of unbiased estimates, so biased at
            second order, as every ratio estimator).
        standard_error: of b_simple, by a delete-a-part jackknife over ``parts`` parts.
        trace_covariance: tr(Σ), the trace of one sample's gradient covariance.
        gradient_norm_squared: |G|², the squared norm of the mean gradient, unbiased
            (|ḡ|² − tr(Σ)/n; can be negative when the set cannot resolve the gradient).
        samples: n, the samples of the measurement set (read: whole minibatches of them).
        parts: the disjoint parts of the jackknife.
        minibatch_size: b, the samples per gradient (1: per-sample gradients).
    """

    b_simple: float
    standard_error: float
    trace_covariance: float
    gradient_norm_squared: float
    samples: int
    parts: int
    minibatch_size: int = 1


@dataclass(frozen=True)
class _GradientSums:
    """Σ g_i (float64 vector), Σ |g_i|² and n over some samples: all B_simple needs."""

    total: torch.Tensor
    total_squared_norm: float
    count: int

    def without(self, part: _GradientSums) -> _GradientSums:
        return _GradientSums(
            self.total - part.total, self.total_squared_norm - part.total_squared_norm, self.count - part.count
        )

    def trace_covariance(self) -> float:
        # Σ|g_i − ḡ|² = Σ|g_i|² − n|ḡ|², summed in float64: the cancellation costs digits only
        # as 1/B_simple grows, ~1e-16/B relative, far under the float32 gradients' own rounding.
        mean_norm_squared = float(self.total @ self.total) / self.count**2
        return (self.total_squared_norm - self.count * mean_norm_squared) / (self.count - 1)

    def gradient_norm_squared(self) -> float:
        return float(self.total @ self.total) / self.count**2 - self.trace_covariance() / self.count

    def b_simple(self) -> float:
        signal = self.gradient_norm_squared()
        noise = self.trace_covariance()
        return noise / signal if signal != 0.0 else math.copysign(math.inf, noise)


def _summed(parts: list[_GradientSums]) -> _GradientSums:
    return _GradientSums(
        torch.stack([part.total for part in parts]).sum(dim=0),
        sum(part.total_squared_norm for part in parts),
        sum(part.count for part in parts),
    )


def _jackknife_standard_error(whole: _GradientSums, parts: list[_GradientSums]) -> float:
    """(K − 1)/K Σ_k (B_(−k) − B̄)², B_(−k) from the whole set less part k, square-rooted."""
    left_out = np.array([whole.without(part).b_simple() for part in parts])
    count = left_out.size
    return float(np.sqrt((count - 1) / count * np.sum((left_out - left_out.mean()) ** 2)))


def gradient_noise_scale(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    num_parts: int = GRADIENT_NOISE_ERROR_PARTS,
    minibatch_size: int | None = None,
) -> GradientNoiseScale:
    """B_simple = tr(Σ)/|G|² at ``point`` over the measurement set, with its standard error
    (see the module's docstring for the estimators and the jackknife): from per-sample
    gradients, or from the gradients of consecutive minibatches of ``minibatch_size``
    (the set's last ``size % minibatch_size`` samples unread)."""
    check_batchnorm_mode(bn_mode)
    if minibatch_size is None and bn_mode == "train" and batchnorm_layers(model):
        raise ValueError(
            "the gradient noise scale needs per-sample gradients, which batch norm in 'train' mode does not "
            "have (each sample is normalised with the others of its chunk): measure with bn_mode 'eval' or "
            "'recompute', or from minibatch gradients (minibatch_size)"
        )
    if minibatch_size is not None and minibatch_size < 1:
        raise ValueError(f"minibatch_size must be positive, got {minibatch_size}")
    per_gradient = 1 if minibatch_size is None else minibatch_size
    gradients = measurement.size // per_gradient
    if gradients < _MINIMUM_SAMPLES:
        raise ValueError(
            f"the gradient noise scale needs at least {_MINIMUM_SAMPLES} gradients, got {gradients} "
            f"({measurement.size} samples, {per_gradient} per gradient)"
        )
    if num_parts < 2:
        raise ValueError(f"the jackknife needs at least two parts, got num_parts={num_parts}")
    parameters = point.detach()
    # "recompute": statistics re-estimated at the point over the set, then held fixed.
    buffers = recomputed_batchnorm_statistics(model, point, measurement) if bn_mode == "recompute" else {}
    forward_mode: BatchNormMode = "eval" if bn_mode == "recompute" else bn_mode
    bounds = np.array_split(np.arange(gradients), min(num_parts, gradients))
    with measuring(model, forward_mode):
        if minibatch_size is None:
            parts = [
                _part_sums(model, parameters, measurement, buffers, int(indices[0]), int(indices[-1]) + 1)
                for indices in bounds
            ]
        else:
            parts = [
                _minibatch_sums(model, parameters, measurement, buffers, indices.tolist(), minibatch_size)
                for indices in bounds
            ]
    whole = _summed(parts)
    # tr(Σ) = b · tr(Σ_b); |G|² is the mean gradient's either way.
    return GradientNoiseScale(
        b_simple=per_gradient * whole.b_simple(),
        standard_error=per_gradient * _jackknife_standard_error(whole, parts),
        trace_covariance=per_gradient * whole.trace_covariance(),
        gradient_norm_squared=whole.gradient_norm_squared(),
        samples=whole.count * per_gradient,
        parts=len(parts),
        minibatch_size=per_gradient,
    )


def _minibatch_sums(
    model: nn.Module,
    parameters: torch.Tensor,
    measurement: MeasurementSet,
    buffers: dict[str, torch.Tensor],
    minibatches: list[int],
    minibatch_size: int,
) -> _GradientSums:
    """The sums over the mean-loss gradients of the given minibatches (minibatch k: samples
    k·b to (k + 1)·b − 1), one forward and backward each."""
    layout = ParameterLayout.of(model)

    def gradient_of(batch: Batch) -> torch.Tensor:
        # Plain autograd, not torch.func: every model runs under it (checkpoints, hooks).
        with torch.enable_grad():
            leaf = parameters.detach().requires_grad_(True)
            call = model_call(model, {**layout.unflatten(leaf), **buffers})
            (gradient,) = torch.autograd.grad(measurement.losses(call, batch).mean(), leaf)
        return gradient

    total = torch.zeros(parameters.numel(), dtype=torch.float64, device=parameters.device)
    total_squared_norm = 0.0
    for index in minibatches:
        batch = measurement.part(index * minibatch_size, (index + 1) * minibatch_size)
        gradient = gradient_of(batch).detach()
        total += gradient.to(torch.float64)
        total_squared_norm += float(torch.linalg.vector_norm(gradient, dtype=torch.float64).square())
    return _GradientSums(total.cpu(), total_squared_norm, len(minibatches))


def per_sample_gradients(
    model: nn.Module,
    parameters: torch.Tensor,
    measurement: MeasurementSet,
    batch: Batch,
    buffers: dict[str, torch.Tensor],
) -> torch.Tensor:
    """[n, parameters]: each sample's loss gradient at ``parameters``, by vmap of grad."""
    layout = ParameterLayout.of(model)

    def sample_loss(flat: torch.Tensor, sample: Batch) -> torch.Tensor:
        # One sample, given its batch dimension back so the user's loss sees a batch of one.
        one = map_tensors(lambda tensor: tensor.unsqueeze(0), sample)
        return measurement.losses(model_call(model, {**layout.unflatten(flat), **buffers}), one)[0]

    gradients: torch.Tensor = vmap(grad(sample_loss), in_dims=(None, 0))(parameters, batch)
    return gradients


def _part_sums(
    model: nn.Module,
    parameters: torch.Tensor,
    measurement: MeasurementSet,
    buffers: dict[str, torch.Tensor],
    start: int,
    stop: int,
) -> _GradientSums:
    """The sums over samples ``start`` to ``stop − 1``, ``chunk_size`` samples at a time."""
    total = torch.zeros(parameters.numel(), dtype=torch.float64, device=parameters.device)
    total_squared_norm = 0.0
    for chunk_start in range(start, stop, measurement.chunk_size):
        chunk_stop = min(chunk_start + measurement.chunk_size, stop)
        if model not in _MODELS_VMAP_CANNOT_RUN:
            batch = measurement.part(chunk_start, chunk_stop)
            try:
                gradients = per_sample_gradients(model, parameters, measurement, batch, buffers).detach()
            except RuntimeError as error:
                _say_vmap_cannot_run(model, error)
            else:
                total += gradients.sum(dim=0, dtype=torch.float64)
                total_squared_norm += float(
                    torch.linalg.vector_norm(gradients, dim=1, dtype=torch.float64).square().sum()
                )
                continue
        # One sample at a time: each sample's gradient is its minibatch of one's.
        one_by_one = _minibatch_sums(model, parameters, measurement, buffers, list(range(chunk_start, chunk_stop)), 1)
        total += one_by_one.total.to(total.device)
        total_squared_norm += one_by_one.total_squared_norm
    return _GradientSums(total.cpu(), total_squared_norm, stop - start)


# The models whose per-sample gradients vmap could not take: taken one sample at a time from
# then on, without trying vmap again (weakly held: a model let go is forgotten).
_MODELS_VMAP_CANNOT_RUN: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _say_vmap_cannot_run(model: nn.Module, error: RuntimeError) -> None:
    """Remember that vmap cannot run ``model``, and say it once, with torch's reason."""
    _MODELS_VMAP_CANNOT_RUN.add(model)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    warnings.warn(
        f"the gradient noise scale's per-sample gradients cannot be taken by torch.func.vmap through "
        f"{type(model).__name__} ({reason}): they are taken one sample at a time instead, the same "
        "gradients, more slowly (said once per model)",
        UserWarning,
        stacklevel=4,
    )
