"""What a run costs before it runs: its FLOPs by kind, from its ``WalkConfig`` alone, and its
time at a stated device throughput.

The FLOPs of each pass are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode``
watches the real network at the config's width run the instrument's own code (a training
step's forward and backward, ``SegmentPoints``, ``hessian_vector_product_operator``) on
``COUNTED_IMAGES`` images on the meta device, which computes shapes and no values. Matrix
products and convolutions are linear in the number of images, so the per-image counts scale
exactly; FlopCounterMode counts only those (not batch norm, activations, the loss or the
optimizer's update, each a few FLOPs per activation or parameter, far below the products).

A run's FLOPs, following what the runner and the tracker do (``runner.py``, ``tracker.py``):

- training: each SGD step is a forward and backward of its minibatch; a full-batch (GD) step
  is that over the whole training subset; noisy GD also estimates its noise from
  ``noise_batches`` minibatch gradients at θ_0;
- measurement: each measured step evaluates its segment's K + 1 points (the α grid and
  α = 1) on the measurement set, or K where the previous step was measured too (its α = 1
  is carried over as this step's α = 0, except in batch-norm mode "eval", whose running
  statistics the training forward moves); the networks' affine input layer runs at the two
  ends only (``SegmentPoints``); the comoments of the points' per-sample losses add a few
  FLOPs per image. The gradient for the cosine is the one the step's backward
  left in ``.grad``: it costs nothing more. Targeted measurement (``measurement_mode``)
  reads fewer samples: for it the count is an upper bound;
- sharpness: each estimate builds the gradient's graph and runs ``ASSUMED_LANCZOS_PRODUCTS``
  Hessian-vector products (once per chunk each when the set is more than one chunk of
  ``hvp_chunk_size``), then one more pass of products for its standard error;
- per-step quantities, on their measured steps (``step_quantities``): a Hutch++ trace runs
  ``hessian_trace_probes`` Hessian-vector products; the top-k eigenvalues and the
  preconditioned sharpness each run ``ASSUMED_LANCZOS_PRODUCTS``, as the sharpness does, with
  no standard error's pass; the gradient noise scale is a forward and backward of every
  measured sample (one at a time, or in minibatches of ``gradient_noise_batch``: the same
  FLOPs);
- evaluation: a forward pass over the training subset and the validation split at every
  epoch the run's cadence evaluates (``config.cadence``), epoch 0 included.

Memory is counted for the one pass that grows with its chunk beyond a forward's: the
Hessian-vector products' double backward (``hessian_graph_bytes``, ``hvp_peak_bytes``), which
decides a profile's ``hvp_chunk_size``.

Time is FLOPs over a throughput, a model with two stated guesses (the Lanczos products and
the fraction of the card's peak these runs reach, ``throughput.ASSUMED_ACHIEVED_FRACTION``)
until a card has timed the runs; ``benchmarks/gpu_speed.py`` measures the rate to put in its place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sgdwalk.instrument.batchnorm import batchnorm_layers, measuring
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, SegmentPoints
from sgdwalk.instrument.sharpness import hessian_vector_product_operator
from sgdwalk.runs.builders import steps_per_epoch_of, tracking_schedule
from sgdwalk.runs.throughput import DEFAULT_THROUGHPUT_FLOPS
from sgdwalk.training.config import ConfigError, WalkConfig, cadence, is_full_batch
from sgdwalk.training.data import dataset_info, split_indices
from sgdwalk.training.models import build_model

# Two images per counted pass: batch norm in train mode needs more than one value per
# channel (VGG-11's last feature map is 1x1, the MLP's features are vectors).
COUNTED_IMAGES: Final = 2
# The Hessian-vector products of one Lanczos estimate. The instrument's networks converge in
# 10-40 (sharpness.py); the full-width MLP on 1,000 Fashion-MNIST images took 23 at θ_0 and
# 18 after 180 SGD steps. 40, the top of that range, for the conv nets no one has counted yet.
ASSUMED_LANCZOS_PRODUCTS: Final = 40
# Tiny-ImageNet's val/ folder holds 50 images per class (its validation split).
TINY_IMAGENET_VAL_PER_CLASS: Final = 50
# The peak of a Hessian-vector product over the graph it runs back through: the product makes
# the gradient of each saved tensor as it passes it, each at most that tensor's size, so the
# peak is at most the graph twice over (an upper bound, until gpu_speed.py --memory measures it).
HVP_PEAK_OVER_GRAPH: Final = 2.0
# NVIDIA's H100 SXM5 datasheet: 80 GB of memory, the card a profile's chunks must fit.
H100_MEMORY_BYTES: Final = 80e9
# Two sizes of the counted batch: the slope between them is the per-image part of the graph,
# without the parameters' own storage (saved by every layer, whatever the number of images).
_GRAPH_COUNTED_IMAGES: Final = (2, 4)
# Enough images for any split of the other data sets (MNIST's training file holds 60,000):
# split_indices clips the validation range to the file, which the cost model never reads.
_WHOLE_SOURCE_FILE: Final = 60_000


# ------------------------------------------------------------------ per network
@dataclass(frozen=True)
class NetworkFlops:
    """FLOPs per image of each pass a run makes through one network.

    Attributes:
        forward: one forward pass (evaluation; the batch-norm mode does not change it).
        training: the forward and backward of a mean loss (the gradient of a step).
        segment_point: each point of a segment, on top of ``segment_ends``.
        segment_ends: what a segment costs whatever its points: its affine input layer
            evaluated at the two ends (``SegmentPoints``).
        hessian_graph: building the gradient's graph a Hessian-vector product runs back through.
        hessian_product: one Hessian-vector product through that graph.
        has_batchnorm: whether batch-norm mode "recompute" has statistics to re-estimate, and
            "eval" statistics that each training forward moves.
    """

    forward: float
    training: float
    segment_point: float
    segment_ends: float
    hessian_graph: float
    hessian_product: float
    has_batchnorm: bool

    def segment(self, points: int) -> float:
        """A segment of ``points`` points, per image of the measurement set."""
        return self.segment_ends + points * self.segment_point


def _counted(work: Callable[[], object]) -> float:
    """The FLOPs ``work`` runs, per counted image."""
    counter = FlopCounterMode(display=False)
    with counter:
        work()
    return counter.get_total_flops() / COUNTED_IMAGES


@functools.lru_cache(maxsize=32)
def network_flops(
    arch: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width_multiplier: float = 1.0,
    *,
    batch_norm: bool = True,
    activation: str = "relu",
) -> NetworkFlops:
    """Each pass of ``build_model(arch, ...)`` counted on ``COUNTED_IMAGES`` images on the meta
    device (seconds at most, no memory: no value is computed)."""
    meta = torch.device("meta")
    with meta:  # parameters made on the meta device: nothing is initialised
        model = build_model(
            arch,
            in_channels,
            image_size,
            num_classes,
            width_multiplier,
            batch_norm=batch_norm,
            activation=activation,
        ).train()
    inputs = torch.zeros(COUNTED_IMAGES, in_channels, image_size, image_size, device=meta)
    targets = torch.zeros(COUNTED_IMAGES, dtype=torch.long, device=meta)
    measurement = MeasurementSet(inputs, targets, chunk_size=COUNTED_IMAGES)
    point = flat_parameters(model)

    def forward() -> None:
        with torch.no_grad():
            model(inputs)

    def training() -> None:
        F.cross_entropy(model(inputs), targets).backward()

    # Three points, then two (α = 0 carried): their difference is one point, the rest the ends.
    points = SegmentPoints(model, point, point, (0.0, 0.5, 1.0), measurement)
    with torch.no_grad(), measuring(model, "train"):
        three = _counted(lambda: points.losses(inputs, targets))
        two = _counted(lambda: points.losses(inputs, targets, skip_first=True))
    operators: list[Callable[[torch.Tensor], torch.Tensor]] = []
    graph = _counted(
        lambda: operators.append(hessian_vector_product_operator(model, point, measurement, reuse_graph=True))
    )
    product = _counted(lambda: operators[0](torch.zeros_like(point)))
    return NetworkFlops(
        forward=_counted(forward),
        training=_counted(training),
        segment_point=three - two,
        segment_ends=two - 2 * (three - two),
        hessian_graph=graph,
        hessian_product=product,
        has_batchnorm=bool(batchnorm_layers(model)),
    )


# ---------------------------------------------------------------------- per run
@dataclass(frozen=True)
class RunSizes:
    """The counts a run's cost follows from, read off its config (nothing is loaded)."""

    train_size: int
    validation_size: int
    measurement_size: int
    steps_per_epoch: int
    training_steps: int
    # Measured steps whose segment evaluates all K + 1 points, and those whose α = 0 is carried.
    segments_whole: int
    segments_carried: int
    sharpness_estimates: int  # with their standard error (sharpness_every)
    sharpness_only: int  # without it (sharpness_per_tracked_epoch)
    evaluations: int
    # The per-step quantities' estimates (each on its own schedule of measured steps).
    trace_estimates: int
    top_eigenvalue_estimates: int
    preconditioned_sharpness_estimates: int
    noise_scale_estimates: int

    @property
    def measured_steps(self) -> int:
        return self.segments_whole + self.segments_carried


