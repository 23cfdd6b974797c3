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
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sgdwalk.instrument.attach import OptimizerAttachment
from sgdwalk.instrument.batchnorm import BatchNormMode, buffers_read, check_batchnorm_mode
from sgdwalk.instrument.distributed import Shard
from sgdwalk.instrument.divergence import loss_divergence
from sgdwalk.instrument.geometry import (
    Vector,
    all_finite,
    cosine,
    distance,
    equals_parameters,
    flat_gradient,
    flat_parameters,
    gradient_in_place,
    norm,
    parameters_digest,
    parameters_in_place,
    update_between,
    update_in_place,
    vector_numel,
)
from sgdwalk.instrument.measurement import MeasurementSet, SegmentPoints, model_parameters
from sgdwalk.instrument.measurement_precision import MeasurementPrecision, check_measurement_precision
from sgdwalk.instrument.offload import KeptVector, VectorStore, checkpoint_copy
from sgdwalk.instrument.offload_targets import OffloadTarget, check_offload
from sgdwalk.instrument.optimizer_groups import (
    DECAY_FORMS,
    DecayForm,
    Optimizers,
    amp_inverse_scale,
    amp_step_skipped,
    attachable_optimizer,
    check_readable,
    group_settings,
    optimizers_of,
    unwrapped_optimizer,
)
from sgdwalk.instrument.record import StepRecord, record_from_dict
from sgdwalk.instrument.sampling import NonFiniteSegment, PrecisionTarget, SamplePlan, measure_segment
from sgdwalk.instrument.schedule import MeasurementSchedule, every_step
from sgdwalk.instrument.segment import DEFAULT_NUM_ALPHAS, alpha_grid
from sgdwalk.instrument.sharpness import (
    EigenvalueChoice,
    SharpnessEstimate,
    sharpness_with_standard_error,
    top_hessian_eigenvalue,
)
from sgdwalk.instrument.step_quantities import StepQuantities, check_adaptive_optimizer
from sgdwalk.instrument.step_quantity_defaults import HESSIAN_TRACE_PROBES, TOP_EIGENVALUES_K
from sgdwalk.instrument.tolerances import (
    BARRIER_ABSOLUTE_TOLERANCE,
    BARRIER_RELATIVE_TOLERANCE,
    SHARPNESS_RELATIVE_ERROR,
)
from sgdwalk.instrument.trainable_set import TrainableSet
from sgdwalk.instrument.wrappers import unwrapped

RecordSink = Callable[[StepRecord], None]
# A vector the tracker keeps: a tensor beside the model, or a vector in its offload store.
Kept = torch.Tensor | KeptVector


