"""The networks against the authors' protocol: shapes, parameter counts by formula, layout."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from sgdwalk.training.models import (
    ARCHITECTURES,
    MLP,
    VGG11,
    PreActBlock,
    PreActResNet,
    build_model,
    count_parameters,
    resnet56,
    scaled_width,
)

# Batch of 2: BatchNorm1d in train mode needs more than one sample per channel.
BATCH = 2
IMAGE_SIZES = (28, 32, 64)
CHANNEL_COUNTS = (1, 3)
NUM_CLASSES = 10
GRID_WIDTH_MULTIPLIER = 0.25
# Each architecture at full width on the input it was built for in the paper (the conv
# net, not in the paper, on padded Fashion-MNIST as the CPU tier uses it).
PAPER_SETTINGS = (("mlp", 1, 28), ("vgg11", 3, 32), ("resnet56", 3, 32), ("convnet", 1, 32))

# He-normal init: the sample std of n Gaussian weights has relative standard error about
# 1/sqrt(2n): 0.05% for a 512x512x3x3 conv (2.4M weights), 0.7% for a 64x128x3x3 conv
# (74k). Bounds of 1% and 3% sit several standard errors out, and far inside the 29% gap
# between fan_out and fan_in stds for the 64 -> 128 conv (a factor sqrt(2)).
HE_STD_TOLERANCE_LARGE_CONV = 0.01
HE_STD_TOLERANCE_SMALL_CONV = 0.03


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread() -> Iterator[None]:
    """Run this module's forward passes on one thread, then restore the setting.

    Batches of two gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP's spin-waiting threads made this module 6x slower (51 s against 8 s, measured).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _bn(width: int) -> int:
    """Parameters of a batch-norm layer: a scale and a shift per channel."""
    return 2 * width


def _conv(cin: int, cout: int, kernel: int = 3, bias: bool = False) -> int:
    return kernel * kernel * cin * cout + (cout if bias else 0)


def _linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def expected_mlp_parameters(in_features: int, classes: int) -> int:
    return _linear(in_features, 500) + _bn(500) + _linear(500, 350) + _bn(350) + _linear(350, classes)


def expected_vgg11_parameters(in_channels: int, classes: int) -> int:
    # Configuration A's eight convs (with bias, as nn.Conv2d's default in the authors' code),
    # each followed by batch norm; then 512-512-512-classes.
    conv_widths = [(in_channels, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(_conv(cin, cout, bias=True) + _bn(cout) for cin, cout in conv_widths)
    return convs + _linear(512, 512) + _linear(512, 512) + _linear(512, classes)


def expected_resnet56_parameters(in_channels: int, classes: int) -> int:
    total = _conv(in_channels, 16)  # stem, no bias (batch norm follows in the first block)
    previous = 16
    for width in (16, 32, 64):
        for _block in range(9):
            total += _bn(previous) + _conv(previous, width) + _bn(width) + _conv(width, width)
            if previous != width:
                total += _conv(previous, width, kernel=1)  # projection shortcut
            previous = width
    return total + _bn(64) + _linear(64, classes)


def expected_convnet_parameters(in_channels: int, image_size: int, classes: int) -> int:
    pooled = image_size // 4
    return (
        _conv(in_channels, 32, bias=True)
        + _bn(32)
        + _conv(32, 64, bias=True)
        + _bn(64)
        + _linear(64 * pooled * pooled, 128)
        + _linear(128, classes)
    )


def test_architecture_names() -> None:
    assert ARCHITECTURES == ("mlp", "vgg11", "resnet56", "convnet")
    # The config validates against training.names (no torch import); the builders serve exactly those.
    from sgdwalk.training import models

    assert tuple(models._BUILDERS) == ARCHITECTURES


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("in_channels", CHANNEL_COUNTS)
def test_output_shape(arch: str, image_size: int, in_channels: int) -> None:
    # Spatial sizes do not depend on the widths; a quarter width keeps the 24 cases fast.
    torch.manual_seed(0)
    model = build_model(arch, in_channels, image_size, NUM_CLASSES, width_multiplier=GRID_WIDTH_MULTIPLIER)
    with torch.no_grad():
        logits = model(torch.randn(BATCH, in_channels, image_size, image_size))
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("arch", "in_channels", "image_size"), PAPER_SETTINGS)
def test_output_shape_at_full_width(arch: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, in_channels, image_size, NUM_CLASSES)
    with torch.no_grad():
        logits = model(torch.randn(BATCH, in_channels, image_size, image_size))
    assert logits.shape == (BATCH, NUM_CLASSES)


def _count(arch: str, in_channels: int, image_size: int, classes: int) -> int:
    # Built on the CPU: the meta device would skip the allocation, but its first normal_
    # imports torch's reference kernels (several seconds), more than it saves here.
    return count_parameters(build_model(arch, in_channels, image_size, classes))


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("in_channels", CHANNEL_COUNTS)
def test_parameter_counts_match_the_protocol(image_size: int, in_channels: int) -> None:
    in_features = in_channels * image_size * image_size
    expected = {
        "mlp": expected_mlp_parameters(in_features, 10),
        "vgg11": expected_vgg11_parameters(in_channels, 10),
        "resnet56": expected_resnet56_parameters(in_channels, 10),
        "convnet": expected_convnet_parameters(in_channels, image_size, 10),
    }
    assert {arch: _count(arch, in_channels, image_size, 10) for arch in ARCHITECTURES} == expected


def test_paper_mlp_is_784_500_350_10() -> None:
    # The brief's formula for the paper's MNIST MLP, written out.
    paper = 784 * 500 + 500 + 2 * 500 + 500 * 350 + 350 + 2 * 350 + 350 * 10 + 10
    assert count_parameters(MLP(1, 28, 10)) == paper


def test_resnet56_has_the_well_known_size_on_cifar() -> None:
    # He et al. 2016 report 0.85M for ResNet-56 on CIFAR-10 (parameter-free shortcuts);
    # 1x1 projections add 2,560 and the final batch norm 128, so the count stays near 0.85M.
    count = _count("resnet56", 3, 32, 10)
    assert 840_000 <= count <= 870_000, count


def test_classes_change_only_the_last_layer() -> None:
    for arch in ARCHITECTURES:
        ten, two_hundred = (_count(arch, 3, 64, k) for k in (10, 200))
        last_inputs = {"mlp": 350, "vgg11": 512, "resnet56": 64, "convnet": 128}[arch]
        assert two_hundred - ten == 190 * (last_inputs + 1), arch


def test_mlp_layout_linear_bn_relu_twice() -> None:
    layers = [type(layer) for layer in MLP(1, 28, 10).modules() if not isinstance(layer, (MLP, nn.Sequential))]
    assert layers == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]


