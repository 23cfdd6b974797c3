"""Models whose attention calls ``scaled_dot_product_attention`` are measured, sharpness included.

torch's fused attention kernels have no second derivative, so the Hessian-vector products run
attention on the math kernel (``instrument/second_order.py``). The references are independent
of the instrument: the dense float64 Hessian of the same loss, built by
``torch.autograd.functional.hessian``, of the model with its attention written out as
softmax(QKᵀ/√d)V (no SDPA at all), or for ``nn.TransformerEncoderLayer`` (whose attention
cannot be written out without re-implementing it) of the layer itself with the math kernel
chosen by the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, segment_losses
from sgdwalk.instrument.sharpness import top_hessian_eigenvalue
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import LANCZOS_VS_DENSE, assert_close

STEPS, LENGTH, WIDTH, CLASSES, TRAIN_SIZE, MEASURE_SIZE = 3, 5, 4, 3, 24, 16


class SelfAttention(nn.Module):
    """One self-attention layer and a linear head on the mean over positions; ``explicit``
    writes the attention out as softmax(QKᵀ/√d)V. Each forward notes whether torch's fused
    (flash) kernel was allowed when it ran."""

    def __init__(self, *, explicit: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.explicit = explicit
        self.flash_allowed: list[bool] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.flash_allowed.append(torch.backends.cuda.flash_sdp_enabled())
        query, key, value = self.qkv(inputs).chunk(3, dim=-1)
        if self.explicit:
            weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(WIDTH), dim=-1)
            attended = weights @ value
        else:
            attended = F.scaled_dot_product_attention(query, key, value)
        logits: torch.Tensor = self.head(attended.mean(dim=1))
        return logits


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoderLayer`` (which calls SDPA) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(WIDTH, nhead=2, dim_feedforward=8, dropout=0.0, batch_first=True)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.layer(inputs).mean(dim=1))
        return logits


def sequences(seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, LENGTH, WIDTH, generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, CLASSES, (size,), generator=generator)


def dense_top_eigenvalue(model: nn.Module, point: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The largest eigenvalue of the full Hessian of the mean loss at ``point`` (eigvalsh), with
    the math kernel for any SDPA the model calls."""
    layout = ParameterLayout.of(model)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, layout.unflatten(flat), (inputs,)), targets)

    with sdpa_kernel(SDPBackend.MATH):
        hessian = torch.autograd.functional.hessian(loss, point.detach())
    return float(np.linalg.eigvalsh(hessian.numpy())[-1])


def tracked_walk(model: nn.Module, seed: int = 0) -> tuple[list[float | None], list[torch.Tensor]]:
    """A tracked SGD walk with sharpness at every step: each record's sharpness and θ_{t+1}."""
    inputs, targets = sequences(seed, TRAIN_SIZE)
    tracker = WalkTracker(model, MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE]), sharpness_every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ends = []
    for step in range(STEPS):
        batch = slice(step * 8, step * 8 + 8)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=0.5):
            optimizer.step()
        ends.append(flat_parameters(model))
    return [record.sharpness for record in tracker.close()], ends


def test_sdpa_sharpness_equals_the_explicit_attention_hessian() -> None:
    torch.manual_seed(0)
    model = SelfAttention().double()
    explicit = SelfAttention(explicit=True).double()
    sharpness, ends = tracked_walk(model)
    inputs, targets = sequences(0, TRAIN_SIZE)
    for step, (value, end) in enumerate(zip(sharpness, ends, strict=True)):
        expected = dense_top_eigenvalue(explicit, end, inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE])
        assert value is not None
        assert_close(value, expected, LANCZOS_VS_DENSE, f"step {step}")


@pytest.mark.slow  # a transformer layer's Lanczos sharpness: an end-to-end check
def test_a_tracked_transformer_encoder_layer_has_its_sharpness() -> None:
    torch.manual_seed(0)
    model = EncoderClassifier().double()
    sharpness, ends = tracked_walk(model)
    inputs, targets = sequences(0, TRAIN_SIZE)
    for step, (value, end) in enumerate(zip(sharpness, ends, strict=True)):
        expected = dense_top_eigenvalue(model, end, inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE])
        assert value is not None
        assert_close(value, expected, LANCZOS_VS_DENSE, f"step {step}")


def test_only_the_second_order_forwards_give_up_the_fused_kernel() -> None:
    torch.manual_seed(0)
    model = SelfAttention().double()
    inputs, targets = sequences(0, MEASURE_SIZE)
    measurement = MeasurementSet(inputs, targets, chunk_size=8)
    start = flat_parameters(model)
    segment_losses(model, start, start + 0.01, [0.0, 0.5], measurement)
    first_order, model.flash_allowed = model.flash_allowed, []
    top_hessian_eigenvalue(model, start, measurement)
    assert first_order and all(first_order), "segment losses keep the fused kernel"
    assert model.flash_allowed and not any(model.flash_allowed), "Hessian-vector products run the math kernel"
    assert torch.backends.cuda.flash_sdp_enabled(), "the caller's kernel choice is restored"
