"""A measurement set of any batches: a tiny GPT's next-token loss on a generated text.

The set holds dict batches {"input_ids", "labels"} and a per-sequence loss (the mean
next-token cross-entropy of each sequence: sequences are the independent draws the standard
errors need). Every quantity is checked against an independent computation: plain forward
passes of a copy of the model holding the interpolated parameters.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdwalk import BatchNormMode, MeasurementSet, PrecisionTarget, StepRecord, WalkTracker
from sgdwalk.claims.statistics import mean_with_t_interval
from sgdwalk.claims.window_statistics import fraction, mean_field
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import ModelCall, segment_losses
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.instrument.sharpness import top_hessian_eigenpair
from tests.helpers import FLOAT32_REORDERED, FLOAT64_REORDERED, assert_close, model_at

VOCABULARY = 8
CONTEXT = 12
SEQUENCES = 96

# Lanczos stops when its residual ‖Hv − λv‖ is below 1e-6 |λ| (SHARPNESS_RELATIVE_ERROR); an
# independent float64 Hessian-vector product of the found pair must show that residual, with
# room for the float64 rounding of two differently ordered double backward passes.
EIGENPAIR_RESIDUAL = 2e-6


class TinyGPT(nn.Module):
    """One causal self-attention block and an MLP, pre-norm, tied to nothing: ~2,700 parameters."""

    def __init__(self, vocabulary: int = VOCABULARY, context: int = CONTEXT, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(0.1 * torch.randn(context, width))
        self.norm_attention = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.mix = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.head = nn.Linear(width, vocabulary)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        x = self.embed(input_ids) + self.position[:length]
        q, k, v = self.qkv(self.norm_attention(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        # Written out, not F.scaled_dot_product_attention: the CPU flash kernel has no double
        # backward, which the Hessian-vector products of the sharpness need.
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=1)
        attended = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v
        x = x + self.mix(attended.transpose(1, 2).reshape(batch, length, -1))
        x = x + self.mlp(self.norm_mlp(x))
        return self.head(x)


def generated_text(tokens: int, seed: int, noise: float = 0.1) -> torch.Tensor:
    """The cycle 0, 1, …, 7 repeated, each token replaced by a random one with probability ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.arange(tokens) % VOCABULARY
    replaced = torch.rand(tokens, generator=generator) < noise
    return torch.where(replaced, torch.randint(0, VOCABULARY, (tokens,), generator=generator), text)


