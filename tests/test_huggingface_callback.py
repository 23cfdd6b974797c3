"""The Hugging Face callback: a tiny GPT-2 built from a config (random weights, no download)
trained by ``transformers.Trainer`` with gradient clipping and accumulation; every record
against a float64 reference taken by a second, independent callback around each update
(θ before and after, the clipped gradient the update used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgdwalk.instrument.measurement import MeasurementSet, ModelCall
from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.huggingface_callback import HuggingFaceWalkCallback
from tests.integration_helpers import optional_library

transformers = optional_library("transformers", "transformers")
# Slow: a transformers Trainer round trip (importing transformers alone takes seconds;
# conftest.py leaves this module uncollected without --runslow).
pytestmark = pytest.mark.slow
TRAINER_CALLBACK: Any = transformers.TrainerCallback

VOCABULARY, CONTEXT, SEQUENCES = 32, 8, 32
STEPS = 4
# Float32 training read back in float64: norms and cosines of ~5,000 float32 numbers agree
# to ~1e-7 relative; 1e-6 leaves room for the summation order and nothing more.
RELATIVE = 1e-6
# The clipped norm against the clip: torch's 1e-6 in clip_grad_norm_'s denominator, relative
# to norms of order one, plus the rounding above.
CLIPPED_NORM_RELATIVE = 1e-5


def sequence_losses(model: ModelCall, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy of a causal language model."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    per_token = F.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
    return per_token.mean(dim=1)


def flat(tensors: Any) -> np.ndarray:
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])


class Snapshots(TRAINER_CALLBACK):
    """θ and the gradient right before each update (after clipping), θ right after it."""

    def __init__(self) -> None:
        self.before: list[np.ndarray] = []
        self.gradients: list[np.ndarray] = []
        self.rates: list[float] = []
        self.after: list[np.ndarray] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        parameters = [p for p in kwargs["model"].parameters() if p.requires_grad]
        self.before.append(flat(parameters))
        self.gradients.append(flat(p.grad for p in parameters))
        self.rates.append(float(kwargs["optimizer"].param_groups[0]["lr"]))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.after.append(flat(p for p in kwargs["model"].parameters() if p.requires_grad))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def walked_trainer(
    output_dir: Path, save_steps: int | None = None, others: tuple[Any, ...] = (), walk: bool = True
) -> tuple[Any, HuggingFaceWalkCallback, Snapshots]:
    """A Trainer of ``STEPS`` updates of the tiny GPT-2, a checkpoint every ``save_steps``, with
    the walk's callback (left out of the Trainer without ``walk``), the reference and ``others``."""
    config = transformers.GPT2Config(
        vocab_size=VOCABULARY, n_positions=CONTEXT, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    tokens = torch.randint(0, VOCABULARY, (SEQUENCES, CONTEXT), generator=torch.Generator().manual_seed(1))
    dataset = [{"input_ids": row, "labels": row} for row in tokens]
    measurement = MeasurementSet.from_batches({"input_ids": tokens[:16]}, sequence_losses, chunk_size=8)
    callback, snapshots = HuggingFaceWalkCallback(measurement, num_alphas=4), Snapshots()
    saving: dict[str, Any] = {"save_strategy": "no"} if save_steps is None else {"save_steps": save_steps}
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=0.5, optim="sgd", max_grad_norm=0.5, lr_scheduler_type="linear", report_to="none",
        logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, **saving,
    )  # fmt: skip
    callbacks = [*([callback] if walk else []), snapshots, *others]
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=callbacks)
    return trainer, callback, snapshots


def train(
    tmp_path: Path, save_steps: int | None = None, resume_from: Path | None = None, walk: bool = True
) -> tuple[list[StepRecord], Snapshots]:
    """``STEPS`` updates (from the checkpoint ``resume_from``), a checkpoint every ``save_steps``;
    the walk's records (none without ``walk``) and the reference's snapshots."""
    trainer, callback, snapshots = walked_trainer(tmp_path, save_steps, walk=walk)
    trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
    if not walk:
        return [], snapshots
    assert callback.tracker is not None
    return callback.tracker.close(), snapshots


def test_each_update_is_one_record_of_the_clipped_gradient_it_used(tmp_path: Path) -> None:
    records, reference = train(tmp_path)
    assert [record.step for record in records] == list(range(STEPS))
    for step, record in enumerate(records):
        gradient = reference.gradients[step]
        assert record.lr == reference.rates[step]
        assert record.grad_norm == pytest.approx(np.linalg.norm(gradient), rel=RELATIVE)
        # The clip bit, so this is the gradient after clipping: clip_grad_norm_ scales by
        # 0.5 / (norm + 1e-6), which leaves the norm 1e-6 / norm short of 0.5 (~1e-6 relative).
        assert record.grad_norm == pytest.approx(0.5, rel=CLIPPED_NORM_RELATIVE)
        update = reference.after[step] - reference.before[step]
        assert record.step_length == pytest.approx(np.linalg.norm(update), rel=RELATIVE)
        if step == 0:
            assert record.cosine is None
        else:
            assert record.cosine == pytest.approx(cosine(reference.gradients[step - 1], gradient), abs=RELATIVE)
    assert len({record.lr for record in records}) == STEPS  # the linear schedule, read at each step


def test_a_run_resumed_from_a_checkpoint_continues_the_walk(tmp_path: Path) -> None:
    """Resumed from its checkpoint at step 2 by a new Trainer and callback (as a new process
    would): the records are the uninterrupted run's, bitwise, those before the checkpoint
    included (before, the walk began again at step 2: no cosine there, and distance_from_init
    counted from the checkpoint's weights)."""
    uninterrupted, _ = train(tmp_path, save_steps=2)
    assert (tmp_path / "checkpoint-2" / "sgdwalk_walk.pt").is_file()
    resumed, _ = train(tmp_path, save_steps=2, resume_from=tmp_path / "checkpoint-2")
    assert [record.step for record in resumed] == list(range(STEPS))
    assert resumed == uninterrupted


def test_a_checkpoint_without_the_walk_begins_one_and_says_so(tmp_path: Path) -> None:
    """A checkpoint saved without the callback: the walk begins at its step, with a warning."""
    train(tmp_path, save_steps=2, walk=False)
    with pytest.warns(UserWarning, match="resumed at step 2 from a checkpoint without this walk's state"):
        resumed, _ = train(tmp_path, save_steps=2, resume_from=tmp_path / "checkpoint-2")
    assert [record.step for record in resumed] == [2, 3]
    assert resumed[0].cosine is None
    assert resumed[0].distance_from_init == pytest.approx(resumed[0].step_length, rel=RELATIVE)


class _CrashAfter(TRAINER_CALLBACK):
    """Ends a train() by an exception after update ``step`` (a crash after a checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step: int | None = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.step is not None and state.global_step == self.step:
            self.step = None  # once: the resumed train() runs through
            raise KeyboardInterrupt


def test_the_same_trainer_and_callback_resume_after_a_crash(tmp_path: Path) -> None:
    """A train() ended by an exception after update 3, resumed from its checkpoint at 2 by the
    same Trainer and callback (a notebook): before, the callback's attachment from the crashed
    train() was still there and attach refused; now the records are the uninterrupted run's."""
    uninterrupted, _ = train(tmp_path / "whole", save_steps=2)
    trainer, callback, _ = walked_trainer(tmp_path / "crashed", save_steps=2, others=(_CrashAfter(3),))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    with pytest.warns(UserWarning, match="goes back from step 3 to the checkpoint's step 2"):
        trainer.train(resume_from_checkpoint=True)
    assert callback.tracker is not None
    assert callback.tracker.close() == uninterrupted
