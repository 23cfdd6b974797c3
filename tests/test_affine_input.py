"""The affine-input shortcut of segment_losses against plain evaluation at every α."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.measurement import MeasurementSet, affine_input_layer, segment_losses
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.training.models import ARCHITECTURES, build_model

# float32 forward passes of the mixed first-layer output (1 − α)z0 + αz1 and of the layer at
# mixed weights round differently by a few ulps per activation; after a mean over samples
# the losses agree to ~1e-6 relative. 1e-5 leaves headroom and is far below any height
# or barrier the suites resolve.
AFFINE_SHORTCUT_RTOL = 1e-5


def _perturbed_copy(vector: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return vector + scale * torch.randn(vector.shape, generator=generator)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_shortcut_matches_plain_evaluation(arch: str, bn_mode: BatchNormMode) -> None:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, image_size=28, num_classes=10, width_multiplier=0.125)
    assert affine_input_layer(model) is not None
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    end = _perturbed_copy(start, 0.05, seed=1)
    generator = torch.Generator().manual_seed(2)
    measurement = MeasurementSet(
        torch.randn(24, 1, 28, 28, generator=generator), torch.randint(0, 10, (24,), generator=generator), chunk_size=10
    )
    # 4 grid points and α = 1 cover α = 0, mixed outputs, and the exact end; three chunks
    # (10, 10, 4) cover a short last chunk.
    grid = alpha_grid(4)
    fast = segment_losses(model, start, end, grid, measurement, bn_mode, include_end=True)
    plain = segment_losses(model, start, end, grid, measurement, bn_mode, include_end=True, exploit_affine_input=False)
    np.testing.assert_allclose(fast, plain, rtol=AFFINE_SHORTCUT_RTOL, atol=0)
    # α = 0 runs the whole model at θ_t, unchanged: bitwise equal.
    assert fast[0] == plain[0]


def test_a_model_without_the_method_takes_the_plain_path() -> None:
    assert affine_input_layer(nn.Linear(3, 2)) is None


def test_a_bad_declaration_is_refused() -> None:
    class Declares(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def affine_input_layer(self) -> nn.Module:
            return self.relu

    with pytest.raises(TypeError, match="affine_input_layer"):
        affine_input_layer(Declares())


def test_the_model_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", 1, 28, 10, width_multiplier=0.125)
    layer = affine_input_layer(model)
    assert layer is not None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    measurement = MeasurementSet(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    segment_losses(model, start, _perturbed_copy(start, 0.1, 3), alpha_grid(4), measurement)
    assert "forward" not in vars(layer), "the layer's forward must be restored"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
