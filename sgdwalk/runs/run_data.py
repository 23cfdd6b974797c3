"""The tensors a run trains and evaluates on: ``WalkData``, loaded from a ``WalkConfig`` or handed in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sgdwalk.runs.streams import DATA_SUBSET_SEED
from sgdwalk.training.config import ConfigError, WalkConfig


@dataclass(frozen=True)
class WalkData:
    """The tensors a run trains and evaluates on, and what the model needs to know of them.

    ``load_walk_data`` builds it from a ``WalkConfig``; tests build one from small tensors.
    The validation split may be empty (then no validation metrics are recorded).
    """

    train_inputs: Tensor
    train_targets: Tensor
    val_inputs: Tensor
    val_targets: Tensor
    in_channels: int
    image_size: int
    num_classes: int
    # Applied to training batches only when config.augment (never to the measurement set).
    augmentation: Callable[[Tensor, torch.Generator], Tensor] | None = None
    source: str = "in memory"


def load_walk_data(config: WalkConfig) -> WalkData:
    """The config's data set, split as in the paper, subset and padded as asked, on the CPU.

    Raises ``DatasetNotFoundError`` (its message names the three ways to provide the data).
    """
    from sgdwalk.training.data import augmentation_for, load_tensors

    common: dict[str, Any] = {"pad_to": config.pad_to, "subset_seed": DATA_SUBSET_SEED}
    train = load_tensors(
        config.data, "train", config.data_root, download=config.download, subset=config.train_subset, **common
    )
    # The train split resolved (or downloaded) the folder; the validation split reads it too.
    val = load_tensors(config.data, "val", config.data_root, **common)
    # The first n validation images (the files are stored in mixed class order).
    keep = len(val) if config.validation_subset is None else min(config.validation_subset, len(val))
    info = train.info
    return WalkData(
        train.inputs,
        train.targets,
        val.inputs[:keep],
        val.targets[:keep],
        info.in_channels,
        info.image_size,
        info.num_classes,
        augmentation=augmentation_for(config.data),
        source=str(train.source),
    )


def walk_data_for(config: WalkConfig, data: WalkData | None) -> WalkData:
    """The data handed in, or the config's loaded; a data set that cannot serve the config
    (a subset larger than the split, a pad below the image size, a bad file) is a ``ConfigError``."""
    if data is not None:
        return data
    try:
        return load_walk_data(config)
    except ValueError as error:
        raise ConfigError(f"data set {config.data!r}: {error}") from error
