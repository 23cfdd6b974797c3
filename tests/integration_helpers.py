"""What the integration tests share: real records of a tiny walk, and optional libraries that
CI must have (``scripts/setup.sh`` installs the extras) but a bare checkout may skip."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
import torch
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import classification_data, mlp


def optional_library(module: str, extra: str) -> ModuleType:
    """``module``, or a skip naming the extra; under CI (``CI`` set) a missing extra fails,
    so the adapters' round trips cannot pass there by being skipped."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs the {extra!r} extra: pip install -e '.[{extra}]'")


def walk_records(steps: int = 5) -> list[StepRecord]:
    """Records of a tiny seeded walk: a first step without cosine, sharpness on even steps only
    (None on the others), the optional quantities on theirs, standard errors and barrier tests:
    every kind of field a sink meets."""
    torch.manual_seed(0)
    model = mlp(0)
    inputs, targets = classification_data(0, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = WalkTracker(
        model,
        MeasurementSet(inputs, targets, chunk_size=16),
        num_alphas=4,
        sharpness_every=2,
        # The optional quantities on their own schedules (a tuple field among them); all but the
        # preconditioned sharpness, which SGD has none of.
        hessian_trace_every=2,
        gradient_noise_scale_every=3,
        top_eigenvalues_every=2,
        top_eigenvalues_k=3,
    )
    tracker.attach(optimizer)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[:8]), targets[:8])
        loss.backward()
        tracker.note_loss(loss)
        optimizer.step()
    return tracker.close()
