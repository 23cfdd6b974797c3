"""The networks of the authors' protocol (MLP, VGG-11, pre-activation ResNet-56) and a small
conv net for CPU runs, behind one registry, ``build_model``.

Every constructor takes the same four arguments (``in_channels``, ``image_size``,
``num_classes``, ``width_multiplier``) so a run's configuration names a model by string and
the data set's ``DatasetInfo`` fills the rest. ``width_multiplier`` scales every hidden width
(1.0 is the paper); it exists for a tiny CPU profile and never changes depth or layout.
The MLP also takes ``batch_norm`` and ``activation``: batch norm changes the curvature GD
sees, so the edge-of-stability check (X1) runs the MLP without it, with tanh.

Protocol: docs/protocol.md#networks (read from the authors' public code).
Deviations, each needed for image sizes other than 32, are stated where they are made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from sgdwalk.training.names import ACTIVATIONS, ARCHITECTURES, CONFIGURABLE_LAYERS

__all__ = [
    "ARCHITECTURES",
    "ConvNet",
    "MLP",
    "PreActBlock",
    "PreActResNet",
    "VGG11",
    "VGG11_CONFIG",
    "build_model",
    "count_parameters",
    "resnet56",
    "scaled_width",
]

# VGG configuration "A" (Simonyan & Zisserman 2014): conv widths, "M" = 2x2 max pool.
VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

# The protocol's hidden widths; each is scaled by ``width_multiplier``.
MLP_HIDDEN_WIDTHS: tuple[int, int] = (500, 350)
VGG11_CLASSIFIER_WIDTH: int = 512
RESNET_STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)
# ResNet-56 = 6n + 2 layers with n = 9 blocks per stage (He et al. 2016, CIFAR variant).
RESNET56_BLOCKS_PER_STAGE: int = 9
CONVNET_CONV_WIDTHS: tuple[int, int] = (32, 64)
CONVNET_HIDDEN_WIDTH: int = 128

# The conv net halves the image twice; below 4 pixels its second pool would leave nothing.
MIN_IMAGE_SIZE: int = 4


def scaled_width(width: int, width_multiplier: float) -> int:
    """``width * width_multiplier`` rounded, and never below one unit (a layer must exist)."""
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    return max(1, round(width * width_multiplier))


def _check_shape_arguments(in_channels: int, image_size: int, num_classes: int) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")


def _he_normal_conv_init(module: nn.Module) -> None:
    """He-normal with fan_out on every conv, zero conv biases: the authors' ``--init he``.

    Their code draws N(0, 2 / (k*k*out_channels)) for each Conv2d, which is
    ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``; linear layers and batch norm
    keep PyTorch's defaults, as in their code.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; known activations: {', '.join(ACTIVATIONS)}")


