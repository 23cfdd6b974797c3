"""Where a tracker keeps the vectors a record needs: beside the model, in host memory, or on disk.

Between and around the measurements a tracker holds θ_0 (the distance from init), θ_t (the
segment's start), g_t (the next step's previous gradient), the last update (the next
update cosine) and the θ_{t+1} it hands on: up to four copies of the parameters beside the
model, where the measurement itself needs one (the point it evaluates) plus a chunk's
activations. Every use of those vectors is elementwise or a sum over blocks (``geometry``'s
8 MiB widening blocks), so they need not live where the model does:

- ``"host"``: in CPU memory (pinned where the model is on a CUDA device, so blocks travel
  without a staging copy). On a GPU this frees the device of them; on a CPU model it is the
  model's own memory, and only the layout changes.
- ``"disk"``: in unnamed temporary files (reused for the next vector when one is let go,
  closed, and so deleted, at the tracker's ``close()`` or when the process ends), written and
  read back a block at a time: the process holds none of them, and the kernel's page cache
  keeps the hot blocks.

A kept vector is a ``PiecewiseVector`` of one piece whose entries are read back on the
model's device, so the geometry's cosines, norms and distances take it as they take the
parameters in place. Blocks are copied bit for bit, so every record is bitwise the record
kept beside the model (tested).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from sgdwalk.instrument.geometry import PiecewiseVector, Vector, vector_block, vector_numel
from sgdwalk.instrument.offload_targets import OffloadTarget

# Entries moved at a time between the store and the model's device: the geometry's widening
# block (1 Mi entries, 4 MiB of float32), so a write or read never holds more than that beside
# the vectors themselves.
TRANSFER_BLOCK = 1 << 20


@dataclass(frozen=True)
class KeptVector(PiecewiseVector):
    """A vector kept away from the model, read back a block at a time on ``device``."""

    dtype: torch.dtype
    device: torch.device

    def block(self, first: int, size: int) -> torch.Tensor:
        # The piece reader makes a new tensor already: no second copy (``PiecewiseVector.block``
        # copies a piece read in place).
        return self.piece(0, first, min(first + size, self.numel))


class _TemporaryFile:
    """An unnamed temporary file's descriptor, closed (and the file gone) when this is let go."""

    def __init__(self, folder: Path | None) -> None:
        with tempfile.TemporaryFile(dir=folder) as handle:
            # A second descriptor keeps the unnamed file alive once the handle is closed; it is
            # closed by the finalizer, so no open-file warning is left to the garbage collector.
            self.descriptor = os.dup(handle.fileno())
        weakref.finalize(self, os.close, self.descriptor)

    def write(self, offset: int, data: torch.Tensor) -> None:
        view = data.numpy().data.cast("B")
        while len(view):
            written = os.pwrite(self.descriptor, view, offset)
            view, offset = view[written:], offset + written

    def read(self, offset: int, data: torch.Tensor) -> None:
        view = data.numpy().data.cast("B")
        while len(view):
            count = os.preadv(self.descriptor, [view], offset)
            if count == 0:
                raise OSError(f"the offload file ended at byte {offset}")
            view, offset = view[count:], offset + count


class VectorStore:
    """Keeps vectors in ``target``; ``folder``: where "disk" makes its files (the system's
    temporary folder by default).

    A file let go with its vector is kept for the next vector instead of closed: writing over
    pages the page cache holds already is a copy, where a new file's pages are allocated (and
    a dropped one's truncated) each time, 10-100x slower here (4 MiB blocks, ext4)."""

    def __init__(self, target: OffloadTarget, folder: Path | None = None) -> None:
        self.target = target
        self.folder = folder
        self._spare_files: list[_TemporaryFile] = []

    def keep(self, vector: Vector, *, dtype: torch.dtype, device: torch.device) -> KeptVector:
        """A copy of ``vector`` (a tensor, or read in place) in the store, block by block."""
        numel = vector_numel(vector)
        if self.target == "host":
            return _kept_on_host(vector, numel, dtype, device)
        file = self._spare_files.pop() if self._spare_files else _TemporaryFile(self.folder)
        kept = _kept_on_disk(vector, numel, dtype, device, file)
        weakref.finalize(kept, self._spare_files.append, file)
        return kept

    def close_spare_files(self) -> None:
        """Close the files kept for the next vectors (those of vectors still in use stay open)."""
        self._spare_files.clear()


def checkpoint_copy(vector: Vector) -> torch.Tensor:
    """``vector`` as one CPU tensor (a checkpoint's copy): a tensor cloned where it is, a
    vector read block by block filled into host memory."""
    if isinstance(vector, torch.Tensor):
        return vector.clone()
    whole: torch.Tensor | None = None
    for first in range(0, vector.numel, TRANSFER_BLOCK):
        block = vector.block(first, TRANSFER_BLOCK)
        if whole is None:
            whole = torch.empty(vector.numel, dtype=block.dtype)
        whole[first : first + block.numel()].copy_(block)
    assert whole is not None, "a vector of no entries"
    return whole


def _kept_on_host(vector: Vector, numel: int, dtype: torch.dtype, device: torch.device) -> KeptVector:
    host = torch.empty(numel, dtype=dtype, pin_memory=device.type == "cuda")
    for first in range(0, numel, TRANSFER_BLOCK):
        block = vector_block(vector, first, TRANSFER_BLOCK)
        host[first : first + block.numel()].copy_(block)

    def piece(index: int, first: int, last: int) -> torch.Tensor:
        # A new tensor on the model's device (on a CPU model too: a reader may write to it).
        return host[first:last].to(device, copy=True)

    return KeptVector((numel,), piece, dtype, device)


def _kept_on_disk(
    vector: Vector, numel: int, dtype: torch.dtype, device: torch.device, file: _TemporaryFile
) -> KeptVector:
    itemsize = torch.empty((), dtype=dtype).element_size()
    for first in range(0, numel, TRANSFER_BLOCK):
        # In the kept dtype: a block of parameters of another dtype (a bfloat16 embedding beside
        # float32 layers) is widened as torch.cat widens it in flat_parameters.
        block = vector_block(vector, first, TRANSFER_BLOCK).detach().to("cpu", dtype).contiguous()
        file.write(first * itemsize, block.view(torch.uint8))

    def piece(index: int, first: int, last: int) -> torch.Tensor:
        raw = torch.empty((last - first) * itemsize, dtype=torch.uint8)
        file.read(first * itemsize, raw)
        return raw.view(dtype).to(device)

    # The piece reader holds the file: the file is in use exactly as long as the vector.
    return KeptVector((numel,), piece, dtype, device)
