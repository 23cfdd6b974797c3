"""The gradient noise scale against a per-sample autograd loop and a closed-form population.

The reference loop differentiates a deep copy of the model holding the point, one sample at
a time, with plain ``backward`` in float64: no ``torch.func``, no chunks, no kept sums. The
population is linear regression with Gaussian inputs, whose gradient covariance is known
exactly, so the standard error's coverage is checked against the true B_simple.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.gradient_noise import gradient_noise_scale
from sgdwalk.instrument.measurement import MeasurementSet, per_sample_cross_entropy
from tests.helpers import (
    Tolerance,
    assert_close,
    assert_same_state,
    classification_data,
    mlp,
    model_at,
    state_snapshot,
    training_flags,
    warm_batchnorm,
)

# float64 sums in another order, then |ḡ|² − tr(Σ)/n and the jackknife's differences of
# nearly equal left-out values, each cancelling at most ~3 digits of 2^-52.
GRADIENT_SUMS_REORDERED = Tolerance(1e-10, 1e-12, "float64 sums reordered, then differences cancelling ~3 digits")

# A single estimate must lie within this many standard errors of the exact value: under the
# estimator's normal approximation a miss has probability 6e-5.
EXACT_WITHIN_STANDARD_ERRORS = 4.0

# Probability that a coverage check of a rate which truly holds fails anyway (as in
# test_uncertainty_coverage): the suite is not flaky, and 200 replicates still see a real
# shortfall of a few points.
FALSE_ALARM = 1e-3
REPLICATES = 200
# The intervals read: ± 1 standard error (68.3 %, checked from both sides, so an error
# that is too large fails too) and ± 1.96 (95 %, checked from below).
ONE_SE_COVERAGE = float(stats.norm.cdf(1.0) - stats.norm.cdf(-1.0))
NINETY_FIVE = 0.95
Z_NINETY_FIVE = float(stats.norm.ppf(0.5 + NINETY_FIVE / 2))


# ------------------------------------------------------------------ independent reference
def per_sample_gradients_by_loop(
    model: nn.Module, point: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
) -> np.ndarray:
    copied = model_at(model, point)
    copied.eval()
    rows = []
    for index in range(inputs.shape[0]):
        copied.zero_grad()
        loss = per_sample_cross_entropy(copied(inputs[index : index + 1]), targets[index : index + 1])[0]
        loss.backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in copied.parameters() if p.requires_grad]).numpy())  # type: ignore[union-attr]
    return np.array(rows)


def b_simple_of(gradients: np.ndarray) -> tuple[float, float, float]:
    """(B_simple, tr Σ, |G|²) of a matrix of per-sample gradients, from the textbook formulas."""
    count = gradients.shape[0]
    mean = gradients.mean(axis=0)
    trace = float(np.sum((gradients - mean) ** 2)) / (count - 1)
    signal = float(mean @ mean) - trace / count
    return trace / signal, trace, signal


def jackknife_by_recomputation(gradients: np.ndarray, parts: int) -> float:
    pieces = np.array_split(np.arange(gradients.shape[0]), parts)
    left_out = np.array([b_simple_of(np.delete(gradients, piece, axis=0))[0] for piece in pieces])
    return float(np.sqrt((parts - 1) / parts * np.sum((left_out - left_out.mean()) ** 2)))


def test_equals_a_per_sample_autograd_loop_in_float64() -> None:
    model = mlp(3, dtype=torch.float64)
    inputs, targets = classification_data(4, 45, dtype=torch.float64)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()  # learnable: a gradient to resolve
    # A chunk size that divides neither the set nor its parts: every part ends in a short chunk.
    measurement = MeasurementSet(inputs, targets, chunk_size=4)
    point = flat_parameters(model)
    estimate = gradient_noise_scale(model, point, measurement, num_parts=6)
    gradients = per_sample_gradients_by_loop(model, point, inputs, targets)
    b_simple, trace, signal = b_simple_of(gradients)
    assert signal > 0.0, "the setting must resolve the gradient for the comparison to mean something"
    assert_close(estimate.trace_covariance, trace, GRADIENT_SUMS_REORDERED, "tr(Σ)")
    assert_close(estimate.gradient_norm_squared, signal, GRADIENT_SUMS_REORDERED, "|G|²")
    assert_close(estimate.b_simple, b_simple, GRADIENT_SUMS_REORDERED, "B_simple")
    assert_close(estimate.standard_error, jackknife_by_recomputation(gradients, 6), GRADIENT_SUMS_REORDERED, "SE")
    assert (estimate.samples, estimate.parts) == (45, 6)


def test_batch_norm_in_eval_mode_equals_the_loop_and_train_mode_is_refused() -> None:
    model = mlp(5, batchnorm=True, dtype=torch.float64)
    inputs, targets = classification_data(6, 30, dtype=torch.float64)
    warm_batchnorm(model, inputs)
    measurement = MeasurementSet(inputs, targets, chunk_size=8)
    point = flat_parameters(model)
    with pytest.raises(ValueError, match=r"per-sample gradients.*'train' mode"):
        gradient_noise_scale(model, point, measurement)
    estimate = gradient_noise_scale(model, point, measurement, bn_mode="eval", num_parts=5)
    gradients = per_sample_gradients_by_loop(model, point, inputs, targets)
    assert_close(estimate.trace_covariance, b_simple_of(gradients)[1], GRADIENT_SUMS_REORDERED, "tr(Σ), eval mode")
    assert_close(estimate.b_simple, b_simple_of(gradients)[0], GRADIENT_SUMS_REORDERED, "B_simple, eval mode")


def minibatch_gradients_by_loop(
    model: nn.Module, point: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, size: int
) -> np.ndarray:
    """Each consecutive minibatch's mean-loss gradient, batch norm normalising by the minibatch."""
    copied = model_at(model, point)
    copied.train()
    for module in copied.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.track_running_stats = False  # batch statistics, and no running ones touched
    rows = []
    for start in range(0, inputs.shape[0] - size + 1, size):
        copied.zero_grad()
        per_sample_cross_entropy(copied(inputs[start : start + size]), targets[start : start + size]).mean().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in copied.parameters() if p.requires_grad]).numpy())  # type: ignore[union-attr]
    return np.array(rows)