def _validation_size(config: WalkConfig, num_classes: int) -> int:
    if config.data == "tiny-imagenet":
        whole = TINY_IMAGENET_VAL_PER_CLASS * num_classes
    else:
        whole = len(split_indices(config.data, "val", _WHOLE_SOURCE_FILE))
    return whole if config.validation_subset is None else min(config.validation_subset, whole)


def run_sizes(config: WalkConfig) -> RunSizes:
    """How many steps, segments, estimates and evaluations ``config`` makes (if it does not
    diverge). No data is read: without a subset the split is taken whole (45,000 training
    images, the paper's), as a complete data file gives it."""
    info = dataset_info(config.data, config.pad_to)
    train_size = info.train_size if config.train_subset is None else min(config.train_subset, info.train_size)
    steps_per_epoch = steps_per_epoch_of(config, train_size)
    total_steps = config.epochs * steps_per_epoch
    schedule = tracking_schedule(config, steps_per_epoch)
    measured = [step for step in range(total_steps) if schedule(step)]
    carried = sum(1 for step in measured if step > 0 and schedule(step - 1))
    every = config.sharpness_every
    runs_cadence = cadence(config, steps_per_epoch)

    def due(every: int | None) -> int:
        return 0 if every is None else sum(1 for step in measured if step % every == 0)

    return RunSizes(
        train_size=train_size,
        validation_size=_validation_size(config, info.num_classes),
        measurement_size=train_size if config.measurement_size is None else config.measurement_size,
        steps_per_epoch=steps_per_epoch,
        training_steps=total_steps,
        segments_whole=len(measured) - carried,
        segments_carried=carried,
        sharpness_estimates=due(every),
        sharpness_only=len(config.track_epochs) if config.sharpness_per_tracked_epoch else 0,
        evaluations=sum(1 for epoch in range(config.epochs + 1) if runs_cadence.evaluates(epoch)),
        trace_estimates=due(config.hessian_trace_every),
        top_eigenvalue_estimates=due(config.top_eigenvalues_every),
        preconditioned_sharpness_estimates=due(config.preconditioned_sharpness_every),
        noise_scale_estimates=due(config.gradient_noise_scale_every),
    )