class MLP(nn.Module):
    """784-500-350-10 with BatchNorm1d: (Linear → BN → ReLU) twice, then Linear to classes.

    The input is flattened, so the first layer has ``in_channels * image_size**2`` inputs
    (784 for MNIST at 28, 1024 for MNIST padded to 32). ``batch_norm=False`` drops both
    batch-norm layers and ``activation="tanh"`` replaces the ReLUs (the protocol's network
    is the default); the first Linear stays at index 1 of ``features`` either way.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width_multiplier: float = 1.0,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_shape_arguments(in_channels, image_size, num_classes)
        in_features = in_channels * image_size * image_size
        first, second = (scaled_width(w, width_multiplier) for w in MLP_HIDDEN_WIDTHS)

        def hidden(width: int) -> list[nn.Module]:
            return [nn.BatchNorm1d(width), _activation(activation)] if batch_norm else [_activation(activation)]

        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, first),
            *hidden(first),
            nn.Linear(first, second),
            *hidden(second),
        )
        self.classifier = nn.Linear(second, num_classes)

    def affine_input_layer(self) -> nn.Module:
        """The layer that reads the raw input; its output is affine in its own parameters.

        Lets segment measurements evaluate it twice per chunk instead of once per α
        (``sgdwalk.instrument.measurement.segment_losses``).
        """
        return self.features[1]

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x))
        return logits


class VGG11(nn.Module):
    """VGG-11 (configuration A) with BatchNorm2d after every conv, classifier 512-512-512-classes.

    Pooling at sizes other than 32, one choice made and why:
    - every max pool uses ``ceil_mode=True``. For even sizes (32, 64) it gives exactly the
      floor-mode maps of the authors' network; at 28 the maps go 28-14-7-4-2-1 instead of
      failing at the fifth pool (floor mode reaches 0 pixels) or silently dropping the
      last row and column of the 7x7 and 3x3 maps.
    - an ``AdaptiveAvgPool2d(1)`` ends the features. At 32 and 28 the map is already 1x1,
      so it is the identity and the network is the paper's; at 64 it averages the 2x2 map,
      so the classifier keeps the protocol's 512 inputs instead of growing to 2048.
    Skipping pools was rejected: it would make the conv stack's receptive field and depth
    of pooling depend on the image size, a larger change than either of the above.
    Conv layers keep their biases (the authors' ``nn.Conv2d`` default) although batch norm
    follows; the parameter count says so. No dropout (the protocol's dropout is 0).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        _check_shape_arguments(in_channels, image_size, num_classes)
        layers: list[nn.Module] = []
        channels = in_channels
        for entry in VGG11_CONFIG:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                width = scaled_width(int(entry), width_multiplier)
                layers += [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        hidden = scaled_width(VGG11_CLASSIFIER_WIDTH, width_multiplier)
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        _he_normal_conv_init(self)

    def affine_input_layer(self) -> nn.Module:
        """The layer reading the raw input (see ``MLP.affine_input_layer``)."""
        return self.features[0]

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x))
        return logits


class PreActBlock(nn.Module):
    """BN → ReLU → conv3x3 → BN → ReLU → conv3x3, plus the shortcut.

    The shortcut is the identity, or a bias-free 1x1 conv with the block's stride where
    the width or resolution changes. As in the authors' code the projection reads the
    block's input ``x`` (not its pre-activated ``relu(bn1(x))``).
    """

    def __init__(self, in_width: int, out_width: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_width)
        self.conv1 = nn.Conv2d(in_width, out_width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.conv2 = nn.Conv2d(out_width, out_width, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_width != out_width:
            self.shortcut = nn.Conv2d(in_width, out_width, kernel_size=1, stride=stride, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        shortcut: Tensor = self.shortcut(x)
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: conv3x3 stem, three stages, BN-ReLU-pool-linear.

    The first block of stages 2 and 3 has stride 2 and a 1x1 projection shortcut. The head
    pools globally (``AdaptiveAvgPool2d(1)``): the authors' ``AvgPool2d(8)`` is the same
    thing on the 8x8 map of a 32 input, and the global form also fits 28 (7x7) and 64 (16x16).
    """

    def __init__(
        self,
        blocks_per_stage: int,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        width_multiplier: float = 1.0,
        stage_widths: Sequence[int] = RESNET_STAGE_WIDTHS,
    ) -> None:
        super().__init__()
        _check_shape_arguments(in_channels, image_size, num_classes)
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        widths = [scaled_width(w, width_multiplier) for w in stage_widths]
        self.stem = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        previous = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                # Stage 1 keeps the resolution; later stages halve it in their first block.
                stride = 2 if (stage > 0 and index == 0) else 1
                blocks.append(PreActBlock(previous, width, stride))
                previous = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm2d(previous),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(previous, num_classes),
        )
        _he_normal_conv_init(self)

    def affine_input_layer(self) -> nn.Module:
        """The layer reading the raw input (see ``MLP.affine_input_layer``)."""
        return self.stem

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.blocks(self.stem(x)))
        return logits


def resnet56(
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    width_multiplier: float = 1.0,
) -> PreActResNet:
    """Pre-activation ResNet-56: 9 blocks per stage, widths 16/32/64 (times the multiplier)."""
    return PreActResNet(
        RESNET56_BLOCKS_PER_STAGE,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
    )


class ConvNet(nn.Module):
    """A small conv net for CPU runs (not in the paper).

    (conv3x3 32 → BN → ReLU → max pool 2) → (conv3x3 64 → BN → ReLU → max pool 2) →
    linear 128 → ReLU → linear classes. The flattened size follows the image size
    (64 * (image_size // 4)**2), so it keeps all spatial information at 28 and 32.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        _check_shape_arguments(in_channels, image_size, num_classes)
        first, second = (scaled_width(w, width_multiplier) for w in CONVNET_CONV_WIDTHS)
        hidden = scaled_width(CONVNET_HIDDEN_WIDTH, width_multiplier)
        pooled_size = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=3, padding=1),
            nn.BatchNorm2d(first),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.BatchNorm2d(second),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(second * pooled_size * pooled_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        _he_normal_conv_init(self)

    def affine_input_layer(self) -> nn.Module:
        """The layer reading the raw input (see ``MLP.affine_input_layer``)."""
        return self.features[0]

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x))
        return logits


# Each takes the four shape arguments as keywords (the MLP also batch_norm and activation).
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "vgg11": VGG11,
    "resnet56": resnet56,
    "convnet": ConvNet,
}

# ARCHITECTURES (training.names) lists these keys for the config, which must not import torch.


def build_model(
    arch: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width_multiplier: float = 1.0,
    *,
    batch_norm: bool = True,
    activation: str = "relu",
) -> nn.Module:
    """The network named ``arch`` (one of ``ARCHITECTURES``) for the given input and classes.

    ``batch_norm`` and ``activation`` change the layers of the architectures in
    ``CONFIGURABLE_LAYERS`` (the MLP); the others refuse anything but the defaults rather
    than silently build the protocol's network.

    Parameters are initialised from torch's global RNG: seed it (``torch.manual_seed``)
    before calling for a reproducible θ_0.
    """
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known architectures: {', '.join(ARCHITECTURES)}") from None
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known activations: {', '.join(ACTIVATIONS)}")
    layers: dict[str, object] = {}
    if arch in CONFIGURABLE_LAYERS:
        layers = {"batch_norm": batch_norm, "activation": activation}
    elif not batch_norm or activation != "relu":
        raise ValueError(
            f"batch_norm and activation can be changed for {', '.join(CONFIGURABLE_LAYERS)} only, not {arch!r}"
        )
    model: nn.Module = builder(
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        **layers,
    )
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
