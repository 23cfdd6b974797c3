"""Fixtures shared by the command-line tests: tiny data files in their real on-disk formats,
with every other place a data set could be found emptied, and one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sgdwalk.training import data as data_module
from sgdwalk.training import dataset_search
from tests.fixtures_data import write_cifar10, write_mnist_idx


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine a second thread makes tiny ops slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data set anywhere but where a test writes one: empty system folders and cache."""
    monkeypatch.delenv(data_module.ENV_DATA_ROOT, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset_search, "SYSTEM_DATA_ROOTS", (tmp_path / "system",))
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def cifar_root(isolated_data: Path) -> Path:
    write_cifar10(isolated_data, n_train_per_batch=10, n_test=10)  # 50 training images
    return isolated_data


@pytest.fixture
def fashion_root(isolated_data: Path) -> Path:
    """60 training and 10 test images of Fashion-MNIST in Debian's layout."""
    write_mnist_idx(isolated_data, layout="debian", dataset="fashion-mnist", n_train=60, n_test=10)
    return isolated_data


# The tiny sweeps' training set (tests/test_sweep.py, tests/test_shared_runs.py): 120 images at
# batch 40 are 3 updates an epoch, enough for a cosine and a floor in each window.
SWEEP_TRAIN_IMAGES = 120


@pytest.fixture
def sweep_data_root(tmp_path: Path) -> Path:
    """The tiny sweeps' Fashion-MNIST in torchvision's layout (its validation split, from image
    50,000 on, is empty)."""
    root = tmp_path / "data"
    write_mnist_idx(root, layout="torchvision", dataset="fashion-mnist", n_train=SWEEP_TRAIN_IMAGES, n_test=8)
    return root
