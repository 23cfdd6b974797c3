"""What each data set of the paper is: its splits, channels, image size, classes and
normalisation, and the errors of a data set missing or malformed (see ``sgdwalk.training.data``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.training.names import DATASETS

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Per-channel (mean, std) of pixel values in [0, 1]; inputs become (x - mean) / std.
# cifar10: the authors' constants (their sgd.py). The std is the widely copied figure, not
#   the pixel std (~0.247, 0.243, 0.261); kept so inputs match the authors' exactly.
# mnist: the training-set statistics (0.1307, 0.3081). The authors used (0.5, 1.0): centred
#   but not scaled; per-channel mean/std is this suite's stated choice for every data set.
# fashion-mnist: its 60k training images, measured here on Debian's files: 0.2860, 0.3530.
# tiny-imagenet: the statistics commonly quoted for its 100k training images (not
#   recomputed here; no copy of the data set was at hand).
NORMALISATION: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "tiny-imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}

# The paper's split of the source training file (see the module docstring).
PAPER_TRAIN_SIZE: int = 45_000
_VAL_RANGES: Mapping[str, tuple[int, int]] = {
    "cifar10": (45_000, 50_000),
    "mnist": (50_000, 60_000),
    "fashion-mnist": (50_000, 60_000),
}

TINY_IMAGENET_CLASSES: int = 200
TINY_IMAGENET_TRAIN_PER_CLASS: int = 500
TINY_IMAGENET_FOLDER: str = "tiny-imagenet-200"
# The archive's published md5 (as used by torchvision-style Tiny-ImageNet loaders).
TINY_IMAGENET_URL: str = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5: str = "90528d7ca1a48142e341f4ef8d21d0de"

CIFAR10_FOLDER: str = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE: str = "test_batch"
CIFAR10_IMAGE_BYTES: int = 3 * 32 * 32

IDX_FILES: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(SgdwalkError):
    """The data set is in none of the places searched, and no download was asked for or the
    download failed. The message names every way to provide it (the CLI exits with 2)."""


class DatasetFormatError(SgdwalkError, ValueError):
    """A data file exists but does not hold what its format promises."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set (after optional padding)."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    # Images in the paper's training split (45,000; 500 per class for Tiny-ImageNet).
    train_size: int


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")


def tiny_imagenet_classes(folder: Path, classes: int | Sequence[str] | None) -> list[str]:
    """The chosen wnids, sorted (their order is the label order, as in ImageFolder).

    ``None``: all classes under ``train/``; an int k: the first k wnids in sorted order (a
    fixed, seed-free choice); a sequence: those wnids, which must all exist.
    """
    available = sorted(entry.name for entry in (folder / "train").iterdir() if entry.is_dir())
    if isinstance(classes, str):  # one wnid, not a sequence of one-letter names
        classes = [classes]
    if classes is None:
        return available
    if isinstance(classes, int):
        if not 1 <= classes <= len(available):
            raise ValueError(f"classes must be between 1 and {len(available)}, got {classes}")
        return available[:classes]
    chosen = sorted(set(classes))
    missing = [wnid for wnid in chosen if wnid not in available]
    if missing:
        raise ValueError(f"Tiny-ImageNet classes not under {folder / 'train'}: {', '.join(missing)}")
    return chosen


def _class_count(name: str, classes: int | Sequence[str] | None) -> int:
    if classes is not None and name != "tiny-imagenet":
        raise ValueError(f"a class subset is only supported for tiny-imagenet, not {name!r}")
    if name != "tiny-imagenet":
        return 10
    if classes is None:
        return TINY_IMAGENET_CLASSES
    if isinstance(classes, int):
        return classes
    return 1 if isinstance(classes, str) else len(set(classes))


def dataset_info(name: str, pad_to: int | None = None, classes: int | Sequence[str] | None = None) -> DatasetInfo:
    """Channels, image size (``pad_to`` when given), classes and paper train size of ``name``.

    ``classes`` (Tiny-ImageNet only) is the class subset, as for ``load_tensors``.
    """
    check_dataset_name(name)
    in_channels = len(NORMALISATION[name][0])
    image_size = {"cifar10": 32, "mnist": 28, "fashion-mnist": 28, "tiny-imagenet": 64}[name]
    num_classes = _class_count(name, classes)
    train_size = PAPER_TRAIN_SIZE
    if name == "tiny-imagenet":
        train_size = TINY_IMAGENET_TRAIN_PER_CLASS * num_classes
    if pad_to is not None:
        if pad_to < image_size:
            raise ValueError(f"pad_to={pad_to} is smaller than {name}'s image size {image_size}")
        image_size = pad_to
    return DatasetInfo(name, in_channels, image_size, num_classes, train_size)


def split_indices(name: str, split: str, available: int) -> range:
    """Positions in the source file that make up ``split``, clipped to ``available`` images.

    For ``"test"`` (and Tiny-ImageNet's ``"val"``, a file of its own) the whole file.
    """
    check_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if name == "tiny-imagenet":
        if split == "test":
            raise ValueError("Tiny-ImageNet's test images carry no labels; use split='val'")
        return range(available)
    if split == "train":
        return range(min(PAPER_TRAIN_SIZE, available))
    if split == "val":
        start, stop = _VAL_RANGES[name]
        return range(min(start, available), min(stop, available))
    return range(available)
