"""Train a real network under a ``WalkConfig`` and measure its walk: ``run_walk`` / ``resume_walk``.

One run = data (``load_walk_data``, or a ``WalkData`` handed in), a model seeded from
``config.seed``, an optimizer (SGD, exact full-batch GD, or GD plus isotropic noise), a
learning-rate schedule, and a ``WalkTracker`` measuring the tracked steps on a fixed, seeded
measurement set. Records go to a run directory as they are made (``runlog``); a checkpoint
at epoch ends lets ``resume_walk`` continue and produce the records an uninterrupted run
would have, bit for bit on a CPU. On CUDA two runs of one config already differ in the last
bits (cuDNN's backward kernels add in a nondeterministic order), and so does a resumed run.

Random streams, each seeded from ``config.seed`` and independent of the others, so that
changing what is measured never changes what is trained:

- model initialisation: torch's global generator, ``torch.manual_seed(seed)``;
- minibatch order and augmentation: a CPU ``torch.Generator`` (``seed``), CPU so a run
  draws the same batches on CPU and GPU;
- the measurement subset: a CPU generator (``seed + MEASUREMENT_STREAM``);
- the noise of ``noisy-gd``: ``NoisyGD``'s own generator (``seed + NOISE_STREAM``), and the
  minibatches of its variance estimate (``seed + NOISE_ESTIMATE_STREAM``);
- the order precision-targeted measurement reads the set in (``seed + SAMPLE_ORDER_STREAM``).

Under ``torchrun`` (a ``torch.distributed`` process group is initialised, see
``torchrun_process_group``) the run trains with ``DistributedDataParallel``: every rank draws
the same global minibatch of ``batch_size`` from the same generator and trains on its own
equal slice of it (a per-rank split, not a ``DistributedSampler``, whose shuffling differs
from a single process's), so the update is the single-process one on the same global batch,
up to the order DDP sums the ranks' gradients in. The tracker shares the measurement out
over the ranks (``sgdwalk.instrument.distributed``); rank 0 alone writes the run directory.
Batch norm normalises each rank's slice during training (DDP's behaviour on the CPU, where
SyncBatchNorm is not available), so a batch-norm network's updates differ from a single
process's; the measurements themselves (bn_mode "train" included) do not depend on the split.
Only SGD is distributed (the full-batch optimizers compute their gradient in one process).
A run resumes under the world size it ran under (``sgdwalk.runs.world``: the split of each
minibatch decides the trajectory) and is refused under another; every rank reads the
checkpoint rank 0 wrote, and rank 0 alone owns and rewrites the run directory.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from sgdwalk.instrument.distributed import Shard
from sgdwalk.instrument.divergence import DIVERGENCE_LOSS_FACTOR, loss_divergence
from sgdwalk.instrument.geometry import distance, flat_parameters, norm
from sgdwalk.instrument.measurement import per_sample_cross_entropy
from sgdwalk.instrument.numerics import uses_tf32
from sgdwalk.instrument.offload_targets import OffloadTarget
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.runs.builders import (
    build_measurement_set,
    build_optimizer,
    build_seeded_model,
    estimate_noise_variance,
    measurement_indices,
    precision_target,
    resolve_device,
    run_numerics,
    steps_per_epoch_of,
    tracking_schedule,
)
from sgdwalk.runs.distribution import check_distributable, rank_device
from sgdwalk.runs.run_data import WalkData, load_walk_data, walk_data_for
from sgdwalk.runs.runlog import (
    CONFIG_FILE,
    METADATA_FILE,
    RunDirectoryError,
    RunWriter,
    base_metadata,
    hold_run_directory,
    is_run_directory,
    load_run,
    load_run_config,
    load_run_metadata,
    now_iso,
    read_checkpoint,
    written_by_loop,
)
from sgdwalk.runs.summary import summarize_windows
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.runs.world import check_resume_world_size, world_sizes_after
from sgdwalk.training.config import ADAPTIVE_OPTIMIZER_NAMES, WalkConfig, cadence, is_full_batch, learning_rate_schedule
from sgdwalk.training.optim import NoisyGD, full_batch_gradient_

# Unmeasured SGD steps whose minibatch losses wait on the device for one copy to the host:
# reading each at its step would wait on the device every step. A divergence among them is
# found at the look and named by its step, as if found at once; the steps taken past it
# (at most this many, never measured: a measured step looks first) leave no record.
LOSS_LOOK_EVERY: Final = 64

RecordCallback = Callable[[StepRecord], None]
# Called once the data is loaded and the run directory written (None: an in-memory run).
StartCallback = Callable[[Path | None], None]


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Tensor, targets: Tensor, chunk_size: int) -> tuple[float | None, float | None]:
    """(mean cross-entropy, accuracy) in eval mode (batch norm's running statistics); None if empty."""
    count = int(targets.shape[0])
    if count == 0:
        return None, None
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, count, chunk_size):
            outputs = model(inputs[start : start + chunk_size])
            chunk_targets = targets[start : start + chunk_size]
            loss_sum += float(F.cross_entropy(outputs, chunk_targets, reduction="sum").double())
            correct += int((outputs.argmax(dim=1) == chunk_targets).sum())
    finally:
        model.train(was_training)
    return loss_sum / count, correct / count


