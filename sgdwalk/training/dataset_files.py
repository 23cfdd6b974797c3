"""Reading the data sets' files as they are stored: MNIST/Fashion-MNIST IDX files, CIFAR-10's
pickled batches (with a restricted unpickler) and Tiny-ImageNet's images (see
``sgdwalk.training.data`` for why these readers and not torchvision's)."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgdwalk.training.dataset_catalogue import (
    CIFAR10_IMAGE_BYTES,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    IDX_FILES,
    DatasetFormatError,
)

_GZIP_MAGIC: bytes = b"\x1f\x8b"
_IDX_UBYTE_TYPE: int = 0x08


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


def idx_file(folder: Path, stem: str) -> Path | None:
    """The raw file when present (torchvision extracts next to the .gz), else the .gz."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = IDX_FILES["test" if split == "test" else "train"]
    image_path, label_path = idx_file(folder, image_stem), idx_file(folder, label_stem)
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


def tiny_imagenet_samples(folder: Path, split: str, wnids: Sequence[str]) -> list[tuple[Path, int]]:
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


def read_images(paths: Sequence[Path], size: int) -> np.ndarray:
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
