"""The parts a run is set up from, each from its ``WalkConfig``: the device and the arithmetic,
the step count and the tracked steps, the measurement set, the seeded model, the optimizer and
noisy-gd's noise variance."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import torch
from torch import Tensor, nn

from sgdwalk.instrument.measurement import MeasurementSet, per_sample_cross_entropy
from sgdwalk.instrument.numerics import float32_numerics
from sgdwalk.instrument.sampling import PrecisionTarget
from sgdwalk.instrument.schedule import AnyOf, MeasurementSchedule, every_kth, windows
from sgdwalk.runs.run_data import WalkData
from sgdwalk.runs.streams import MEASUREMENT_STREAM, NOISE_ESTIMATE_STREAM, NOISE_STREAM, SAMPLE_ORDER_STREAM
from sgdwalk.training.config import ConfigError, WalkConfig, is_full_batch
from sgdwalk.training.optim import NoisyGD, gradient_coordinate_variance, isotropic_noise_variance


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def steps_per_epoch_of(config: WalkConfig, train_size: int) -> int:
    """One step per epoch for full-batch GD; else the whole batches in the subset (the last
    short batch is dropped, as in the protocol: 45,000 / 100 = 450)."""
    if is_full_batch(config):
        return 1
    if config.batch_size > train_size:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {train_size} training samples")
    return train_size // config.batch_size


def tracking_schedule(config: WalkConfig, steps_per_epoch: int) -> MeasurementSchedule:
    """The tracked epochs' steps (only the first ``steps_per_window`` of each if set) ∪ the
    step windows ∪ every k-th."""
    per_window = steps_per_epoch if config.steps_per_window is None else min(config.steps_per_window, steps_per_epoch)
    starts = [(epoch - 1) * steps_per_epoch for epoch in config.track_epochs]
    ranges = [(start, start + per_window) for start in starts] + list(config.track_steps)
    parts: list[MeasurementSchedule] = [windows(ranges)]
    if config.track_every is not None:
        parts.append(every_kth(config.track_every))
    return AnyOf(tuple(parts))


def precision_target(config: WalkConfig) -> PrecisionTarget | None:
    """The stopping rule of precision-targeted measurement (None: exact, the whole set)."""
    if config.measurement_mode == "exact":
        return None
    return PrecisionTarget(
        height_se=config.height_se,
        height_relative_se=config.height_relative_se,
        first_look=config.first_look,
        seed=config.seed + SAMPLE_ORDER_STREAM,
    )


def measurement_indices(train_size: int, size: int | None, seed: int) -> Tensor:
    """A seeded subset of the training positions (sorted), or all of them when size is None."""
    if size is not None and size > train_size:
        # Refused rather than cut: config.json would name a set the run never measured on.
        raise ConfigError(f"measurement_size {size} exceeds the {train_size} training samples; lower it (0: all)")
    if size is None or size == train_size:
        return torch.arange(train_size)
    generator = torch.Generator().manual_seed(seed + MEASUREMENT_STREAM)
    return torch.randperm(train_size, generator=generator)[:size].sort().values


def build_measurement_set(config: WalkConfig, train_inputs: Tensor, train_targets: Tensor) -> MeasurementSet:
    """The fixed, seeded subset of the training set every tracked step is measured on."""
    chosen = measurement_indices(int(train_targets.shape[0]), config.measurement_size, config.seed)
    chosen = chosen.to(train_inputs.device)
    return MeasurementSet(train_inputs[chosen], train_targets[chosen], chunk_size=config.chunk_size)


def build_seeded_model(config: WalkConfig, data: WalkData, device: torch.device) -> nn.Module:
    """The config's network for the data, initialised from ``torch.manual_seed(config.seed)``, in train mode."""
    from sgdwalk.training.models import build_model

    torch.manual_seed(config.seed)
    try:
        model = build_model(
            config.arch,
            data.in_channels,
            data.image_size,
            data.num_classes,
            config.width_multiplier,
            batch_norm=config.batch_norm,
            activation=config.activation,
        )
    except ValueError as error:  # e.g. an image too small for the network
        raise ConfigError(f"model {config.arch!r}: {error}") from error
    return model.to(device).train()


# Adam's moment decays and denominator floor: torch's defaults (the stability threshold of its
# preconditioned sharpness, (2 + 2 β1) / ((1 − β1) η), is 38/η at β1 = 0.9).
ADAM_BETAS: Final = (0.9, 0.999)
ADAM_EPS: Final = 1e-8


def build_optimizer(config: WalkConfig, model: nn.Module, noise_variance: float | None) -> torch.optim.Optimizer:
    """NoisyGD for noisy-gd (its noise stream seeded from ``seed + NOISE_STREAM``), Adam for
    full-batch-adam, else plain SGD."""
    if config.optimizer == "full-batch-adam":
        # torch's defaults, which Cohen et al. (2022) train with too, named in the config's
        # help; weight decay coupled (added to the gradient), as SGD's here.
        return torch.optim.Adam(
            model.parameters(), lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=config.weight_decay
        )
    if config.optimizer == "noisy-gd":
        assert noise_variance is not None  # estimated (or restored) before the optimizer is built
        return NoisyGD(
            model.parameters(),
            lr=config.lr,
            noise_variance=noise_variance,
            weight_decay=config.weight_decay,
            seed=config.seed + NOISE_STREAM,
        )
    # No momentum: the paper's plain SGD (docs/protocol.md#sgd-runs); GD is the same step on the exact gradient.
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0, weight_decay=config.weight_decay)


def _endless_minibatches(
    inputs: Tensor, targets: Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    from sgdwalk.training.data import iterate_minibatches

    while True:
        yield from iterate_minibatches(inputs, targets, batch_size, generator)


def estimate_noise_variance(model: nn.Module, config: WalkConfig, inputs: Tensor, targets: Tensor) -> float:
    """σ² = c · max per-coordinate variance of minibatch gradients at θ_0, over
    ``config.noise_batches`` minibatches of ``config.batch_size`` (docs/protocol.md#gd-with-isotropic-noise).

    Batch norm runs in train mode, as in training; its running statistics are restored
    afterwards so the estimate leaves the model exactly as it found it.
    """
    saved_buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    generator = torch.Generator().manual_seed(config.seed + NOISE_ESTIMATE_STREAM)
    batch_size = min(config.batch_size, int(targets.shape[0]))
    batches = itertools.islice(_endless_minibatches(inputs, targets, batch_size, generator), config.noise_batches)
    try:
        variance = gradient_coordinate_variance(model, per_sample_cross_entropy, batches)
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved_buffers[name])
    return isotropic_noise_variance(variance, config.noise_scale)


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` (None: left alone), restored afterwards."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def run_numerics(config: WalkConfig) -> Iterator[None]:
    """The arithmetic a run is defined with, for its whole length (set-up, noise estimate,
    training, measurements): its CPU threads, and float32 without TF32 on CUDA unless
    ``config.cuda_tf32`` (``sgdwalk.instrument.numerics``), restored afterwards."""
    with cpu_threads(config.cpu_threads), float32_numerics(resolve_device(config.device), tf32=config.cuda_tf32):
        yield