@dataclass(frozen=True)
class RunCost:
    """A run's FLOPs by kind (see the module docstring for what each counts)."""

    sizes: RunSizes
    training: float
    measurement: float
    sharpness: float
    evaluation: float
    quantities: float  # the per-step quantities (trace, top-k, preconditioned sharpness, noise scale)

    @property
    def total(self) -> float:
        return self.training + self.measurement + self.sharpness + self.evaluation + self.quantities

    def seconds(self, flops_per_second: float = DEFAULT_THROUGHPUT_FLOPS) -> float:
        return self.total / flops_per_second

    def hours(self, flops_per_second: float = DEFAULT_THROUGHPUT_FLOPS) -> float:
        return self.seconds(flops_per_second) / 3600


def config_network_flops(config: WalkConfig) -> NetworkFlops:
    """The passes of the config's network, as its data shapes it; ``ConfigError`` for a
    network its data cannot feed (as the runner says it)."""
    try:
        info = dataset_info(config.data, config.pad_to)
        return network_flops(
            config.arch,
            info.in_channels,
            info.image_size,
            info.num_classes,
            config.width_multiplier,
            batch_norm=config.batch_norm,
            activation=config.activation,
        )
    except ValueError as error:  # e.g. an image too small for the network
        raise ConfigError(f"model {config.arch!r} on {config.data!r}: {error}") from error


