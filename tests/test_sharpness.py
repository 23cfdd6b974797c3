"""Top Hessian eigenvalue against the dense autograd Hessian diagonalised by eigvalsh."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, outputs_are_losses
from sgdwalk.instrument.sharpness import (
    EigenvalueChoice,
    hessian_vector_product_operator,
    top_hessian_eigenpair,
    top_hessian_eigenvalue,
)
from tests.helpers import (
    FLOAT32_REORDERED,
    FLOAT64_REORDERED,
    LANCZOS_SEED_TO_SEED,
    LANCZOS_VS_DENSE,
    assert_close,
    assert_same_state,
    classification_data,
    mean_loss_function,
    mlp,
    recomputed_statistics_model,
    state_snapshot,
    training_flags,
    warm_batchnorm,
)


class Quadratic(nn.Module):
    """Per-sample loss ½ (θ − x)ᵀ H (θ − x): the Hessian of the mean is H, whatever the x."""

    hessian: torch.Tensor

    def __init__(self, hessian: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.linspace(-1.0, 1.0, hessian.shape[0], dtype=torch.float64))
        self.register_buffer("hessian", hessian)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.theta - x
        return 0.5 * ((offset @ self.hessian) * offset).sum(dim=1)


def rotated(eigenvalues: list[float], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def quadratic_setting(eigenvalues: list[float], seed: int = 0) -> tuple[Quadratic, MeasurementSet]:
    model = Quadratic(rotated(eigenvalues, seed))
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(10, len(eigenvalues), generator=generator, dtype=torch.float64)
    return model, MeasurementSet(inputs, torch.zeros(10), loss_fn=outputs_are_losses, chunk_size=4)


def dense_eigenvalues(
    model: nn.Module, measurement: MeasurementSet, point: torch.Tensor, **kwargs: object
) -> np.ndarray:
    hessian = torch.autograd.functional.hessian(mean_loss_function(model, measurement, **kwargs), point)  # type: ignore[arg-type]
    return np.linalg.eigvalsh(hessian.numpy())


def largest_magnitude(eigenvalues: np.ndarray) -> float:
    return float(eigenvalues[np.argmax(np.abs(eigenvalues))])


# ------------------------------------------------------------------------- LA versus LM
def test_la_and_lm_differ_on_a_large_negative_eigenvalue() -> None:
    model, measurement = quadratic_setting([-10.0, -1.0, 0.5, 2.0, 3.0])
    point = flat_parameters(model)
    dense = dense_eigenvalues(model, measurement, point)
    assert_close(dense, [-10.0, -1.0, 0.5, 2.0, 3.0], FLOAT64_REORDERED, "the premise: autograd recovers H")
    largest = top_hessian_eigenvalue(model, point, measurement, which="LA")
    magnitude = top_hessian_eigenvalue(model, point, measurement, which="LM")
    assert_close(largest, 3.0, LANCZOS_VS_DENSE, "largest algebraic")
    assert_close(magnitude, -10.0, LANCZOS_VS_DENSE, "largest magnitude keeps its sign")


@pytest.mark.parametrize(("eigenvalues", "la", "lm"), [([-4.0, 1.0], 1.0, -4.0), ([2.5], 2.5, 2.5)], ids=["2d", "1d"])
def test_tiny_models_use_the_exact_dense_path(eigenvalues: list[float], la: float, lm: float) -> None:
    model, measurement = quadratic_setting(eigenvalues)
    point = flat_parameters(model)
    assert_close(top_hessian_eigenvalue(model, point, measurement, which="LA"), la, FLOAT64_REORDERED, "LA")
    assert_close(top_hessian_eigenvalue(model, point, measurement, which="LM"), lm, FLOAT64_REORDERED, "LM")


# ------------------------------------------------------------- a network, dense reference
@pytest.mark.parametrize("reuse_graph", [True, False], ids=["one-graph", "by-chunks"])
@pytest.mark.parametrize("which", ["LA", "LM"])
def test_network_matches_dense_hessian(which: EigenvalueChoice, reuse_graph: bool) -> None:
    model = mlp(11, dtype=torch.float64)
    inputs, targets = classification_data(11, 24, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, chunk_size=10)
    point = flat_parameters(model) * 3.0  # larger weights: a spectrum with negative curvature too
    dense = dense_eigenvalues(model, measurement, point)
    assert dense[0] < 0 < dense[-1]
    expected = dense[-1] if which == "LA" else largest_magnitude(dense)
    value = top_hessian_eigenvalue(model, point, measurement, which=which, reuse_graph=reuse_graph)
    assert_close(value, expected, LANCZOS_VS_DENSE, f"{which}, reuse_graph={reuse_graph}")


def batchnorm_reference(
    model: nn.Module, point: torch.Tensor, measurement: MeasurementSet, bn_mode: BatchNormMode
) -> nn.Module:
    """A copy of the model whose plain forward is what ``bn_mode`` asks a measurement to see."""
    if bn_mode == "recompute":
        return recomputed_statistics_model(model, point, measurement)
    reference = copy.deepcopy(model).eval()
    if bn_mode == "train":
        for layer in reference.modules():
            if isinstance(layer, nn.BatchNorm1d):
                layer.train()
                layer.track_running_stats = False
                layer.running_mean = layer.running_var = None  # batch statistics, nothing to update
    return reference


@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
def test_batchnorm_modes_match_dense_hessian(bn_mode: BatchNormMode) -> None:
    model = mlp(12, batchnorm=True, dropout=0.5, dtype=torch.float64)
    inputs, targets = classification_data(12, 24, dtype=torch.float64)
    warm_batchnorm(model, inputs)
    measurement = MeasurementSet(inputs, targets, chunk_size=12)
    point = flat_parameters(model)
    reference = batchnorm_reference(model, point, measurement, bn_mode)
    expected = dense_eigenvalues(reference, measurement, point)[-1]
    value = top_hessian_eigenvalue(model, point, measurement, bn_mode=bn_mode)
    assert_close(value, expected, LANCZOS_VS_DENSE, f"bn {bn_mode}")


def test_the_three_batchnorm_modes_give_different_sharpness() -> None:
    model = mlp(12, batchnorm=True, dtype=torch.float64)
    inputs, targets = classification_data(12, 24, dtype=torch.float64)
    warm_batchnorm(model, inputs)
    measurement = MeasurementSet(inputs, targets, chunk_size=12)
    point = flat_parameters(model)
    values = {
        mode: top_hessian_eigenvalue(model, point, measurement, bn_mode=mode) for mode in ("train", "eval", "recompute")
    }
    assert len(set(values.values())) == 3, values


@pytest.mark.parametrize("reuse_graph", [True, False], ids=["one-graph", "by-chunks"])
def test_hessian_vector_products_match_dense_hessian(reuse_graph: bool) -> None:
    model = mlp(13, dtype=torch.float64)
    inputs, targets = classification_data(13, 20, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, chunk_size=8)
    point = flat_parameters(model)
    hessian = torch.autograd.functional.hessian(mean_loss_function(model, measurement), point)
    product = hessian_vector_product_operator(model, point, measurement, reuse_graph=reuse_graph)
    vector = torch.randn(point.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_close(product(vector), hessian @ vector, FLOAT64_REORDERED, "H v")
    assert_close(product(2.0 * vector), 2.0 * (hessian @ vector), FLOAT64_REORDERED, "linear in v")


# --------------------------------------------------------------------------- seeding
def test_same_seed_same_value_and_seeds_agree() -> None:
    model = mlp(14, dtype=torch.float64)
    inputs, targets = classification_data(14, 20, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets)
    point = flat_parameters(model)
    first = top_hessian_eigenvalue(model, point, measurement, seed=3)
    assert top_hessian_eigenvalue(model, point, measurement, seed=3) == first
    assert_close(top_hessian_eigenvalue(model, point, measurement, seed=4), first, LANCZOS_SEED_TO_SEED, "seed 4 vs 3")


def test_estimate_touches_neither_model_nor_random_streams() -> None:
    model = mlp(15, batchnorm=True, dropout=0.5)
    inputs, targets = classification_data(15, 20)
    warm_batchnorm(model, inputs)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    flags, before = training_flags(model), state_snapshot(model)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state(legacy=True)
    for bn_mode in ("train", "eval", "recompute"):
        top_hessian_eigenvalue(
            model, flat_parameters(model), MeasurementSet(inputs, targets, chunk_size=8), bn_mode=bn_mode
        )
    assert_same_state(before, state_snapshot(model))
    assert training_flags(model) == flags
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state(legacy=True)  # the tuple form (numpy's stubs type the default as a dict)
    assert isinstance(after, tuple) and isinstance(numpy_state, tuple)
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


# -------------------------------------------------------------------------- bad input
def test_invalid_choices_are_refused() -> None:
    model, measurement = quadratic_setting([1.0, 2.0, 3.0])
    point = flat_parameters(model)
    with pytest.raises(
        ValueError, match=r"which must be 'LA' \(largest algebraic\) or 'LM' \(largest magnitude\), got 'SA'"
    ):
        top_hessian_eigenvalue(model, point, measurement, which="SA")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown batch-norm mode 'batch'"):
        top_hessian_eigenvalue(model, point, measurement, bn_mode="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a vector of 3 parameters"):
        top_hessian_eigenvalue(model, torch.zeros(4, dtype=torch.float64), measurement)


# ------------------------------------------------------------------------- warm start
def test_a_warm_start_near_the_answer_takes_fewer_products_for_the_same_value() -> None:
    """A quadratic with a known spectrum, started from the top eigenvector of a nearby
    Hessian (a step's worth of change) beside the cold start: the exact top eigenvalue, in
    fewer products. Forty dimensions: in a dozen, Lanczos exhausts the space about as soon
    from any start (8 products from both)."""
    eigenvalues = [10.0, 7.0, *np.geomspace(5.0, 0.01, 38).tolist()]
    model, measurement = quadratic_setting(eigenvalues, seed=3)
    point = flat_parameters(model)
    nearby = model.hessian + 0.05 * rotated(eigenvalues, seed=4)
    previous = np.linalg.eigh(nearby.numpy())[1][:, -1]
    cold = top_hessian_eigenpair(model, point, measurement)
    warm = top_hessian_eigenpair(model, point, measurement, warm_start=previous)
    for pair in (cold, warm):
        assert_close(pair.value, max(eigenvalues), LANCZOS_VS_DENSE, f"{pair.products} products")
    assert warm.products < cold.products


def test_a_warm_start_in_another_block_still_finds_the_top_eigenvalue() -> None:
    """A block-diagonal Hessian (parts of a model that do not interact: two towers, two tasks)
    whose top eigenvalue has moved to the other block since the previous step: Krylov from the
    old top eigenvector alone stays in its block and returns its eigenvalue, an exact one, 8 %
    low in the case a second pair of eyes found. The cold start is kept beside the warm vector."""
    eigenvalues = [4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
    hessian = torch.block_diag(rotated(eigenvalues[1::2], seed=6), rotated(eigenvalues[0::2], seed=7))
    model = Quadratic(hessian)
    inputs = torch.randn(10, len(eigenvalues), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    measurement = MeasurementSet(inputs, torch.zeros(10), loss_fn=outputs_are_losses, chunk_size=4)
    point = flat_parameters(model)
    # The first block's top eigenvector (eigenvalue 3), the second block all zeros.
    previous = np.concatenate([np.linalg.eigh(hessian[:6, :6].numpy())[1][:, -1], np.zeros(6)])
    warm = top_hessian_eigenpair(model, point, measurement, warm_start=previous)
    assert_close(warm.value, max(eigenvalues), LANCZOS_VS_DENSE, f"{warm.products} products")


@pytest.mark.parametrize(
    "unusable",
    [np.zeros(12), np.full(12, np.nan), np.ones(5)],
    ids=["zero", "not-finite", "wrong-size"],
)
def test_a_vector_that_cannot_start_lanczos_falls_back_to_the_cold_start(unusable: np.ndarray) -> None:
    model, measurement = quadratic_setting([4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01], seed=5)
    point = flat_parameters(model)
    cold = top_hessian_eigenpair(model, point, measurement, seed=2)
    fallback = top_hessian_eigenpair(model, point, measurement, seed=2, warm_start=unusable)
    assert (fallback.value, fallback.products) == (cold.value, cold.products)
    assert np.array_equal(fallback.vector, cold.vector)


# ------------------------------------------------------------- chunks of the products
def test_products_in_smaller_chunks_are_the_one_chunk_products_reordered() -> None:
    """``hvp_chunk_size``: the set's Hessian-vector products read it in other chunks; without
    batch norm in train mode each sample's loss is its own, so only the order of the sums moves."""
    model = mlp(13, dtype=torch.float64)
    inputs, targets = classification_data(13, 24, dtype=torch.float64)
    whole = MeasurementSet(inputs, targets, chunk_size=24)
    point = flat_parameters(model)
    vector = torch.randn(point.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one_chunk = hessian_vector_product_operator(model, point, whole, bn_mode="eval")(vector)
    for chunk in (5, 8):
        chunked = hessian_vector_product_operator(model, point, whole.chunked(chunk), bn_mode="eval")(vector)
        assert_close(chunked, one_chunk, FLOAT64_REORDERED, f"H v in chunks of {chunk}")


def test_sharpness_in_smaller_chunks_is_the_one_chunk_value() -> None:
    model = mlp(13)
    inputs, targets = classification_data(13, 24)
    whole = MeasurementSet(inputs, targets, chunk_size=24)
    point = flat_parameters(model)
    # The same start (no gradient in it: reuse_graph False on both), so the same Lanczos up to rounding.
    one_chunk = top_hessian_eigenvalue(model, point, whole, bn_mode="eval", reuse_graph=False)
    chunked = top_hessian_eigenvalue(model, point, whole.chunked(6), bn_mode="eval", reuse_graph=False)
    assert_close(chunked, one_chunk, FLOAT32_REORDERED, "sharpness in chunks of 6")
    # The default: one chunk reuses its graph and starts from the gradient; both converge.
    default = top_hessian_eigenvalue(model, point, whole, bn_mode="eval")
    assert_close(default, chunked, LANCZOS_SEED_TO_SEED, "one graph against chunks of 6")


def test_a_rechunked_set_is_the_same_samples() -> None:
    inputs, targets = classification_data(13, 10)
    whole = MeasurementSet(inputs, targets, chunk_size=10)
    assert whole.chunked(10) is whole
    chunked = whole.chunked(4)
    assert (chunked.size, chunked.chunk_size) == (10, 4)
    assert [len(batch[1]) for batch in chunked.chunks()] == [4, 4, 2]
    assert torch.equal(torch.cat([batch[0] for batch in chunked.chunks()]), inputs)
