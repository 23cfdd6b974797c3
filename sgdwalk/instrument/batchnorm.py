"""How batch norm behaves while the instrument evaluates the loss: a stated choice.

- ``train``: batch statistics of each evaluation chunk (the authors' choice, and the
  default), without touching the running statistics.
- ``eval``: the model's running statistics, as at test time.
- ``recompute``: statistics re-estimated at each evaluated point over the whole
  measurement set, then used in eval mode (see ``measurement.losses_at_points``). As in
  ``torch.optim.swa_utils.update_bn``, each chunk's batch statistics count equally (a short
  last chunk weighs as much as a full one) and the variance is the mean of the chunks'
  variances; a chunk size that divides the set makes the weighting exact.

Whatever the mode, dropout and every other train/eval switch are in eval mode during a
measurement (a measurement must not draw random numbers), and the model's running
statistics and train/eval flags are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, cast, get_args

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

BatchNormMode = Literal["train", "eval", "recompute"]
BATCHNORM_MODES: tuple[str, ...] = get_args(BatchNormMode)


def check_batchnorm_mode(mode: str) -> BatchNormMode:
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"unknown batch-norm mode {mode!r}; choose one of {', '.join(BATCHNORM_MODES)}")
    return cast(BatchNormMode, mode)  # checked just above: one of the Literal's values


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    # Imported here so that the CLI can read the mode names without importing torch.
    from torch.nn.modules.batchnorm import _BatchNorm

    return [module for module in model.modules() if isinstance(module, _BatchNorm)]


def buffers_read(model: nn.Module, mode: BatchNormMode) -> list[torch.Tensor]:
    """The model's buffers that a measurement in ``mode`` reads: every buffer but the batch-norm
    running statistics in ``train`` (batch statistics instead) and ``recompute`` (re-estimated
    at each point). A loss measured once holds for the same parameters only while these are
    unchanged: in ``eval`` the training forward moves the running statistics at every step."""
    skipped = (
        set()
        if mode == "eval"
        else {id(buffer) for layer in batchnorm_layers(model) for buffer in layer.buffers(recurse=False)}
    )
    return [buffer for buffer in model.buffers() if id(buffer) not in skipped]


@contextmanager
def measuring(model: nn.Module, mode: BatchNormMode) -> Iterator[None]:
    """Put ``model`` in the state a measurement needs, and restore it afterwards.

    In ``train`` mode the batch-norm layers normalise by batch statistics but, with
    ``track_running_stats`` switched off for the duration, never update the running ones.
    """
    check_batchnorm_mode(mode)
    saved_flags = [(module, module.training) for module in model.modules()]
    saved_tracking = [(layer, layer.track_running_stats) for layer in batchnorm_layers(model)]
    model.eval()
    if mode == "train":
        for layer in batchnorm_layers(model):
            layer.train()
            layer.track_running_stats = False
    try:
        yield
    finally:
        for layer, tracking in saved_tracking:
            layer.track_running_stats = tracking
        for module, training in saved_flags:
            module.training = training
