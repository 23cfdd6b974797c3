"""Flattened parameters and gradients, cosine, distance and norm against numpy in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sgdwalk.instrument.geometry import cosine, distance, flat_gradient, flat_parameters, norm, trainable_parameters
from sgdwalk.instrument.tolerances import COSINE_NORM_PRODUCT_FLOOR
from tests.helpers import FLOAT64_REORDERED, assert_close, linear_layer, mlp


def numpy_parameters(model: nn.Module) -> np.ndarray:
    return np.concatenate(
        [p.detach().numpy().astype(np.float64).ravel() for p in model.parameters() if p.requires_grad]
    )


def test_flat_parameters_concatenates_trainable_parameters_in_order() -> None:
    model = mlp(0, batchnorm=True)
    flat = flat_parameters(model)
    assert flat.dtype == torch.float32 and flat.ndim == 1
    np.testing.assert_array_equal(flat.numpy().astype(np.float64), numpy_parameters(model))


def test_flat_parameters_leave_out_buffers_and_frozen_parameters() -> None:
    model = mlp(0, batchnorm=True)
    linear_layer(model, 0).bias.requires_grad_(False)
    expected = sum(p.numel() for p in model.parameters()) - linear_layer(model, 0).bias.numel()
    assert flat_parameters(model).numel() == expected  # running_mean / running_var are not coordinates
    assert len(trainable_parameters(model)) == len(list(model.parameters())) - 1


def test_flat_parameters_is_a_copy() -> None:
    model = mlp(0)
    flat = flat_parameters(model)
    flat.add_(1.0)
    np.testing.assert_array_equal(flat_parameters(model).numpy(), numpy_parameters(model).astype(np.float32))
    assert not flat.requires_grad


@pytest.mark.parametrize("unused", [False, True], ids=["every-gradient", "a-parameter-without-gradient"])
def test_flat_gradient_is_the_sgd_update_direction_with_weight_decay(unused: bool) -> None:
    # Independent reference: torch.optim.SGD's own step, θ_before − θ_after = lr · (g + λθ); a
    # parameter whose .grad is None (an unused head under zero_grad(set_to_none=True)) is
    # skipped by the step, its decay too, so its entries are zeros.
    model = mlp(1, dtype=torch.float64)
    inputs, targets = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(inputs), targets).backward()
    if unused:
        linear_layer(model, 0).weight.grad = None
    weight_decay, lr = 0.3, 0.5
    direction = flat_gradient(model, weight_decay)
    before = flat_parameters(model)
    torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay).step()
    assert_close(direction, (before - flat_parameters(model)) / lr, FLOAT64_REORDERED, "g + λθ")


def test_flat_gradient_without_grad_is_zero_and_leaves_grad_alone() -> None:
    model = mlp(2)
    assert torch.equal(flat_gradient(model), torch.zeros(flat_parameters(model).numel()))
    assert all(p.grad is None for p in model.parameters())
    # Without gradients an optimizer step moves nothing, decay or not.
    assert torch.equal(flat_gradient(model, weight_decay=2.0), torch.zeros(flat_parameters(model).numel()))


def test_flat_gradient_is_a_copy() -> None:
    model = mlp(2)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    flat_gradient(model).mul_(0.0)
    assert all(p.grad is not None and bool((p.grad == 1.0).all()) for p in model.parameters())


class NoParameters(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("function", [flat_parameters, flat_gradient, trainable_parameters])
def test_model_without_parameters_is_refused(function: Callable[[nn.Module], object]) -> None:
    with pytest.raises(ValueError, match="NoParameters has no trainable parameters"):
        function(NoParameters())


def test_fully_frozen_model_is_refused() -> None:
    model = mlp(0).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        flat_parameters(model)


# -------------------------------------------------------------------- vectors vs numpy
def numpy_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosine_distance_norm_match_numpy_float64(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(1000, generator=generator) * 1e3
    b = a + torch.randn(1000, generator=generator)  # nearly parallel: float32 accumulation would show
    a64, b64 = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    assert_close(cosine(a, b), numpy_cosine(a64, b64), FLOAT64_REORDERED, f"cosine, seed {seed}")
    assert_close(distance(a, b), np.linalg.norm(a64 - b64), FLOAT64_REORDERED, f"distance, seed {seed}")
    assert_close(norm(a), np.linalg.norm(a64), FLOAT64_REORDERED, f"norm, seed {seed}")
    assert all(isinstance(value, float) for value in (cosine(a, b), distance(a, b), norm(a)))


def test_cosine_of_matrices_flattens_them() -> None:
    a, b = torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)
    assert_close(cosine(a, b), numpy_cosine(np.arange(6.0), np.ones(6)), FLOAT64_REORDERED, "flattened")


def test_cosine_of_parallel_antiparallel_orthogonal_and_zero_vectors() -> None:
    a = torch.tensor([3.0, 4.0])
    assert cosine(a, 2.5 * a) == pytest.approx(1.0, abs=1e-15)
    assert cosine(a, -a) == pytest.approx(-1.0, abs=1e-15)
    assert cosine(a, torch.tensor([-4.0, 3.0])) == 0.0
    assert cosine(a, torch.zeros(2)) == 0.0  # the angle is undefined: reported as 0, as torch does
    assert cosine(torch.zeros(2), torch.zeros(2)) == 0.0


FINITE = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(st.lists(st.tuples(FINITE, FINITE), min_size=1, max_size=8))
def test_cosine_is_bounded_symmetric_and_scale_free(pairs: list[tuple[float, float]]) -> None:
    a = torch.tensor([x for x, _ in pairs])
    b = torch.tensor([y for _, y in pairs])
    value = cosine(a, b)
    assert -1.0 - 1e-12 <= value <= 1.0 + 1e-12
    assert value == cosine(b, a)
    assert_close(cosine(4.0 * a, b), value, FLOAT64_REORDERED, "scaling by a power of two")


@pytest.mark.parametrize("function", [cosine, distance])
def test_vectors_of_different_shape_are_refused(function: Callable[[torch.Tensor, torch.Tensor], float]) -> None:
    with pytest.raises(ValueError, match=r"differ in shape: \(3,\) vs \(4,\)"):
        function(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="differ in shape"):
        function(torch.zeros(2, 3), torch.zeros(3, 2))


# ------------------------------------------------- fewer float64 copies, the same bits (one block)
def copying_scaled(vector: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The scaling as written before it divided in place: |v| formed, a second copy divided."""
    as_double = vector.detach().double().reshape(-1)
    largest = float(as_double.abs().max()) if as_double.numel() else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return as_double, 1.0
    return as_double / largest, largest