def test_mlp_without_batch_norm_and_with_tanh() -> None:
    model = build_model("mlp", 1, 28, 10, batch_norm=False, activation="tanh")
    layers = [type(layer) for layer in model.modules() if not isinstance(layer, (MLP, nn.Sequential))]
    assert layers == [nn.Flatten, nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    # Without batch norm's 2 x (500 + 350) scale and shift parameters.
    assert count_parameters(model) == count_parameters(MLP(1, 28, 10)) - 2 * (500 + 350)
    assert isinstance(model, MLP) and model.affine_input_layer() is model.features[1]


def test_only_the_mlp_changes_its_layers_and_unknown_activations_are_named() -> None:
    for arch in ("vgg11", "resnet56", "convnet"):
        with pytest.raises(ValueError, match="can be changed for mlp only"):
            build_model(arch, 1, 28, 10, batch_norm=False)
        with pytest.raises(ValueError, match="can be changed for mlp only"):
            build_model(arch, 1, 28, 10, activation="tanh")
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'.*relu, tanh"):
        build_model("mlp", 1, 28, 10, activation="gelu")


def test_vgg11_batch_norm_after_every_conv_and_no_dropout() -> None:
    model = VGG11(3, 32, 10)
    features = list(model.features)
    convs = [i for i, layer in enumerate(features) if isinstance(layer, nn.Conv2d)]
    assert len(convs) == 8
    for i in convs:
        assert isinstance(features[i + 1], nn.BatchNorm2d)
        assert isinstance(features[i + 2], nn.ReLU)
    assert not any(isinstance(layer, nn.Dropout) for layer in model.modules())
    linears = [layer for layer in model.classifier if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(512, 512), (512, 512), (512, 10)]


@pytest.mark.parametrize(("image_size", "final_map"), [(28, 1), (32, 1), (64, 2)])
def test_vgg11_feature_map_before_the_adaptive_pool(image_size: int, final_map: int) -> None:
    model = VGG11(1, image_size, 10)
    without_head = nn.Sequential(*list(model.features)[:-2])  # drop AdaptiveAvgPool2d, Flatten
    with torch.no_grad():
        maps = without_head(torch.randn(BATCH, 1, image_size, image_size))
    assert maps.shape == (BATCH, 512, final_map, final_map)


def test_vgg11_at_32_is_the_floor_mode_network_of_the_paper() -> None:
    # ceil_mode only matters for odd map sizes; at 32 every map is even, so the network must
    # compute exactly what the authors' floor-mode pooling computes.
    torch.manual_seed(1)
    ours = VGG11(3, 32, 10)
    paper = copy.deepcopy(ours)
    for layer in paper.modules():
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = False
    inputs = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(inputs), paper(inputs))