def _progress_enabled(config: WalkConfig, progress: bool | None) -> bool:
    wanted = config.progress if progress is None else progress
    return bool(wanted) and sys.stderr.isatty()


def _format_postfix(loss: float, record: StepRecord | None) -> dict[str, str]:
    postfix = {"loss": f"{loss:.4f}"}
    if record is not None:
        postfix["height"] = f"{record.height_start:.3g}"
        if record.cosine is not None:
            postfix["cos"] = f"{record.cosine:+.2f}"
    return postfix


# ---------------------------------------------------------------------------- a run
class _LatestRecord:
    """The last record the tracker made (the progress bar shows it)."""

    def __init__(self) -> None:
        self.record: StepRecord | None = None

    def remember(self, record: StepRecord) -> None:
        self.record = record


class _PendingLosses:
    """Minibatch losses kept on the device (``LOSS_LOOK_EVERY``) until a look copies them
    to the host together, in the step order they were taken."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._losses: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, loss: Tensor) -> None:
        self._steps.append(step)
        self._losses.append(loss.detach())

    def read(self) -> list[tuple[int, float]]:
        """Every pending (step, loss), in one copy to the host; none pending afterwards."""
        if not self._losses:
            return []
        # tolist() gives each float32 value as float() would: the same Python floats.
        values = torch.stack(self._losses).tolist()
        looked = list(zip(self._steps, values, strict=True))
        self._steps, self._losses = [], []
        return looked


class _WalkRun:
    """The state of one run while it trains; ``execute`` runs it to its end."""

    def __init__(
        self,
        config: WalkConfig,
        data: WalkData | None,
        progress: bool | None,
        on_record: RecordCallback | None,
        resume_dir: Path | None,
        on_start: StartCallback | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.shard = Shard.current()
        check_distributable(config, self.shard)
        self.device = rank_device(resolve_device(config.device), self.shard)
        self.data = walk_data_for(config, data)
        self.train_x = self.data.train_inputs.to(self.device)
        self.train_y = self.data.train_targets.to(self.device)
        self.val_x = self.data.val_inputs.to(self.device)
        self.val_y = self.data.val_targets.to(self.device)
        self.train_size = int(self.train_y.shape[0])
        self.steps_per_epoch = steps_per_epoch_of(config, self.train_size)
        self.cadence = cadence(config, self.steps_per_epoch)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.lr_at = learning_rate_schedule(config, self.steps_per_epoch)
        self.model = build_seeded_model(config, self.data, self.device)
        # What the training forward runs: the model, or its DDP wrapper (which averages the
        # ranks' gradients in backward). Measurements and evaluations use the model itself.
        self.trained = self._distributed_model()
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.measurement = build_measurement_set(config, self.train_x, self.train_y)

        checkpoint = None if resume_dir is None else read_checkpoint(resume_dir, self.device)
        self.noise_variance = self._noise_variance(checkpoint)
        self.optimizer = build_optimizer(config, self.model, self.noise_variance)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.latest = _LatestRecord()
        self.writer = self._open_writer(resume_dir, checkpoint)
        self.tracker = self._build_tracker(on_record)
        if checkpoint is not None:
            self._restore(checkpoint)
        if on_start is not None and self.shard.is_writer:
            on_start(None if self.writer is None else self.writer.run_dir)

    # ----------------------------------------------------------------- set-up steps
    def _distributed_model(self) -> nn.Module:
        if not self.shard.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def _noise_variance(self, checkpoint: dict[str, Any] | None) -> float | None:
        """noisy-gd's σ²: the checkpoint's when resuming (the estimate is made once per run), else estimated at θ_0."""
        if self.config.optimizer != "noisy-gd":
            return None
        if checkpoint is not None:
            return float(checkpoint["noise_variance"])
        return estimate_noise_variance(self.model, self.config, self.train_x, self.train_y)

    def _open_writer(self, resume_dir: Path | None, checkpoint: dict[str, Any] | None) -> RunWriter | None:
        """The run directory's writer: a new one, or the resumed one cut back to what the checkpoint saw."""
        if self.config.out_dir is None or not self.shard.is_writer:
            return None
        if resume_dir is None:
            return RunWriter.create(self.config.out_dir, self.config, self._metadata())
        saw = checkpoint or {"steps_written": 0, "epochs_written": 0}  # no checkpoint: from the start
        writer = RunWriter.reopen(
            self.config.out_dir, steps_kept=int(saw["steps_written"]), epochs_kept=int(saw["epochs_written"])
        )
        world_size = self.shard.world_size
        writer.update_metadata(world_size=world_size, world_sizes=world_sizes_after(writer.metadata, world_size))
        return writer

    def _build_tracker(self, on_record: RecordCallback | None) -> WalkTracker:
        """The tracker, its records going to the run directory, then ``on_record``, then ``latest``."""
        sinks: list[RecordCallback] = []
        if self.writer is not None:
            sinks.append(self.writer.write_step)
        if on_record is not None:
            sinks.append(on_record)
        # A sink that holds the record, not the run: a bound method of the run here would
        # make a cycle (run -> tracker -> sinks -> run) that keeps every finished run's model
        # and tensors (GPU memory) alive until the cycle collector happens to run.
        sinks.append(self.latest.remember)
        config = self.config
        # The runner reads it too: a measured step's record holds its minibatch loss.
        self.schedule = tracking_schedule(config, self.steps_per_epoch)
        return WalkTracker(
            self.model,
            self.measurement,
            schedule=self.schedule,
            num_alphas=config.num_alphas,
            bn_mode=config.bn_mode,
            weight_decay=config.weight_decay,
            sharpness_every=config.sharpness_every,
            sharpness_seed=config.seed,
            sinks=sinks,
            precision=precision_target(config),
            divergence_loss_factor=DIVERGENCE_LOSS_FACTOR,
            measurement_precision=config.measurement_precision,
            hvp_chunk_size=config.hvp_chunk_size,
            hessian_trace_every=config.hessian_trace_every,
            hessian_trace_probes=config.hessian_trace_probes,
            gradient_noise_scale_every=config.gradient_noise_scale_every,
            gradient_noise_batch=config.gradient_noise_batch,
            top_eigenvalues_every=config.top_eigenvalues_every,
            top_eigenvalues_k=config.top_eigenvalues_k,
            preconditioned_sharpness_every=config.preconditioned_sharpness_every,
            offload=config.offload,
        )

    # ----------------------------------------------------------------- bookkeeping
    def _metadata(self) -> dict[str, Any]:
        metadata = base_metadata(self.config, self.device)
        metadata.update(
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            train_size=self.train_size,
            val_size=int(self.val_y.shape[0]),
            measurement_size=self.measurement.size,
            data_source=self.data.source,
            cpu_threads=torch.get_num_threads(),
            # Float32 matmuls and convolutions in TF32 (CUDA and config.cuda_tf32 only).
            tf32=uses_tf32(self.device, self.config.cuda_tf32),
            num_parameters=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            noise_variance=self.noise_variance,
            noise_batches=self.config.noise_batches if self.config.optimizer == "noisy-gd" else None,
            world_size=self.shard.world_size,
            # One entry per start and resume (sgdwalk.runs.world).
            world_sizes=[self.shard.world_size],
        )
        return metadata

    def _save_checkpoint(self, epoch: int) -> None:
        assert self.writer is not None
        self.writer.write_checkpoint(
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "batch_generator": self.batch_generator.get_state(),
                "noise_generators": self.optimizer.generator_states() if isinstance(self.optimizer, NoisyGD) else {},
                "noise_variance": self.noise_variance,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                "tracker": self.tracker.state_dict(),
                "history": self.history,
            }
        )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.batch_generator.set_state(checkpoint["batch_generator"].cpu())
        if isinstance(self.optimizer, NoisyGD):
            self.optimizer.load_generator_states(checkpoint["noise_generators"])
        torch.set_rng_state(checkpoint["torch_rng"].cpu())
        if checkpoint["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in checkpoint["cuda_rng"]])
        self.tracker.load_state_dict(checkpoint["tracker"])
        self.history = list(checkpoint["history"])
        self.start_epoch = int(checkpoint["epoch"])

    # ------------------------------------------------------------------ training
    def _epoch_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        if is_full_batch(self.config):
            # Exact gradient of the fixed training set: no shuffling, no augmentation.
            yield self.train_x, self.train_y
            return
        from sgdwalk.training.data import iterate_minibatches

        augmentation = self.data.augmentation if self.config.augment else None
        yield from iterate_minibatches(
            self.train_x, self.train_y, self.config.batch_size, self.batch_generator, augment=augmentation
        )

    def _gradient(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Set ``.grad`` for this step and return its loss (minibatch, or full-batch mean), a
        0-d tensor left on the device: reading it waits for the step (``_PendingLosses``)."""
        if is_full_batch(self.config):
            chunk_size = self.config.gd_chunk_size
            mean = full_batch_gradient_(self.model, per_sample_cross_entropy, inputs, targets, chunk_size)
            return torch.tensor(mean, dtype=torch.float64)
        self.optimizer.zero_grad(set_to_none=True)
        if self.shard.distributed:
            # This rank's equal slice of the global minibatch; DDP averages the gradients.
            share = self.config.batch_size // self.shard.world_size
            mine = slice(self.shard.rank * share, (self.shard.rank + 1) * share)
            inputs, targets = inputs[mine], targets[mine]
        loss = F.cross_entropy(self.trained(inputs), targets)
        loss.backward()
        if self.shard.distributed:
            # The global minibatch's loss (the mean of equal shares' means), the same on every rank.
            return self.shard.summed(loss.detach().double().reshape(1))[0] / self.shard.world_size
        return loss.detach()

    def _reads_loss_now(self, step: int, pending: _PendingLosses) -> bool:
        """Whether this step's loss goes to the host at once: the tracker needs it (a record
        holds it; the first sets the divergence rule's start; under torchrun it is averaged
        over the ranks at every step), or enough losses wait (``LOSS_LOOK_EVERY``)."""
        return (
            self.shard.distributed
            or self.tracker.start_loss is None
            or bool(self.schedule(step))
            or len(pending) >= LOSS_LOOK_EVERY
        )

    def _checked(self, looked: list[tuple[int, float]], losses: list[float]) -> str | None:
        """Append read losses to ``losses``, each checked as the tracker checks a step's
        (``loss_divergence`` against its start): the first divergence as "step N: reason"."""
        for step, loss in looked:
            reason = loss_divergence(
                loss, self.tracker.start_loss, "minibatch loss", self.tracker.divergence_loss_factor
            )
            if reason is not None:
                return f"step {step}: {reason}"
            losses.append(loss)
        return None

    def _epoch_entry(
        self, epoch: int, minibatch_losses: list[float], lrs: list[float], seconds: float
    ) -> dict[str, Any]:
        train_loss = train_accuracy = val_loss = val_accuracy = None  # not evaluated at this epoch
        if self.cadence.evaluates(epoch):
            train_loss, train_accuracy = evaluate(self.model, self.train_x, self.train_y, self.config.chunk_size)
            val_loss, val_accuracy = evaluate(self.model, self.val_x, self.val_y, self.config.chunk_size)
        parameters = flat_parameters(self.model)
        sharpness = None
        if self.config.sharpness_per_tracked_epoch and epoch in self.config.track_epochs:
            sharpness = self.tracker.sharpness()
        return {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,  # steps taken by the end of the epoch
            "lr_first": lrs[0] if lrs else None,
            "lr_last": lrs[-1] if lrs else None,
            "minibatch_loss_mean": sum(minibatch_losses) / len(minibatch_losses) if minibatch_losses else None,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "distance_from_init": distance(parameters, self.tracker.initial_parameters),
            "param_norm": norm(parameters),
            "sharpness": sharpness,
            "seconds": seconds,
        }

    def _record_epoch(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if self.writer is not None:
            self.writer.write_epoch(entry)

    def execute(self) -> WalkResult:
        try:
            divergence = self._train()
        except BaseException as error:
            if self.writer is not None:
                status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
                try:
                    self.writer.update_metadata(
                        status=status, finished=now_iso(), error=f"{type(error).__name__}: {error}"
                    )
                except OSError:
                    pass  # the disk that failed the run fails this too: the error that ended it is what matters
                finally:
                    with contextlib.suppress(OSError):  # flushing onto that disk, likewise
                        self.writer.close()
            raise
        return self._finish(divergence)

    def _train(self) -> str | None:
        config = self.config
        if self.start_epoch == 0 and not self.history:
            # Epoch 0: the network at initialisation, the reference for every curve.
            self._record_epoch(self._epoch_entry(0, [], [], 0.0))
        bar = tqdm(
            total=self.total_steps,
            initial=self.start_epoch * self.steps_per_epoch,
            disable=not (_progress_enabled(config, self.progress) and self.shard.is_writer),
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        try:
            for epoch in range(self.start_epoch + 1, config.epochs + 1):
                started = time.perf_counter()
                losses: list[float] = []
                lrs: list[float] = []
                pending = _PendingLosses()
                for inputs, targets in self._epoch_batches():
                    step = self.tracker.step_index
                    lr = self.lr_at(step)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    reads_now = self._reads_loss_now(step, pending)
                    pending.add(step, self._gradient(inputs, targets))
                    loss: float | None = None
                    if reads_now:
                        # One copy: the earlier steps' losses are checked here, this step's by the tracker.
                        *earlier, (_, loss) = pending.read()
                        divergence = self._checked(earlier, losses)
                        if divergence is not None:
                            return f"epoch {epoch}, {divergence}"
                    if config.optimizer in ADAPTIVE_OPTIMIZER_NAMES:
                        # The tracker reads the rate (set above) and the preconditioner from it.
                        self.tracker.before_step(minibatch_loss=loss, optimizer=self.optimizer)
                    else:
                        self.tracker.before_step(minibatch_loss=loss, lr=lr)
                    if not self.tracker.diverged:  # a non-finite loss: no step into NaN
                        self.optimizer.step()
                    self.tracker.after_step()
                    if self.tracker.diverged:
                        return f"epoch {epoch}, {self.tracker.divergence}"
                    if loss is not None:
                        losses.append(loss)
                        bar.set_postfix(_format_postfix(loss, self.latest.record), refresh=False)
                    lrs.append(lr)
                    bar.update(1)
                divergence = self._checked(pending.read(), losses)
                if divergence is not None:
                    return f"epoch {epoch}, {divergence}"
                self._record_epoch(self._epoch_entry(epoch, losses, lrs, time.perf_counter() - started))
                train_loss = self.history[-1]["train_loss"]
                # The tracker's rule on the whole training set, against the loss at initialisation (epoch 0).
                start = self.history[0]["train_loss"]
                reason = None if train_loss is None else loss_divergence(train_loss, start, "training loss")
                if reason is not None:
                    return f"epoch {epoch}: {reason} at the end of the epoch"
                if self.writer is not None and self.cadence.checkpoints(epoch):
                    self._save_checkpoint(epoch)
        finally:
            bar.close()
        self.tracker.close()
        return self.tracker.divergence

    def _finish(self, divergence: str | None) -> WalkResult:
        records = list(self.tracker.records)
        window_summaries = summarize_windows(
            (record.as_dict() for record in records), self.history, self.steps_per_epoch
        )
        status = "diverged" if divergence is not None else "finished"
        metadata: dict[str, Any] = {}
        if self.writer is not None:
            self.writer.update_metadata(status=status, finished=now_iso(), divergence=divergence)
            self.writer.write_summary(
                {
                    "status": status,
                    "divergence": divergence,
                    "steps_per_epoch": self.steps_per_epoch,
                    "steps_taken": self.tracker.step_index,
                    "measured_steps": len(records),
                    "windows": [summary.as_dict() for summary in window_summaries],
                    "final_epoch": self.history[-1] if self.history else None,
                }
            )
            self.writer.close()
            metadata = self.writer.metadata
        return WalkResult(
            config=self.config,
            records=records,
            history=self.history,
            windows=window_summaries,
            status=status,
            divergence=divergence,
            steps_per_epoch=self.steps_per_epoch,
            run_dir=None if self.writer is None else self.writer.run_dir,
            metadata=metadata,
        )


# ------------------------------------------------------------------------- entries
def run_walk(
    config: WalkConfig,
    *,
    data: WalkData | None = None,
    progress: bool | None = None,
    on_record: RecordCallback | None = None,
    on_start: StartCallback | None = None,
) -> WalkResult:
    """Train under ``config`` and measure the tracked steps.

    - ``data``: the tensors to use instead of loading ``config.data`` (tests, notebooks).
    - ``progress``: draw the tqdm bar (default ``config.progress``; never when stderr is
      not a terminal).
    - ``on_record``: called with each ``StepRecord`` after it is written to disk.
    - ``on_start``: called with the run directory (None without ``out_dir``) once the data
      is loaded and the directory written, before the first step.

    With ``config.out_dir`` the records go to that directory (see ``runlog``) and a
    checkpoint is saved every ``config.checkpoint_every_epochs`` epochs; without it the run
    stays in memory. A divergence (a non-finite loss, or one past ``DIVERGENCE_LOSS_FACTOR``
    times its start: ``sgdwalk.instrument.divergence``) stops the run cleanly: the result's
    ``status`` is "diverged" and ``divergence`` says where; no record holds a NaN.
    """
    with run_numerics(config):
        return _WalkRun(config, data, progress, on_record, resume_dir=None, on_start=on_start).execute()


def _written_by_a_loop(run_dir: Path) -> bool:
    return (run_dir / METADATA_FILE).is_file() and written_by_loop(load_run_metadata(run_dir))


def resume_walk(
    run_dir: str | Path,
    *,
    data: WalkData | None = None,
    progress: bool | None = None,
    on_record: RecordCallback | None = None,
    on_start: StartCallback | None = None,
    offload: OffloadTarget | None = None,
) -> WalkResult:
    """Continue the run in ``run_dir`` from its last checkpoint (from the start if it has none).

    ``offload``: keep the tracker's vectors there from now on (default: as the run did); the
    records do not depend on it, so a run short of memory may continue with it.

    The configuration is the run's own ``config.json``. Records written after the
    checkpoint are dropped and made again; the result equals an uninterrupted run's. A
    finished run is returned as it is, without training. Under ``torchrun`` every process
    calls it; a run that last ran under another number of processes is refused
    (``RunDirectoryError`` naming the command that continues it).
    """
    run_dir = Path(run_dir)
    if not is_run_directory(run_dir) and not _written_by_a_loop(run_dir):
        raise RunDirectoryError(f"{run_dir} is not a run directory (no {CONFIG_FILE} / {METADATA_FILE})")
    shard = Shard.current()
    # Owned before anything is read: a second writer is refused here (RunDirectoryBusyError).
    # Under torchrun rank 0 owns it; the other ranks only read its config, metadata and checkpoint.
    ownership: AbstractContextManager[None] = hold_run_directory(run_dir) if shard.is_writer else nullcontext()
    with ownership:
        run = load_run(run_dir) if shard.is_writer else None
        metadata = run.metadata if run is not None else load_run_metadata(run_dir)
        # A loop's run (RunDirectorySink) has no WalkConfig to continue it with: run.config raises.
        if metadata.get("status") == "finished":
            return WalkResult.from_run(run if run is not None else load_run(run_dir))
        check_resume_world_size(run_dir, metadata, shard.world_size)
        walk_config = run.config if run is not None else load_run_config(run_dir)
        config = walk_config.replace(out_dir=str(run_dir))
        if offload is not None:
            config = config.replace(offload=offload)
        with run_numerics(config):
            return _WalkRun(config, data, progress, on_record, resume_dir=run_dir, on_start=on_start).execute()


__all__ = [
    "WalkData",
    "WalkResult",
    "build_measurement_set",
    "build_optimizer",
    "build_seeded_model",
    "walk_data_for",
    "estimate_noise_variance",
    "evaluate",
    "load_walk_data",
    "measurement_indices",
    "resolve_device",
    "resume_walk",
    "run_walk",
    "steps_per_epoch_of",
    "tracking_schedule",
]
