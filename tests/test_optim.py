"""Full-batch GD, GD plus isotropic noise and the gradient-variance estimate, by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.geometry import flat_gradient, flat_parameters
from sgdwalk.instrument.measurement import per_sample_cross_entropy
from sgdwalk.training.optim import NoisyGD, full_batch_gradient_, gradient_coordinate_variance, isotropic_noise_variance
from tests.helpers import FLOAT32_REORDERED, FLOAT64_REORDERED, assert_close, classification_data, mlp

# The empirical variance of n Gaussian draws has relative standard error sqrt(2 / (n − 1));
# with n = 40,000 that is 0.7%, so 5% is seven standard errors: a wrong power of σ is 300%.
NOISE_SAMPLES = 40_000
NOISE_VARIANCE_RTOL = 0.05


def one_go_gradient(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The reference: one forward over the whole set, autograd of the mean loss."""
    loss = per_sample_cross_entropy(model(inputs), targets).mean()
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in gradients]), float(loss.detach())


# ---------------------------------------------------------------------- full-batch GD
@pytest.mark.parametrize("chunk_size", [1, 7, 25, 50, 1000])
def test_full_batch_gradient_is_the_mean_gradient_for_any_chunking(chunk_size: int) -> None:
    # 50 samples in chunks of 7: eight chunks, the last ragged. Summing chunk means (the
    # authors' bug) would give 50/7 ≈ 7x the gradient; weighting chunks by size gives 1x.
    model = mlp(20, dtype=torch.float64)
    inputs, targets = classification_data(20, 50, dtype=torch.float64)
    expected, expected_loss = one_go_gradient(model, inputs, targets)
    loss = full_batch_gradient_(model, per_sample_cross_entropy, inputs, targets, chunk_size)
    assert_close(flat_gradient(model), expected, FLOAT64_REORDERED, f"gradient, chunks of {chunk_size}")
    assert_close(loss, expected_loss, FLOAT64_REORDERED, f"mean loss, chunks of {chunk_size}")


def test_full_batch_gradient_in_float32() -> None:
    model = mlp(21)
    inputs, targets = classification_data(21, 50)
    expected, _ = one_go_gradient(model, inputs, targets)
    full_batch_gradient_(model, per_sample_cross_entropy, inputs, targets, chunk_size=16)
    assert_close(flat_gradient(model), expected, FLOAT32_REORDERED, "float32 chunks vs one go")


def test_full_batch_gradient_replaces_stale_gradients() -> None:
    model = mlp(22, dtype=torch.float64)
    inputs, targets = classification_data(22, 30, dtype=torch.float64)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 100.0)
    expected, _ = one_go_gradient(model, inputs, targets)
    full_batch_gradient_(model, per_sample_cross_entropy, inputs, targets, chunk_size=8)
    assert_close(flat_gradient(model), expected, FLOAT64_REORDERED, "no accumulation onto old .grad")


