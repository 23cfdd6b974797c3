"""Data loading on tiny files in the real on-disk formats (written by ``fixtures_data``), the
real Debian Fashion-MNIST files when installed, root resolution, splits, subsets,
padding, augmentation and the minibatch iterator. Nothing is downloaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgdwalk.training import data, dataset_search
from sgdwalk.training.data import (
    DATASETS,
    NORMALISATION,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    RandomCropFlip,
    augmentation_for,
    cifar10_checksum_mismatches,
    crop_and_flip,
    dataset_info,
    find_dataset,
    iterate_minibatches,
    load_tensors,
    read_cifar10_folder,
    read_idx,
    resolve_dataset,
    split_indices,
)
from tests.fixtures_data import write_cifar10, write_mnist_idx, write_tiny_imagenet

# The loader computes (x/255 - mean)/std in float32; the reference here in float64. Values
# are at most ~3 in magnitude, where float32 spacing is 2.4e-7; a few roundings stay below 1e-5.
NORMALISED_ATOL = 1e-5
# Solid-colour 64x64 JPEGs at quality 95 decode within a couple of levels of their colour;
# 6 levels (of 255) allows for chroma rounding while the fixture's colours differ by >= 40.
JPEG_LEVEL_TOLERANCE = 6
# Debian's Fashion-MNIST: the stated constants are the 60k-image statistics rounded to four
# decimals; on the 45k train split the normalised mean and std then sit within ~0.002 of
# 0 and 1. 0.01 catches a wrong constant (MNIST's would be off by 0.5).
REAL_DATA_MOMENT_TOLERANCE = 0.01
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IdxDataset = Literal["mnist", "fashion-mnist"]
# Captured before the autouse fixture below replaces it for every test.
ORIGINAL_SYSTEM_ROOTS = data.SYSTEM_DATA_ROOTS


@pytest.fixture(autouse=True)
def isolated_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the machine's data: no system location, no env var, an empty cache."""
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", ())
    monkeypatch.delenv(data.ENV_DATA_ROOT, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def normalised(images: np.ndarray, name: str) -> torch.Tensor:
    """Independent reference: float64 (x/255 - mean)/std per channel."""
    mean, std = (np.array(values).reshape(1, -1, 1, 1) for values in NORMALISATION[name])
    return torch.from_numpy((images / 255.0 - mean) / std)


def assert_normalised_equal(actual: torch.Tensor, images: np.ndarray, name: str) -> None:
    torch.testing.assert_close(actual.double(), normalised(images, name), rtol=0, atol=NORMALISED_ATOL)


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST IDX files


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_idx_torchvision_layout(tmp_path: Path, dataset: IdxDataset, compressed: bool) -> None:
    written = write_mnist_idx(tmp_path, layout="torchvision", dataset=dataset, compressed=compressed)
    train = load_tensors(dataset, "train", tmp_path)
    assert train.source == written.folder
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.int64
    assert train.inputs.shape == (64, 1, 28, 28)
    assert_normalised_equal(train.inputs, written.train_images, dataset)
    assert torch.equal(train.targets, torch.from_numpy(written.train_labels))
    test = load_tensors(dataset, "test", tmp_path)
    assert_normalised_equal(test.inputs, written.test_images, dataset)
    assert torch.equal(test.targets, torch.from_numpy(written.test_labels))


def test_idx_debian_flat_gz_layout(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, layout="debian", dataset="fashion-mnist")
    assert sorted(p.name for p in written.folder.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    # As a root holding fashion-mnist/ (like /usr/share/datasets), and as the folder itself.
    for root in (tmp_path, written.folder):
        train = load_tensors("fashion-mnist", "train", root)
        assert train.source == written.folder
        assert_normalised_equal(train.inputs, written.train_images, "fashion-mnist")
        assert torch.equal(train.targets, torch.from_numpy(written.train_labels))


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_idx_fixture_reads_the_same_with_torchvision(tmp_path: Path, dataset: IdxDataset) -> None:
    # torchvision's own MNIST reader is the independent check that the fixture's bytes are
    # the real format (it reads raw files in <root>/<MNIST|FashionMNIST>/raw).
    from torchvision.datasets import MNIST, FashionMNIST

    written = write_mnist_idx(tmp_path, layout="torchvision", dataset=dataset)
    reference = (MNIST if dataset == "mnist" else FashionMNIST)(str(tmp_path), train=True)
    assert torch.equal(reference.data, torch.from_numpy(written.train_images[:, 0]))
    assert torch.equal(reference.targets, torch.from_numpy(written.train_labels))


def test_gzip_is_detected_from_content_not_name(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, layout="debian", dataset="fashion-mnist")
    for gz in written.folder.glob("*.gz"):
        gz.rename(gz.with_suffix(""))  # gzip bytes under the raw file's name
    train = load_tensors("fashion-mnist", "train", tmp_path)
    assert torch.equal(train.targets, torch.from_numpy(written.train_labels))


def test_truncated_idx_file_is_a_format_error(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, layout="torchvision", dataset="mnist")
    images = written.folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DatasetFormatError, match="header"):
        read_idx(images)
    with pytest.raises(DatasetFormatError, match="bad magic"):
        (written.folder / "junk").write_bytes(b"\x89PNG....")
        read_idx(written.folder / "junk")


def test_mnist_and_fashion_mnist_are_never_confused(tmp_path: Path) -> None:
    # Same file names: a Fashion-MNIST folder must not be found as MNIST, however named.
    written = write_mnist_idx(tmp_path, layout="debian", dataset="fashion-mnist")
    for root in (tmp_path, written.folder):
        assert find_dataset("mnist", root) is None
        with pytest.raises(DatasetNotFoundError):
            load_tensors("mnist", "train", root)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 pickle batches


def test_cifar10_batches_read_in_order(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, n_train_per_batch=6, n_test=5)
    train = load_tensors("cifar10", "train", tmp_path)
    assert train.source == written.folder
    assert train.inputs.shape == (30, 3, 32, 32)
    assert_normalised_equal(train.inputs, written.train_images, "cifar10")
    assert torch.equal(train.targets, torch.from_numpy(written.train_labels))
    test = load_tensors("cifar10", "test", tmp_path)
    assert_normalised_equal(test.inputs, written.test_images, "cifar10")
    assert torch.equal(test.targets, torch.from_numpy(written.test_labels))


def test_torchvision_refuses_local_cifar10_without_official_md5(tmp_path: Path) -> None:
    # Why the suite reads the batches itself: CIFAR10(download=False) checks each batch's md5.
    from torchvision.datasets import CIFAR10

    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)


