"""Warnings are errors (pyproject.toml's ``filterwarnings``) except a short list of harmless
ones only CUDA emits, matched by message: they pass, and a warning next to them still fails.

The messages are torch's own texts (its C++ ``TORCH_WARN``s and ``torch.cuda``'s Python
warnings), as a run on a GPU prints them.
"""

from __future__ import annotations

import re
import warnings

import pytest

HARMLESS_ON_CUDA = [
    # ATen's CublasHandlePool.cpp, in autograd's backward threads.
    "Attempting to run cuBLAS, but there was no current CUDA context! Attempting to set the primary context... "
    "(Triggered internally at ../aten/src/ATen/cuda/CublasHandlePool.cpp:135.)",
    # ATen's cudnn/Conv_v8.cpp (torch 2.3-2.4), in try_configs.
    "Plan failed with a cudnnException: CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: cudnnFinalize Descriptor "
    "Failed cudnn_status: CUDNN_STATUS_NOT_SUPPORTED (Triggered internally at "
    "../aten/src/ATen/native/cudnn/Conv_v8.cpp:919.)",
    # torch/cuda/__init__.py, _raw_device_count_nvml.
    "Can't initialize NVML",
]
STILL_ERRORS = [
    # A driver too old for torch's CUDA: the gpu tier must say so, not run on without CUDA.
    "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).",
    # Another library without a context: not on the list.
    "Attempting to run cuFFT, but there was no current CUDA context! Attempting to set the primary context...",
    # Another cuDNN plan failure: an error inside cuDNN, not a declined plan.
    "Plan failed with a CuDNNError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
]


@pytest.mark.parametrize("message", HARMLESS_ON_CUDA, ids=lambda message: message[:24])
def test_a_known_harmless_cuda_warning_passes(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=1)


@pytest.mark.parametrize("message", STILL_ERRORS, ids=lambda message: message[:24])
def test_every_other_warning_is_still_an_error(message: str) -> None:
    with pytest.raises(UserWarning, match="^" + re.escape(message[:20])):
        warnings.warn(message, UserWarning, stacklevel=1)
