"""Writers of tiny data sets in the real on-disk formats, for tests (nothing is downloaded).

Plain functions, importable by any test (``from tests.fixtures_data import write_cifar10``,
like ``tests.helpers``): each writes its files under ``root`` and returns what it wrote, so a test can compare the
loader's output with the exact pixels and labels. Pixel content is seeded random noise with
the image's position stamped into its first pixels, so order mistakes show up as well.

Formats follow the originals byte for byte where it matters:
- MNIST / Fashion-MNIST: IDX ubyte files (big-endian header, magic 0x00000803 for images,
  0x00000801 for labels), raw or gzip, in torchvision's ``<root>/MNIST/raw`` (or
  ``FashionMNIST/raw``) layout or Debian's flat ``<root>/fashion-mnist/*.gz`` layout.
- CIFAR-10: python pickle batches (protocol 2, as written by Python 2 / numpy 1.x: the
  array rebuilder is ``numpy.core.multiarray._reconstruct``) with the keys ``batch_label``,
  ``labels``, ``data`` (uint8 N×3072: 1024 red, 1024 green, 1024 blue) and ``filenames``,
  plus ``batches.meta``. Their md5 sums are of course not the official ones.
- Tiny-ImageNet: ``tiny-imagenet-200/`` with ``wnids.txt``, ``words.txt``,
  ``train/<wnid>/images/<wnid>_<k>.JPEG`` and ``<wnid>_boxes.txt``,
  ``val/images/val_<k>.JPEG`` with ``val/val_annotations.txt``, and ``test/images``.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "CIFAR10_LABEL_NAMES",
    "WrittenImages",
    "WrittenTinyImageNet",
    "write_cifar10",
    "write_mnist_idx",
    "write_tiny_imagenet",
]

CIFAR10_LABEL_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_IDX_IMAGES_MAGIC: int = 0x00000803
_IDX_LABELS_MAGIC: int = 0x00000801
# Gzip level 1: these files are written for every test; the format is the same at any level.
_GZIP_LEVEL: int = 1


@dataclass(frozen=True)
class WrittenImages:
    """What a writer put on disk: the data set's folder and its exact contents."""

    folder: Path
    train_images: np.ndarray  # uint8, N×C×H×W
    train_labels: np.ndarray  # int64, N
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class WrittenTinyImageNet:
    folder: Path
    wnids: tuple[str, ...]  # sorted: position = label when all classes are used
    colours: dict[str, tuple[int, int, int]]  # the solid RGB colour of each class's images
    train_per_class: int
    val_per_class: int
    greyscale: frozenset[str]  # train file names written as single-channel JPEGs


def _stamped_images(count: int, shape: tuple[int, ...], rng: np.random.Generator, offset: int) -> np.ndarray:
    """Seeded noise whose first two bytes of each image hold its position (base 256)."""
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    flat = images.reshape(count, -1)
    positions = np.arange(offset, offset + count)
    flat[:, 0] = positions % 256
    flat[:, 1] = (positions // 256) % 256
    return images


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_idx(
    root: Path,
    layout: Literal["torchvision", "debian"] = "torchvision",
    dataset: Literal["mnist", "fashion-mnist"] = "fashion-mnist",
    n_train: int = 64,
    n_test: int = 16,
    compressed: bool | None = None,
    seed: int = 0,
) -> WrittenImages:
    """Write the four IDX files of MNIST or Fashion-MNIST.

    ``layout="torchvision"``: ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/``, raw
    files by default (what torchvision reads after extracting). ``layout="debian"``:
    ``<root>/<dataset>/`` flat, gzip by default (what ``dataset-fashion-mnist`` installs in
    ``/usr/share/datasets``). ``compressed`` overrides the default.
    """
    if layout == "torchvision":
        folder = root / ("MNIST" if dataset == "mnist" else "FashionMNIST") / "raw"
    else:
        folder = root / dataset
    if compressed is None:
        compressed = layout == "debian"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_images = _stamped_images(n_train, (28, 28), rng, 0)
    test_images = _stamped_images(n_test, (28, 28), rng, 0)
    train_labels = rng.integers(0, 10, size=n_train).astype(np.int64)
    test_labels = rng.integers(0, 10, size=n_test).astype(np.int64)
    contents = {
        "train-images-idx3-ubyte": _idx_bytes(train_images, _IDX_IMAGES_MAGIC),
        "train-labels-idx1-ubyte": _idx_bytes(train_labels, _IDX_LABELS_MAGIC),
        "t10k-images-idx3-ubyte": _idx_bytes(test_images, _IDX_IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte": _idx_bytes(test_labels, _IDX_LABELS_MAGIC),
    }
    for stem, payload in contents.items():
        if compressed:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload, compresslevel=_GZIP_LEVEL))
        else:
            (folder / stem).write_bytes(payload)
    return WrittenImages(folder, train_images[:, None], train_labels, test_images[:, None], test_labels)