def segment_flops(config: WalkConfig, network: NetworkFlops, points: int) -> float:
    """One segment of ``points`` points per image. Batch-norm mode "recompute" takes the plain
    path (every point a whole forward) after a statistics pass at each of the K + 1 points."""
    if config.bn_mode != "recompute":
        return network.segment(points)
    statistics = (config.num_alphas + 1) * network.forward if network.has_batchnorm else 0.0
    return statistics + points * network.forward


def paired_moments_flops(points: int) -> int:
    """The comoments of a segment's per-sample losses at its ``points`` points (``paired.py``),
    per image: a points x points product over the images, on the host, whatever the network."""
    return 2 * points * points


def sharpness_flops(
    config: WalkConfig,
    network: NetworkFlops,
    size: int,
    with_error: bool,
    products: int = ASSUMED_LANCZOS_PRODUCTS,
) -> float:
    """One top-eigenvalue estimate on ``size`` images: Lanczos's ``products``, and the
    standard error's pass."""
    graph, product = network.hessian_graph, network.hessian_product
    # One chunk: the graph is built once and each product runs back through it; more: each
    # product re-runs every chunk.
    lanczos = graph + products * product if size <= hvp_chunk(config) else products * (graph + product)
    error = graph + product if with_error else 0.0
    statistics = (1 + int(with_error)) * network.forward if config.bn_mode == "recompute" else 0.0
    return size * (lanczos + error + statistics)


def hvp_chunk(config: WalkConfig) -> int:
    """Samples per chunk of the config's Hessian-vector products."""
    return config.chunk_size if config.hvp_chunk_size is None else config.hvp_chunk_size


