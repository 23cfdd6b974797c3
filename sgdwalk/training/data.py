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

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sgdwalk.training.dataset_catalogue import (
    NORMALISATION,
    SPLITS,
    TINY_IMAGENET_TRAIN_PER_CLASS,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    check_dataset_name,
    dataset_info,
    split_indices,
    tiny_imagenet_classes,
)
from sgdwalk.training.dataset_files import (
    cifar10_checksum_mismatches,
    read_cifar10_folder,
    read_idx,
    read_idx_split,
    read_images,
    tiny_imagenet_samples,
)
from sgdwalk.training.dataset_search import (
    ENV_DATA_ROOT,
    SYSTEM_DATA_ROOTS,
    default_download_root,
    find_dataset,
    resolve_dataset,
)
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

# Random-crop padding of the training augmentation. CIFAR-10: the protocol's "crop 32 pad 4".
# Tiny-ImageNet: the protocol says "crop 64 + flip"; a 64 crop of a 64 image needs padding
# to move at all, and 4 pixels (as for CIFAR) is an inference, not the authors' stated value.
AUGMENTATION_PADDING: Mapping[str, int] = {"cifar10": 4, "tiny-imagenet": 4}


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
        samples = tiny_imagenet_samples(folder, split, wnids)
        chosen = _choose_subset(len(samples), subset, subset_seed)
        images = read_images([samples[i][0] for i in chosen.tolist()], size=64)
        labels = np.array([samples[i][1] for i in chosen.tolist()], dtype=np.int64)
        source_indices = chosen
    else:
        if name == "cifar10":
            all_images, all_labels = read_cifar10_folder(folder, split)
        else:
            all_images, all_labels = read_idx_split(folder, split)
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
    check_dataset_name(name)
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
