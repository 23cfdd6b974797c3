"""losses_at_points / segment_losses against plain forward passes of a copied model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import (
    MeasurementSet,
    ParameterLayout,
    interpolate,
    losses_at_points,
    outputs_are_losses,
    per_sample_cross_entropy,
    recomputed_batchnorm_statistics,
    segment_losses,
)
from sgdwalk.instrument.segment import alpha_grid
from tests.helpers import (
    FLOAT32_REORDERED,
    FLOAT64_REORDERED,
    assert_close,
    assert_same_state,
    classification_data,
    mlp,
    model_at,
    naive_mean_loss,
    recomputed_statistics_model,
    state_snapshot,
    training_flags,
    warm_batchnorm,
)

SET_SIZE = 40
CHUNK = 16  # 40 = 16 + 16 + 8: a ragged last chunk, so the weighting of chunks shows


def segment_ends(model: nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = flat_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    return start, start + 0.3 * torch.randn(start.shape, generator=generator, dtype=start.dtype)


def float64_setting(batchnorm: bool, chunk_size: int = CHUNK) -> tuple[nn.Module, MeasurementSet]:
    model = mlp(3, batchnorm=batchnorm, dtype=torch.float64)
    inputs, targets = classification_data(3, SET_SIZE, dtype=torch.float64)
    if batchnorm:
        warm_batchnorm(model, inputs)
    return model, MeasurementSet(inputs, targets, chunk_size=chunk_size)


# ------------------------------------------------------------------- against references
@pytest.mark.parametrize(
    ("batchnorm", "bn_mode"),
    [(False, "train"), (True, "train"), (True, "eval")],
    ids=["no-bn", "bn-train", "bn-eval"],
)
def test_segment_losses_match_naive_evaluation(batchnorm: bool, bn_mode: BatchNormMode) -> None:
    model, measurement = float64_setting(batchnorm)
    start, end = segment_ends(model, seed=1)
    alphas = alpha_grid(5)
    measured = segment_losses(model, start, end, alphas, measurement, bn_mode)
    expected = [
        naive_mean_loss(model_at(model, start + alpha * (end - start)), measurement, batchnorm_train=bn_mode == "train")
        for alpha in alphas
    ]
    assert measured.dtype == np.float64 and measured.shape == (5,)
    assert_close(measured, expected, FLOAT64_REORDERED, f"segment losses, bn {bn_mode}")


def test_recompute_mode_matches_statistics_reestimated_by_hand() -> None:
    model, measurement = float64_setting(batchnorm=True)
    start, end = segment_ends(model, seed=2)
    measured = segment_losses(model, start, end, [0.0, 0.5], measurement, "recompute")
    expected = [
        naive_mean_loss(recomputed_statistics_model(model, point, measurement), measurement, batchnorm_train=False)
        for point in (start, 0.5 * (start + end))
    ]
    assert_close(measured, expected, FLOAT64_REORDERED, "recomputed statistics")
    # The three modes really differ here, so the comparisons above are not vacuous.
    train, eval_ = (segment_losses(model, start, end, [0.0], measurement, mode)[0] for mode in ("train", "eval"))
    assert len({train, eval_, measured[0]}) == 3


def test_recomputed_statistics_are_the_cumulative_chunk_average() -> None:
    model, measurement = float64_setting(batchnorm=True)
    point = flat_parameters(model)
    buffers = recomputed_batchnorm_statistics(model, point, measurement)
    reference = recomputed_statistics_model(model, point, measurement)
    assert set(buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    for name, value in buffers.items():
        assert_close(value, reference.get_buffer(name), FLOAT64_REORDERED, name)
    assert int(buffers["1.num_batches_tracked"]) == 3  # one per chunk
    assert recomputed_batchnorm_statistics(mlp(0), flat_parameters(mlp(0)), measurement) == {}


def test_without_batchnorm_every_mode_gives_the_same_loss() -> None:
    model, measurement = float64_setting(batchnorm=False)
    point = flat_parameters(model)
    values = [losses_at_points(model, [point], measurement, mode)[0] for mode in ("train", "eval", "recompute")]
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize("chunk_size", [1, 7, 16, SET_SIZE, 1000])
def test_mean_does_not_depend_on_chunk_size_without_batchnorm(chunk_size: int) -> None:
    model = mlp(4)
    inputs, targets = classification_data(4, SET_SIZE)
    start, end = segment_ends(model, seed=4)
    whole = MeasurementSet(inputs, targets, chunk_size=SET_SIZE)
    chunked = MeasurementSet(inputs, targets, chunk_size=chunk_size)
    reference = per_sample_cross_entropy(model_at(model, end)(inputs).double(), targets).mean()
    assert_close(
        losses_at_points(model, [start, end], chunked),
        losses_at_points(model, [start, end], whole),
        FLOAT32_REORDERED,
        f"chunk size {chunk_size}",
    )
    assert_close(losses_at_points(model, [end], chunked)[0], reference, FLOAT32_REORDERED, "one-go mean")


def test_alpha_zero_is_the_start_exactly() -> None:
    start, end = torch.tensor([0.1, 0.2]), torch.tensor([0.7, -3.0])
    assert interpolate(start, end, 0.0) is start
    assert torch.equal(interpolate(start, end, 0.25), start + 0.25 * (end - start))
    with pytest.raises(ValueError, match=r"segment ends differ in shape: \(2,\) vs \(3,\)"):
        interpolate(start, torch.zeros(3), 0.5)


def test_segment_losses_equals_losses_at_interpolated_points() -> None:
    model, measurement = float64_setting(batchnorm=True)
    start, end = segment_ends(model, seed=5)
    points = [start + alpha * (end - start) for alpha in (0.0, 0.3, 0.9)]
    np.testing.assert_array_equal(
        segment_losses(model, start, end, [0.0, 0.3, 0.9], measurement), losses_at_points(model, points, measurement)
    )


def test_landscape_models_return_their_losses() -> None:
    class Parabola(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((x - self.theta) ** 2).sum(dim=1)

    inputs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    measurement = MeasurementSet(inputs, torch.zeros(3), loss_fn=outputs_are_losses, chunk_size=2)
    # By hand at θ = (0, 0): ½·(0 + 2 + 5) / 3.
    assert_close(
        losses_at_points(Parabola(), [torch.zeros(2, dtype=torch.float64)], measurement), [7 / 6], FLOAT64_REORDERED, ""
    )


def test_per_sample_cross_entropy_against_log_softmax() -> None:
    outputs = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    targets = torch.tensor([1, 0])
    expected = [np.log(np.exp(outputs[i].numpy()).sum()) - outputs[i, targets[i]].item() for i in range(2)]
    assert_close(per_sample_cross_entropy(outputs, targets), expected, FLOAT64_REORDERED, "cross-entropy")


def test_no_points_give_no_losses() -> None:
    model, measurement = float64_setting(batchnorm=False)
    assert losses_at_points(model, [], measurement).shape == (0,)


# ---------------------------------------------------------------- the model is untouched
@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
def test_measurement_touches_no_parameter_buffer_gradient_or_flag(bn_mode: BatchNormMode) -> None:
    model = mlp(6, batchnorm=True, dropout=0.5)
    inputs, targets = classification_data(6, SET_SIZE)
    warm_batchnorm(model, inputs)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    model.train()
    model[1].eval()  # a mixed state, to see each flag restored individually
    flags, before = training_flags(model), state_snapshot(model)
    start, end = segment_ends(model, seed=6)
    segment_losses(model, start, end, alpha_grid(3), MeasurementSet(inputs, targets, chunk_size=CHUNK), bn_mode)
    assert_same_state(before, state_snapshot(model))
    assert training_flags(model) == flags
    assert all(layer.track_running_stats for layer in model.modules() if isinstance(layer, nn.BatchNorm1d))
    assert model[1].momentum == 0.1


@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
def test_dropout_draws_no_random_numbers_during_a_measurement(bn_mode: BatchNormMode) -> None:
    model = mlp(7, batchnorm=True, dropout=0.5)
    model.train()
    inputs, targets = classification_data(7, SET_SIZE)
    measurement = MeasurementSet(inputs, targets, chunk_size=CHUNK)
    point = flat_parameters(model)
    rng_before = torch.random.get_rng_state()
    first = losses_at_points(model, [point], measurement, bn_mode)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    np.testing.assert_array_equal(first, losses_at_points(model, [point], measurement, bn_mode))
    without_dropout = nn.Sequential(*[layer for layer in model if not isinstance(layer, nn.Dropout)])
    np.testing.assert_array_equal(first, losses_at_points(without_dropout, [point], measurement, bn_mode))


# -------------------------------------------------------------------------- bad input
def test_unknown_batchnorm_mode_is_refused() -> None:
    model, measurement = float64_setting(batchnorm=True)
    with pytest.raises(ValueError, match="unknown batch-norm mode 'test'; choose one of train, eval, recompute"):
        losses_at_points(model, [flat_parameters(model)], measurement, "test")  # type: ignore[arg-type]


def test_scalar_loss_is_refused() -> None:
    model, _ = float64_setting(batchnorm=False)
    inputs, targets = classification_data(3, SET_SIZE, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, loss_fn=nn.functional.cross_entropy, chunk_size=CHUNK)
    with pytest.raises(ValueError, match="one loss per sample"):
        losses_at_points(model, [flat_parameters(model)], measurement)


def test_loss_of_the_wrong_length_is_refused() -> None:
    model, _ = float64_setting(batchnorm=False)
    inputs, targets = classification_data(3, SET_SIZE, dtype=torch.float64)

    def truncated(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_sample_cross_entropy(outputs, targets)[:1]

    measurement = MeasurementSet(inputs, targets, loss_fn=truncated, chunk_size=CHUNK)
    with pytest.raises(ValueError, match=r"one loss per sample \(shape \[16\]\), got \(1,\)"):
        losses_at_points(model, [flat_parameters(model)], measurement)


def test_point_of_the_wrong_size_is_refused() -> None:
    model, measurement = float64_setting(batchnorm=False)
    size = flat_parameters(model).numel()
    with pytest.raises(ValueError, match=f"expected a vector of {size} parameters, got shape \\({size + 1},\\)"):
        losses_at_points(model, [torch.zeros(size + 1, dtype=torch.float64)], measurement)
    with pytest.raises(ValueError, match="expected a vector"):
        losses_at_points(model, [torch.zeros(1, size, dtype=torch.float64)], measurement)


def test_segment_ends_of_different_dtypes_are_refused() -> None:
    # Each point is built in buffers shaped on θ_t: a float32 end would be silently narrowed.
    model, measurement = float64_setting(batchnorm=False)
    start = flat_parameters(model)
    with pytest.raises(
        ValueError, match=r"segment ends differ in dtype or device: torch.float64 on cpu vs torch.float32"
    ):
        segment_losses(model, start, start.float(), [0.0, 0.5], measurement)


@pytest.mark.parametrize(
    ("inputs", "targets", "chunk_size", "message"),
    [
        (torch.zeros(5, 2), torch.zeros(4), 2, r"inputs \(5\) and targets \(4\) differ in length"),
        (torch.zeros(0, 2), torch.zeros(0), 2, "empty"),
        (torch.zeros(5, 2), torch.zeros(5), 0, "chunk_size must be positive, got 0"),
    ],
    ids=["length-mismatch", "empty", "zero-chunk"],
)
def test_bad_measurement_sets_are_refused(
    inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MeasurementSet(inputs, targets, chunk_size=chunk_size)


def test_measurement_set_chunks_cover_the_set_in_order() -> None:
    inputs, targets = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    measurement = MeasurementSet(inputs, targets, chunk_size=2)
    assert measurement.size == 5
    assert [chunk_targets.tolist() for _, chunk_targets in measurement.chunks()] == [[0, 1], [2, 3], [4]]


def test_parameter_layout_round_trip() -> None:
    model = mlp(8, batchnorm=True)
    layout = ParameterLayout.of(model)
    assert layout.names == tuple(name for name, _ in model.named_parameters())
    assert layout.numel == flat_parameters(model).numel()
    for name, value in layout.unflatten(flat_parameters(model)).items():
        assert torch.equal(value, model.get_parameter(name))
    with pytest.raises(ValueError, match="Identity has no trainable parameters"):
        ParameterLayout.of(nn.Identity())