def copying_norm(a: torch.Tensor) -> float:
    scaled, largest = copying_scaled(a)
    return largest * float(torch.linalg.vector_norm(scaled))


def copying_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    (a_unit, _), (b_unit, _) = copying_scaled(a), copying_scaled(b)
    norm_product = float(torch.linalg.vector_norm(a_unit) * torch.linalg.vector_norm(b_unit))
    if norm_product < COSINE_NORM_PRODUCT_FLOOR:
        return 0.0
    return float(torch.dot(a_unit, b_unit)) / norm_product


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["random", "huge", "zero", "nan", "inf", "matrix", "long"])
def test_cosine_distance_norm_are_bitwise_the_copying_formulas(dtype: torch.dtype, case: str) -> None:
    generator = torch.Generator().manual_seed(7)
    # "long": more than two of distance's widening blocks (2**20 elements), the last one short.
    size = 2_500_000 if case == "long" else 1000
    a = torch.randn(size, generator=generator, dtype=dtype)
    b = a + 1e-3 * torch.randn(size, generator=generator, dtype=dtype)
    if case == "huge":
        a, b = a * 1e30, b * 1e30
    elif case == "zero":
        a = torch.zeros_like(a)
    elif case in ("nan", "inf"):
        a[3] = math.nan if case == "nan" else -math.inf
    elif case == "matrix":
        a, b = a.reshape(40, 25).T, b.reshape(40, 25).T  # not contiguous
    a_before, b_before = a.clone(), b.clone()
    for actual, expected in (
        (norm(a), copying_norm(a)),
        (distance(a, b), copying_norm(a.double() - b.double())),
        (cosine(a, b), copying_cosine(a, b)),
    ):
        if case == "long":
            # Longer than one widening block: summed block by block, without a float64 copy
            # of the whole vector; the same sums in another order.
            assert_close(actual, expected, FLOAT64_REORDERED)
        else:
            assert actual == expected or (math.isnan(actual) and math.isnan(expected)), (actual, expected)
    # In-place work happens on copies only: the caller's vectors are left as they were.
    torch.testing.assert_close(a, a_before, rtol=0.0, atol=0.0, equal_nan=True)
    torch.testing.assert_close(b, b_before, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("case", ["huge", "zero", "nan", "inf", "opposite-inf"])
def test_vectors_of_several_blocks_keep_the_one_block_rules_for_extreme_entries(case: str) -> None:
    """Past one widening block the sums run block by block: overflow, zeros, NaN and inf must
    still come out as they do for a vector of one block (the same vector, shortened)."""
    generator = torch.Generator().manual_seed(11)
    a = torch.randn(2_500_000, generator=generator)
    b = torch.randn(2_500_000, generator=generator)
    if case == "huge":
        a, b = a.double() * 1e300, b.double() * 1e300  # squares overflow float64's range unless scaled
    elif case == "zero":
        a = torch.zeros_like(a)
    elif case == "nan":
        a[2_000_000] = math.nan
    elif case == "inf":
        a[2_000_000] = math.inf
    elif case == "opposite-inf":
        a[5], b[5], a[2_000_000], b[2_000_000] = math.inf, 1.0, math.inf, -1.0
    short_a, short_b = a[[5, 2_000_000, 7, 8]], b[[5, 2_000_000, 7, 8]]
    for long_value, short_value in (
        (norm(a), norm(short_a)),
        (distance(a, b), distance(short_a, short_b)),
        (cosine(a, b), cosine(short_a, short_b)),
    ):
        assert math.isnan(long_value) == math.isnan(short_value), (long_value, short_value)
        assert math.isinf(long_value) == math.isinf(short_value), (long_value, short_value)
        assert (long_value == 0.0) == (short_value == 0.0), (long_value, short_value)
    if case == "huge":
        reference = np.linalg.norm(a.numpy() / 1e300) * 1e300
        assert_close(norm(a), float(reference), FLOAT64_REORDERED)
