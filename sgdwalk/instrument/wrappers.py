"""The module the instrument measures, out of the wrappers training puts around it.

Two kinds of wrapper hold the model the user wrote and train it unchanged:

- ``DistributedDataParallel`` (and ``DataParallel``): a forward through the wrapper takes
  part in DDP's gradient reduction and broadcasts its buffers, collectives the ranks'
  measurements would call in a different number than training does (``distributed.py``);
- ``torch.compile``'s ``OptimizedModule``: its parameters are the original module's, named
  with an ``_orig_mod.`` prefix, and a forward through it goes through Dynamo (its guards,
  recompiles for new shapes, kernels that round differently from the module's). Measured
  through the original module, a compiled model has the uncompiled model's parameter names,
  layout and records.

Whether compiling the measurement forward itself would pay is measured in
``benchmarks/test_compiled_measurement.py``.
"""

from __future__ import annotations

import sys

from torch import nn


def _compiled_module_type() -> type[nn.Module] | None:
    """``torch.compile``'s wrapper class, None when torch's compiler was never imported (then
    no model can be compiled): importing it only to look costs about 2 s."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return None if eval_frame is None else eval_frame.OptimizedModule


def unwrapped(model: nn.Module) -> nn.Module:
    """The module inside any nesting of ``DistributedDataParallel``, ``DataParallel`` and
    ``torch.compile`` wrappers; ``model`` itself when it has none."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    compiled = _compiled_module_type()
    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif compiled is not None and isinstance(model, compiled):
            original = model._orig_mod
            assert isinstance(original, nn.Module)  # torch.compile wraps modules only
            model = original
        else:
            return model


__all__ = ["unwrapped"]
