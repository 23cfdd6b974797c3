"""Data sets of the paper as in-memory tensors: where they are found, how they are split,
normalised and augmented, and a seeded minibatch iterator.

Design, in short:

- **Whole splits as tensors.** ``load_tensors`` reads a split once into a float32 N×C×H×W
  tensor (normalised) and an int64 label tensor, on the device asked for. Fashion-MNIST's
  45k×1×28×28 is 141 MB; CIFAR-10's 45k×3×32×32 is 553 MB. Training then indexes tensors:
  no ``DataLoader`` worker processes, because the machines here have 2 CPU cores (workers
  would compete with the training process for them) and a GPU run would only wait on
  host-to-device copies; indexing a device-resident tensor is faster in both cases.
- **Own readers for local files, torchvision for downloading.** MNIST/Fashion-MNIST IDX
  files are read by ``read_idx`` (gzip or raw, detected by content), in torchvision's
  ``<root>/FashionMNIST/raw/`` layout or Debian's flat ``/usr/share/datasets/fashion-mnist``
  layout alike. Reading the files directly was chosen over pointing torchvision at a
  symlinked cache folder: torchvision's ``MNIST`` only accepts *uncompressed* files in
  ``raw/`` (so Debian's ``.gz`` files would have to be decompressed into a writable cache,
  47 MB, and kept in sync), and Debian's gzip files do not have the md5 sums torchvision
  publishes (they were recompressed), so torchvision's download path would refetch them.
  CIFAR-10's python pickle batches are read by ``read_cifar10_folder`` with a restricted
  unpickler. torchvision's ``CIFAR10(download=False)`` refuses any folder whose six batch
  files do not match its published md5 sums (``_check_integrity``), which rules out every
  test file and any re-packed copy; reading the batches ourselves checks their structure
  (keys, shapes, label range) instead. ``cifar10_checksum_mismatches`` runs torchvision's
  md5 check for whoever wants to know a local copy is the official one. ``download=True``
  uses torchvision (``MNIST``/``FashionMNIST``/``CIFAR10`` with ``download=True``, which
  verify the archives they fetch) and then reads the result with the readers above.
- **Root resolution**, first hit wins: ``data_root`` (CLI ``--data-root``), then the
  environment variable ``SGDWALK_DATA_ROOT``, then system locations
  (``SYSTEM_DATA_ROOTS``: Debian's ``dataset-fashion-mnist`` installs
  ``/usr/share/datasets/fashion-mnist``), then the download cache
  (``default_download_root()``); with ``download=True`` a missing data set is fetched
  into the first of data_root, ``$SGDWALK_DATA_ROOT``, the cache. Otherwise
  ``DatasetNotFoundError`` names every way to provide it.

The paper's splits (docs/protocol.md#data-and-splits, from the authors' ``sgd.py``) are index ranges of the source
training file, clipped to the images the file holds:

| data set | train | val | test |
|---|---|---|---|
| cifar10 | 0-44,999 | 45,000-49,999 | test_batch |
| mnist, fashion-mnist | 0-44,999 | 50,000-59,999 (the authors' MNIST choice; 45,000-49,999 unused) | t10k |
| tiny-imagenet | train/ of the chosen classes | val/ of the chosen classes | none (unlabelled) |
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.training.names import DATASETS

__all__ = [
    "DATASETS",
    "ENV_DATA_ROOT",
    "NORMALISATION",
    "SPLITS",
    "SYSTEM_DATA_ROOTS",
    "Augmentation",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "RandomCropFlip",
    "TensorSplit",
    "augmentation_for",
    "cifar10_checksum_mismatches",
    "crop_and_flip",
    "dataset_info",
    "default_download_root",
    "find_dataset",
    "iterate_minibatches",
    "load_tensors",
    "read_cifar10_folder",
    "read_idx",
    "resolve_dataset",
    "split_indices",
    "tiny_imagenet_classes",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")

ENV_DATA_ROOT: str = "SGDWALK_DATA_ROOT"
# Searched after data_root and $SGDWALK_DATA_ROOT. Debian's dataset packages install here
# (dataset-fashion-mnist → /usr/share/datasets/fashion-mnist). Read at call time, so tests
# can replace it with monkeypatch.
SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

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

# Random-crop padding of the training augmentation. CIFAR-10: the protocol's "crop 32 pad 4".
# Tiny-ImageNet: the protocol says "crop 64 + flip"; a 64 crop of a 64 image needs padding
# to move at all, and 4 pixels (as for CIFAR) is an inference, not the authors' stated value.
AUGMENTATION_PADDING: Mapping[str, int] = {"cifar10": 4, "tiny-imagenet": 4}

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
# torchvision's folder for each IDX data set is ``<root>/<this name>/raw``; Debian's and the
# flat layout's is ``<root>/<data set name>``.
_TORCHVISION_IDX_FOLDER: Mapping[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_GZIP_MAGIC: bytes = b"\x1f\x8b"
_IDX_UBYTE_TYPE: int = 0x08


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


@dataclass(frozen=True)
class TensorSplit:
    """One split in memory. Behaves like a ``TensorDataset``: ``len``, indexing, ``tensors``."""

    inputs: Tensor  # float32, N×C×H×W, normalised
    targets: Tensor  # int64, N
    info: DatasetInfo
    # Where each row came from: its position in the source file (CIFAR-10's five training
    # batches count as one file of 50k; Tiny-ImageNet: position in the split's file list).
    source_indices: Tensor
    # The folder the files were read from, for the run's record.
    source: Path

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]

    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        return self.inputs, self.targets

    def to(self, device: torch.device | str) -> TensorSplit:
        return replace(self, inputs=self.inputs.to(device), targets=self.targets.to(device))


# ---------------------------------------------------------------------------------------------
# Data set facts


def _check_name(name: str) -> None:
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
    _check_name(name)
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
    _check_name(name)
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


# ---------------------------------------------------------------------------------------------
# Readers


def read_idx(path: Path) -> np.ndarray:
    """An IDX ubyte file (MNIST's format), gzip-compressed or not, as a uint8 array.

    Compression is detected from the content (gzip's magic bytes), not the file name.
    The header is checked against the data length, so a truncated file fails here.
    """
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DatasetFormatError(f"{path}: damaged gzip stream ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE_TYPE:
        raise DatasetFormatError(f"{path}: IDX element type 0x{raw[2]:02x}, expected unsigned byte 0x08")
    dims = raw[3]
    header_size = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DatasetFormatError(f"{path}: {len(raw)} bytes, but its header {shape} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The raw file when present (torchvision extracts next to the .gz), else the .gz."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = IDX_FILES["test" if split == "test" else "train"]
    image_path, label_path = _idx_file(folder, image_stem), _idx_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DatasetFormatError(f"{folder}: missing {image_stem} or {label_stem} (raw or .gz)")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(f"{image_path}: images of shape {images.shape[1:]}, expected 28x28")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(f"{label_path}: {labels.shape} labels for {images.shape[0]} images")
    return images[:, None], labels


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches but refuses any global beyond numpy's array rebuilders.

    A pickle can run arbitrary code on load; a CIFAR batch only needs these. The real
    files were written by numpy 1.x as ``numpy.core.multiarray``; that module is mapped to
    its numpy 2 name ``numpy._core.multiarray`` here rather than through numpy's
    deprecated ``numpy.core`` alias.
    """

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        try:
            # latin1: the batches were pickled by Python 2; numpy's own advice for such files.
            entry = _CifarUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise DatasetFormatError(f"{path}: not a CIFAR-10 python batch ({error})") from error
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise DatasetFormatError(f"{path}: a CIFAR-10 batch needs the keys 'data' and 'labels'")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_IMAGE_BYTES:
        raise DatasetFormatError(f"{path}: data {data.dtype} {data.shape}, expected uint8 N×3072")
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major: that is C×H×W.
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 N×3×32×32) and labels of ``cifar-10-batches-py``'s training or test file.

    ``split`` "train" and "val" both read the five training batches (50k as one file).
    """
    names = (CIFAR10_TEST_FILE,) if split == "test" else CIFAR10_TRAIN_FILES
    parts = [_read_cifar_batch(folder / file_name) for file_name in names]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DatasetFormatError(f"{folder}: CIFAR-10 labels outside 0-9")
    return images, labels


def cifar10_checksum_mismatches(folder: Path) -> list[str]:
    """Files of a ``cifar-10-batches-py`` folder whose md5 differs from torchvision's list.

    Empty for the official data set. ``load_tensors`` does not call this (it reads any
    well-formed batches, including the small ones tests write); call it to certify a copy.
    """
    from torchvision.datasets import CIFAR10

    expected = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    mismatches = []
    for file_name, md5 in expected:
        path = folder / file_name
        if not path.is_file() or hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() != md5:
            mismatches.append(file_name)
    return mismatches


def _tiny_imagenet_samples(folder: Path, split: str, wnids: Sequence[str]) -> list[tuple[Path, int]]:
    """(image path, label) of a Tiny-ImageNet split, labels = positions in ``wnids``."""
    class_to_idx = {wnid: index for index, wnid in enumerate(wnids)}
    if split == "train":
        from torchvision.datasets import ImageFolder

        class _ChosenClasses(ImageFolder):
            # ImageFolder lists every class folder; this keeps the chosen ones, same labels.
            def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
                return list(wnids), dict(class_to_idx)

        # ImageFolder opens no image while indexing, so this only walks train/<wnid>/images.
        train = _ChosenClasses(str(folder / "train"))
        return [(Path(path), label) for path, label in train.samples]
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetFormatError(f"{folder}: missing val/val_annotations.txt")
    samples = []
    # Each line: file name, wnid, then a bounding box (x0, y0, x1, y1) this suite ignores.
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        file_name, wnid = fields[0], fields[1]
        if wnid in class_to_idx:
            samples.append((folder / "val" / "images" / file_name, class_to_idx[wnid]))
    return samples


def _read_images(paths: Sequence[Path], size: int) -> np.ndarray:
    """Decode images to uint8 N×3×size×size, converting greyscale ones to RGB (as ImageFolder)."""
    from PIL import Image

    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        if array.shape != (size, size, 3):
            raise DatasetFormatError(f"{path}: image of size {array.shape[:2]}, expected {size}x{size}")
        images[index] = array.transpose(2, 0, 1)
    return images


# ---------------------------------------------------------------------------------------------
# Finding and fetching


def default_download_root() -> Path:
    """Where ``download=True`` puts data when neither data_root nor $SGDWALK_DATA_ROOT is set."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sgdwalk" / "datasets"


def _dataset_folders(name: str, root: Path) -> list[Path]:
    """Folders under ``root`` that may hold ``name``, in the order they are tried.

    ``root`` itself counts only when it is named as the data set's own folder (e.g.
    ``--data-root /usr/share/datasets/fashion-mnist``), so that MNIST and Fashion-MNIST,
    whose files have the same names, are never mistaken for each other.
    """
    if name in _TORCHVISION_IDX_FOLDER:
        torchvision_name = _TORCHVISION_IDX_FOLDER[name]
        folders = [root / torchvision_name / "raw", root / name]
        root_is_own = root.name == name or (root.name == "raw" and root.parent.name == torchvision_name)
    else:
        own_name = CIFAR10_FOLDER if name == "cifar10" else TINY_IMAGENET_FOLDER
        folders = [root / own_name]
        root_is_own = root.name == own_name
    if root_is_own:
        folders.append(root)
    return folders


def _missing_files(name: str, folder: Path) -> list[str]:
    """What ``folder`` lacks to hold ``name``; empty when complete."""
    if not folder.is_dir():
        return ["(no such folder)"]
    if name in _TORCHVISION_IDX_FOLDER:
        stems = [stem for pair in IDX_FILES.values() for stem in pair]
        return [f"{stem}[.gz]" for stem in stems if _idx_file(folder, stem) is None]
    if name == "cifar10":
        return [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / f).is_file()]
    needed = ["train", "val/images", "val/val_annotations.txt"]
    return [part for part in needed if not (folder / part).exists()]


