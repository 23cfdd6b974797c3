"""The names a ``WalkConfig`` chooses its network and data set by, in a module of plain
tuples: the config validates names (and the CLI lists them) without importing torch, the
models or the data readers. ``models.build_model`` and ``data.load_tensors`` serve exactly
these names (tests/test_models.py and tests/test_data.py check that the registries agree).
"""

from __future__ import annotations

from typing import Final

# Keys of models._BUILDERS, in the order the CLI lists them.
ARCHITECTURES: Final[tuple[str, ...]] = ("mlp", "vgg11", "resnet56", "convnet")
# The data sets data.load_tensors reads (their normalisation is data.NORMALISATION).
DATASETS: Final[tuple[str, ...]] = ("cifar10", "mnist", "fashion-mnist", "tiny-imagenet")
# The MLP's hidden nonlinearity: the protocol's ReLU, or tanh, the smooth one of the
# edge-of-stability experiments (Cohen et al. 2021), whose Hessian has no kinks.
ACTIVATIONS: Final[tuple[str, ...]] = ("relu", "tanh")
# The architectures whose batch norm and activation can be changed (``build_model``).
CONFIGURABLE_LAYERS: Final[tuple[str, ...]] = ("mlp",)

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "CONFIGURABLE_LAYERS", "DATASETS"]