@pytest.mark.parametrize(
    ("inputs", "targets", "loss_fn", "chunk_size", "message"),
    [
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), per_sample_cross_entropy, 4, "empty set"),
        (
            torch.zeros(6, 4),
            torch.zeros(6, dtype=torch.long),
            per_sample_cross_entropy,
            0,
            "chunk_size must be positive",
        ),
        (
            torch.zeros(6, 4),
            torch.zeros(5, dtype=torch.long),
            per_sample_cross_entropy,
            4,
            r"inputs \(6\) and targets \(5\)",
        ),
        (torch.zeros(6, 4), torch.zeros(6, dtype=torch.long), nn.functional.cross_entropy, 4, "one loss per sample"),
    ],
    ids=["empty", "zero-chunk", "length-mismatch", "scalar-loss"],
)
def test_full_batch_gradient_bad_input(
    inputs: torch.Tensor, targets: torch.Tensor, loss_fn: object, chunk_size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        full_batch_gradient_(mlp(0), loss_fn, inputs, targets, chunk_size)  # type: ignore[arg-type]  # deliberately wrong type: the run-time check is under test


# ----------------------------------------------------------------------------- NoisyGD
def zero_gradient_parameter(size: int) -> nn.Parameter:
    parameter = nn.Parameter(torch.zeros(size, dtype=torch.float64))
    parameter.grad = torch.zeros_like(parameter)
    return parameter


@pytest.mark.parametrize("variance", [0.25, 4.0], ids=["below-one", "above-one"])
def test_noise_has_the_stated_variance(variance: float) -> None:
    # σ² = 0.25: a sampler fed the variance as σ gives 0.0625, one fed σ gives 0.5; both far off.
    parameter = zero_gradient_parameter(NOISE_SAMPLES)
    NoisyGD([parameter], lr=1.0, noise_variance=variance, seed=0).step()
    noise = -parameter.detach().numpy()
    assert abs(noise.mean()) < 5 * np.sqrt(variance / NOISE_SAMPLES)
    assert noise.var(ddof=1) == pytest.approx(variance, rel=NOISE_VARIANCE_RTOL)


def test_noise_leaves_the_global_generator_alone_and_is_seeded() -> None:
    state = torch.random.get_rng_state()
    trajectories = []
    for seed in (7, 7, 8):
        parameter = zero_gradient_parameter(50)
        optimizer = NoisyGD([parameter], lr=0.1, noise_variance=1.0, seed=seed)
        optimizer.step()
        optimizer.step()
        trajectories.append(parameter.detach().clone())
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(trajectories[0], trajectories[1])
    assert not torch.equal(trajectories[0], trajectories[2])
    assert len(set(trajectories[0].tolist())) == 50  # fresh noise per coordinate


def test_generator_states_continue_the_noise_stream_in_a_new_optimizer() -> None:
    parameter = zero_gradient_parameter(20)
    first = NoisyGD([parameter], lr=0.1, noise_variance=1.0, seed=5)
    first.step()
    saved, after_one = first.generator_states(), parameter.detach().clone()
    assert list(saved) == ["cpu"]
    first.step()
    expected = parameter.detach().clone()

    # A fresh optimizer with another seed, from the saved parameters and noise state,
    # takes the step the first one took (the checkpoint of a resumed run).
    parameter.data.copy_(after_one)
    second = NoisyGD([parameter], lr=0.1, noise_variance=1.0, seed=99)
    second.load_generator_states(saved)
    second.step()
    assert torch.equal(parameter.detach(), expected)


def test_noiseless_step_is_sgd_with_weight_decay() -> None:
    models = [mlp(23, dtype=torch.float64) for _ in range(2)]
    inputs, targets = classification_data(23, 12, dtype=torch.float64)
    optimizers = [
        NoisyGD(models[0].parameters(), lr=0.3, noise_variance=0.0, weight_decay=0.01),
        torch.optim.SGD(models[1].parameters(), lr=0.3, weight_decay=0.01),
    ]
    for model, optimizer in zip(models, optimizers, strict=True):
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    assert_close(flat_parameters(models[0]), flat_parameters(models[1]), FLOAT64_REORDERED, "σ² = 0 is SGD")


def test_noisy_step_by_hand() -> None:
    # θ ← θ − η (g + λθ + σ ξ) with ξ the optimizer's own N(0, 1) draws.
    parameter = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    parameter.grad = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    before = parameter.detach().clone()
    NoisyGD([parameter], lr=0.5, noise_variance=0.09, weight_decay=0.1, seed=3).step()
    xi = torch.randn(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = before - 0.5 * (parameter.grad + 0.1 * before + 0.3 * xi)
    assert_close(parameter, expected, FLOAT64_REORDERED, "one noisy step")


def test_parameters_without_gradient_do_not_move() -> None:
    parameter = nn.Parameter(torch.ones(3))
    NoisyGD([parameter], lr=1.0, noise_variance=1.0).step()
    assert torch.equal(parameter.detach(), torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0, "noise_variance": 1.0}, "lr must be positive"),
        ({"lr": 0.1, "noise_variance": -1.0}, "is a variance"),
    ],
)
def test_noisy_gd_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoisyGD([nn.Parameter(torch.zeros(2))], **kwargs)


# ------------------------------------------------------------ gradient variance at init
def test_coordinate_variance_matches_numpy_of_per_batch_gradients() -> None:
    model = mlp(24, dtype=torch.float64)
    inputs, targets = classification_data(24, 40, dtype=torch.float64)
    batches = [(inputs[i : i + 8], targets[i : i + 8]) for i in range(0, 40, 8)]
    per_batch = np.stack([one_go_gradient(model, x, y)[0].numpy() for x, y in batches])
    variance = gradient_coordinate_variance(model, per_sample_cross_entropy, batches)
    assert variance.dtype == torch.float64
    assert_close(variance, per_batch.var(axis=0, ddof=1), FLOAT64_REORDERED, "unbiased variance per coordinate")
    scale = 0.02
    assert_close(
        isotropic_noise_variance(variance, scale),
        scale * per_batch.var(axis=0, ddof=1).max(),
        FLOAT64_REORDERED,
        "c·max",
    )


def test_coordinate_variance_restores_gradients() -> None:
    model = mlp(25)
    inputs, targets = classification_data(25, 16)
    batches = [(inputs[:8], targets[:8]), (inputs[8:], targets[8:])]
    gradient_coordinate_variance(model, per_sample_cross_entropy, batches)
    assert all(p.grad is None for p in model.parameters())
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 3.0)
    gradient_coordinate_variance(model, per_sample_cross_entropy, batches)
    assert all(p.grad is not None and bool((p.grad == 3.0).all()) for p in model.parameters())


def test_variance_bad_input() -> None:
    model = mlp(26)
    inputs, targets = classification_data(26, 8)
    with pytest.raises(ValueError, match="at least 2 minibatches, got 1"):
        gradient_coordinate_variance(model, per_sample_cross_entropy, [(inputs, targets)])
    with pytest.raises(ValueError, match="scale must be non-negative"):
        isotropic_noise_variance(torch.ones(3), -0.1)
