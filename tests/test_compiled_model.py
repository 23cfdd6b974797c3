"""A model returned by ``torch.compile`` is measured through its original module.

The same seeded walk is trained twice, once through ``torch.compile(model)``: the records are
equal field by field (``==`` on floats: bitwise). The compiled run uses a backend that traces
the model with Dynamo and runs the traced graph with eager kernels: training is then bitwise
the uncompiled training, so the records can be compared exactly. Inductor's generated kernels
round differently (a walk trained through them is another walk) and take most of a minute to
compile here; the unwrap is what is tested, not inductor. A backend that counts the compiled graph's calls shows that the tracker's
measurements never go through the compiled forward: it runs once per training step only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.instrument.wrappers import unwrapped
from tests.helpers import classification_data, mlp

STEPS, BATCH, TRAIN_SIZE, MEASURE_SIZE = 4, 8, 48, 32


class CountingBackend:
    """A ``torch.compile`` backend that runs the traced graph eagerly and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.calls += 1
            return graph.forward(*args)

        return counted


def compiled(model: nn.Module, backend: str | CountingBackend) -> nn.Module:
    """``torch.compile(model)``, typed as the module it is (torch types it as any callable)."""
    wrapper = torch.compile(model, backend=backend)
    assert isinstance(wrapper, nn.Module)
    return wrapper


def walk(compile_with: CountingBackend | None, seed: int = 0) -> tuple[nn.Module, list[StepRecord]]:
    torch.manual_seed(seed)
    model: nn.Module = mlp(seed)
    trained = model if compile_with is None else compiled(model, compile_with)
    inputs, targets = classification_data(seed, TRAIN_SIZE)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.2, momentum=0.9)
    tracker = WalkTracker(trained, measurement, num_alphas=4, sharpness_every=2)
    tracker.attach(optimizer)
    for _ in range(STEPS):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(trained(inputs[batch]), targets[batch])
        loss.backward()
        tracker.note_loss(loss)
        optimizer.step()
    return trained, tracker.close()


@pytest.mark.slow  # torch.compile traces and compiles the model (seconds per test)
def test_a_compiled_model_is_measured_through_its_original_module() -> None:
    model = mlp(0)
    wrapper = compiled(model, "eager")
    assert unwrapped(wrapper) is model
    assert ParameterLayout.of(unwrapped(wrapper)) == ParameterLayout.of(model), "no _orig_mod. prefix"
    assert unwrapped(nn.DataParallel(wrapper)) is model, "any nesting of wrappers"


@pytest.mark.slow  # torch.compile traces and compiles the model (seconds per test)
def test_compiled_model_records_equal_the_uncompiled_model_records_bitwise() -> None:
    backend = CountingBackend()
    plain_model, expected = walk(None)
    compiled_model, actual = walk(backend)
    assert [r.step for r in actual] == list(range(STEPS))
    assert actual == expected  # dataclass equality: every float compared with ==
    assert any(r.sharpness is not None for r in actual), "sharpness was measured through the unwrapped model"
    assert torch.equal(flat_parameters(unwrapped(compiled_model)), flat_parameters(plain_model))
    assert backend.calls == STEPS, f"the compiled forward ran {backend.calls} times for {STEPS} training steps"