def test_cifar10_fixture_is_what_torchvision_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the md5 checks bypassed, torchvision's parser must see the same images and labels:
    # the fixture is the real format, and our reader agrees with torchvision's.
    import torchvision.datasets.cifar as tv_cifar

    written = write_cifar10(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    reference = tv_cifar.CIFAR10(str(tmp_path), train=True, download=False)
    assert np.array_equal(reference.data, written.train_images.transpose(0, 2, 3, 1))  # torchvision keeps HWC
    assert reference.targets == written.train_labels.tolist()
    assert reference.classes[0] == "airplane"
    images, labels = read_cifar10_folder(written.folder, "train")
    assert np.array_equal(images, written.train_images) and np.array_equal(labels, written.train_labels)


def test_cifar10_checksums_are_reported_not_enforced(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    assert set(cifar10_checksum_mismatches(written.folder)) == {
        *(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
    }


class _Exploit:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_cifar10_reader_refuses_foreign_pickles(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    target = tmp_path / "pwned"
    (written.folder / "data_batch_3").write_bytes(pickle.dumps({"data": _Exploit(target), "labels": []}, protocol=2))
    with pytest.raises(DatasetFormatError, match="not allowed"):
        load_tensors("cifar10", "train", tmp_path)
    assert not target.exists()


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet folders


def _class_colours(inputs: torch.Tensor) -> np.ndarray:
    """Mean RGB level (0-255) of each image, undoing the normalisation."""
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in NORMALISATION["tiny-imagenet"])
    return ((inputs * std + mean) * 255.0).mean(dim=(2, 3)).numpy()


def test_tiny_imagenet_train_and_val(tmp_path: Path) -> None:
    written = write_tiny_imagenet(tmp_path, n_classes=3, train_per_class=4, val_per_class=2)
    train = load_tensors("tiny-imagenet", "train", tmp_path)
    assert train.source == written.folder
    assert train.inputs.shape == (12, 3, 64, 64)
    assert train.info == DatasetInfo("tiny-imagenet", 3, 64, 3, 1500)
    # ImageFolder order: class by class, labels = sorted wnid positions.
    assert train.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    colours = _class_colours(train.inputs)
    for row, label in enumerate(train.targets.tolist()):
        wnid = written.wnids[label]
        if f"{wnid}_{row % 4}.JPEG" in written.greyscale:
            assert np.ptp(colours[row]) <= JPEG_LEVEL_TOLERANCE  # greyscale became R = G = B
        else:
            np.testing.assert_allclose(colours[row], written.colours[wnid], atol=JPEG_LEVEL_TOLERANCE)
    val = load_tensors("tiny-imagenet", "val", tmp_path)
    assert val.targets.tolist() == [0, 1, 2, 0, 1, 2]  # annotation-file order
    val_colours = _class_colours(val.inputs)
    for row, label in enumerate(val.targets.tolist()):
        np.testing.assert_allclose(val_colours[row], written.colours[written.wnids[label]], atol=JPEG_LEVEL_TOLERANCE)


def test_tiny_imagenet_class_subset(tmp_path: Path) -> None:
    written = write_tiny_imagenet(tmp_path, n_classes=4, train_per_class=2, val_per_class=2, greyscale_every=0)
    # An int k takes the first k wnids in sorted order.
    first_two = load_tensors("tiny-imagenet", "val", tmp_path, classes=2)
    assert first_two.info.num_classes == 2 and first_two.info.train_size == 1000
    assert first_two.targets.tolist() == [0, 1, 0, 1]
    # Named wnids get labels by their sorted position, in train and val alike.
    chosen = [written.wnids[3], written.wnids[1]]
    train = load_tensors("tiny-imagenet", "train", tmp_path, classes=chosen)
    val = load_tensors("tiny-imagenet", "val", tmp_path, classes=chosen)
    for split in (train, val):
        for row, label in enumerate(split.targets.tolist()):
            expected = written.colours[sorted(chosen)[label]]
            np.testing.assert_allclose(_class_colours(split.inputs)[row], expected, atol=JPEG_LEVEL_TOLERANCE)
    with pytest.raises(ValueError, match="n99999999"):
        load_tensors("tiny-imagenet", "train", tmp_path, classes=["n99999999"])
    with pytest.raises(ValueError, match="between 1 and 4"):
        load_tensors("tiny-imagenet", "train", tmp_path, classes=5)


def test_tiny_imagenet_has_no_labelled_test_split(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path)
    with pytest.raises(ValueError, match="no labels"):
        load_tensors("tiny-imagenet", "test", tmp_path)


# ---------------------------------------------------------------------------------------------
# Splits and subsets


def test_paper_split_ranges() -> None:
    assert split_indices("cifar10", "train", 50_000) == range(0, 45_000)
    assert split_indices("cifar10", "val", 50_000) == range(45_000, 50_000)
    assert split_indices("cifar10", "test", 10_000) == range(0, 10_000)
    for name in ("mnist", "fashion-mnist"):
        assert split_indices(name, "train", 60_000) == range(0, 45_000)
        assert split_indices(name, "val", 60_000) == range(50_000, 60_000)  # the authors' choice
    # Small files are clipped: all of a tiny file is train, and its val split is empty.
    assert split_indices("cifar10", "train", 50) == range(0, 50)
    assert len(split_indices("cifar10", "val", 50)) == 0
    with pytest.raises(ValueError, match="known splits"):
        split_indices("cifar10", "validation", 10)


def test_mnist_val_split_on_a_full_length_file(tmp_path: Path) -> None:
    # 50,010 training images (39 MB raw, written in well under a second): the val split
    # must be images 50,000-50,009 and the train split must start at image 0.
    written = write_mnist_idx(tmp_path, layout="torchvision", dataset="mnist", n_train=50_010, n_test=1)
    val = load_tensors("mnist", "val", tmp_path)
    assert val.source_indices.tolist() == list(range(50_000, 50_010))
    assert_normalised_equal(val.inputs, written.train_images[50_000:], "mnist")
    assert torch.equal(val.targets, torch.from_numpy(written.train_labels[50_000:]))
    train_head = load_tensors("mnist", "train", tmp_path, subset=3)
    assert train_head.source_indices.tolist() == [0, 1, 2]


def test_subset_first_n_and_seeded(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, n_train=64)
    first = load_tensors("fashion-mnist", "train", tmp_path, subset=10)
    assert first.source_indices.tolist() == list(range(10))
    assert_normalised_equal(first.inputs, written.train_images[:10], "fashion-mnist")
    a = load_tensors("fashion-mnist", "train", tmp_path, subset=10, subset_seed=7)
    b = load_tensors("fashion-mnist", "train", tmp_path, subset=10, subset_seed=7)
    c = load_tensors("fashion-mnist", "train", tmp_path, subset=10, subset_seed=8)
    assert torch.equal(a.source_indices, b.source_indices) and torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.source_indices, c.source_indices)
    indices = a.source_indices.tolist()
    assert indices == sorted(indices) and len(set(indices)) == 10 and max(indices) < 64
    assert_normalised_equal(a.inputs, written.train_images[indices], "fashion-mnist")
    assert torch.equal(a.targets, torch.from_numpy(written.train_labels[indices]))
    # The seeded choice is a fixed function of the seed (torch.randperm on a CPU generator).
    expected = torch.randperm(64, generator=torch.Generator().manual_seed(7))[:10].sort().values
    assert torch.equal(a.source_indices, expected)
    with pytest.raises(ValueError, match="subset"):
        load_tensors("fashion-mnist", "train", tmp_path, subset=65)


# ---------------------------------------------------------------------------------------------
# Padding and data set facts


def test_pad_to_32_centres_the_image_on_black(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, n_train=8)
    padded = load_tensors("fashion-mnist", "train", tmp_path, pad_to=32)
    assert padded.inputs.shape == (8, 1, 32, 32)
    assert padded.info.image_size == 32
    assert_normalised_equal(padded.inputs[:, :, 2:30, 2:30], written.train_images, "fashion-mnist")
    mean, std = NORMALISATION["fashion-mnist"]
    border = torch.ones(8, 1, 32, 32, dtype=torch.bool)
    border[:, :, 2:30, 2:30] = False
    torch.testing.assert_close(
        padded.inputs[border], torch.full((int(border.sum()),), -mean[0] / std[0]), rtol=0, atol=NORMALISED_ATOL
    )
    with pytest.raises(ValueError, match="smaller"):
        load_tensors("fashion-mnist", "train", tmp_path, pad_to=24)


def test_padded_fashion_mnist_runs_through_a_net_built_for_32(tmp_path: Path) -> None:
    from sgdwalk.training.models import build_model

    write_mnist_idx(tmp_path, n_train=8)
    split = load_tensors("fashion-mnist", "train", tmp_path, pad_to=32)
    info = split.info
    model = build_model("vgg11", info.in_channels, info.image_size, info.num_classes, width_multiplier=0.125)
    with torch.no_grad():
        assert model(split.inputs[:4]).shape == (4, 10)


def test_dataset_info() -> None:
    assert dataset_info("cifar10") == DatasetInfo("cifar10", 3, 32, 10, 45_000)
    assert dataset_info("mnist") == DatasetInfo("mnist", 1, 28, 10, 45_000)
    assert dataset_info("fashion-mnist", pad_to=32) == DatasetInfo("fashion-mnist", 1, 32, 10, 45_000)
    assert dataset_info("tiny-imagenet") == DatasetInfo("tiny-imagenet", 3, 64, 200, 100_000)
    assert dataset_info("tiny-imagenet", classes=90).train_size == 45_000
    with pytest.raises(ValueError, match="only supported for tiny-imagenet"):
        dataset_info("cifar10", classes=5)
    with pytest.raises(ValueError, match="known data sets: cifar10, mnist, fashion-mnist, tiny-imagenet"):
        dataset_info("svhn")
    assert set(NORMALISATION) == set(DATASETS)


def test_tensor_split_behaves_like_a_tensor_dataset(tmp_path: Path) -> None:
    write_mnist_idx(tmp_path, n_train=8)
    split = load_tensors("fashion-mnist", "train", tmp_path)
    assert len(split) == 8
    x, y = split[3]
    assert torch.equal(x, split.inputs[3]) and torch.equal(y, split.targets[3])
    inputs, targets = split.tensors
    assert inputs is split.inputs and targets is split.targets


# ---------------------------------------------------------------------------------------------
# Root resolution


def _write_roots(tmp_path: Path) -> dict[str, Path]:
    """Four roots, each with a Fashion-MNIST whose labels differ (seeded by position)."""
    roots = {place: tmp_path / place for place in ("explicit", "env", "system", "cache")}
    for seed, (place, root) in enumerate(roots.items()):
        if place == "cache":
            root = root / "sgdwalk" / "datasets"
            roots[place] = root
        write_mnist_idx(root, layout="debian" if place == "system" else "torchvision", seed=seed)
    return roots


def test_root_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = _write_roots(tmp_path)
    monkeypatch.setenv(data.ENV_DATA_ROOT, str(roots["env"]))
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", (roots["system"],))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def found(data_root: Path | None) -> Path:
        return resolve_dataset("fashion-mnist", data_root)

    assert found(roots["explicit"]) == roots["explicit"] / "FashionMNIST" / "raw"
    assert found(None) == roots["env"] / "FashionMNIST" / "raw"
    monkeypatch.delenv(data.ENV_DATA_ROOT)
    assert found(None) == roots["system"] / "fashion-mnist"
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", ())
    assert found(None) == roots["cache"] / "FashionMNIST" / "raw"
    # An explicit root without the data set falls through to the next place that has it.
    assert found(tmp_path / "empty") == roots["cache"] / "FashionMNIST" / "raw"


def test_incomplete_folder_is_skipped_and_reported(tmp_path: Path) -> None:
    written = write_mnist_idx(tmp_path, layout="debian")
    (written.folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_dataset("fashion-mnist", tmp_path) is None
    with pytest.raises(DatasetNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_tensors("fashion-mnist", "train", tmp_path)


def test_not_found_message_names_all_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path("/usr/share/datasets") in ORIGINAL_SYSTEM_ROOTS
    # A system location where the package is not installed (this machine may have it).
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", (tmp_path / "usr-share-datasets",))
    with pytest.raises(DatasetNotFoundError) as error:
        load_tensors("fashion-mnist", "train", tmp_path / "missing")
    message = str(error.value)
    assert "--data-root" in message
    assert "SGDWALK_DATA_ROOT" in message
    assert str(tmp_path / "usr-share-datasets" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message
    assert str(tmp_path / "missing") in message  # every searched place is listed

    with pytest.raises(DatasetNotFoundError) as error:
        load_tensors("cifar10", "train")
    message = str(error.value)
    for way in ("--data-root", "SGDWALK_DATA_ROOT", "no system package provides cifar10", "--download"):
        assert way in message


def test_download_goes_to_the_first_configured_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    targets: list[Path] = []

    def fake_download(root: Path) -> None:
        targets.append(root)
        write_mnist_idx(root, layout="torchvision")

    monkeypatch.setitem(dataset_search._DOWNLOADERS, "fashion-mnist", fake_download)
    assert load_tensors("fashion-mnist", "test", tmp_path / "explicit", download=True).source.is_relative_to(
        tmp_path / "explicit"
    )
    monkeypatch.setenv(data.ENV_DATA_ROOT, str(tmp_path / "env"))
    load_tensors("fashion-mnist", "test", download=True)
    monkeypatch.delenv(data.ENV_DATA_ROOT)
    load_tensors("fashion-mnist", "test", download=True)
    assert targets == [tmp_path / "explicit", tmp_path / "env", tmp_path / "cache" / "sgdwalk" / "datasets"]
    # Once there, the data set is found without downloading again.
    load_tensors("fashion-mnist", "test", download=True)
    assert len(targets) == 3


def test_failed_download_is_a_not_found_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setitem(dataset_search._DOWNLOADERS, "cifar10", offline)
    with pytest.raises(DatasetNotFoundError, match="network unreachable"):
        load_tensors("cifar10", "train", tmp_path, download=True)


# ---------------------------------------------------------------------------------------------
# Augmentation


def _reference_crop_and_flip(
    batch: torch.Tensor, padding: int, fill: tuple[float, ...], offsets: torch.Tensor, flips: torch.Tensor
) -> torch.Tensor:
    """One image at a time: pad each channel with its constant, slice, flip."""
    out = torch.empty_like(batch)
    height, width = batch.shape[-2:]
    for i in range(batch.shape[0]):
        channels = [F.pad(batch[i, c], (padding,) * 4, value=fill[c]) for c in range(batch.shape[1])]
        padded = torch.stack(channels)
        row, column = offsets[i].tolist()
        crop = padded[:, row : row + height, column : column + width]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def test_crop_and_flip_matches_a_per_image_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(16, 3, 32, 32, generator=generator)
    offsets = torch.randint(0, 9, (16, 2), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    fill = (-1.0, 0.5, 2.0)
    expected = _reference_crop_and_flip(batch, 4, fill, offsets, flips)
    assert torch.equal(crop_and_flip(batch, 4, fill, offsets, flips), expected)
    # Centre crop without a flip is the identity.
    centre = torch.full((16, 2), 4)
    assert torch.equal(crop_and_flip(batch, 4, fill, centre, torch.zeros(16, dtype=torch.bool)), batch)


def test_random_crop_flip_is_deterministic_given_the_generator() -> None:
    augment = augmentation_for("cifar10")
    assert augment is not None
    batch = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    first = augment(batch, torch.Generator().manual_seed(5))
    again = augment(batch, torch.Generator().manual_seed(5))
    other = augment(batch, torch.Generator().manual_seed(6))
    assert first.shape == batch.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_random_crop_flip_draws_offsets_then_flips_from_the_generator() -> None:
    """The crops and flips are the generator's draws in this order (offsets, then flips), so
    a run's batches are those of every earlier version of the augmentation, bit for bit."""
    fill = (-1.0, 0.5, 2.0)
    batch = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(7)
    augmented = RandomCropFlip(padding=4, fill=fill)(batch, generator)
    replay = torch.Generator().manual_seed(7)
    offsets = torch.randint(0, 9, (16, 2), generator=replay)
    flips = torch.rand(16, generator=replay) < 0.5
    assert torch.equal(augmented, _reference_crop_and_flip(batch, 4, fill, offsets, flips))
    # The generator is left where the draws leave it: the next batch's order follows.
    assert torch.equal(generator.get_state(), replay.get_state())


def test_augmentations_of_the_protocol() -> None:
    cifar = augmentation_for("cifar10")
    tiny = augmentation_for("tiny-imagenet")
    assert isinstance(cifar, RandomCropFlip) and cifar.padding == 4
    assert isinstance(tiny, RandomCropFlip) and tiny.padding == 4
    assert augmentation_for("mnist") is None and augmentation_for("fashion-mnist") is None
    # The fill is a black pixel after normalisation, as RandomCrop(padding=4) before Normalize.
    mean, std = NORMALISATION["cifar10"]
    assert cifar.fill == pytest.approx([-m / s for m, s in zip(mean, std, strict=True)])


# ---------------------------------------------------------------------------------------------
# Minibatches


def _indexed(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose every pixel is the example's index, targets equal to the index."""
    inputs = torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 1, 4, 4).contiguous()
    return inputs, torch.arange(count)


def test_an_epoch_visits_every_example_once() -> None:
    inputs, targets = _indexed(1000)
    batches = list(iterate_minibatches(inputs, targets, 100, torch.Generator().manual_seed(0)))
    assert len(batches) == 10
    for x, y in batches:
        assert x.shape == (100, 1, 4, 4)
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # inputs and targets stay aligned
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(1000))
    assert not torch.equal(seen, targets)  # shuffled


def test_epochs_are_seeded_and_differ() -> None:
    inputs, targets = _indexed(50)
    generator = torch.Generator().manual_seed(3)
    epoch_1 = torch.cat([y for _, y in iterate_minibatches(inputs, targets, 10, generator)])
    epoch_2 = torch.cat([y for _, y in iterate_minibatches(inputs, targets, 10, generator)])
    replay = torch.Generator().manual_seed(3)
    assert torch.equal(epoch_1, torch.cat([y for _, y in iterate_minibatches(inputs, targets, 10, replay)]))
    assert not torch.equal(epoch_1, epoch_2)


def test_drop_last() -> None:
    inputs, targets = _indexed(25)
    kept = list(iterate_minibatches(inputs, targets, 10, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in kept] == [10, 10]
    every = list(iterate_minibatches(inputs, targets, 10, torch.Generator().manual_seed(0), drop_last=False))
    assert [len(y) for _, y in every] == [10, 10, 5]
    with pytest.raises(ValueError, match="exceeds"):
        list(iterate_minibatches(inputs, targets, 26, torch.Generator()))
    with pytest.raises(ValueError, match="targets"):
        list(iterate_minibatches(inputs, targets[:-1], 5, torch.Generator()))


def test_minibatches_with_augmentation(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train_per_batch=8)
    split = load_tensors("cifar10", "train", tmp_path)
    augment = augmentation_for("cifar10")

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        return list(iterate_minibatches(split.inputs, split.targets, 8, generator, augment=augment))

    first, again = run(11), run(11)
    plain = list(iterate_minibatches(split.inputs, split.targets, 8, torch.Generator().manual_seed(11)))
    assert len(first) == 5
    for (x, y), (x_again, y_again) in zip(first, again, strict=True):
        assert x.shape == (8, 3, 32, 32)
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, plain, strict=True))
    # The augmentation draws after the permutation, so the batch order is unchanged by it.
    assert torch.equal(first[0][1], plain[0][1])


# ---------------------------------------------------------------------------------------------
# The real files of Debian's dataset-fashion-mnist


@pytest.mark.slow  # reads the installed data set's 70,000 images
@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason="Debian's Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", ORIGINAL_SYSTEM_ROOTS)
    train = load_tensors("fashion-mnist", "train")  # found at the system location
    assert train.source == DEBIAN_FASHION_MNIST
    assert train.inputs.shape == (45_000, 1, 28, 28)
    assert train.inputs.mean().item() == pytest.approx(0.0, abs=REAL_DATA_MOMENT_TOLERANCE)
    assert train.inputs.std().item() == pytest.approx(1.0, abs=REAL_DATA_MOMENT_TOLERANCE)
    assert torch.bincount(train.targets).tolist() == pytest.approx([4500] * 10, abs=100)
    val = load_tensors("fashion-mnist", "val", subset=16)
    assert val.source_indices.tolist() == list(range(50_000, 50_016))
    test = load_tensors("fashion-mnist", "test", pad_to=32, subset=16)
    assert test.inputs.shape == (16, 1, 32, 32)
