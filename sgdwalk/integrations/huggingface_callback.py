"""A Hugging Face ``Trainer`` callback that measures the walk of its model (extra ``transformers``).

    callback = HuggingFaceWalkCallback(measurement, schedule=sgdwalk.windows([(0, 100)]))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    records = callback.tracker.close()

The Trainer clips the gradient (``max_grad_norm``) and then calls ``optimizer.step()`` once
per update (after ``gradient_accumulation_steps`` backward passes), through accelerate's
wrapper of the optimizer. The callback attaches the tracker (``WalkTracker.attach``) to the
torch optimizer inside that wrapper, so a step is the update: its gradient the accumulated
and clipped one the optimizer uses, its rates and coupled decay read from the optimizer's
groups, its number the Trainer's ``global_step``. The Trainer hands callbacks no loss, so the
records' ``minibatch_loss`` is None. The tracker is built at ``on_train_begin``, once the
Trainer has put the model on its device (the measurement set must be on that device too);
a Trainer resumed from a checkpoint starts the tracker at its ``global_step``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sgdwalk.instrument.attach import OptimizerAttachment
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.integrations.optional import MissingExtraError

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
else:
    try:
        from transformers import TrainerCallback
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.partition(".")[0] != "transformers":
            raise  # something else missing inside an installed transformers: not ours to explain
        _MISSING = missing

        class TrainerCallback:
            """Stands in for ``transformers.TrainerCallback`` when transformers is not installed."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise MissingExtraError(
                    "HuggingFaceWalkCallback needs the 'transformers' package: pip install 'sgdwalk[transformers]'"
                ) from _MISSING

    TrainingArguments = TrainerState = TrainerControl = Any


class HuggingFaceWalkCallback(TrainerCallback):
    """Measures every optimizer step of ``Trainer.train`` with a ``WalkTracker``.

    Args:
        measurement: the fixed set the losses are measured on (on the model's device); its
            ``BatchLoss`` calls the model as the Trainer's batches do (see ``MeasurementSet.from_batches``).
        **tracker_options: passed to ``WalkTracker`` (schedule, num_alphas, sinks, ...).

    ``tracker`` is the ``WalkTracker`` (None before training starts); ``tracker.close()``
    gives its records.
    """

    def __init__(self, measurement: MeasurementSet, **tracker_options: Any) -> None:
        super().__init__()
        if "start_step" in tracker_options:
            raise ValueError("the tracker starts at the Trainer's global_step: leave start_step out")
        self.measurement = measurement
        self.tracker_options = tracker_options
        self.tracker: WalkTracker | None = None
        self._attachment: OptimizerAttachment | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise RuntimeError("HuggingFaceWalkCallback: the Trainer passed no model or optimizer to on_train_begin")
        step = int(state.global_step)
        if self.tracker is None:
            self.tracker = WalkTracker(model, self.measurement, start_step=step, **self.tracker_options)
            self._attachment = self.tracker.attach(optimizer)
        else:  # a second train() with the same callback continues the walk at the Trainer's step
            self._attachment = self.tracker.attach(optimizer, step=step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._attachment is not None:
            self._attachment.remove()
            self._attachment = None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.tracker is not None and self.tracker.diverged:
            control.should_training_stop = True
