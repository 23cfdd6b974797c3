"""The one stateful piece: a tracker a training loop calls around each optimizer step.

    tracker = WalkTracker(model, measurement, weight_decay=1e-4)
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=lr):
            optimizer.step()
        if tracker.diverged:
            break
    records = tracker.close()

It keeps θ_0, the previous gradient and the pending segment; everything it measures is
computed by the pure functions of ``segment``, ``geometry``, ``measurement`` and
``sharpness``. It never writes to the model's parameters, gradients or buffers, and it
restores torch's random state around its measurements, so a run with the tracker is
bitwise the run without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode, check_batchnorm_mode
from sgdwalk.instrument.geometry import cosine, distance, flat_gradient, flat_parameters, norm
from sgdwalk.instrument.measurement import MeasurementSet, losses_at_points, segment_losses
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import MeasurementSchedule, every_step
from sgdwalk.instrument.segment import DEFAULT_NUM_ALPHAS, alpha_grid, summarize_segment
from sgdwalk.instrument.sharpness import EigenvalueChoice, top_hessian_eigenvalue
from sgdwalk.instrument.tolerances import BARRIER_ABSOLUTE_TOLERANCE, BARRIER_RELATIVE_TOLERANCE

RecordSink = Callable[[StepRecord], None]


@dataclass
class _PendingSegment:
    """A measured step whose α = 1 loss will be the next measured segment's α = 0."""

    step: int
    grid_losses: np.ndarray
    lr: float | None
    minibatch_loss: float | None
    cosine: float | None
    grad_norm: float
    step_length: float
    distance_from_init: float
    param_norm: float
    sharpness: float | None


def _as_float(value: float | torch.Tensor | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach())
    return float(value)


