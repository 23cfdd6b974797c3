"""Vectors read where the model keeps them (``PiecewiseVector``), bitwise the flat copies.

The tracker takes the gradient's cosine and norm, the update's cosine and θ_{t+1}'s distances
from the parameters and gradients in place, to hold fewer copies of the parameters: each
must be exactly what the same function gives on the flat vector it replaces, on vectors of
one widening block and of several (where the blocks span parameters), with per-parameter
weight decay, a parameter without a gradient and a frozen one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdwalk.instrument.geometry import (
    _WIDENING_BLOCK,
    all_finite,
    cosine,
    distance,
    flat_gradient,
    flat_parameters,
    gradient_in_place,
    norm,
    parameters_in_place,
    update_in_place,
)
from tests.helpers import linear_layer

SIZES = {"one block": 300, "several blocks": 1100}  # hidden width: 1100 × 1000 > 2^20 entries


def model_with_gradients(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1000, hidden), nn.Tanh(), nn.Linear(hidden, 7), nn.Linear(7, 3))
    linear_layer(model, 0).bias.requires_grad_(False)  # frozen: in neither vector
    model(torch.randn(5, 1000)).square().sum().backward()
    linear_layer(model, 3).weight.grad = None  # a parameter without a gradient: zeros, as SGD reads it
    return model


@pytest.mark.parametrize("hidden", SIZES.values(), ids=SIZES.keys())
def test_in_place_vectors_are_bitwise_the_flat_copies(hidden: int) -> None:
    model = model_with_gradients(hidden, seed=0)
    decays = [1e-3, 0.0, 5e-4, 0.0, 2e-2]  # one per trainable parameter, as optimizer groups give
    start = flat_parameters(model) - 1e-3 * torch.randn(flat_parameters(model).shape)
    other = torch.randn(start.shape)
    assert (start.numel() > _WIDENING_BLOCK) == (hidden == SIZES["several blocks"])
    pairs = [
        (parameters_in_place(model), flat_parameters(model)),
        (gradient_in_place(model, decays), flat_gradient(model, decays)),
        (gradient_in_place(model, 1e-2), flat_gradient(model, 1e-2)),
        (update_in_place(model, start), flat_parameters(model) - start),
    ]
    for in_place, flat in pairs:
        assert torch.equal(in_place.whole(), flat)
        assert torch.equal(in_place.block(999, 5000), flat[999:5999])  # across parameters
        assert norm(in_place) == norm(flat)
        assert cosine(other, in_place) == cosine(other, flat)
        assert cosine(in_place, other) == cosine(flat, other)
        assert distance(in_place, other) == distance(flat, other)
        assert distance(other, in_place) == distance(other, flat)


def test_a_non_finite_parameter_is_seen_in_place() -> None:
    model = model_with_gradients(SIZES["several blocks"], seed=1)
    assert all_finite(parameters_in_place(model))
    with torch.no_grad():
        linear_layer(model, 2).weight[3, 4] = float("nan")
    assert not all_finite(parameters_in_place(model))
    assert not all_finite(flat_parameters(model))


def test_an_update_from_a_start_of_another_size_is_refused() -> None:
    model = model_with_gradients(SIZES["one block"], seed=2)
    with pytest.raises(ValueError, match="entries"):
        update_in_place(model, flat_parameters(model)[1:])