def sequences(count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` windows of the text: inputs and the next tokens (the labels)."""
    text = generated_text(count * (CONTEXT + 1), seed).reshape(count, CONTEXT + 1)
    return {"input_ids": text[:, :-1], "labels": text[:, 1:]}


def sequence_losses(model: ModelCall, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy: one loss per sequence."""
    logits = model(batch["input_ids"])
    per_token = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")
    return per_token.mean(dim=1)


def as_batches(samples: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    return [{key: value[i : i + size] for key, value in samples.items()} for i in range(0, SEQUENCES, size)]


def gpt(seed: int, dtype: torch.dtype = torch.float64) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT().to(dtype)


def plain_mean_loss(model: nn.Module, samples: dict[str, torch.Tensor]) -> float:
    """The independent reference: one plain forward over all sequences, mean in float64."""
    model.eval()
    with torch.no_grad():
        return float(sequence_losses(model, samples).double().mean())


def two_points(model: nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = flat_parameters(model)
    step = 0.05 * torch.randn(start.shape, generator=torch.Generator().manual_seed(seed), dtype=start.dtype)
    return start, start + step


# --------------------------------------------------------------------------- the set
def test_a_set_of_dict_batches_holds_their_samples_in_order() -> None:
    samples = sequences(SEQUENCES, seed=0)
    measurement = MeasurementSet.from_batches(as_batches(samples, 10), sequence_losses, chunk_size=32)
    assert measurement.size == SEQUENCES
    assert torch.equal(measurement.samples["labels"], samples["labels"])
    indices = torch.tensor([5, 90, 0])
    assert torch.equal(measurement.take(indices)["input_ids"], samples["input_ids"][indices])
    chunks = list(measurement.chunks())
    assert [chunk["labels"].shape[0] for chunk in chunks] == [32, 32, 32]


def test_mismatched_batches_and_tensor_only_attributes_are_refused() -> None:
    samples = sequences(8, seed=0)
    with pytest.raises(ValueError, match="keys"):
        MeasurementSet.from_batches([samples, {"input_ids": samples["input_ids"]}], sequence_losses)
    with pytest.raises(ValueError, match="first dimension"):
        MeasurementSet.from_batches(
            {"input_ids": samples["input_ids"], "labels": samples["labels"][:3]}, sequence_losses
        )
    with pytest.raises(TypeError, match="found a str"):
        MeasurementSet.from_batches({"input_ids": samples["input_ids"], "name": "text"}, sequence_losses)
    measurement = MeasurementSet.from_batches(samples, sequence_losses)
    with pytest.raises(AttributeError, match="samples"):
        _ = measurement.inputs


def test_a_per_token_loss_is_refused_for_a_per_sequence_set() -> None:
    # One loss per token ([n·T]) would silently weight the mean and the errors by tokens.
    def per_token(model: ModelCall, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch["input_ids"]).transpose(1, 2), batch["labels"], reduction="none").flatten()

    model = gpt(0)
    measurement = MeasurementSet.from_batches(sequences(16, seed=0), per_token, chunk_size=8)
    start, end = two_points(model, 1)
    with pytest.raises(ValueError, match="one loss per sample"):
        segment_losses(model, start, end, alpha_grid(2), measurement)


def test_a_model_whose_output_is_not_a_tensor_is_pointed_to_from_batches() -> None:
    # transformers' models return a ModelOutput: the default cross-entropy raised torch's own
    # "argument 'input' must be Tensor" from inside the first measured step.
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = gpt(0)

        def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.inner(tokens)[:, -1]}

    batch = sequences(8, seed=0)
    measurement = MeasurementSet(batch["input_ids"], batch["labels"][:, -1])
    model = Wrapped()
    start, end = two_points(model, 1)
    with pytest.raises(TypeError, match=r"returned a dict, not a tensor of logits.*MeasurementSet\.from_batches"):
        segment_losses(model, start, end, alpha_grid(2), measurement)


# ----------------------------------------------------------- segment losses, sharpness
@pytest.mark.parametrize("chunk_size", [SEQUENCES, 20])
def test_segment_losses_of_a_language_model_equal_plain_forward_passes(chunk_size: int) -> None:
    model = gpt(0)
    samples = sequences(SEQUENCES, seed=1)
    measurement = MeasurementSet.from_batches(as_batches(samples, 16), sequence_losses, chunk_size=chunk_size)
    start, end = two_points(model, 2)
    alphas = alpha_grid(5)
    measured = segment_losses(model, start, end, alphas, measurement, include_end=True)
    expected = [plain_mean_loss(model_at(model, start + a * (end - start)), samples) for a in alphas]
    expected.append(plain_mean_loss(model_at(model, end), samples))
    assert_close(measured, expected, FLOAT64_REORDERED, "segment losses of the tiny GPT")


def test_the_sharpness_of_a_language_model_is_an_eigenpair_of_its_hessian() -> None:
    model = gpt(0)
    samples = sequences(48, seed=1)
    measurement = MeasurementSet.from_batches(samples, sequence_losses, chunk_size=16)
    point = flat_parameters(model)
    pair = top_hessian_eigenpair(model, point, measurement, seed=0)
    # Independent: double backward through the plain model (its own parameters) at the point.
    reference = model_at(model, point).eval()
    parameters = [p for p in reference.parameters() if p.requires_grad]
    loss = sequence_losses(reference, samples).mean()
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters, create_graph=True)])
    vector = torch.as_tensor(pair.vector, dtype=torch.float64)
    product = torch.cat([h.reshape(-1) for h in torch.autograd.grad(gradient, parameters, grad_outputs=vector)])
    residual = float(torch.linalg.vector_norm(product - pair.value * vector))
    assert pair.value > 0.0
    assert residual <= EIGENPAIR_RESIDUAL * abs(pair.value), (residual, pair.value)


# ------------------------------------------------------- a tracked run and its claims
def train(measurement: MeasurementSet | None, steps: int = 12) -> tuple[TinyGPT, WalkTracker | None]:
    """SGD on minibatches of 8 training sequences (another text than the measurement set's),
    tracked on ``measurement`` (with the sharpness every 6 steps) unless it is None."""
    model = gpt(3, torch.float32)
    tracker = None if measurement is None else WalkTracker(model, measurement, sharpness_every=6)
    train = sequences(SEQUENCES, seed=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    order = torch.Generator().manual_seed(5)
    for _ in range(steps):
        chosen = torch.randint(0, SEQUENCES, (8,), generator=order)
        optimizer.zero_grad()
        loss = sequence_losses(model, {key: value[chosen] for key, value in train.items()}).mean()
        loss.backward()
        if tracker is None:
            optimizer.step()
            continue
        with tracker.step(minibatch_loss=loss, lr=0.5):
            optimizer.step()
    return model, tracker


@pytest.fixture(scope="module")
def measured_set() -> MeasurementSet:
    return MeasurementSet.from_batches(as_batches(sequences(SEQUENCES, seed=6), 16), sequence_losses, chunk_size=24)


@pytest.mark.slow  # a language model trained and measured twice: an end-to-end check
def test_the_tracker_measures_a_language_model_without_changing_its_training(measured_set: MeasurementSet) -> None:
    untracked, _ = train(None)
    tracked, tracker = train(measured_set)
    assert tracker is not None
    assert torch.equal(flat_parameters(tracked), flat_parameters(untracked))
    records = tracker.close()
    assert len(records) == 12 and all(record.samples == SEQUENCES for record in records)
    assert [record.sharpness is not None for record in records] == [step % 6 == 0 for step in range(12)]


def test_precision_targeted_records_are_means_over_the_seeded_prefix(measured_set: MeasurementSet) -> None:
    # Targeted reading takes sequences in a seeded order and stops early: each record's
    # losses must be the plain mean over the first ``samples`` sequences of that order.
    target = PrecisionTarget(first_look=24, seed=7)
    model = gpt(3, torch.float32)
    tracker = WalkTracker(model, measured_set, precision=target)
    train = sequences(SEQUENCES, seed=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    order = torch.randperm(SEQUENCES, generator=torch.Generator().manual_seed(7))
    for step in range(6):
        batch = {key: value[8 * step : 8 * step + 8] for key, value in train.items()}
        optimizer.zero_grad()
        loss = sequence_losses(model, batch).mean()
        loss.backward()
        start = flat_parameters(model)
        with tracker.step(minibatch_loss=loss, lr=0.5):
            optimizer.step()
        record = tracker.records[-1]
        read = {key: value[order[: record.samples]] for key, value in measured_set.samples.items()}
        expected = (
            plain_mean_loss(model_at(model, start), read),
            plain_mean_loss(model_at(model, flat_parameters(model)), read),
        )
        assert_close([record.loss_start, record.loss_end], expected, FLOAT32_REORDERED, f"step {step}")
    assert any((record.samples or 0) < SEQUENCES for record in tracker.records)


def independent_run_statistics(
    seed: int, measurement: MeasurementSet, steps: int
) -> tuple[list[StepRecord], float, float]:
    """A tracked run's records, and its interior-floor fraction and mean cosine computed
    without the tracker: plain forward passes along each step and the gradients' cosines."""
    model = gpt(seed, torch.float32)
    tracker = WalkTracker(model, measurement)
    train = sequences(SEQUENCES, seed=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    order = torch.Generator().manual_seed(seed)
    interior, gradients = [], []
    for _ in range(steps):
        chosen = torch.randint(0, SEQUENCES, (8,), generator=order)
        optimizer.zero_grad()
        loss = sequence_losses(model, {key: value[chosen] for key, value in train.items()}).mean()
        loss.backward()
        gradients.append(
            torch.cat([torch.zeros(0) if p.grad is None else p.grad.reshape(-1) for p in model.parameters()])
        )
        start = flat_parameters(model)
        with tracker.step(minibatch_loss=loss, lr=0.5):
            optimizer.step()
        end = flat_parameters(model)
        profile = [
            plain_mean_loss(model_at(model, start + a * (end - start)), measurement.samples) for a in alpha_grid()
        ]
        profile.append(plain_mean_loss(model_at(model, end), measurement.samples))
        interior.append(0 < int(np.argmin(profile)) < len(profile) - 1)
    cosines = [float(F.cosine_similarity(a.double(), b.double(), dim=0)) for a, b in itertools.pairwise(gradients)]
    return tracker.close(), float(np.mean(interior)), float(np.mean(cosines))


@pytest.mark.slow  # a language model trained and measured: an end-to-end check
def test_the_claims_statistics_run_on_a_language_models_records(measured_set: MeasurementSet) -> None:
    # The claims machinery reads records, whatever model made them: the interior-floor
    # fraction and the mean cosine over two seeds of a tracked tiny GPT equal the same
    # statistics computed without the tracker.
    per_seed_floor, per_seed_cosine, expected_floor, expected_cosine = [], [], [], []
    for seed in (11, 12):
        records, floor_fraction, mean_cosine = independent_run_statistics(seed, measured_set, steps=10)
        per_seed_floor.append(fraction(records, lambda record: record.interior_floor))
        per_seed_cosine.append(mean_field(records, "cosine"))
        expected_floor.append(floor_fraction)
        expected_cosine.append(mean_cosine)
    floor = mean_with_t_interval(per_seed_floor)
    cosine = mean_with_t_interval(per_seed_cosine)
    assert floor.per_seed == tuple(expected_floor)
    # The cosine of the same float32 gradients, summed in float64 in another order.
    assert_close(cosine.per_seed, expected_cosine, FLOAT64_REORDERED, "mean cosine of the tiny GPT's gradients")
    assert floor.low <= floor.value <= floor.high and cosine.low <= cosine.value <= cosine.high


# ------------------------------------------------------------- batch norm, any batches
class DictBatchNormNet(nn.Module):
    """Reads a dict batch; batch norm between its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


def dict_cross_entropy(model: ModelCall, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(features=batch["features"]), batch["label"], reduction="none")


@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
def test_dict_batches_measure_exactly_as_the_tensor_form_in_every_batch_norm_mode(bn_mode: BatchNormMode) -> None:
    # The tensor form is checked against independent references elsewhere; a dict set of
    # the same samples, its model called by keyword, must give bitwise the same numbers.
    torch.manual_seed(0)
    model = DictBatchNormNet().double()
    model.train()
    warm = torch.randn(64, 5, dtype=torch.float64)
    model(warm)  # running statistics that differ from fresh ones, for "eval"
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=generator)
    as_tensors = MeasurementSet(features, labels, chunk_size=8)
    as_dicts = MeasurementSet.from_batches({"features": features, "label": labels}, dict_cross_entropy, chunk_size=8)
    start, end = two_points(model, 2)
    alphas = alpha_grid(4)
    from_tensors = segment_losses(model.body, start, end, alphas, as_tensors, bn_mode, include_end=True)
    from_dicts = segment_losses(model, start, end, alphas, as_dicts, bn_mode, include_end=True)
    np.testing.assert_array_equal(from_dicts, from_tensors)


def test_tuple_batches_in_a_list_are_concatenated() -> None:
    samples = sequences(12, seed=0)
    pairs = [(samples["input_ids"][:5], samples["labels"][:5]), (samples["input_ids"][5:], samples["labels"][5:])]
    measurement = MeasurementSet.from_batches(
        pairs, lambda model, batch: sequence_losses(model, dict(zip(("input_ids", "labels"), batch, strict=True)))
    )
    assert measurement.size == 12
    assert torch.equal(measurement.samples[1], samples["labels"])
