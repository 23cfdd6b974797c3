"""A Lightning callback that measures the walk of a ``LightningModule`` (extra ``lightning``).

    callback = LightningWalkCallback(measurement, schedule=sgdwalk.windows([(0, 100)]))
    trainer = lightning.Trainer(callbacks=[callback])
    trainer.fit(module, train_loader)
    records = callback.tracker.close()

Lightning runs the forward, the backward, ``on_before_optimizer_step`` and then its gradient
clipping (``gradient_clip_val``) inside ``optimizer.step(closure)``, so neither the
optimizer's step pre-hook nor ``on_before_optimizer_step`` sees the gradient the update uses.
The callback's pre-hook wraps that closure (``attach.begin_once_the_gradient_is_made``): the
step begins when the closure returns, clipped gradient made and parameters not yet updated;
under a gradient scaler, which runs the closure itself and then ``optimizer.step()`` without
one, it begins in the pre-hook, gradients unscaled and clipped. ``on_before_backward`` gives
the minibatch loss, and the optimizer's step post-hook (parameters updated) ends the step.
The tracker is built at ``on_train_start``, once Lightning has put the module on its device:
the measurement set must be on that device too.

A Lightning checkpoint holds the tracker's state (``state_dict``: θ_0, the last gradient and
update, the records so far), so ``Trainer.fit(ckpt_path=...)`` continues the walk where the
checkpoint left it, in a new process or with the same callback, the records numbered by the
trainer's ``global_step``: those of an uninterrupted run (``tests/test_lightning.py``).
Before, a resumed fit started a new walk at step 0 from the checkpoint's weights: its records
carried the numbers of steps long past, the distance from the resumed weights, and a
same-process resume from an earlier checkpoint numbered the replayed steps after the last.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.hooks import RemovableHandle

from sgdwalk.instrument.attach import StepArguments, begin_once_the_gradient_is_made, begin_step
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.integrations.optional import MissingExtraError

DEFAULT_PREFIX = "sgdwalk/"

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch import Callback
else:
    try:
        from lightning.pytorch import Callback
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.partition(".")[0] != "lightning":
            raise  # something else missing inside an installed lightning: not ours to explain
        _MISSING = missing

        class Callback:
            """Stands in for ``lightning.pytorch.Callback`` when lightning is not installed."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise MissingExtraError(
                    "LightningWalkCallback needs the 'lightning' package: pip install 'sgdwalk[lightning]'"
                ) from _MISSING


class LightningWalkCallback(Callback):
    """Measures every optimizer step of ``Trainer.fit`` with a ``WalkTracker``.

    Args:
        measurement: the fixed set the losses are measured on (on the module's device).
        log_to_loggers: also log each record's ``flat_metrics`` to the trainer's loggers
            (TensorBoard, CSV, W&B, MLflow: whatever ``Trainer(logger=...)`` has) at its step.
        prefix: put before every logged metric name (default "sgdwalk/").
        stop_when_diverged: ask the trainer to stop once the tracker has seen a divergence.
        **tracker_options: passed to ``WalkTracker`` (schedule, num_alphas, weight_decay, ...).

    ``tracker`` is the ``WalkTracker`` (None before training starts); ``tracker.close()``
    gives its records. With gradient accumulation the minibatch loss is the sum of the losses
    Lightning back-propagated since the last step (each already divided by the accumulation
    count, so the mean over the accumulated batch).
    """

    def __init__(
        self,
        measurement: MeasurementSet,
        *,
        log_to_loggers: bool = True,
        prefix: str = DEFAULT_PREFIX,
        stop_when_diverged: bool = True,
        **tracker_options: Any,
    ) -> None:
        super().__init__()
        self.measurement = measurement
        self.log_to_loggers = log_to_loggers
        self.prefix = prefix
        self.stop_when_diverged = stop_when_diverged
        self.tracker_options = tracker_options
        self.tracker: WalkTracker | None = None
        self._loss: torch.Tensor | None = None
        self._handles: list[RemovableHandle] = []
        # The tracker's state a checkpoint handed back (load_state_dict), taken up at on_train_start.
        self._saved_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ Lightning's hooks
    @property
    def state_key(self) -> str:
        # Two of these callbacks (an exact and a targeted walk, say) keep their states apart by prefix.
        return self._generate_state_key(prefix=self.prefix)

    def state_dict(self) -> dict[str, Any]:
        """The tracker's state, for the checkpoint Lightning is writing (nothing before training)."""
        if self.tracker is None:
            return {}
        if self.tracker.closed:
            warnings.warn(
                f"the walk's tracker is closed, so this checkpoint holds none of its state: a fit resumed "
                f"from it starts a new walk at its step ({self.tracker.step_index}), measuring "
                "distance_from_init from there",
                stacklevel=2,
            )
            return {}
        return {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's tracker state for ``on_train_start``, where the tracker is built."""
        self._saved_state = state_dict.get("tracker")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"LightningWalkCallback measures the steps of one optimizer; this module has {len(trainer.optimizers)}"
            )
        step = int(trainer.global_step)
        if self.tracker is None:
            # From a checkpoint without a walk's state (one saved without this callback), the walk
            # begins at the checkpoint's step: distance_from_init counts from its weights.
            self.tracker = WalkTracker(
                pl_module, self.measurement, **{"start_step": step if trainer.ckpt_path else 0, **self.tracker_options}
            )
        if self._saved_state is not None:
            saved, self._saved_state = self._saved_state, None
            # The checkpoint's walk: its θ_0, gradient, update and records, at its step.
            self.tracker.resume_at(saved, step)
        elif trainer.ckpt_path:
            # The same callback again, from a checkpoint without its state: steps the tracker did
            # not see are a gap; an earlier step is refused (its records would repeat).
            self.tracker.continue_at(step)
        optimizer = trainer.optimizers[0]
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step_of(trainer)),
        ]

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()  # also when fit ended by an exception

    # ------------------------------------------------------------------------ internals
    def _started(self) -> WalkTracker:
        if self.tracker is None:
            raise RuntimeError("LightningWalkCallback: an optimizer step before on_train_start")
        return self.tracker

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> StepArguments | None:
        tracker = self._started()

        def begin() -> None:
            loss, self._loss = self._loss, None
            begin_step(tracker, optimizer, loss)

        return begin_once_the_gradient_is_made(args, kwargs, begin)

    def _after_step_of(self, trainer: pl.Trainer) -> Callable[[torch.optim.Optimizer, Any, Any], None]:
        def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            tracker = self._started()
            for record in tracker.end_optimizer_step():
                self._log(trainer, record)
            if tracker.diverged and self.stop_when_diverged:
                trainer.should_stop = True

        return after_step

    def _log(self, trainer: pl.Trainer, record: StepRecord) -> None:
        if not self.log_to_loggers:
            return
        metrics = flat_metrics(record, self.prefix)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=record.step)

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