def test_minibatch_gradients_under_batch_norm_in_train_mode_equal_a_loop() -> None:
    model = mlp(5, batchnorm=True, dtype=torch.float64)
    inputs, targets = classification_data(6, 63, dtype=torch.float64)  # 12 minibatches of 5, 3 samples unread
    warm_batchnorm(model, inputs)
    measurement = MeasurementSet(inputs, targets, chunk_size=8)
    point = flat_parameters(model)
    estimate = gradient_noise_scale(model, point, measurement, minibatch_size=5, num_parts=4)
    gradients = minibatch_gradients_by_loop(model, point, inputs, targets, 5)
    b_simple, trace, signal = b_simple_of(gradients)
    # tr(Σ) = b · tr(Σ_b): the spread of batch-b gradients expressed per sample.
    assert_close(estimate.trace_covariance, 5 * trace, GRADIENT_SUMS_REORDERED, "tr(Σ) from minibatches")
    assert_close(estimate.gradient_norm_squared, signal, GRADIENT_SUMS_REORDERED, "|G|² from minibatches")
    assert_close(estimate.b_simple, 5 * b_simple, GRADIENT_SUMS_REORDERED, "B_simple from minibatches")
    assert_close(estimate.standard_error, 5 * jackknife_by_recomputation(gradients, 4), GRADIENT_SUMS_REORDERED, "SE")
    assert (estimate.samples, estimate.parts, estimate.minibatch_size) == (60, 4, 5)


def test_minibatches_of_one_are_the_per_sample_estimate() -> None:
    model = mlp(3, dtype=torch.float64)
    inputs, targets = classification_data(4, 40, dtype=torch.float64)
    targets = (inputs[:, 0] > 0).long()
    measurement = MeasurementSet(inputs, targets, chunk_size=7)
    point = flat_parameters(model)
    per_sample = gradient_noise_scale(model, point, measurement, num_parts=5)
    by_minibatch = gradient_noise_scale(model, point, measurement, num_parts=5, minibatch_size=1)
    assert_close(by_minibatch.b_simple, per_sample.b_simple, GRADIENT_SUMS_REORDERED, "B_simple")
    assert_close(by_minibatch.standard_error, per_sample.standard_error, GRADIENT_SUMS_REORDERED, "SE")


