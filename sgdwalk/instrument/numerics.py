"""One float32 policy for every run and measurement: TF32 off on CUDA unless a run asks for it.

On Ampere and later GPUs torch may run float32 matmuls and cuDNN convolutions on TF32 tensor
cores, which round each product's inputs to 10 mantissa bits (float32 keeps 23): a relative
error up to about 1e-3 per product, a hundred times the barrier tolerance (``tolerances``:
``BARRIER_RELATIVE_TOLERANCE`` 1e-5, ``FLOOR_RELATIVE_TOLERANCE`` 1e-7). cuDNN convolutions
use TF32 by default (``torch.backends.cudnn.allow_tf32`` is True), matmuls do not. The
instrument's tolerances are set for float32, so every run (``sgdwalk walk``, sweep cells, the
claim tiers) measures in float32 unless its config asks for TF32 (``WalkConfig.cuda_tf32``,
recorded in its config hash and metadata).

TF32 exists only on CUDA: elsewhere ``float32_numerics`` changes nothing. The flags are torch's
original ones (``allow_tf32``), which every torch the package supports has; torch 2.9 added
``fp32_precision`` settings, and reading the original flags after a program has set those
raises a RuntimeError in torch, so set TF32 in one of the two ways only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TF32Flags:
    """torch's process-wide TF32 switches for float32 work on CUDA."""

    cuda_matmul: bool  # torch.backends.cuda.matmul.allow_tf32
    cudnn: bool  # torch.backends.cudnn.allow_tf32 (convolutions)


def tf32_flags() -> TF32Flags:
    """The switches as they are now."""
    return TF32Flags(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def set_tf32_flags(flags: TF32Flags) -> None:
    torch.backends.cuda.matmul.allow_tf32 = flags.cuda_matmul
    torch.backends.cudnn.allow_tf32 = flags.cudnn


def uses_tf32(device: torch.device, tf32: bool) -> bool:
    """Whether float32 matmuls and convolutions on ``device`` run in TF32 under the policy."""
    return device.type == "cuda" and tf32


@contextmanager
def float32_numerics(device: torch.device, *, tf32: bool = False) -> Iterator[None]:
    """Float32 matmuls and convolutions on ``device`` in full float32 (``tf32=True``: TF32),
    the previous switches restored afterwards. Changes nothing off CUDA."""
    if device.type != "cuda":
        yield
        return
    saved = tf32_flags()
    set_tf32_flags(TF32Flags(cuda_matmul=tf32, cudnn=tf32))
    try:
        yield
    finally:
        set_tf32_flags(saved)


__all__ = ["TF32Flags", "float32_numerics", "set_tf32_flags", "tf32_flags", "uses_tf32"]