def _search_roots(data_root: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """(root, where it came from), in resolution order."""
    roots: list[tuple[Path, str]] = []
    if data_root is not None:
        roots.append((Path(data_root), "data_root / --data-root"))
    if os.environ.get(ENV_DATA_ROOT):
        roots.append((Path(os.environ[ENV_DATA_ROOT]), f"${ENV_DATA_ROOT}"))
    roots += [(root, "system location") for root in SYSTEM_DATA_ROOTS]
    roots.append((default_download_root(), "download cache"))
    return roots


def find_dataset(name: str, data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first complete folder of ``name`` in resolution order, or None."""
    _check_name(name)
    for root, _ in _search_roots(data_root):
        for folder in _dataset_folders(name, root):
            if not _missing_files(name, folder):
                return folder
    return None


def _download_mnist(name: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        from torchvision.datasets import MNIST, FashionMNIST

        dataset_class = MNIST if name == "mnist" else FashionMNIST
        # Downloads all four files into <root>/<class name>/raw, verifying their md5 sums.
        dataset_class(str(root), train=True, download=True)

    return fetch


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


def _download_tiny_imagenet(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)


# name → function that fetches the data set into a root folder. Tests replace entries.
_DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "cifar10": _download_cifar10,
    "mnist": _download_mnist("mnist"),
    "fashion-mnist": _download_mnist("fashion-mnist"),
    "tiny-imagenet": _download_tiny_imagenet,
}

_EXPECTED_LAYOUT: Mapping[str, str] = {
    "cifar10": f"{CIFAR10_FOLDER}/ with data_batch_1..5 and test_batch (python version)",
    "mnist": "MNIST/raw/ (torchvision) or mnist/ (flat) with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "fashion-mnist": (
        "FashionMNIST/raw/ (torchvision) or fashion-mnist/ (flat, as Debian's)"
        " with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    ),
    "tiny-imagenet": f"{TINY_IMAGENET_FOLDER}/ with train/<wnid>/images/*.JPEG, val/images, val/val_annotations.txt",
}
# Debian packages that install a data set, and where: (package, folder).
_SYSTEM_PACKAGE: Mapping[str, tuple[str, str]] = {
    "fashion-mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
}


def _not_found_message(name: str, data_root: str | os.PathLike[str] | None) -> str:
    searched = []
    for root, origin in _search_roots(data_root):
        for folder in _dataset_folders(name, root):
            missing = _missing_files(name, folder)
            what = "no such folder" if missing == ["(no such folder)"] else "missing " + ", ".join(missing)
            searched.append(f"  {folder} ({origin}): {what}")
    system_folders = [str(folder) for root in SYSTEM_DATA_ROOTS for folder in _dataset_folders(name, root)]
    system = f"put it in a system location: {', '.join(system_folders) or '(none is configured)'}"
    if name in _SYSTEM_PACKAGE:
        package, location = _SYSTEM_PACKAGE[name]
        system += f"; `sudo apt-get install {package}` installs it in {location}"
    else:
        system += f"; no system package provides {name}"
    if data_root is not None:
        target = str(data_root)
    else:
        target = f"--data-root, else ${ENV_DATA_ROOT}, else {default_download_root()}"
    return "\n".join(
        [
            f"data set {name!r} not found. Searched:",
            *searched,
            "Provide it in one of three ways:",
            f"  1. --data-root DIR (data_root=DIR), where DIR holds {_EXPECTED_LAYOUT[name]};",
            f"  2. set the environment variable {ENV_DATA_ROOT}=DIR, or {system};",
            f"  3. --download (download=True) to fetch it with torchvision into {target}.",
        ]
    )


def resolve_dataset(name: str, data_root: str | os.PathLike[str] | None = None, download: bool = False) -> Path:
    """The folder holding ``name``'s files: found in resolution order, or downloaded if asked.

    Raises ``DatasetNotFoundError`` (naming every way to provide it) when the data set is
    nowhere and ``download`` is false, or when the download fails.
    """
    _check_name(name)
    found = find_dataset(name, data_root)
    if found is not None:
        return found
    if not download:
        raise DatasetNotFoundError(_not_found_message(name, data_root))
    if data_root is not None:
        target = Path(data_root)
    elif os.environ.get(ENV_DATA_ROOT):
        target = Path(os.environ[ENV_DATA_ROOT])
    else:
        target = default_download_root()
    try:
        target.mkdir(parents=True, exist_ok=True)
        _DOWNLOADERS[name](target)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; torchvision raises RuntimeError
        raise DatasetNotFoundError(
            f"downloading {name!r} into {target} failed: {error}\n" + _not_found_message(name, data_root)
        ) from error
    found = find_dataset(name, target)
    if found is None:
        raise DatasetNotFoundError(
            f"the download of {name!r} into {target} left no complete data set\n" + _not_found_message(name, data_root)
        )
    return found


# ---------------------------------------------------------------------------------------------
# Loading


def _choose_subset(count: int, subset: int | None, subset_seed: int | None) -> Tensor:
    """Positions 0..count-1 to keep: the first ``subset``, or a seeded random ``subset`` of them.

    The seeded choice draws ``torch.randperm`` from a CPU generator seeded with
    ``subset_seed`` (so it is the same on every machine) and keeps file order.
    """
    if subset is None:
        return torch.arange(count)
    if not 1 <= subset <= count:
        raise ValueError(f"subset must be between 1 and the split's {count} images, got {subset}")
    if subset_seed is None:
        return torch.arange(subset)
    generator = torch.Generator().manual_seed(subset_seed)
    return torch.randperm(count, generator=generator)[:subset].sort().values


def _normalise(images: np.ndarray, name: str, pad_to: int | None) -> Tensor:
    """uint8 N×C×H×W → float32 in [0, 1], zero-padded (black) to ``pad_to``, then normalised.

    Padding happens before normalisation so the border is black, like MNIST's background
    and like torchvision's ``Pad``/``RandomCrop(padding=...)`` on PIL images.
    """
    inputs = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    if pad_to is not None and pad_to != inputs.shape[-1]:
        total = pad_to - inputs.shape[-1]
        # An odd difference puts the extra pixel at the bottom and the right.
        before, after = total // 2, total - total // 2
        inputs = torch.nn.functional.pad(inputs, (before, after, before, after), value=0.0)
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in NORMALISATION[name])
    # One-channel images have strides that torch also reads as channels-last; torch 2.14's
    # CPU conv backward then corrupted the heap for narrow ResNets. Force plain NCHW layout.
    # (A size-1 dimension's stride is free, so contiguous() keeps them; clone() rewrites them.)
    return inputs.sub_(mean).div_(std).clone(memory_format=torch.contiguous_format)


def load_tensors(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    subset: int | None = None,
    subset_seed: int | None = None,
    pad_to: int | None = None,
    classes: int | Sequence[str] | None = None,
    device: torch.device | str = "cpu",
) -> TensorSplit:
    """The whole ``split`` of ``name`` as normalised float32 inputs and int64 targets.

    - ``root``: the explicit data root (CLI ``--data-root``); see ``resolve_dataset``.
    - ``subset``: keep n images of the split: the first n when ``subset_seed`` is None
      (CIFAR-10 and MNIST files are stored in mixed class order, so these are class-mixed;
      Tiny-ImageNet's are class by class, so give a seed there), else a seeded uniform
      choice kept in file order.
    - ``pad_to``: zero-pad (black) images to this size, e.g. 32 for the 28x28 MNISTs.
    - ``classes``: Tiny-ImageNet's class subset (see ``tiny_imagenet_classes``).
    No augmentation is applied here (a measurement set is never augmented); training
    augments batches with ``augmentation_for(name)`` in ``iterate_minibatches``.
    """
    info = dataset_info(name, pad_to=pad_to, classes=classes)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if name == "tiny-imagenet":
        split_indices(name, split, 0)  # rejects the unlabelled test split before any I/O
    folder = resolve_dataset(name, root, download)
    if name == "tiny-imagenet":
        wnids = tiny_imagenet_classes(folder, classes)
        info = replace(info, num_classes=len(wnids), train_size=TINY_IMAGENET_TRAIN_PER_CLASS * len(wnids))
        samples = _tiny_imagenet_samples(folder, split, wnids)
        chosen = _choose_subset(len(samples), subset, subset_seed)
        images = _read_images([samples[i][0] for i in chosen.tolist()], size=64)
        labels = np.array([samples[i][1] for i in chosen.tolist()], dtype=np.int64)
        source_indices = chosen
    else:
        if name == "cifar10":
            all_images, all_labels = read_cifar10_folder(folder, split)
        else:
            all_images, all_labels = _read_idx_split(folder, split)
        positions = split_indices(name, split, all_images.shape[0])
        chosen = _choose_subset(len(positions), subset, subset_seed)
        source_indices = chosen + positions.start
        images = all_images[source_indices.numpy()]
        labels = all_labels[source_indices.numpy()].astype(np.int64)
    inputs = _normalise(images, name, pad_to)
    targets = torch.from_numpy(labels)
    return TensorSplit(inputs, targets, info, source_indices, folder).to(device)


# ---------------------------------------------------------------------------------------------
# Batches and augmentation

Augmentation = Callable[[Tensor, torch.Generator], Tensor]


def crop_and_flip(batch: Tensor, padding: int, fill: Sequence[float], offsets: Tensor, flips: Tensor) -> Tensor:
    """Pad each image by ``padding`` with per-channel ``fill``, crop back to its size at
    ``offsets`` (N×2: row, column, each in 0..2*padding), and mirror where ``flips`` is true.

    The randomness is an argument so the operation itself is a pure function of its inputs.
    The mirror is folded into the column gather: cropping then flipping reads columns
    ``x + w - 1 - j``, so one indexing op does both.
    """
    n, channels, height, width = batch.shape
    if len(fill) != channels:
        raise ValueError(f"fill has {len(fill)} values for {channels} channels")
    padded = batch.new_empty(n, channels, height + 2 * padding, width + 2 * padding)
    # A fill per channel from the Python number: no small tensor copied to the device per batch.
    for channel, value in enumerate(fill):
        padded[:, channel].fill_(value)
    padded[:, :, padding : padding + height, padding : padding + width] = batch
    rows = offsets[:, 0:1] + torch.arange(height, device=batch.device)
    columns = offsets[:, 1:2] + torch.arange(width, device=batch.device)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    return padded[
        torch.arange(n, device=batch.device)[:, None, None, None],
        torch.arange(channels, device=batch.device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


@dataclass(frozen=True)
class RandomCropFlip:
    """Random crop (same size, after padding) and horizontal flip with probability ½, on a
    normalised batch. ``fill`` is the normalised value of a black pixel (-mean/std), so the
    border matches torchvision's ``RandomCrop(padding=...)`` applied before ``Normalize``.

    All draws come from the generator on the generator's own device and are then moved to
    the batch's device together (``_to_device``): a CPU generator gives the same crops on CPU
    and GPU.
    """

    padding: int
    fill: tuple[float, ...]

    def __call__(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        n = batch.shape[0]
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=generator.device)
        flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
        # Offsets and flips side by side: one copy to the batch's device, not two.
        drawn = _to_device(torch.cat([offsets, flips.to(offsets.dtype)[:, None]], dim=1), batch.device)
        return crop_and_flip(batch, self.padding, self.fill, drawn[:, :2], drawn[:, 2].bool())


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    """``values`` on ``device``; from the CPU to CUDA through pinned memory without waiting,
    where a plain copy would wait for the device to finish its queue first."""
    if values.device == device:
        return values
    if values.device.type == "cpu" and device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def augmentation_for(name: str) -> RandomCropFlip | None:
    """The training augmentation of the protocol: CIFAR-10 crop 32 pad 4 + flip, Tiny-ImageNet
    crop 64 + flip; none for the MNISTs. Use it for training batches only, never for the
    measurement set."""
    _check_name(name)
    if name not in AUGMENTATION_PADDING:
        return None
    mean, std = NORMALISATION[name]
    fill = tuple(-m / s for m, s in zip(mean, std, strict=True))
    return RandomCropFlip(padding=AUGMENTATION_PADDING[name], fill=fill)


def iterate_minibatches(
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
    generator: torch.Generator,
    augment: Augmentation | None = None,
    drop_last: bool = True,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled minibatches, on the device of ``inputs``.

    The order is ``torch.randperm`` drawn from ``generator`` (on its device, then moved),
    so an epoch is a function of the generator's state; call again for the next epoch.
    ``drop_last`` (the protocol: 45,000 / 100 = 450 steps) drops a final short batch.
    """
    count = int(targets.shape[0])
    if inputs.shape[0] != count:
        raise ValueError(f"{inputs.shape[0]} inputs but {count} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_last and batch_size > count:
        raise ValueError(f"batch_size {batch_size} exceeds the {count} examples, so no batch would be made")
    order = _to_device(torch.randperm(count, generator=generator, device=generator.device), inputs.device)
    stop = count - count % batch_size if drop_last else count
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        batch = inputs[index]
        if augment is not None:
            batch = augment(batch, generator)
        yield batch, targets[index]
