"""The batch-norm mode of a measurement is a stated choice, and the model comes back as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import (
    BATCHNORM_MODES,
    BatchNormMode,
    batchnorm_layers,
    check_batchnorm_mode,
    measuring,
)
from tests.helpers import (
    FLOAT32_REORDERED,
    assert_close,
    assert_same_state,
    mlp,
    state_snapshot,
    training_flags,
    warm_batchnorm,
)


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)),
    )


def test_the_three_modes() -> None:
    assert BATCHNORM_MODES == ("train", "eval", "recompute")
    for mode in BATCHNORM_MODES:
        assert check_batchnorm_mode(mode) == mode


@pytest.mark.parametrize("mode", ["Train", "", "batch"])
def test_unknown_mode_names_the_choices(mode: str) -> None:
    with pytest.raises(ValueError, match=f"unknown batch-norm mode {mode!r}; choose one of train, eval, recompute"):
        check_batchnorm_mode(mode)
    with (
        pytest.raises(ValueError, match="unknown batch-norm mode"),
        measuring(bn_net(), mode),  # type: ignore[arg-type]  # deliberately not a mode: the run-time check is under test
    ):
        pass


def test_batchnorm_layers_found_at_any_depth() -> None:
    model = bn_net()
    inner = model[4]
    assert isinstance(inner, nn.Sequential)
    assert batchnorm_layers(model) == [model[1], inner[1]]
    assert batchnorm_layers(mlp(0)) == []


@pytest.mark.parametrize("mode", BATCHNORM_MODES)
def test_inside_a_measurement(mode: BatchNormMode) -> None:
    model = bn_net().train()
    with measuring(model, mode):
        for module in model.modules():
            is_batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            # Batch statistics in train mode only; dropout and everything else always in eval.
            assert module.training is (is_batchnorm and mode == "train"), type(module).__name__
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert module.track_running_stats is (mode != "train")


@pytest.mark.parametrize("mode", BATCHNORM_MODES)
def test_flags_and_running_statistics_restored(mode: BatchNormMode) -> None:
    model = bn_net().train()
    model[4].eval()  # mixed, so a blanket model.train() afterwards would show
    model[3].eval()
    warm_batchnorm(model, torch.randn(5, 1, 4, 4))
    flags, before = training_flags(model), state_snapshot(model)
    with measuring(model, mode), torch.no_grad():
        model(torch.randn(5, 1, 4, 4))
    assert training_flags(model) == flags
    assert_same_state(before, state_snapshot(model))
    assert all(layer.track_running_stats for layer in batchnorm_layers(model))


def test_restored_after_an_exception() -> None:
    model = bn_net().train()
    flags = training_flags(model)
    with pytest.raises(RuntimeError, match="inside"), measuring(model, "train"):
        raise RuntimeError("inside")
    assert training_flags(model) == flags
    assert all(layer.track_running_stats for layer in batchnorm_layers(model))


def test_train_mode_normalises_by_batch_statistics() -> None:
    layer = nn.BatchNorm1d(3)
    warm_batchnorm(layer, torch.randn(20, 3))
    batch = torch.randn(10, 3) * 4.0 + 2.0
    with measuring(layer, "train"), torch.no_grad():
        normalised = layer(batch)
    expected = (batch - batch.mean(0)) / torch.sqrt(batch.var(0, unbiased=False) + layer.eps)
    assert_close(normalised, expected, FLOAT32_REORDERED, "batch-statistics normalisation")