def test_too_few_minibatches_are_refused() -> None:
    model = mlp(3, batchnorm=True)
    inputs, targets = classification_data(4, 20)
    with pytest.raises(ValueError, match="at least 3 gradients, got 2"):
        gradient_noise_scale(model, flat_parameters(model), MeasurementSet(inputs, targets), minibatch_size=8)


def test_the_model_is_left_as_it_was() -> None:
    model = mlp(7, batchnorm=True, dropout=0.3)
    inputs, targets = classification_data(8, 20)
    warm_batchnorm(model, inputs)
    model.train()
    before, flags = state_snapshot(model), training_flags(model)
    point = flat_parameters(model) + 0.1
    gradient_noise_scale(model, point, MeasurementSet(inputs, targets, chunk_size=6), bn_mode="recompute")
    assert_same_state(before, state_snapshot(model))
    assert training_flags(model) == flags


# ------------------------------------------------------------------ a known population
# Linear regression, per-sample loss ½(θᵀx − y)², x ~ N(0, I_d), y = ε ~ N(0, σ²) (the true
# weights are 0), measured at θ = δ. The gradient g = x(xᵀδ − ε) has mean G = δ and, by
# Isserlis' theorem, E[ggᵀ] = (|δ|² + σ²) I + 2δδᵀ, so Σ = (|δ|² + σ²) I + δδᵀ and
# B_simple = (d(|δ|² + σ²) + |δ|²)/|δ|².
DIMENSION, NOISE_SD = 4, 1.0
OFFSET = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)


def exact_b_simple() -> float:
    offset_squared = float(OFFSET @ OFFSET)
    return (DIMENSION * (offset_squared + NOISE_SD**2) + offset_squared) / offset_squared


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 0.5 * (outputs.squeeze(-1) - targets) ** 2


def regression_estimate(seed: int, size: int, minibatch_size: int | None = None) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, DIMENSION, generator=generator, dtype=torch.float64)
    targets = NOISE_SD * torch.randn(size, generator=generator, dtype=torch.float64)
    model = nn.Linear(DIMENSION, 1, bias=False).double()
    measurement = MeasurementSet(inputs, targets, loss_fn=squared_error, chunk_size=256)
    estimate = gradient_noise_scale(model, OFFSET.clone(), measurement, minibatch_size=minibatch_size)
    return estimate.b_simple, estimate.standard_error


@pytest.mark.parametrize("minibatch_size", [None, 8])
def test_the_estimate_lies_within_a_few_standard_errors_of_the_exact_value(minibatch_size: int | None) -> None:
    value, standard_error = regression_estimate(seed=0, size=4000, minibatch_size=minibatch_size)
    print(f"B_simple {value:.3f} ± {standard_error:.3f}, exact {exact_b_simple():.3f}")
    assert abs(value - exact_b_simple()) <= EXACT_WITHIN_STANDARD_ERRORS * standard_error


# Minibatches of 4 from 2,400 samples: 600 gradients, as many as the per-sample case reads.
COVERAGE_CASES = [(600, None), (2400, 4)]


@pytest.mark.slow  # a coverage simulation over many repetitions, not a unit
@pytest.mark.parametrize(("size", "minibatch_size"), COVERAGE_CASES)
def test_the_standard_error_covers_at_its_nominal_rate(size: int, minibatch_size: int | None) -> None:
    exact = exact_b_simple()
    misses = np.array(
        [
            abs(value - exact) / se
            for value, se in (regression_estimate(seed, size, minibatch_size) for seed in range(REPLICATES))
        ]
    )
    within_one, within_z = int(np.sum(misses <= 1.0)), int(np.sum(misses <= Z_NINETY_FIVE))
    one_low, one_high = (int(stats.binom.ppf(q, REPLICATES, ONE_SE_COVERAGE)) for q in (FALSE_ALARM, 1 - FALSE_ALARM))
    z_low = int(stats.binom.ppf(FALSE_ALARM, REPLICATES, NINETY_FIVE))
    print(
        f"± 1 se: {within_one}/{REPLICATES} in [{one_low}, {one_high}]; ± {Z_NINETY_FIVE:.2f} se: {within_z} >= {z_low}"
    )
    assert one_low <= within_one <= one_high
    assert within_z >= z_low