def test_vgg11_conv_init_is_he_normal_fan_out() -> None:
    torch.manual_seed(2)
    model = VGG11(3, 32, 10)
    convs = [layer for layer in model.modules() if isinstance(layer, nn.Conv2d)]
    largest = convs[-1]  # 512 -> 512: 2.4M weights, a tight estimate of the std
    fan_out = largest.out_channels * 9
    assert largest.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=HE_STD_TOLERANCE_LARGE_CONV)
    # The 64 -> 128 conv tells fan_out (std sqrt(2/1152)) from fan_in (sqrt(2/576)).
    second = convs[1]
    assert second.weight.std().item() == pytest.approx(math.sqrt(2.0 / (128 * 9)), rel=HE_STD_TOLERANCE_SMALL_CONV)
    assert all(torch.count_nonzero(conv.bias) == 0 for conv in convs if conv.bias is not None)


def test_resnet56_layout() -> None:
    model = resnet56(3, 32, 10)
    blocks = [layer for layer in model.modules() if isinstance(layer, PreActBlock)]
    assert len(blocks) == 27
    projections = [block.shortcut for block in blocks if isinstance(block.shortcut, nn.Conv2d)]
    assert [(p.in_channels, p.out_channels, p.kernel_size, p.stride) for p in projections] == [
        (16, 32, (1, 1), (2, 2)),
        (32, 64, (1, 1), (2, 2)),
    ]
    # 2 per block + the head's: pre-activation puts no batch norm right after the stem.
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in model.modules()) == 2 * 27 + 1
    # 6n + 2 = 56 weighted layers: 54 block convs, the stem and the classifier.
    block_convs = sum(isinstance(layer, nn.Conv2d) for block in blocks for layer in (block.conv1, block.conv2))
    assert block_convs + 2 == 56


def test_resnet_block_is_pre_activation() -> None:
    # The order in which a block's layers run: batch norm before each conv.
    block = PreActBlock(4, 8, stride=2)
    order: list[str] = []
    for name in ("bn1", "conv1", "bn2", "conv2", "shortcut"):
        getattr(block, name).register_forward_hook(lambda *_, name=name: order.append(name))
    block(torch.randn(BATCH, 4, 8, 8))
    assert order == ["bn1", "conv1", "bn2", "conv2", "shortcut"]


def test_resnet_head_is_bn_relu_global_pool_linear() -> None:
    head = [type(layer) for layer in resnet56(3, 32, 10).head]
    assert head == [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]


def test_width_multiplier_scales_every_hidden_width() -> None:
    mlp = MLP(1, 28, 10, width_multiplier=0.25)
    assert [layer.out_features for layer in mlp.modules() if isinstance(layer, nn.Linear)] == [125, 88, 10]
    vgg = VGG11(3, 32, 10, width_multiplier=0.25)
    assert [layer.out_channels for layer in vgg.modules() if isinstance(layer, nn.Conv2d)] == [
        16, 32, 64, 64, 128, 128, 128, 128,
    ]  # fmt: skip
    assert [layer.out_features for layer in vgg.classifier if isinstance(layer, nn.Linear)] == [128, 128, 10]
    resnet = PreActResNet(1, 3, 32, 10, width_multiplier=0.5)
    blocks = [block for block in resnet.blocks if isinstance(block, PreActBlock)]
    assert [block.conv2.out_channels for block in blocks] == [8, 16, 32]
    assert scaled_width(16, 0.01) == 1  # never a zero-width layer
    with pytest.raises(ValueError, match="width_multiplier"):
        scaled_width(16, 0.0)


def test_same_seed_same_initial_parameters() -> None:
    def initial(arch: str) -> list[torch.Tensor]:
        torch.manual_seed(1111)
        return [p.detach().clone() for p in build_model(arch, 1, 28, 10, width_multiplier=0.25).parameters()]

    for arch in ARCHITECTURES:
        assert all(torch.equal(a, b) for a, b in zip(initial(arch), initial(arch), strict=True)), arch


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet18'") as error:
        build_model("resnet18", 3, 32, 10)
    for name in ARCHITECTURES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [((0, 32, 10), "in_channels"), ((3, 2, 10), "image_size"), ((3, 32, 0), "num_classes")],
)
def test_invalid_shapes_are_rejected(arguments: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("convnet", *arguments)