def _python2_style_pickle(entry: dict[str, object]) -> bytes:
    """Protocol 2 with numpy 1.x's module name for the array rebuilder, as the real files."""
    payload = pickle.dumps(entry, protocol=2)
    # Protocol 2 names globals as newline-terminated text, so the rename is a plain replace.
    return payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar10(root: Path, n_train_per_batch: int = 10, n_test: int = 10, seed: int = 0) -> WrittenImages:
    """Write ``<root>/cifar-10-batches-py/`` with five training batches, a test batch and meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = 5 * n_train_per_batch
    train_images = _stamped_images(n_train, (3, 32, 32), rng, 0)
    test_images = _stamped_images(n_test, (3, 32, 32), rng, 0)
    train_labels = rng.integers(0, 10, size=n_train).astype(np.int64)
    test_labels = rng.integers(0, 10, size=n_test).astype(np.int64)

    def batch(label: str, images: np.ndarray, labels: np.ndarray, first: int) -> bytes:
        return _python2_style_pickle(
            {
                "batch_label": label,
                "labels": [int(value) for value in labels],
                "data": images.reshape(images.shape[0], -1),
                "filenames": [f"image_{first + i:05d}.png" for i in range(images.shape[0])],
            }
        )

    for index in range(5):
        part = slice(index * n_train_per_batch, (index + 1) * n_train_per_batch)
        (folder / f"data_batch_{index + 1}").write_bytes(
            batch(f"training batch {index + 1} of 5", train_images[part], train_labels[part], part.start)
        )
    (folder / "test_batch").write_bytes(batch("testing batch 1 of 1", test_images, test_labels, 0))
    meta = {"num_cases_per_batch": n_train_per_batch, "label_names": list(CIFAR10_LABEL_NAMES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_python2_style_pickle(meta))
    return WrittenImages(folder, train_images, train_labels, test_images, test_labels)


def write_tiny_imagenet(
    root: Path,
    n_classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 2,
    n_test: int = 2,
    greyscale_every: int = 5,
) -> WrittenTinyImageNet:
    """Write ``<root>/tiny-imagenet-200/`` with solid-colour 64x64 JPEGs, one colour per class.

    Solid colours survive JPEG compression to within a few levels, so a test can tell each
    image's class from its pixels. Every ``greyscale_every``-th training image (counted
    over all classes) is a single-channel JPEG, as some real Tiny-ImageNet images are.
    """
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    # Real wnids are "n" + 8 digits; these sort in the order written.
    wnids = tuple(f"n{1440000 + 1000 * index:08d}" for index in range(n_classes))
    colours = {
        wnid: ((60 * index + 20) % 256, (255 - 70 * index) % 256, (110 + 40 * index) % 256)
        for index, wnid in enumerate(wnids)
    }
    (folder / "train").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    (folder / "words.txt").write_text("".join(f"{wnid}\tclass number {i}\n" for i, wnid in enumerate(wnids)))
    greyscale: set[str] = set()
    written = 0
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for k in range(train_per_class):
            name = f"{wnid}_{k}.JPEG"
            picture = Image.new("RGB", (64, 64), colours[wnid])
            if greyscale_every and written % greyscale_every == greyscale_every - 1:
                picture = picture.convert("L")
                greyscale.add(name)
            picture.save(images / name, format="JPEG", quality=95)
            boxes.append(f"{name}\t0\t0\t63\t63\n")
            written += 1
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    (folder / "val" / "images").mkdir(parents=True)
    annotations = []
    for k in range(val_per_class * n_classes):
        # Interleave classes, as the real val set is in no class order.
        wnid = wnids[k % n_classes]
        name = f"val_{k}.JPEG"
        Image.new("RGB", (64, 64), colours[wnid]).save(folder / "val" / "images" / name, format="JPEG", quality=95)
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    (folder / "test" / "images").mkdir(parents=True)
    for k in range(n_test):
        Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "test" / "images" / f"test_{k}.JPEG", format="JPEG")
    return WrittenTinyImageNet(folder, wnids, colours, train_per_class, val_per_class, frozenset(greyscale))
