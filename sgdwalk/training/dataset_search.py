"""Finding a data set on this machine, and fetching it when asked: the search order of
``sgdwalk.training.data``'s docstring, and a ``DatasetNotFoundError`` that names every way to provide it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from sgdwalk.training.dataset_catalogue import (
    CIFAR10_FOLDER,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    IDX_FILES,
    TINY_IMAGENET_FOLDER,
    TINY_IMAGENET_MD5,
    TINY_IMAGENET_URL,
    DatasetNotFoundError,
    check_dataset_name,
)
from sgdwalk.training.dataset_files import idx_file

ENV_DATA_ROOT: str = "SGDWALK_DATA_ROOT"
# Searched after data_root and $SGDWALK_DATA_ROOT. Debian's dataset packages install here
# (dataset-fashion-mnist → /usr/share/datasets/fashion-mnist). Read at call time, so tests
# can replace it with monkeypatch.
SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

# torchvision's folder for each IDX data set is ``<root>/<this name>/raw``; Debian's and the
# flat layout's is ``<root>/<data set name>``.
_TORCHVISION_IDX_FOLDER: Mapping[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


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
        return [f"{stem}[.gz]" for stem in stems if idx_file(folder, stem) is None]
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
    check_dataset_name(name)
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
    check_dataset_name(name)
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