def _graph_bytes(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes of every tensor saved for backward while the gradient is built with its own
    graph (``create_graph``, as a Hessian-vector product needs), each storage counted once."""
    from sgdwalk.instrument.measurement import ParameterLayout, model_call

    layout = ParameterLayout.of(model)
    leaf = flat_parameters(model).detach().clone().requires_grad_(True)
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = F.cross_entropy(model_call(model, layout.unflatten(leaf))(inputs), targets, reduction="sum")
        torch.autograd.grad(loss, leaf, create_graph=True)
    return sum(storages.values())


@functools.lru_cache(maxsize=32)
def hessian_graph_bytes(
    arch: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width_multiplier: float = 1.0,
    *,
    batch_norm: bool = True,
    activation: str = "relu",
) -> float:
    """Bytes per image of the graph a Hessian-vector product runs back through: the forward's
    saved activations and those of the gradient built differentiably (float32, batch norm in
    train mode). Counted on the CPU on a few random images (a second at most): saved tensors
    need real storages to be told apart, which the meta device does not give."""
    generator = torch.Generator().manual_seed(0)
    counted = []
    for images in _GRAPH_COUNTED_IMAGES:
        torch.manual_seed(0)
        model = build_model(
            arch,
            in_channels,
            image_size,
            num_classes,
            width_multiplier,
            batch_norm=batch_norm,
            activation=activation,
        ).train()
        inputs = torch.randn(images, in_channels, image_size, image_size, generator=generator)
        targets = torch.randint(0, num_classes, (images,), generator=generator)
        counted.append(_graph_bytes(model, inputs, targets))
    few, many = _GRAPH_COUNTED_IMAGES
    return (counted[1] - counted[0]) / (many - few)


def hvp_peak_bytes(config: WalkConfig) -> float:
    """The most memory a Hessian-vector product of ``config``'s sharpness may hold for its chunk
    (``HVP_PEAK_OVER_GRAPH`` times its graph), beside the model, its data and the Lanczos basis."""
    info = dataset_info(config.data, config.pad_to)
    per_image = hessian_graph_bytes(
        config.arch,
        info.in_channels,
        info.image_size,
        info.num_classes,
        config.width_multiplier,
        batch_norm=config.batch_norm,
        activation=config.activation,
    )
    measured = run_sizes(config).measurement_size
    return HVP_PEAK_OVER_GRAPH * per_image * min(hvp_chunk(config), measured)


def run_cost(config: WalkConfig, network: NetworkFlops | None = None) -> RunCost:
    """The FLOPs of the run ``config`` describes (``network``: its passes, default counted)."""
    network = config_network_flops(config) if network is None else network
    sizes = run_sizes(config)
    images_per_step = sizes.train_size if is_full_batch(config) else config.batch_size
    training = sizes.training_steps * images_per_step * network.training
    if config.optimizer == "noisy-gd":
        training += config.noise_batches * min(config.batch_size, sizes.train_size) * network.training
    points = config.num_alphas + 1
    # In "eval" every training forward moves the running statistics the measurement reads, so
    # no α = 0 is carried over: every segment evaluates all its points (tracker._Carried).
    carried = 0 if config.bn_mode == "eval" and network.has_batchnorm else sizes.segments_carried
    measurement = sizes.measurement_size * (
        (sizes.measured_steps - carried) * segment_flops(config, network, points)
        + carried * segment_flops(config, network, points - 1)
        + sizes.measured_steps * paired_moments_flops(points)
    )
    sharpness = sizes.sharpness_estimates * sharpness_flops(
        config, network, sizes.measurement_size, with_error=True
    ) + sizes.sharpness_only * sharpness_flops(config, network, sizes.measurement_size, with_error=False)
    evaluation = sizes.evaluations * (sizes.train_size + sizes.validation_size) * network.forward
    return RunCost(sizes, training, measurement, sharpness, evaluation, quantity_flops(config, network, sizes))


def quantity_flops(config: WalkConfig, network: NetworkFlops, sizes: RunSizes) -> float:
    """The per-step quantities' FLOPs over a run (the module docstring says what each counts)."""
    size = sizes.measurement_size

    def lanczos(products: int) -> float:
        return sharpness_flops(config, network, size, with_error=False, products=products)

    return (
        sizes.trace_estimates * lanczos(config.hessian_trace_probes)
        + (sizes.top_eigenvalue_estimates + sizes.preconditioned_sharpness_estimates)
        * lanczos(ASSUMED_LANCZOS_PRODUCTS)
        + sizes.noise_scale_estimates * size * network.training
    )


__all__ = [
    "ASSUMED_LANCZOS_PRODUCTS",
    "COUNTED_IMAGES",
    "H100_MEMORY_BYTES",
    "HVP_PEAK_OVER_GRAPH",
    "NetworkFlops",
    "RunCost",
    "RunSizes",
    "config_network_flops",
    "hessian_graph_bytes",
    "hvp_chunk",
    "hvp_peak_bytes",
    "network_flops",
    "paired_moments_flops",
    "quantity_flops",
    "run_cost",
    "run_sizes",
    "segment_flops",
    "sharpness_flops",
]
