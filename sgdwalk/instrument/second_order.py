"""Second derivatives through attention: the one place the instrument picks the attention kernel.

Hessian-vector products differentiate a gradient, so every operation of the forward pass
needs a derivative of its own backward. torch's fused attention kernels (flash and
memory-efficient, on CPU and CUDA) have none: ``scaled_dot_product_attention`` under them
raises "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
implemented" at the second backward. The math kernel is matmuls and a softmax, differentiable
any number of times. torch picks the kernel when the forward runs, so every forward whose
graph the instrument differentiates twice runs under ``twice_differentiable_attention()``;
first-order measurement (the segment losses) does not, and keeps the fused kernels.

``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` call the same function, so they
are covered too. A model without attention computes exactly what it did: the switch only
steers ``scaled_dot_product_attention``.

Activation checkpointing (``torch.utils.checkpoint``) is the other thing a differentiated
forward meets. The reentrant form (``use_reentrant=True``) keeps a graph for its block only
when one of the block's inputs requires a gradient; a block fed the measurement set's inputs
has none, so torch only warns ("None of the inputs have requires_grad=True") and the
Hessian-vector products would leave the block's parameters out: sharpness 32 % low, without
a word, on the network a second pair of eyes tried. ``differentiated_forward()`` turns that
warning into an error that says so. The non-reentrant form recomputes its block inside the
backward, so the backward passes run in the same context as the forward
(``differentiated_forward`` and the measurement's train/eval state) and see the same block.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch.nn.attention import SDPBackend, sdpa_kernel

from sgdwalk.base.errors import SgdwalkError

# torch.utils.checkpoint's warning for a reentrant block that keeps no graph.
_REENTRANT_CHECKPOINT_CUT = "None of the inputs have requires_grad=True"


class CutGraphError(SgdwalkError, RuntimeError):
    """Part of the model kept no graph in a forward the instrument differentiates."""


@contextmanager
def twice_differentiable_attention() -> Iterator[None]:
    """Attention computed by the math kernel inside the block (the one with a second
    derivative), the caller's kernel choice restored afterwards."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextmanager
def differentiated_forward() -> Iterator[None]:
    """A forward (and its backward passes) whose graph the instrument differentiates: attention
    by the math kernel (``twice_differentiable_attention``), and a reentrant checkpoint that
    would cut its block out of the graph refused (``CutGraphError``) instead of left out."""
    with twice_differentiable_attention(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=_REENTRANT_CHECKPOINT_CUT, category=UserWarning)
        try:
            yield
        except UserWarning as warning:
            if _REENTRANT_CHECKPOINT_CUT not in str(warning):
                raise
            raise CutGraphError(
                "part of the model runs under torch.utils.checkpoint with use_reentrant=True, which keeps no graph "
                "for a block none of whose inputs requires a gradient (the measurement set's inputs do not): the "
                "Hessian-vector products (sharpness, top eigenvalues, Hessian trace) would leave that block's "
                "parameters out. Checkpoint with use_reentrant=False (torch's recommendation), or only while "
                "training (if self.training: checkpoint(...))"
            ) from warning


__all__ = ["CutGraphError", "differentiated_forward", "twice_differentiable_attention"]