class _CheckpointedMLP(nn.Module):
    """``mlp``'s layers, its hidden block under an activation checkpoint (``use_reentrant``)."""

    def __init__(self, inner: nn.Module, reentrant: bool) -> None:
        super().__init__()
        self.inner = inner
        self.reentrant = reentrant

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        layers = list(self.inner.children())
        hidden = layers[0](inputs.requires_grad_(self.reentrant))  # a reentrant block needs an input with a gradient
        hidden = checkpoint(nn.Sequential(*layers[1:-1]), hidden, use_reentrant=self.reentrant)
        output: torch.Tensor = layers[-1](hidden)
        return output


class _ValueBranchingMLP(nn.Module):
    """A branch on a tensor's value (as transformers' attention masks take), which vmap refuses."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.inner(inputs)
        return output if bool((inputs != 0).all()) else output * 1.0


@pytest.mark.parametrize("wrapped", ["checkpoint", "value branch"])
def test_models_vmap_cannot_run_are_measured_one_sample_at_a_time(wrapped: str) -> None:
    """Before, the first measured step stopped in torch.func's error (a checkpoint's saved
    tensor hooks, a branch on a value); now each sample's gradient is taken by plain
    autograd, equal to the loop's, said once."""
    inner = mlp(3, dtype=torch.float64)
    model: nn.Module = _ValueBranchingMLP(inner) if wrapped == "value branch" else _CheckpointedMLP(inner, False)
    inputs, targets = classification_data(4, 45, dtype=torch.float64)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()
    measurement = MeasurementSet(inputs, targets, chunk_size=4)
    point = flat_parameters(model)
    with pytest.warns(UserWarning, match="cannot be taken by torch.func.vmap") as said:
        estimate = gradient_noise_scale(model, point, measurement, num_parts=6)
        again = gradient_noise_scale(model, point, measurement, num_parts=6)
    assert len([w for w in said if "torch.func.vmap" in str(w.message)]) == 1, "said once per model"
    gradients = per_sample_gradients_by_loop(inner, point, inputs, targets)
    b_simple, trace, _ = b_simple_of(gradients)
    assert_close(estimate.trace_covariance, trace, GRADIENT_SUMS_REORDERED, "tr(Σ)")
    assert_close(estimate.b_simple, b_simple, GRADIENT_SUMS_REORDERED, "B_simple")
    assert_close(estimate.standard_error, jackknife_by_recomputation(gradients, 6), GRADIENT_SUMS_REORDERED, "SE")
    assert again == estimate


def test_minibatch_gradients_of_a_checkpointed_model_equal_a_loop() -> None:
    """Minibatch gradients take plain autograd (before: torch.func's saved-tensor-hook error)."""
    inner = mlp(3, dtype=torch.float64)
    inputs, targets = classification_data(6, 60, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, chunk_size=8)
    point = flat_parameters(inner)
    model = _CheckpointedMLP(inner, reentrant=False)
    estimate = gradient_noise_scale(model, point, measurement, minibatch_size=5, num_parts=4)
    gradients = minibatch_gradients_by_loop(inner, point, inputs, targets, 5)
    b_simple, trace, _ = b_simple_of(gradients)
    assert_close(estimate.trace_covariance, 5 * trace, GRADIENT_SUMS_REORDERED, "tr(Σ) = b · tr(Σ_b)")
    assert_close(estimate.b_simple, 5 * b_simple, GRADIENT_SUMS_REORDERED, "B_simple")


def test_a_reentrant_checkpoint_stops_at_torchs_error_which_names_the_fix() -> None:
    """A reentrant checkpoint recomputes its block outside any gradient taken with respect to
    given inputs, which torch refuses; its message names use_reentrant=False (before:
    torch.func's "must override the setup_context", which names nothing a user can change)."""
    inner = mlp(3, dtype=torch.float64)
    inputs, targets = classification_data(4, 12, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, chunk_size=4)
    with (
        pytest.warns(UserWarning, match="cannot be taken by torch.func.vmap"),
        pytest.raises(RuntimeError, match="use_reentrant=False"),
    ):
        gradient_noise_scale(_CheckpointedMLP(inner, True), flat_parameters(inner), measurement)