class WalkTracker:
    """Measures the walk of ``model`` on ``measurement`` at the steps ``schedule`` selects.

    Args:
        model: any ``nn.Module`` trained by a step that changes its parameters.
        measurement: the fixed set every loss is measured on.
        schedule: which 0-based steps to measure (default: every step).
        num_alphas: K, the grid points per segment in [0, 1) (default 10: 0, 0.1, …, 0.9).
        bn_mode: batch norm during measurements: "train" (paper), "eval" or "recompute".
        weight_decay: added to the gradient for the cosine, as SGD adds it to the update.
        sharpness_every: also estimate the top Hessian eigenvalue at θ_{t+1} on measured
            steps t with t % sharpness_every == 0 (None: never).
        sharpness_which / sharpness_seed: passed to ``top_hessian_eigenvalue``.
        sinks: called with each record as soon as it is complete (e.g. a file writer).
    """

    def __init__(
        self,
        model: nn.Module,
        measurement: MeasurementSet,
        *,
        schedule: MeasurementSchedule | None = None,
        num_alphas: int = DEFAULT_NUM_ALPHAS,
        bn_mode: BatchNormMode = "train",
        weight_decay: float = 0.0,
        sharpness_every: int | None = None,
        sharpness_which: EigenvalueChoice = "LA",
        sharpness_seed: int = 0,
        barrier_relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
        barrier_absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
        sinks: Sequence[RecordSink] = (),
        start_step: int = 0,
    ) -> None:
        if sharpness_every is not None and sharpness_every < 1:
            raise ValueError(f"sharpness_every must be positive or None, got {sharpness_every}")
        self.model = model
        self.measurement = measurement
        self.schedule = schedule if schedule is not None else every_step()
        self.alphas = alpha_grid(num_alphas)
        self.bn_mode = check_batchnorm_mode(bn_mode)
        self.weight_decay = weight_decay
        self.sharpness_every = sharpness_every
        self.sharpness_which: EigenvalueChoice = sharpness_which
        self.sharpness_seed = sharpness_seed
        self.barrier_relative_tolerance = barrier_relative_tolerance
        self.barrier_absolute_tolerance = barrier_absolute_tolerance
        self.sinks = list(sinks)
        self.initial_parameters = flat_parameters(model)
        self.records: list[StepRecord] = []
        self.step_index = start_step
        self.divergence: str | None = None
        self._pending: _PendingSegment | None = None
        self._previous_gradient: torch.Tensor | None = None
        self._start: torch.Tensor | None = None
        self._gradient: torch.Tensor | None = None
        self._lr: float | None = None
        self._minibatch_loss: float | None = None
        self._in_step = False

    # ----------------------------------------------------------------------------- state
    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    def _measures(self, step: int) -> bool:
        return bool(self.schedule(step))

    def _emit(self, record: StepRecord) -> None:
        self.records.append(record)
        for sink in self.sinks:
            sink(record)

    def _diverge(self, reason: str, pending_end_loss: float | None = None) -> None:
        """Stop measuring. A pending segment whose end θ_{t+1} still has a finite loss is
        completed: it is the last sound segment before the blow-up, not part of it."""
        if self._pending is not None and pending_end_loss is not None and math.isfinite(pending_end_loss):
            self._complete(self._pending, pending_end_loss)
        if self.divergence is None:
            self.divergence = f"step {self.step_index}: {reason}"
        self._pending = None

    def _loss_at(self, point: torch.Tensor) -> float:
        with torch.random.fork_rng(devices=self._cuda_devices()):
            (loss,) = losses_at_points(self.model, [point], self.measurement, self.bn_mode)
        return float(loss)

    def _pending_end_loss_now(self) -> float | None:
        """L at the model's current parameters, which are the pending segment's θ_{t+1}."""
        if self._pending is None:
            return None
        current = flat_parameters(self.model)
        return self._loss_at(current) if bool(torch.isfinite(current).all()) else None

    # ----------------------------------------------------------------------------- steps
    def before_step(self, *, minibatch_loss: float | torch.Tensor | None = None, lr: float | None = None) -> None:
        """Call after ``backward()`` and before ``optimizer.step()``."""
        if self._in_step:
            raise RuntimeError("before_step called twice without after_step")
        self._in_step = True
        self._lr = lr
        self._minibatch_loss = _as_float(minibatch_loss)
        if self.diverged:
            return
        if self._minibatch_loss is not None and not math.isfinite(self._minibatch_loss):
            self._diverge(f"non-finite minibatch loss {self._minibatch_loss}", self._pending_end_loss_now())
            return
        step = self.step_index
        measured, next_measured = self._measures(step), self._measures(step + 1)
        self._gradient = flat_gradient(self.model, self.weight_decay) if (measured or next_measured) else None
        self._start = flat_parameters(self.model) if measured else None

    def after_step(self) -> list[StepRecord]:
        """Call right after ``optimizer.step()``. Returns the records completed by this call."""
        if not self._in_step:
            raise RuntimeError("after_step called without before_step")
        self._in_step = False
        completed_before = len(self.records)
        step = self.step_index
        try:
            if not self.diverged:
                with torch.random.fork_rng(devices=self._cuda_devices()):
                    self._measure_step(step)
        finally:
            self.step_index += 1
            self._start = None
        return self.records[completed_before:]

    @contextmanager
    def step(self, *, minibatch_loss: float | torch.Tensor | None = None, lr: float | None = None) -> Iterator[None]:
        """``with tracker.step(...): optimizer.step()``."""
        self.before_step(minibatch_loss=minibatch_loss, lr=lr)
        try:
            yield
        except BaseException:
            # The optimizer step failed: forget the half-begun step so the tracker stays usable.
            self._in_step = False
            self._start = self._gradient = None
            raise
        self.after_step()

    def close(self) -> list[StepRecord]:
        """Complete a pending segment (its α = 1 is evaluated now) and return all records."""
        if self._pending is not None and not self.diverged:
            loss_end = self._pending_end_loss_now()
            if loss_end is not None and math.isfinite(loss_end):
                self._complete(self._pending, loss_end)
            else:
                self._diverge("non-finite loss at the last iterate")
        self._pending = None
        return list(self.records)

    def sharpness(self, point: torch.Tensor | None = None) -> float:
        """Top Hessian eigenvalue at ``point`` (default: the model's current parameters)."""
        with torch.random.fork_rng(devices=self._cuda_devices()):
            return top_hessian_eigenvalue(
                self.model,
                flat_parameters(self.model) if point is None else point,
                self.measurement,
                bn_mode=self.bn_mode,
                which=self.sharpness_which,
                seed=self.sharpness_seed,
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the walk exactly: the step index, θ_0, the
        previous gradient, the pending segment, the divergence and the records so far.

        Only tensors and plain Python values, so ``torch.load(..., weights_only=True)``
        reads it back. Call it between steps (not between ``before_step`` and ``after_step``).
        """
        if self._in_step:
            raise RuntimeError("state_dict called between before_step and after_step")
        pending: dict[str, Any] | None = None
        if self._pending is not None:
            pending = {f.name: getattr(self._pending, f.name) for f in fields(_PendingSegment)}
            pending["grid_losses"] = torch.from_numpy(np.array(self._pending.grid_losses, dtype=np.float64))
        return {
            "step_index": self.step_index,
            "initial_parameters": self.initial_parameters.clone(),
            "previous_gradient": None if self._previous_gradient is None else self._previous_gradient.clone(),
            "pending": pending,
            "divergence": self.divergence,
            "records": [record.as_dict() for record in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (tensors are moved to θ_0's current device)."""
        if self._in_step:
            raise RuntimeError("load_state_dict called between before_step and after_step")
        device = self.initial_parameters.device
        initial = state["initial_parameters"].to(device)
        if initial.shape != self.initial_parameters.shape:
            raise ValueError(
                f"the saved θ_0 has {initial.numel()} parameters, this model {self.initial_parameters.numel()}"
            )
        self.step_index = int(state["step_index"])
        self.initial_parameters = initial
        previous = state["previous_gradient"]
        self._previous_gradient = None if previous is None else previous.to(device)
        pending = state["pending"]
        if pending is None:
            self._pending = None
        else:
            values = dict(pending)
            values["grid_losses"] = values["grid_losses"].cpu().numpy().astype(np.float64)
            self._pending = _PendingSegment(**values)
        self.divergence = state["divergence"]
        # Tuples, as the tracker makes them (a serializer may hand back lists).
        self.records = [
            StepRecord(
                **{
                    **saved,
                    "segment_alphas": tuple(saved["segment_alphas"]),
                    "segment_losses": tuple(saved["segment_losses"]),
                }
            )
            for saved in state["records"]
        ]
        self._start = self._gradient = None

    # ------------------------------------------------------------------------ internals
    def _cuda_devices(self) -> list[int]:
        return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []

    def _measure_step(self, step: int) -> None:
        gradient, previous_gradient = self._gradient, self._previous_gradient
        self._previous_gradient = gradient if self._measures(step + 1) else None
        if self._start is None:
            return
        start, end = self._start, flat_parameters(self.model)
        if not bool(torch.isfinite(end).all()):
            # A pending segment exists only when this step is measured too: it ends at `start`.
            pending_end_loss = self._loss_at(start) if self._pending is not None else None
            self._diverge("non-finite parameters after the step", pending_end_loss)
            return
        next_measured = self._measures(step + 1)
        # α = 1 is evaluated here (exactly at θ_{t+1}) only when no next segment will provide it.
        losses = segment_losses(
            self.model, start, end, self.alphas, self.measurement, self.bn_mode, include_end=not next_measured
        )
        if not np.all(np.isfinite(losses)):
            # losses[0] is L(θ_t), the pending segment's end.
            self._diverge("non-finite loss on the measurement set", float(losses[0]))
            return
        if self._pending is not None:
            self._complete(self._pending, float(losses[0]))
            self._pending = None

        sharpness = None
        if self.sharpness_every is not None and step % self.sharpness_every == 0:
            sharpness = self.sharpness(end)
        assert gradient is not None  # measured steps always take their gradient
        pending = _PendingSegment(
            step=step,
            grid_losses=losses[: len(self.alphas)],
            lr=self._lr,
            minibatch_loss=self._minibatch_loss,
            cosine=None if previous_gradient is None else cosine(previous_gradient, gradient),
            grad_norm=norm(gradient),
            step_length=distance(end, start),
            distance_from_init=distance(end, self.initial_parameters),
            param_norm=norm(end),
            sharpness=sharpness,
        )
        if next_measured:
            self._pending = pending
        else:
            self._complete(pending, float(losses[-1]))

    def _complete(self, pending: _PendingSegment, loss_end: float) -> None:
        summary = summarize_segment(
            self.alphas,
            pending.grid_losses,
            loss_end,
            barrier_relative_tolerance=self.barrier_relative_tolerance,
            barrier_absolute_tolerance=self.barrier_absolute_tolerance,
        )
        self._emit(
            StepRecord(
                step=pending.step,
                lr=pending.lr,
                minibatch_loss=pending.minibatch_loss,
                **summary.as_dict(),
                cosine=pending.cosine,
                grad_norm=pending.grad_norm,
                step_length=pending.step_length,
                distance_from_init=pending.distance_from_init,
                param_norm=pending.param_norm,
                sharpness=pending.sharpness,
                segment_alphas=(*(float(a) for a in self.alphas), 1.0),
                segment_losses=(*(float(v) for v in pending.grid_losses), loss_end),
            )
        )
