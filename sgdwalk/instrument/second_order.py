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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.nn.attention import SDPBackend, sdpa_kernel


@contextmanager
def twice_differentiable_attention() -> Iterator[None]:
    """Attention computed by the math kernel inside the block (the one with a second
    derivative), the caller's kernel choice restored afterwards."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


__all__ = ["twice_differentiable_attention"]
