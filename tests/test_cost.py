"""The cost model: per-image FLOPs against hand counts, run sizes against an enumeration of
the steps, and a run's FLOPs against FlopCounterMode watching the real runner do the run."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sgdwalk.runs.cost as cost
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sharpness import batch_rayleigh_quotients, top_hessian_eigenpair
from sgdwalk.runs.cost import config_network_flops, network_flops, run_cost, run_sizes, sharpness_flops
from sgdwalk.runs.runner import WalkData, build_seeded_model, run_walk
from sgdwalk.runs.throughput import format_flops
from sgdwalk.training.config import ConfigError, WalkConfig
from sgdwalk.training.data import dataset_info

# The paper's MLP on 28x28 images: 784-500-350-10.
MLP_LAYERS = ((784, 500), (500, 350), (350, 10))
# Lanczos stopped after this many products: few enough for a short test, more than one.
LANCZOS_PRODUCTS = 4


def linear_forward(fan_in: int, fan_out: int) -> int:
    """A linear layer's forward per sample: fan_in x fan_out multiply-adds, 2 FLOPs each."""
    return 2 * fan_in * fan_out


def test_the_mlp_counts_as_counted_by_hand() -> None:
    flops = network_flops("mlp", 1, 28, 10)
    forward = sum(linear_forward(*layer) for layer in MLP_LAYERS)
    first = linear_forward(*MLP_LAYERS[0])
    assert flops.forward == forward == 1_141_000
    # Backward: each layer's weight gradient and input gradient cost its forward again each,
    # but nothing needs the gradient of the images, so the first layer has no input gradient.
    assert flops.training == 3 * forward - first
    # A segment runs the first layer at its two ends only, and each point the layers after it.
    assert flops.segment_ends == 2 * first
    assert flops.segment_point == forward - first
    # Building the gradient's graph is a training step's forward and backward.
    assert flops.hessian_graph == flops.training


@pytest.mark.slow  # counts a conv net's passes on real tensors (seconds): not unit-sized
def test_a_conv_nets_segment_ends_are_its_first_convolution_twice() -> None:
    flops = network_flops("vgg11", 3, 32, 10)
    # 3x3 kernels from 3 to 64 channels at every one of the 32x32 output pixels.
    first_conv = 2 * 3 * 64 * 3 * 3 * 32 * 32
    assert flops.segment_ends == 2 * first_conv
    assert flops.segment_point == flops.forward - first_conv


@pytest.mark.slow  # counts each network twice at two image counts (seconds)
def test_counts_per_image_do_not_depend_on_the_images_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-image counts scale from COUNTED_IMAGES to any number of images: linearly."""
    arguments = ("vgg11", 3, 32, 10, 0.125)
    counted = network_flops(*arguments)
    monkeypatch.setattr(cost, "COUNTED_IMAGES", 5)
    network_flops.cache_clear()
    try:
        assert network_flops(*arguments) == counted
    finally:
        network_flops.cache_clear()


def test_run_sizes_enumerate_what_the_tracker_measures() -> None:
    config = WalkConfig(
        train_subset=1_000,
        validation_subset=300,
        measurement_size=200,
        batch_size=100,  # 10 steps an epoch
        epochs=3,
        track_epochs=(),
        track_steps=((0, 5), (20, 25)),
        sharpness_every=20,
    )
    sizes = run_sizes(config)
    assert (sizes.train_size, sizes.validation_size, sizes.measurement_size) == (1_000, 300, 200)
    assert sizes.training_steps == 30
    # Steps 0-4 and 20-24: the first of each window evaluates all its points, the rest carry α = 0.
    assert (sizes.segments_whole, sizes.segments_carried) == (2, 8)
    assert sizes.sharpness_estimates == 2  # steps 0 and 20
    assert sizes.evaluations == 4  # epochs 0 to 3


def test_a_full_batch_run_evaluates_at_its_cadence_and_defaults_to_the_whole_split() -> None:
    sizes = run_sizes(WalkConfig(optimizer="gd", train_subset=None, epochs=25, track_epochs=()))
    assert (sizes.train_size, sizes.validation_size) == (45_000, 10_000)  # Fashion-MNIST's paper split
    assert sizes.training_steps == 25  # one update per epoch
    assert sizes.evaluations == 4  # epochs 0, 10, 20 and the last


def test_a_network_its_data_cannot_feed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model 'mlp'"):
        config_network_flops(WalkConfig(data="cifar10", pad_to=16))


def random_data(config: WalkConfig) -> WalkData:
    """Random images of the config's data set, as many as its subsets ask for."""
    assert config.train_subset is not None and config.validation_subset is not None
    info = dataset_info(config.data, config.pad_to)
    generator = torch.Generator().manual_seed(0)
    count = config.train_subset + config.validation_subset
    inputs = torch.randn(count, info.in_channels, info.image_size, info.image_size, generator=generator)
    targets = torch.randint(0, info.num_classes, (count,), generator=generator)
    cut = config.train_subset
    return WalkData(
        inputs[:cut], targets[:cut], inputs[cut:], targets[cut:], info.in_channels, info.image_size, info.num_classes
    )


def counted_run(config: WalkConfig) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        result = run_walk(config, data=random_data(config), progress=False)
    assert result.status == "finished"
    return counter.get_total_flops()


SMALL_RUN: dict[str, Any] = {
    "arch": "mlp",
    "width_multiplier": 0.1,
    "train_subset": 120,
    "validation_subset": 30,
    "measurement_size": 50,
    "chunk_size": 25,  # the measurement set in two chunks
    "batch_size": 40,  # 3 steps an epoch
    "epochs": 3,
    "track_epochs": (),
    "track_steps": ((0, 2), (5, 8)),
    "device": "cpu",
    "checkpoint_every_epochs": None,
}


