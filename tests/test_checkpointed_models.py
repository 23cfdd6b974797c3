"""Curvature of a model that checkpoints its activations (``torch.utils.checkpoint``).

Found by second pairs of eyes trying the tracker on such models: with the reentrant form the
Hessian-vector products left the checkpointed block out, and sharpness was 32 % low without a
word (now said: the block's parameters got no gradient); with the non-reentrant form around
dropout or batch norm, a set measured in one chunk crashed in the products ("Recomputed
values ... have different metadata"), and in ``recompute`` mode, or at a point the model does
not hold, the recomputed block read the model's own statistics and parameters. The reference is
the same network without checkpointing, whose sharpness the dense Hessian tests pin
(``tests/test_sharpness.py``): checkpointing recomputes the same forward, so the value is the
same up to Lanczos' tolerance.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sharpness import top_hessian_eigenvalue
from tests.helpers import LANCZOS_SEED_TO_SEED, assert_close, classification_data

SAMPLES = 24


class Checkpointed(nn.Module):
    """A tanh MLP whose first block (batch norm and dropout in it) runs under a checkpoint."""

    def __init__(self, use_reentrant: bool | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 3)
        self.use_reentrant = use_reentrant  # None: no checkpoint, the reference

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.use_reentrant is None or not torch.is_grad_enabled():
            return self.head(self.block(inputs))
        hidden = checkpoint(self.block, inputs, use_reentrant=self.use_reentrant)
        assert isinstance(hidden, torch.Tensor)
        return self.head(hidden)


def setting(use_reentrant: bool | None, chunk_size: int = SAMPLES) -> tuple[nn.Module, MeasurementSet]:
    model = Checkpointed(use_reentrant).double()
    inputs, targets = classification_data(0, SAMPLES, inputs=6, dtype=torch.float64)
    model.train()
    return model, MeasurementSet(inputs, targets, chunk_size=chunk_size)


@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
@pytest.mark.parametrize("chunk_size", [SAMPLES, SAMPLES // 3], ids=["one chunk", "three chunks"])
def test_a_non_reentrant_checkpoint_gives_the_sharpness_of_the_network_without_it(
    bn_mode: BatchNormMode, chunk_size: int
) -> None:
    model, measurement = setting(use_reentrant=False, chunk_size=chunk_size)
    reference, _ = setting(use_reentrant=None)
    point = flat_parameters(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    value = top_hessian_eigenvalue(model, point, measurement, bn_mode=bn_mode)
    expected = top_hessian_eigenvalue(reference, point, measurement, bn_mode=bn_mode)
    assert_close(value, expected, LANCZOS_SEED_TO_SEED, f"{bn_mode}, chunks of {chunk_size}")
    assert model.training, "the model's own mode is left as it was"
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_a_non_reentrant_checkpoint_at_a_point_the_model_does_not_hold() -> None:
    model, measurement = setting(use_reentrant=False)
    reference, _ = setting(use_reentrant=None)
    point = flat_parameters(model) + 0.3 * torch.randn(flat_parameters(model).shape, dtype=torch.float64)
    value = top_hessian_eigenvalue(model, point, measurement)
    expected = top_hessian_eigenvalue(reference, point, measurement)
    assert_close(value, expected, LANCZOS_SEED_TO_SEED, "another point")
    assert torch.equal(flat_parameters(model), flat_parameters(reference)), "the model's parameters are its own again"


def test_a_reentrant_checkpoint_that_keeps_no_graph_is_said() -> None:
    model, measurement = setting(use_reentrant=True)
    with (
        pytest.warns(UserWarning, match=r"None of the inputs have requires_grad=True"),
        pytest.warns(UserWarning, match=r"block\.0\.weight, block\.0\.bias.*no gradient.*use_reentrant=True"),
    ):
        top_hessian_eigenvalue(model, flat_parameters(model), measurement)


def test_a_frozen_block_under_a_reentrant_checkpoint_is_measured_without_a_word() -> None:
    # Linear probing: nothing trainable is cut, so nothing is said beyond torch's own warning.
    model, measurement = setting(use_reentrant=True)
    reference, _ = setting(use_reentrant=None)
    for network in (model, reference):
        network.block.requires_grad_(False)
    point = flat_parameters(model)
    with pytest.warns(UserWarning, match=r"None of the inputs have requires_grad=True") as said:
        value = top_hessian_eigenvalue(model, point, measurement)
    assert not [warning for warning in said if "no gradient in the forward" in str(warning.message)]
    assert_close(value, top_hessian_eigenvalue(reference, point, measurement), LANCZOS_SEED_TO_SEED, "frozen block")