@dataclass(frozen=True)
class _Carried:
    """Per-sample losses at θ_{t+1} of the last measured step t, for step t + 1's α = 0, and
    the buffers the measurement read then (``batchnorm.buffers_read``; None: not known, from
    a checkpoint older than them). The losses are the loss at θ_{t+1} only while those buffers
    are unchanged: in bn_mode "eval" the training forward of step t + 1 moves the running
    statistics, and its segment's other points are measured with the new ones."""

    step: int
    losses: torch.Tensor
    buffers: tuple[torch.Tensor, ...] | None

    def start_losses(self, step: int, model: nn.Module, bn_mode: BatchNormMode) -> torch.Tensor | None:
        """The losses, where they are ``step``'s α = 0 with the model's buffers now; else None."""
        if self.step != step:
            return None
        now = buffers_read(model, bn_mode)
        if self.buffers is None:
            return self.losses if not now else None
        same = len(now) == len(self.buffers) and all(
            torch.equal(buffer, kept) for buffer, kept in zip(now, self.buffers, strict=True)
        )
        return self.losses if same else None


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
        weight_decay: coupled weight decay, added to the gradient as SGD adds it inside its step,
            in a loop that does not hand the tracker its optimizer. Omitted (None): 0.0 there,
            and wherever the tracker sees the optimizer (``attach``, the Lightning callback,
            ``step(optimizer=...)``) each group's own coupled decay, read from its groups;
            decoupled decay (AdamW's) never enters the gradient (``optimizer_groups``). Given
            together with an optimizer, it must be what the optimizer's groups add.
        weight_decay_form: how the step of an optimizer torch does not ship (Lion, a
            hand-written one) applies its groups' ``weight_decay``: "coupled" (added to the
            gradient, as SGD's) or "decoupled" (θ shrunk apart from it, as AdamW's). None:
            such an optimizer with a decay is refused, unless its class says it
            (``optimizer_groups.DECAY_FORM_ATTRIBUTE``); torch's own say it themselves.
        sharpness_every: also estimate the top Hessian eigenvalue at θ_{t+1} on measured
            steps t with t % sharpness_every == 0 (None: never).
        sharpness_which / sharpness_seed: passed to ``top_hessian_eigenvalue``.
        sharpness_tolerance: the relative error the eigen-solver stops at
            (``SHARPNESS_RELATIVE_ERROR`` by default).
        sharpness_warm_start: start each estimate after the first from the previous one's
            eigenvector added to the seeded vector (default), which needs fewer Hessian-vector
            products the closer the steps; False starts each from the seeded vector alone.
            Either way the record holds the products it took (``sharpness_products``).
        sinks: called with each record as soon as it is complete (e.g. a file writer).
        precision: measure each step only until its questions are settled (see
            ``sampling.PrecisionTarget``); None (the default) measures on the whole set.
        shard: the processes that measure together (``distributed.Shard``); default: the
            default process group when ``torch.distributed`` is initialised, else this
            process alone. Under ``torchrun`` every rank makes the tracker with the same
            arguments and calls it at the same steps: each evaluates its share of the set,
            every rank gets the same records, and only rank 0 calls the ``sinks`` (one
            writer). A model wrapped in ``DistributedDataParallel`` is measured through its
            ``.module``, so no measurement takes part in DDP's gradient reduction or buffer
            broadcast. The gradient of the cosine is the one the optimizer uses: after
            ``backward()`` under DDP, the gradient of the global minibatch (averaged over ranks).
            To measure on one process of a distributed run alone, pass ``Shard()``.
        divergence_loss_factor: the walk has also diverged when a minibatch loss exceeds this
            multiple of the first (``divergence.DIVERGENCE_LOSS_FACTOR`` for training runs);
            None (the default): only a non-finite loss or iterate is a divergence.
        measurement_precision: the arithmetic of the segment losses' forward passes:
            "float32" (the default) or "bfloat16" (autocast; see ``measurement_precision``).
            Sharpness, the gradient and training always run in float32. A checkpoint keeps
            it, and ``load_state_dict`` refuses one saved under the other precision.
        hvp_chunk_size: samples per chunk of the sharpness's Hessian-vector products (None,
            the default: the measurement set's own ``chunk_size``). Double backward saves
            about twice the activations of a forward pass, so it may need smaller chunks.
            The value is the same up to summation order, except in batch-norm mode "train",
            where a chunk is also the batch the sharpness's batch norm normalises over.
        hessian_trace_every, gradient_noise_scale_every, top_eigenvalues_every,
        preconditioned_sharpness_every: the optional quantities at θ_{t+1}, each on measured
            steps t with t % every == 0 (None, the default: never), in the set's
            ``hvp_chunk_size`` chunks (``step_quantities``): the Hessian's trace by Hutch++ with
            ``hessian_trace_probes`` products; the gradient noise scale, from per-sample
            gradients or from those of minibatches of ``gradient_noise_batch`` samples (per-sample
            refused where batch norm runs in bn_mode "train"); the ``top_eigenvalues_k`` largest Hessian eigenvalues; the
            preconditioned sharpness of the Adam, AdamW or RMSprop the loop hands to ``step`` or
            ``attach`` (any other optimizer is refused at the first step).
        offload: where the tracker keeps the vectors a record needs (θ_0, θ_t, g_t, the last
            update, the θ_{t+1} it hands on: up to four copies of the parameters): None (the
            default) beside the model; "host", in CPU memory (on a GPU, the device then holds
            only the measurement's point and a chunk's activations); "disk", in unnamed
            temporary files in ``offload_folder`` (default: the system's temporary folder),
            read back 1 Mi entries at a time, so the process holds none of them; ``close()``
            lets all but θ_0 go. Records are bitwise the same (``offload``).
    """

    def __init__(
        self,
        model: nn.Module,
        measurement: MeasurementSet,
        *,
        schedule: MeasurementSchedule | None = None,
        num_alphas: int = DEFAULT_NUM_ALPHAS,
        bn_mode: BatchNormMode = "train",
        weight_decay: float | None = None,
        weight_decay_form: DecayForm | None = None,
        sharpness_every: int | None = None,
        sharpness_which: EigenvalueChoice = "LA",
        sharpness_seed: int = 0,
        sharpness_tolerance: float = SHARPNESS_RELATIVE_ERROR,
        sharpness_warm_start: bool = True,
        barrier_relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
        barrier_absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
        sinks: Sequence[RecordSink] = (),
        start_step: int = 0,
        precision: PrecisionTarget | None = None,
        shard: Shard | None = None,
        divergence_loss_factor: float | None = None,
        measurement_precision: MeasurementPrecision = "float32",
        hvp_chunk_size: int | None = None,
        hessian_trace_every: int | None = None,
        hessian_trace_probes: int = HESSIAN_TRACE_PROBES,
        gradient_noise_scale_every: int | None = None,
        top_eigenvalues_every: int | None = None,
        top_eigenvalues_k: int = TOP_EIGENVALUES_K,
        preconditioned_sharpness_every: int | None = None,
        gradient_noise_batch: int | None = None,
        offload: OffloadTarget | None = None,
        offload_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(measurement, MeasurementSet):
            raise TypeError(
                f"measurement must be a sgdwalk.MeasurementSet (inputs, targets, loss), got {type(measurement).__name__}"
            )
        if sharpness_every is not None and sharpness_every < 1:
            raise ValueError(f"sharpness_every must be positive or None, got {sharpness_every}")
        if not 0.0 < sharpness_tolerance < 1.0:
            raise ValueError(f"sharpness_tolerance is a relative error in (0, 1), got {sharpness_tolerance}")
        self.model = unwrapped(model)
        # The parameters the walk moves, looked at again where the kept vectors are read (a change is refused).
        self.trainable = TrainableSet.of(self.model)
        self.shard = Shard.current() if shard is None else shard
        self.measurement = measurement
        # The set as the Hessian-vector products read it (the same samples, their own chunks).
        self.hvp_measurement = measurement if hvp_chunk_size is None else measurement.chunked(hvp_chunk_size)
        self.schedule = schedule if schedule is not None else every_step()
        self.alphas = alpha_grid(num_alphas)
        self.bn_mode = check_batchnorm_mode(bn_mode)
        self.measurement_precision = check_measurement_precision(measurement_precision)
        self.weight_decay = weight_decay
        if weight_decay_form is not None and weight_decay_form not in DECAY_FORMS:
            raise ValueError(
                f"weight_decay_form must be one of {', '.join(DECAY_FORMS)} or None, got {weight_decay_form!r}"
            )
        self.weight_decay_form = weight_decay_form
        self.sharpness_every = sharpness_every
        self.sharpness_which: EigenvalueChoice = sharpness_which
        self.sharpness_seed = sharpness_seed
        self.sharpness_tolerance = sharpness_tolerance
        self.sharpness_warm_start = sharpness_warm_start
        self.quantities = StepQuantities(
            hessian_trace_every=hessian_trace_every,
            hessian_trace_probes=hessian_trace_probes,
            gradient_noise_scale_every=gradient_noise_scale_every,
            gradient_noise_batch=gradient_noise_batch,
            top_eigenvalues_every=top_eigenvalues_every,
            top_eigenvalues_k=top_eigenvalues_k,
            preconditioned_sharpness_every=preconditioned_sharpness_every,
            seed=sharpness_seed,
            relative_tolerance=sharpness_tolerance,
        )
        self.quantities.check(self.model, self.bn_mode)
        # The last estimate's eigenvector: the next estimate's warm start. Any start finds the
        # same value within the tolerance, so it is kept across gaps; a checkpoint saves it so
        # that a resumed run starts the next estimate where an uninterrupted one would.
        self._sharpness_vector: NDArray[np.float64] | None = None
        self.barrier_relative_tolerance = barrier_relative_tolerance
        self.barrier_absolute_tolerance = barrier_absolute_tolerance
        self.sinks = list(sinks)
        if precision is not None and self.bn_mode == "recompute":
            raise ValueError(
                "precision-targeted measurement needs bn_mode 'train' or 'eval': 'recompute' re-estimates "
                "batch-norm statistics on the whole set at every point, which leaves nothing to save"
            )
        self.precision = precision
        self.plan = SamplePlan.of(measurement, precision)
        self.offload = check_offload(offload)
        if offload_folder is not None and self.offload != "disk":
            raise ValueError("offload_folder is where offload='disk' writes its files: give it with offload='disk'")
        if offload_folder is not None and not Path(offload_folder).is_dir():
            raise ValueError(
                f"offload_folder {offload_folder} is not a folder: make it, or leave it out for the system's"
            )
        self._store = (
            None
            if self.offload is None
            else VectorStore(self.offload, None if offload_folder is None else Path(offload_folder))
        )
        self.initial_parameters: Kept = self._parameters_kept()
        self.records: list[StepRecord] = []
        self.step_index = start_step
        self._start_step = start_step
        self.divergence: str | None = None
        # The walk's first minibatch loss, the reference of the divergence rule (divergence.py).
        self.start_loss: float | None = None
        self.divergence_loss_factor = divergence_loss_factor
        # Per-sample losses at θ_{t+1} of the last measured step t, for step t + 1's α = 0.
        self._carried: _Carried | None = None
        # θ_{t+1} of the last step whose state (the carried losses, the gradient for the next
        # cosine) is handed to the next step: that state holds only if the next step starts there.
        self._handoff: Kept | None = None
        # The attachment whose step handed it on (None: a with block, or a failed step): while
        # it stays attached, every optimizer step passes through the tracker, so a move before
        # the next one is an edit outside the optimizer's step, said once (_handoff_if_unmoved).
        self._handed_on_by: OptimizerAttachment | None = None
        self._edit_said = False
        # The optimizer an attachment was made to (its class name), and whether any step began:
        # an attachment that saw no step is said at close, however it was removed before.
        self._attached_to: str | None = None
        self._stepped = False
        self._closed = False
        self._previous_gradient: Kept | None = None
        # θ_{t+1} − θ_t of the last step, for the next step's update cosine (kept as the gradient is).
        self._previous_update: Vector | None = None
        self._start: Kept | None = None
        self._gradient: Kept | None = None
        # A measured step's gradient cosine and norm, read from the gradients before its update.
        self._gradient_cosine: float | None = None
        self._grad_norm: float | None = None
        self._lr: float | None = None
        self._group_lrs: tuple[float, ...] | None = None
        self._minibatch_loss: float | None = None
        # The optimizer of a measured step, for its preconditioned sharpness (held for that step only).
        self._optimizer: torch.optim.Optimizer | None = None
        self._in_step = False

    # ----------------------------------------------------------------------------- state
    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    def _measures(self, step: int) -> bool:
        return bool(self.schedule(step))

    def _emit(self, record: StepRecord) -> None:
        self.records.append(record)
        if self.shard.is_writer:
            for sink in self.sinks:
                sink(record)

    def _diverge(self, reason: str) -> None:
        """Stop measuring; every record emitted so far is of a sound segment."""
        if self.divergence is None:
            self.divergence = f"step {self.step_index}: {reason}"
        self._carried = None

    # ----------------------------------------------------------------------------- steps
    def before_step(
        self,
        *,
        minibatch_loss: float | torch.Tensor | None = None,
        lr: float | None = None,
        optimizer: Optimizers | None = None,
    ) -> None:
        """Call after ``backward()`` (and any clipping) and before ``optimizer.step()``.

        ``optimizer``: read the learning rates and the weight decay from its parameter groups
        (then ``lr`` is not given); without it, ``lr`` and the tracker's ``weight_decay``. Several
        optimizers whose steps together make the update (Muon's on the matrices, AdamW's on the
        rest), as a tuple: their groups in order, each parameter's decay from the one holding it."""
        if self._closed:
            raise RuntimeError("the tracker is closed: make a new one to measure another walk")
        if self._in_step:
            raise RuntimeError("before_step called twice without after_step")
        if self._resumed_at_digest is not None:
            self._check_resumed_weights(self._resumed_at_digest)
        if optimizer is not None and lr is not None:
            raise ValueError("give lr or optimizer, not both: with the optimizer its groups' rates are recorded")
        # accelerate's wrapper read as the optimizer inside; several: the steps of one update.
        optimizers = None if optimizer is None else optimizers_of(optimizer)
        only = optimizers[0] if optimizers is not None and len(optimizers) == 1 else None
        if self.quantities.preconditioned_sharpness_every is not None:
            if optimizers is not None and only is None:
                raise ValueError("preconditioned sharpness reads one optimizer's preconditioner: hand the step one")
            check_adaptive_optimizer(only)
        for each in optimizers or ():
            # At every step, measured or not (a loop over its groups): an optimizer whose gradient
            # the records could not hold is refused at the first step, not hours in at a window.
            check_readable(each, self.weight_decay_form)
        step = self.step_index
        measured, next_measured = self._measures(step), self._measures(step + 1)
        # Looked at where the kept vectors are read next: a layer unfrozen after the last
        # measured window (or between windows, and frozen again before the next) harms nothing.
        change = self.trainable.change_in(self.model) if measured or next_measured else None
        if change is not None:
            # Refused before the optimizer moves anything (under attach this raises in its pre-hook).
            raise RuntimeError(
                f"step {step}: the model's trainable parameters changed since the tracker began ({change}). "
                "The tracker's vectors (θ_0, the last gradient and update, θ_t) list the parameters trainable "
                "then, so its distances, cosines and segments would pair other parameters' entries. The "
                "records so far stand: close() this tracker and measure from here with a new one, "
                f"WalkTracker(model, ..., start_step={step}), whose distance_from_init counts from this step"
            )
        if optimizers is not None and (measured or next_measured):
            # Its groups give the rates and decays recorded, and (attached) its step is the update,
            # which moves nothing outside the walk.
            self.trainable.check_held_by(optimizers)
            self.trainable.check_moves_only_the_walk(optimizers, self.model)
        self._optimizer = only if measured else None
        # Reading the groups is a pass over the parameters: done only where a record uses it.
        self._lr, self._group_lrs, decay = (
            self._settings(lr, optimizers) if (measured or next_measured) else (lr, None, 0.0)
        )
        self._in_step = self._stepped = True
        try:
            self._read_step(minibatch_loss, measured, next_measured, only, decay)
        except BaseException:
            # A step whose gradient could not be read is no step of the walk: the tracker stays
            # usable (before, the next step was refused as "called twice"), and its next step
            # measures θ_t afresh (its cosine pairs the last gradient read, if one was).
            self._in_step = False
            self._start = self._gradient = self._handoff = None
            raise

    def _read_step(
        self,
        minibatch_loss: float | torch.Tensor | None,
        measured: bool,
        next_measured: bool,
        only: torch.optim.Optimizer | None,
        decay: float | tuple[float, ...],
    ) -> None:
        """``before_step``'s reading of the step about to be taken: the loss, θ_t, the gradient."""
        self._minibatch_loss = self._global_loss(_as_float(minibatch_loss))
        if self.diverged:
            return
        if self._minibatch_loss is not None:
            reason = loss_divergence(
                self._minibatch_loss, self.start_loss, "minibatch loss", self.divergence_loss_factor
            )
            if reason is not None:
                self._diverge(reason)
                return
            if self.start_loss is None:
                self.start_loss = self._minibatch_loss
        # Where the last step handed θ_{t+1} on and the model has not moved since, that vector is
        # θ_t (checked first: a move forgets the previous gradient and update).
        unmoved = self._handoff_if_unmoved()
        # The gradient's cosine with the previous one and its norm are read from the gradients in
        # place, now, so that g_{t−1} is let go before θ_t is copied and the segment measured.
        previous_gradient, self._previous_gradient = self._previous_gradient, None
        # A fused optimizer under a gradient scaler takes the scale off inside its step.
        # (Several optimizers are taken in a with block, where no scaler has handed one its scale.)
        inverse_scale = None if only is None or not (measured or next_measured) else amp_inverse_scale(only)
        if measured:
            gradient = gradient_in_place(self.model, decay, inverse_scale)
            paired = None if previous_gradient is None else cosine(previous_gradient, gradient)
            # A non-finite gradient (one a GradScaler skips its step for) has no direction: no cosine, not NaN.
            self._gradient_cosine = paired if paired is not None and math.isfinite(paired) else None
            self._grad_norm = norm(gradient)
        del previous_gradient
        # g_t itself is kept only as the next measured step's previous gradient.
        self._gradient = None
        if next_measured:
            self._gradient = (
                flat_gradient(self.model, decay, inverse_scale)
                if self._store is None
                else self._kept(gradient_in_place(self.model, decay, inverse_scale))
            )
        # θ_t of a step before a measured one too: its update is the next one's previous update.
        self._start = (
            (unmoved if unmoved is not None else self._parameters_kept()) if (measured or next_measured) else None
        )

    def _parameters_kept(self) -> Kept:
        """A copy of the model's trainable parameters, where the tracker keeps its vectors."""
        return flat_parameters(self.model) if self._store is None else self._kept(parameters_in_place(self.model))

    def _kept(self, vector: Vector) -> KeptVector:
        assert self._store is not None
        # The trainable parameters share one dtype and device (TrainableSet.of).
        _, dtype, device = self.trainable.layouts[0]
        return self._store.keep(vector, dtype=dtype, device=device)

    def _settings(
        self, lr: float | None, optimizer: tuple[torch.optim.Optimizer, ...] | None
    ) -> tuple[float | None, tuple[float, ...] | None, float | tuple[float, ...]]:
        """(lr, group_lrs, the coupled decay: one for all parameters or one each) of the step about to be taken."""
        if optimizer is None:
            return lr, None, 0.0 if self.weight_decay is None else self.weight_decay
        # The set, as checked in before_step; an optimizer whose decay form nothing else says
        # takes the tracker's weight_decay_form (optimizer_groups.decay_form).
        settings = group_settings(optimizer, self.trainable.parameters, self.weight_decay_form)
        if self.weight_decay is not None and any(decay != self.weight_decay for decay in settings.coupled_decay):
            raise ValueError(
                f"the tracker was given weight_decay={self.weight_decay}, but the optimizer's groups add "
                f"{sorted(set(settings.coupled_decay))} to the gradient (decoupled decay, AdamW's, never enters "
                "it): leave weight_decay out, the tracker reads it from the optimizer"
            )
        return settings.lr, settings.group_lrs, settings.coupled_decay

    def _handoff_if_unmoved(self) -> Kept | None:
        """The θ_{t+1} the last step handed on, if the model still holds it; otherwise forget
        what that step handed on (a stretch with the attachment removed, loop iterations outside
        ``tracker.step`` moved the model without the tracker): this step then measures θ_t afresh
        and has no cosine across the gap, instead of pairing a stale loss and a gradient from
        before it. Compared tensor by tensor, so no second flat copy of the parameters is made."""
        handoff, self._handoff = self._handoff, None
        handed_on_by, self._handed_on_by = self._handed_on_by, None
        if handoff is None:
            return None
        if not equals_parameters(handoff, self.model):
            self._carried = None
            self._previous_gradient = self._previous_update = None
            attached = handed_on_by is not None and handed_on_by is self._attachment and handed_on_by.attached
            if attached and not self._edit_said:
                self._edit_said = True
                warnings.warn(
                    f"step {self.step_index}: the parameters changed after the optimizer's last step and before "
                    "this one, outside the tracker (a mask, a projection, a perturbation restored): the tracker "
                    "takes it as a gap, so this step, and every step after an edit like it, has no cosines and "
                    "measures θ_t afresh. If the edit belongs to the update, take the optimizer's step and the "
                    "edit in one `with tracker.step()` block instead of attaching. (Said once per tracker.)",
                    stacklevel=2,
                )
            return None
        return handoff

    def after_step(self) -> list[StepRecord]:
        """Call right after ``optimizer.step()``. Returns the records completed by this call."""
        if not self._in_step:
            raise RuntimeError("after_step called without before_step")
        self._in_step = False
        completed_before = len(self.records)
        step = self.step_index
        try:
            if not self.diverged:
                with self._apart(statistics=self._measures(step)):
                    self._measure_step(step)
        finally:
            self.step_index += 1
            self._start = self._gradient = self._optimizer = None
            self._gradient_cosine = self._grad_norm = None
        return self.records[completed_before:]

    @contextmanager
    def step(
        self,
        *,
        minibatch_loss: float | torch.Tensor | None = None,
        lr: float | None = None,
        optimizer: Optimizers | None = None,
    ) -> Iterator[None]:
        """``with tracker.step(...): optimizer.step()``; the arguments as ``before_step``'s."""
        if self._attachment is not None and self._attachment.attached:
            raise RuntimeError(
                "the tracker is attached to an optimizer, whose hooks already measure optimizer.step(): "
                "drop the `with tracker.step()` block, or remove() the attachment first"
            )
        self.before_step(minibatch_loss=minibatch_loss, lr=lr, optimizer=optimizer)
        try:
            yield
        except BaseException:
            self._forget_step()
            raise
        self.after_step()

    def _forget_step(self) -> None:
        """The optimizer step failed: forget the half-begun step so the tracker stays usable.

        A step that raised may have moved some parameters first, so θ_t (where the step was
        begun) is handed on as the last step's θ_{t+1} is: the next step keeps the carried
        losses and the previous update only if the model is still there. The previous
        gradient was let go when the step began (its cosine was taken then): the step taken
        again records no gradient cosine, rather than one paired across a failed step."""
        self._in_step = False
        self._handoff, self._handed_on_by = self._start, None
        self._start = self._gradient = self._optimizer = None
        self._gradient_cosine = self._grad_norm = None

    # --------------------------------------------------------------- the hook interface
    # What an integration that sees the optimizer's steps from its hooks calls (the
    # attachment, the Lightning callback, any new one): no private state of the tracker
    # outside this module.
    @property
    def closed(self) -> bool:
        """``close()`` was called: the tracker takes no more steps."""
        return self._closed

    def begin_optimizer_step(
        self,
        *,
        minibatch_loss: float | torch.Tensor | None = None,
        lr: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """``before_step`` as a hook calls it: nothing once the tracker is closed (training goes
        on unmeasured), and a step begun but never ended (its ``optimizer.step()`` raised, or a
        gradient scaler skipped it) forgotten first."""
        if self._closed:
            return
        if self._in_step:
            self._forget_step()
        if optimizer is not None and amp_step_skipped(unwrapped_optimizer(optimizer)):
            # A fused optimizer's step that its gradient scaler skips (a gradient entry not
            # finite) moves nothing: no step, as when the scaler skips optimizer.step() itself.
            return
        self.before_step(minibatch_loss=minibatch_loss, lr=lr, optimizer=optimizer)

    def end_optimizer_step(self) -> list[StepRecord]:
        """``after_step`` as a hook calls it: the records it completed, none when no step was begun."""
        return self.after_step() if self._in_step else []

    def take_noted_loss(self) -> float | torch.Tensor | None:
        """The loss ``note_loss`` left for the next step, handed over once."""
        loss, self._noted_loss = self._noted_loss, None
        return loss

    # ------------------------------------------------------------------ optimizer hooks
    # Set by attach / note_loss only (class defaults: __init__ stays as it is).
    _attachment: OptimizerAttachment | None = None
    _noted_loss: float | torch.Tensor | None = None
    # Whether the model holds process 0's running statistics now (_first_process_statistics).
    _holding_first_statistics: bool = False
    # The digest of the weights a loaded checkpoint was saved at, checked at the next step.
    _resumed_at_digest: str | None = None

    def attach(self, optimizer: torch.optim.Optimizer, *, step: int | None = None) -> OptimizerAttachment:
        """Measure every ``optimizer.step()`` through the optimizer's step hooks, no ``with``
        block needed; ``lr`` is read from its parameter groups, the minibatch loss from
        ``note_loss``. Returns the attachment: ``.remove()`` detaches (see ``attach.py``).

        ``step``: the number of the optimizer's next step, for a tracker that has taken steps
        before (attached again after ``remove()``): the optimizer may have stepped since
        without the tracker, which cannot count what it did not see, so it asks rather than
        number the records wrongly (omitted: the tracker's own count, only on a fresh tracker).
        A wrapper with the torch optimizer as its ``.optimizer`` (accelerate's) is attached
        through that optimizer, whose steps its own call (``attachable_optimizer``).
        """
        optimizer = attachable_optimizer(optimizer)
        if self._closed:
            raise RuntimeError("the tracker is closed and records nothing more: make a new one to measure again")
        if self._attachment is not None and self._attachment.attached:
            raise RuntimeError("the tracker is already attached to an optimizer: remove() that attachment first")
        if self.quantities.preconditioned_sharpness_every is not None:
            check_adaptive_optimizer(optimizer)
        self.trainable.check_held_by(optimizer)
        check_readable(optimizer, self.weight_decay_form)
        if step is not None:
            self.continue_at(step)
        elif self.step_index != self._start_step:
            raise ValueError(
                f"the tracker has taken {self.step_index - self._start_step} steps and cannot see whether the optimizer "
                f"stepped since: give the number of its next step, attach(optimizer, step=N) (N = {self.step_index} "
                "if it has not)"
            )
        self._attached_to = type(optimizer).__name__
        self._attachment = OptimizerAttachment(self, optimizer, on_remove=self._attachment_removed)
        return self._attachment

    def continue_at(self, step: int) -> None:
        """Number the next step ``step``: for a caller that counts the optimizer's steps (a
        trainer's global step) where the tracker cannot count those it did not see. The steps
        between are a gap: the next measured step measures θ_t afresh, with no cosine across
        it. A step before the tracker's next one is refused: its records would repeat."""
        if self._in_step:
            raise RuntimeError("continue_at called between before_step and after_step")
        if step < self.step_index:
            raise ValueError(f"step {step} is before the tracker's next step {self.step_index}: records would repeat")
        self.step_index = step

    def _attachment_removed(self, attachment: OptimizerAttachment) -> None:
        if self._attachment is attachment:
            self._attachment = None

    def note_loss(self, minibatch_loss: float | torch.Tensor) -> None:
        """The minibatch loss of the attached optimizer's next step (optional; kept in the record)."""
        if self._attachment is None or not self._attachment.attached:
            raise RuntimeError(
                "note_loss is for a tracker attached to an optimizer; `with tracker.step(minibatch_loss=...)` takes it"
            )
        self._noted_loss = minibatch_loss

    def close(self) -> list[StepRecord]:
        """Return all records; the tracker takes no more steps. (Every record is complete as
        soon as its step is: α = 1 is measured with the step, and reused as the next α = 0.)"""
        if self._attached_to is not None and not self._stepped:
            warnings.warn(
                f"the tracker was attached to {self._attached_to}, whose step() was never "
                "called: nothing was measured. An optimizer that updates in methods of its own (a SAM's "
                "first_step and second_step) is measured with `with tracker.step()` around its update",
                stacklevel=2,
            )
        self._closed = True
        # What only a next step would use is let go now (offloaded: its files or host memory),
        # not when the tracker is, which an optimizer's hooks may keep alive; θ_0 stays, for
        # the distances a caller may still take from it.
        self._carried = self._handoff = None
        self._previous_gradient = self._previous_update = self._start = self._gradient = None
        if self._store is not None:
            self._store.close_spare_files()
        return list(self.records)

    def sharpness(self, point: torch.Tensor | None = None) -> float:
        """Top Hessian eigenvalue at ``point`` (default: the model's current parameters)."""
        with self._apart():
            return top_hessian_eigenvalue(
                self.model,
                flat_parameters(self.model) if point is None else point,
                self.hvp_measurement,
                bn_mode=self.bn_mode,
                which=self.sharpness_which,
                seed=self.sharpness_seed,
                shard=self.shard,
            )

    def sharpness_with_error(self, point: torch.Tensor) -> SharpnessEstimate:
        """The top Hessian eigenvalue at ``point`` (as ``sharpness``), its standard error over
        the measurement set (see ``sharpness_with_standard_error``) and what it cost, warm
        started from the previous estimate's eigenvector."""
        with self._apart():
            estimate = sharpness_with_standard_error(
                self.model,
                point,
                self.hvp_measurement,
                bn_mode=self.bn_mode,
                which=self.sharpness_which,
                seed=self.sharpness_seed,
                shard=self.shard,
                relative_tolerance=self.sharpness_tolerance,
                warm_start=self._sharpness_vector,
            )
        if self.sharpness_warm_start:
            self._sharpness_vector = estimate.vector
        return estimate

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the walk exactly: the step index, θ_0, the
        previous gradient and update, the carried losses at the current iterate, the divergence and the
        records so far.

        Only tensors and plain Python values, so ``torch.load(..., weights_only=True)``
        reads it back. Call it between steps (not between ``before_step`` and ``after_step``).
        """
        if self._in_step:
            raise RuntimeError("state_dict called between before_step and after_step")
        if self._closed:
            # close() let go of the previous gradient and update: a checkpoint of it would
            # resume without the next step's cosines, silently.
            raise RuntimeError("state_dict of a closed tracker: save the checkpoint before close()")
        return {
            "step_index": self.step_index,
            # Which parameters the vectors list: a model trainable otherwise is refused on load.
            "trainable_names": list(self.trainable.names),
            "initial_parameters": checkpoint_copy(self.initial_parameters),
            "previous_gradient": None if self._previous_gradient is None else checkpoint_copy(self._previous_gradient),
            "previous_update": None if self._previous_update is None else checkpoint_copy(self._previous_update),
            "sharpness_vector": None
            if self._sharpness_vector is None
            else torch.from_numpy(self._sharpness_vector.copy()),
            # Carried losses are this process's share; across processes (whose checkpoint rank 0
            # writes) they are left out, and the next step evaluates α = 0 again, bitwise the same.
            "carried_step": None if self._carried is None or self.shard.distributed else self._carried.step,
            "carried_losses": None if self._carried is None or self.shard.distributed else self._carried.losses.clone(),
            "carried_buffers": None
            if self._carried is None or self.shard.distributed or self._carried.buffers is None
            else [buffer.clone() for buffer in self._carried.buffers],
            "divergence": self.divergence,
            "start_loss": self.start_loss,
            # The weights it was saved at: a resume from another step's model is refused (_check_resumed_weights).
            "parameters_sha256": parameters_digest(self.model),
            # The carried losses were measured in it: a run resumes in the precision it began in.
            "measurement_precision": self.measurement_precision,
            "records": [record.as_dict() for record in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (tensors are moved to θ_0's current device)."""
        if self._in_step:
            raise RuntimeError("load_state_dict called between before_step and after_step")
        saved_names = state.get("trainable_names")  # absent from checkpoints older than the check
        if saved_names is not None:
            self.trainable.check_saved(saved_names)
        device = self.initial_parameters.device
        initial = state["initial_parameters"].to(device)
        if initial.shape != self.initial_parameters.shape:
            raise ValueError(
                f"the saved θ_0 has {initial.numel()} parameters, this model {vector_numel(self.initial_parameters)}"
            )
        saved_precision = state.get("measurement_precision", "float32")  # absent from older checkpoints
        if saved_precision != self.measurement_precision:
            raise ValueError(
                f"the checkpoint was measured in {saved_precision}, this tracker measures in "
                f"{self.measurement_precision}: resume with measurement_precision={saved_precision!r}"
            )
        self.step_index = int(state["step_index"])
        self.initial_parameters = self._restored(initial)
        previous = state["previous_gradient"]
        self._previous_gradient = None if previous is None else self._restored(previous.to(device))
        previous_update = state.get("previous_update")  # absent from checkpoints older than the update cosine
        self._previous_update = None if previous_update is None else self._restored(previous_update.to(device))
        sharpness_vector = state.get("sharpness_vector")  # absent from checkpoints older than the warm start
        self._sharpness_vector = None if sharpness_vector is None else sharpness_vector.double().numpy()
        carried_step = state.get("carried_step")
        carried_buffers = state.get("carried_buffers")  # absent from checkpoints older than the buffers' check
        self._carried = (
            None
            if carried_step is None
            else _Carried(
                int(carried_step),
                state["carried_losses"].cpu(),
                None if carried_buffers is None else tuple(buffer.to(device) for buffer in carried_buffers),
            )
        )
        self.divergence = state["divergence"]
        self.start_loss = state.get("start_loss")  # absent from checkpoints older than the rule
        # Tuples, as the tracker makes them (a serializer may hand back lists).
        self.records = [record_from_dict(saved) for saved in state["records"]]
        # The checkpoint's carried state was saved at the parameters the run resumes from: the
        # next step checks it (absent from older checkpoints), whatever was loaded first.
        self._resumed_at_digest = state.get("parameters_sha256")
        self._start = self._gradient = self._handoff = self._handed_on_by = None

    def resume_at(self, state: dict[str, Any], step: int) -> None:
        """``load_state_dict`` for a caller that counts the optimizer's steps (a trainer's global
        step: ``step``, the checkpoint's). RuntimeError where the state is at another step (its
        records would be numbered wrongly); a warning where the walk goes back (the same tracker
        resumed from a checkpoint before its last step): its sinks have had the records of the
        steps between, and will have them again."""
        if int(state["step_index"]) != step:
            raise RuntimeError(
                f"the checkpoint's walk is at step {int(state['step_index'])} and its trainer at step {step}: "
                "its records would be numbered wrongly"
            )
        reached = self.step_index
        self.load_state_dict(state)
        if reached > step:
            warnings.warn(
                f"the walk goes back from step {reached} to the checkpoint's step {step}: the records of steps "
                f"{step} to {reached - 1} were handed to the tracker's sinks already, and these steps will be "
                "handed to them again",
                stacklevel=3,
            )

    def holds_weights_of(self, state: dict[str, Any]) -> bool:
        """Whether the model holds the weights ``state`` (``state_dict``'s) was saved at; True for
        a state older than the digest, which cannot tell."""
        saved = state.get("parameters_sha256")
        return saved is None or saved == parameters_digest(self.model)

    def _check_resumed_weights(self, saved: str) -> None:
        """RuntimeError unless the model holds the weights the loaded tracker state was saved at:
        its carried losses, last gradient and update, and its step number, are those weights'."""
        self._resumed_at_digest = None
        if not self.holds_weights_of({"parameters_sha256": saved}):
            # Found by a second pair of eyes: a tracker saved at step 7 beside a model saved at
            # step 9 numbered the step 7 and took its α = 0 loss at θ_7, without a word.
            raise RuntimeError(
                f"step {self.step_index}: the model does not hold the weights the tracker's state was saved "
                "at (a model from another checkpoint, or another step's?): that state's step number, α = 0 "
                "losses, last gradient and update belong to those weights, so this step would be numbered and "
                "measured wrongly. Load the model's and the tracker's states from one checkpoint"
            )

    def _restored(self, vector: torch.Tensor) -> Kept:
        """A checkpoint's vector, kept where this tracker keeps its vectors."""
        return vector if self._store is None else self._kept(vector)

    # ------------------------------------------------------------------------ internals
    def _global_loss(self, loss: float | None) -> float | None:
        """Across processes, the mean of the ranks' minibatch losses: the loss of the global
        minibatch when the ranks hold equal shares of it, as DDP's averaged gradient assumes.
        Every rank then records it, and a non-finite loss on any rank stops them all together."""
        if loss is None or not self.shard.distributed:
            return loss
        total = self.shard.summed(torch.tensor([loss], dtype=torch.float64))
        return float(total[0]) / self.shard.world_size

    @contextmanager
    def _apart(self, statistics: bool = True) -> Iterator[None]:
        """Where a measurement runs: torch's random state restored after it, and autocast off,
        so that a loop that runs its whole step under autocast (the optimizer's step and with it
        the attachment's hooks, or the `with` block) is measured in ``measurement_precision``,
        not in the loop's (its own bfloat16 autocast, if set, is entered inside). With
        ``statistics`` (a measurement, not only its bookkeeping), across processes in "eval"
        mode, the model holds process 0's running statistics (``_first_process_statistics``)."""
        device_type = self.trainable.layouts[0][2].type
        with torch.random.fork_rng(devices=self._cuda_devices()), self._first_process_statistics(statistics):
            if not torch.amp.is_autocast_available(device_type):
                yield
                return
            with torch.autocast(device_type, enabled=False):
                yield

    @contextmanager
    def _first_process_statistics(self, wanted: bool) -> Iterator[None]:
        """Across processes in bn_mode "eval": the model holds process 0's running statistics
        while it is measured, and its own again afterwards, bit for bit (distributed.py says
        why). Every process enters it together (a broadcast); nested, it does nothing more."""
        buffers = (
            buffers_read(self.model, "eval")
            if wanted and self.shard.distributed and self.bn_mode == "eval" and not self._holding_first_statistics
            else []
        )
        if not buffers:
            yield
            return
        own = [buffer.detach().clone() for buffer in buffers]
        first = [self.shard.from_first(buffer) for buffer in buffers]
        self._holding_first_statistics = True
        try:
            with torch.no_grad():
                for buffer, value in zip(buffers, first, strict=True):
                    buffer.copy_(value)
            yield
        finally:
            self._holding_first_statistics = False
            with torch.no_grad():
                for buffer, value in zip(buffers, own, strict=True):
                    buffer.copy_(value)

    def _cuda_devices(self) -> list[int]:
        return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []

    def _measure_step(self, step: int) -> None:
        # What a step holds at most, beside the model: θ_0, θ_t, g_t (kept for the next step) and
        # the measurement's point. θ_{t+1} is read from the model's parameters in place; the
        # previous update is let go once its cosine is taken, before the segment is measured; and
        # θ_{t+1} is copied, θ_t turned into the update, only after the measurement.
        previous_update, self._previous_update = self._previous_update, None
        next_measured = self._measures(step + 1)
        self._previous_gradient, self._gradient = (self._gradient if next_measured else None), None
        carried, self._carried = self._carried, None
        if self._start is None:
            return  # neither this step nor the next is measured
        start, self._start = self._start, None
        if not self._measures(step):
            self._hand_on(start, self._parameters_kept())
            return
        end = parameters_in_place(self.model)
        if not all_finite(end):
            self._diverge("non-finite parameters after the step")
            return
        update_cosine = None if previous_update is None else cosine(previous_update, update_in_place(self.model, start))
        del previous_update
        try:
            measured = measure_segment(
                # Made in the call, so that its buffers (a copy of the parameters) are freed
                # when it returns, before the geometry below makes its float64 copies.
                SegmentPoints(
                    self.model,
                    start,
                    model_parameters(self.model),
                    (*self.alphas, 1.0),
                    self.measurement,
                    self.bn_mode,
                    precision=self.measurement_precision,
                ),
                self.measurement,
                self.plan,
                self.bn_mode,
                target=self.precision,
                carried_start=None if carried is None else carried.start_losses(step, self.model, self.bn_mode),
                barrier_relative_tolerance=self.barrier_relative_tolerance,
                barrier_absolute_tolerance=self.barrier_absolute_tolerance,
                shard=self.shard,
            )
        except NonFiniteSegment:
            self._diverge("non-finite loss on the measurement set")
            return
        sharpness_due = self.sharpness_every is not None and step % self.sharpness_every == 0
        # θ_{t+1} as one vector where a later use needs it (the next step's θ_t, the sharpness,
        # the quantities): the distances then read it, not the parameters piece by piece again.
        # Offloaded, the next step's θ_t is kept in the store and the point made only for the
        # sharpness and the quantities, which evaluate at it on the model's device.
        point_due = sharpness_due or self.quantities.due(step)
        if self._store is None:
            point = flat_parameters(self.model) if next_measured or point_due else None
            handed: Kept | None = point
        else:
            point = flat_parameters(self.model) if point_due else None
            handed = self._parameters_kept() if next_measured else None
        at_end: Vector = end if point is None else point
        step_length, distance_from_init, param_norm = (
            distance(at_end, start),
            distance(at_end, self.initial_parameters),
            norm(at_end),
        )
        if next_measured:
            assert handed is not None
            self._hand_on(start, handed)
            self._carried = _Carried(
                step + 1,
                measured.end_losses,
                tuple(buffer.detach().clone() for buffer in buffers_read(self.model, self.bn_mode)),
            )
        del start  # the update now, or gone
        estimate = self.sharpness_with_error(point) if sharpness_due and point is not None else None
        assert self._grad_norm is not None  # a measured step reads its gradient in before_step
        self._emit(
            StepRecord(
                step=step,
                lr=self._lr,
                group_lrs=self._group_lrs,
                minibatch_loss=self._minibatch_loss,
                **measured.summary.as_dict(),
                cosine=self._gradient_cosine,
                update_cosine=update_cosine,
                grad_norm=self._grad_norm,
                step_length=step_length,
                distance_from_init=distance_from_init,
                param_norm=param_norm,
                sharpness=None if estimate is None else estimate.value,
                sharpness_se=None if estimate is None else estimate.standard_error,
                sharpness_products=None if estimate is None else estimate.products,
                segment_alphas=(*(float(a) for a in self.alphas), 1.0),
                segment_losses=measured.losses,
                **measured.uncertainty.record_fields(),
                **(
                    {}
                    if point is None
                    else self.quantities.record_fields(
                        step, self.model, point, self.hvp_measurement, self.bn_mode, self.shard, self._optimizer
                    )
                ),
            )
        )

    def _hand_on(self, start: Kept, end: Kept) -> None:
        """Hand θ_{t+1} (``end``, a copy) and the update θ_{t+1} − θ_t on to the next step, the
        update formed in θ_t's own vector, which is not needed after this (offloaded: formed
        block by block into the store, by the same operations)."""
        # −θ_t + θ_{t+1} is θ_{t+1} − θ_t bit for bit (IEEE subtraction is the addition of the
        # negation): exact in float32 wherever θ moved by less than itself (Sterbenz).
        if isinstance(start, torch.Tensor) and isinstance(end, torch.Tensor):
            self._handoff, self._previous_update = end, start.neg_().add_(end)
            self._handed_on_by = self._attachment
        else:
            # Offloaded, the update is read from the two kept ends when its cosine is taken:
            # θ_t's vector stays in the store instead of a new one being written (as many
            # vectors kept, one write fewer per step).
            self._handoff, self._previous_update = end, update_between(start, end)
            self._handed_on_by = self._attachment