@pytest.mark.slow  # trains short walks to compare the model's FLOPs with the runner's (seconds)
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"optimizer": "gd", "epochs": 12, "track_steps": ((0, 3), (9, 12)), "gd_chunk_size": 50},
        {"optimizer": "noisy-gd", "epochs": 4, "track_steps": ((0, 2),), "noise_batches": 3},
        {"bn_mode": "recompute"},
        pytest.param(
            {
                "arch": "vgg11",
                "data": "cifar10",
                "width_multiplier": 1 / 16,
                "train_subset": 40,
                "batch_size": 10,  # 4 steps an epoch
                "measurement_size": 20,
                "chunk_size": 10,
            },
            marks=pytest.mark.slow,  # a VGG-11 trained and its FLOPs counted: seconds
        ),
        # The per-step quantities whose products do not depend on the values.
        {"hessian_trace_every": 2, "hessian_trace_probes": 6},
        {"gradient_noise_scale_every": 2, "gradient_noise_batch": 10},
        {"gradient_noise_scale_every": 5, "bn_mode": "eval"},
    ],
    ids=["sgd", "gd", "noisy-gd", "recompute", "vgg11", "trace", "noise-minibatch", "noise-per-sample"],
)
def test_a_runs_flops_are_those_the_runner_computes(changes: dict[str, Any]) -> None:
    """Without sharpness (whose products depend on the values) the model is exact."""
    config = WalkConfig(**{**SMALL_RUN, **changes})
    cost = run_cost(config)
    assert cost.total == counted_run(config)
    assert (cost.quantities > 0) == any(
        name in changes for name in ("hessian_trace_every", "gradient_noise_scale_every")
    )


@pytest.mark.slow  # runs Lanczos on a network to count its products (seconds)
def test_a_sharpness_estimate_costs_its_products() -> None:
    """The count of one estimate with its standard error (``sharpness_with_standard_error``'s
    two calls), at the products Lanczos took (capped, to keep the test short)."""
    config = WalkConfig(**SMALL_RUN)
    data = random_data(config)
    model = build_seeded_model(config, data, torch.device("cpu"))
    point = flat_parameters(model)
    for size, chunk in ((50, 50), (50, 25)):  # one chunk (the graph reused), then two
        measurement = MeasurementSet(data.train_inputs[:size], data.train_targets[:size], chunk_size=chunk)
        counter = FlopCounterMode(display=False)
        with counter:
            pair = top_hessian_eigenpair(model, point, measurement, max_iterations=LANCZOS_PRODUCTS)
            batch_rayleigh_quotients(model, point, pair.vector, measurement)
        assert pair.products == LANCZOS_PRODUCTS
        network = config_network_flops(config)
        modelled = sharpness_flops(config.replace(chunk_size=chunk), network, size, True, LANCZOS_PRODUCTS)
        assert modelled == counter.get_total_flops()


def test_flops_read_with_their_prefix() -> None:
    assert [format_flops(value) for value in (915.0, 91.6e9, 11.84e15)] == ["915 FLOP", "91.6 GFLOP", "11.8 PFLOP"]


@pytest.mark.slow  # counts ResNet-56's and VGG-11's saved graphs at full width (seconds)
def test_the_paper_profiles_products_fit_an_h100_where_resnet56s_5000_image_chunks_do_not() -> None:
    """The paper profile's ``hvp_chunk_size``: every part's Hessian-vector products fit an
    H100 by the cost model, and ResNet-56's needs its smaller chunk to (5,000 images would not)."""
    from suites.profiles import GPU_PARTS, PAPER_SIZES
    from suites.tier_plan import base_config, paper_data

    for name, size in PAPER_SIZES.items():
        config = base_config(GPU_PARTS[name], size, paper_data(GPU_PARTS[name]), "cuda")
        assert cost.hvp_peak_bytes(config) <= cost.H100_MEMORY_BYTES, name
    resnet = base_config(GPU_PARTS["resnet56"], PAPER_SIZES["resnet56"], paper_data(GPU_PARTS["resnet56"]), "cuda")
    assert resnet.hvp_chunk_size is not None and resnet.hvp_chunk_size < resnet.chunk_size
    assert cost.hvp_peak_bytes(resnet.replace(hvp_chunk_size=None)) > cost.H100_MEMORY_BYTES


def test_the_graph_of_a_product_grows_by_the_saved_activations_of_an_image() -> None:
    """The MLP without batch norm, 784-500-350-10 in float32: the forward saves per image each
    linear layer's input (a ReLU's output is the next layer's input, one storage) and the
    log-softmax of the logits; the differentiable backward adds gradients at some of those
    outputs, fewer values than the forward's. Counted by hand from the shapes."""
    per_image = cost.hessian_graph_bytes("mlp", 1, 28, 10, batch_norm=False)
    forward = 4 * (784 + 500 + 350 + 10)
    assert forward < per_image <= 2 * forward


def test_a_smaller_hvp_chunk_costs_the_products_of_several_chunks() -> None:
    config = WalkConfig(**SMALL_RUN)
    network = config_network_flops(config)
    one = sharpness_flops(config.replace(chunk_size=50), network, 50, True, LANCZOS_PRODUCTS)
    split = sharpness_flops(config.replace(chunk_size=50, hvp_chunk_size=25), network, 50, True, LANCZOS_PRODUCTS)
    assert split == sharpness_flops(config.replace(chunk_size=25), network, 50, True, LANCZOS_PRODUCTS) > one
