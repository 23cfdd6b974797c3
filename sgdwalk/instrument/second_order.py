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
has none, so torch only warns ("None of the inputs have requires_grad=True") and the block's
parameters get no gradient: the Hessian-vector products took their curvature as zero
(sharpness 32 % low on the network a second pair of eyes tried). The products' forward says
which trainable parameters got no gradient (``unused_parameters_warning``). The non-reentrant
form recomputes its block inside the backward from the module's own tensors, so the backward
passes run in the forward's context and with the model holding the point's values
(``sharpness._model_holding``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch.nn.attention import SDPBackend, sdpa_kernel


@contextmanager
def twice_differentiable_attention() -> Iterator[None]:
    """Attention computed by the math kernel inside the block (the one with a second
    derivative), the caller's kernel choice restored afterwards."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


def unused_parameters_warning(names: Sequence[str]) -> str:
    """What to say of trainable parameters a differentiated forward gave no gradient."""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (
        f"{shown}: no gradient in the forward of the Hessian-vector products, so their curvature is taken as "
        "zero (sharpness, top eigenvalues, Hessian trace). Right for parameters the forward does not use; wrong "
        "for a block under torch.utils.checkpoint with use_reentrant=True, which keeps no graph when none of "
        "its inputs requires a gradient: checkpoint with use_reentrant=False, or only while training"
    )


__all__ = ["twice_differentiable_attention", "unused_parameters_warning"]
