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

Each checkpoint the Trainer saves in its ``output_dir`` gets the tracker's state beside it
(``sgdwalk_walk.pt``: θ_0, the last gradient and update, the records so far, and a digest of
the parameters it was saved at), so ``trainer.train(resume_from_checkpoint=...)`` from one
of them continues the walk, in a new process or with the same callback: the records of an
uninterrupted run (``tests/test_huggingface_callback.py``). Resumed from a checkpoint without
it (saved before the callback was added, or elsewhere), or with other weights, the walk
begins at the checkpoint's step, distance_from_init counted from its weights, and says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch

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

# The tracker's state, in each checkpoint folder the Trainer writes.
WALK_STATE_FILE: Final = "sgdwalk_walk.pt"
# The Trainer's checkpoint folders are "checkpoint-<global step>" (transformers' PREFIX_CHECKPOINT_DIR).
_CHECKPOINT_FOLDER_PREFIX: Final = "checkpoint"


def walk_state_path(args: TrainingArguments, step: int) -> Path:
    """Where the walk's state of the Trainer's checkpoint at ``step`` is kept."""
    # str(): transformers types output_dir as optional, and fills it in before training.
    return Path(str(args.output_dir)) / f"{_CHECKPOINT_FOLDER_PREFIX}-{step}" / WALK_STATE_FILE


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
        # A train() that ended in an exception never reached on_train_end: its attachment is
        # let go here, so the same callback can resume (found by a second pair of eyes).
        if self._attachment is not None:
            self._attachment.remove()
            self._attachment = None
        step = int(state.global_step)
        if self.tracker is None:
            self.tracker = WalkTracker(model, self.measurement, start_step=step, **self.tracker_options)
            if step > 0 and not self._resumed(self.tracker, args, step):
                warnings.warn(
                    f"resumed at step {step} from a checkpoint without this walk's state ({WALK_STATE_FILE} "
                    f"saved at these weights in {walk_state_path(args, step).parent}): a new walk begins here, "
                    "its distance_from_init counted from the checkpoint's weights, with no records before it",
                    stacklevel=2,
                )
            self._attachment = self.tracker.attach(optimizer)
            return
        if step < self.tracker.step_index:
            self._resumed(self.tracker, args, step)  # going back, and saying so, where the walk was saved
        # A second train() with the same callback continues the walk at the Trainer's step
        # (attach refuses a step before the tracker's: its records would repeat).
        self._attachment = self.tracker.attach(optimizer, step=step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """The tracker's state beside the checkpoint the Trainer has just written (one writer)."""
        folder = walk_state_path(args, int(state.global_step)).parent
        if self.tracker is None or self.tracker.closed or not state.is_world_process_zero or not folder.is_dir():
            return
        torch.save(self.tracker.state_dict(), folder / WALK_STATE_FILE)

    @staticmethod
    def _resumed(tracker: WalkTracker, args: TrainingArguments, step: int) -> bool:
        """Load the walk saved with the checkpoint at ``step``, if there is one at these weights."""
        path = walk_state_path(args, step)
        if not path.is_file():
            return False
        saved = torch.load(path, weights_only=True)
        if not tracker.holds_weights_of(saved):
            return False  # another run's checkpoint at the same step (resumed from elsewhere)
        tracker.resume_at(saved, step)
        return True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._attachment is not None:
            self._attachment.remove()
            self._attachment = None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.tracker is not None and self.tracker.diverged:
            control.should_training_stop = True
