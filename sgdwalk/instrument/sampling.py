"""Which samples a segment's measurement reads, and when it may stop reading.

Exact measurement reads the whole measurement set in its own order, one look at the end.
Precision-targeted measurement reads it in a fixed, seeded order, in looks of growing size
(``first_look``, then ×``growth`` until the set is exhausted), and stops after the first
look at which every requested question is settled:

- the barrier test (``uncertainty.barrier_test``) says "crossed" or "not crossed", at its
  confidence held over *all* the looks (the error budget is split evenly across the planned
  looks, Bonferroni), so looking after every look does not raise its error rate;
- the heights' standard errors meet the precision asked for (an absolute target in loss
  units, or a relative one, whichever is looser; ``None`` leaves the heights out).

Why the intervals of a record that stopped itself still hold (95 %, measured on real data in
``tests/test_targeted_coverage_real.py``): the rule reads the very errors it reports, so those
errors must not be optimistic where it could stop. Two things made them so. A near-tie for
the floor, where the error of the chosen point alone leaves out which point is the floor
(a height of 0 came with an error of 0): targeted records report errors that cover every
point that could be the floor (``uncertainty.selected_floor_standard_errors``), and the
rule reads those. And a first look of 128 samples, where the sample variance of skewed
per-sample loss differences is often low and the rule stops on exactly those: the first
look is now ``DEFAULT_FIRST_LOOK`` = 512. The reported numbers are then those of a
fixed-size measurement of the samples read; with at most a few looks, the stopping moves
the coverage by less than the binomial error of the check.

Every step reads the same order, so the samples a step used are a prefix of it: the same
seed gives the same number of samples and the same records. Because chunks are cut at the
same places every step, the per-sample losses at θ_{t+1} measured as one segment's α = 1
are exactly those at the next segment's α = 0, which is therefore never evaluated again.
That carried vector holds one float per sample read: the only memory that grows with the
set (a few bytes per sample against the kilobytes of the sample itself); the statistics
themselves are bounded by the number of points (``paired``). The losses reach the host once
per look, in one copy (one device synchronisation), not once per chunk: the stopping rule
reads them only at the look's end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.instrument.batchnorm import BatchNormMode, measuring
from sgdwalk.instrument.distributed import SINGLE_PROCESS, Shard
from sgdwalk.instrument.measurement import Batch, MeasurementSet, SegmentPoints
from sgdwalk.instrument.paired import PairedLossMoments

# The defaults live in a module without torch, for the configuration and the CLI's help.
from sgdwalk.instrument.sampling_defaults import DEFAULT_FIRST_LOOK, DEFAULT_HEIGHT_RELATIVE_SE, DEFAULT_HEIGHT_SE
from sgdwalk.instrument.segment import SegmentSummary, summarize_segment
from sgdwalk.instrument.tolerances import (
    BARRIER_ABSOLUTE_TOLERANCE,
    BARRIER_RELATIVE_TOLERANCE,
    BARRIER_TEST_CONFIDENCE,
)
from sgdwalk.instrument.uncertainty import SegmentUncertainty, segment_uncertainty


@dataclass(frozen=True)
class PrecisionTarget:
    """When precision-targeted measurement of a segment may stop (see the module docstring).

    Args:
        confidence: of the barrier test, over all interior points and all looks at once.
        height_se: absolute target for the standard errors of both heights (None: no absolute target).
        height_relative_se: relative target, as a fraction of each height (None: none). With
            both None the heights do not gate stopping; only the barrier test does.
        first_look: samples read before the first look.
        growth: each look reads this many times the samples of the last.
        seed: of the reading order.
    """

    confidence: float = BARRIER_TEST_CONFIDENCE
    height_se: float | None = DEFAULT_HEIGHT_SE
    height_relative_se: float | None = DEFAULT_HEIGHT_RELATIVE_SE
    first_look: int = DEFAULT_FIRST_LOOK
    growth: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")
        for name in ("height_se", "height_relative_se"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive and finite, or None; got {value}")
        if self.first_look < 2:
            raise ValueError(f"first_look must be at least 2 samples (a variance needs two), got {self.first_look}")
        if not (math.isfinite(self.growth) and self.growth > 1.0):
            raise ValueError(f"growth must be a finite number above 1, got {self.growth}")

    def look_ends(self, total: int) -> tuple[int, ...]:
        """Cumulative sample counts at each look, ending with the whole set."""
        ends = [min(self.first_look, total)]
        while ends[-1] < total:
            ends.append(min(total, max(ends[-1] + 1, math.ceil(ends[-1] * self.growth))))
        return tuple(ends)

    def heights_precise(self, summary: SegmentSummary, uncertainty: SegmentUncertainty) -> bool:
        if self.height_se is None and self.height_relative_se is None:
            return True
        for height, se in (
            (summary.height_start, uncertainty.height_start_se),
            (summary.height_end, uncertainty.height_end_se),
        ):
            allowed = max(
                self.height_se if self.height_se is not None else 0.0,
                self.height_relative_se * abs(height) if self.height_relative_se is not None else 0.0,
            )
            if not (math.isfinite(se) and se <= allowed):
                return False
        return True


@dataclass(frozen=True)
class SamplePlan:
    """The order samples are read in and where the looks fall (the same for every step)."""

    order: torch.Tensor | None
    look_ends: tuple[int, ...]
    chunk_size: int

    @classmethod
    def of(cls, measurement: MeasurementSet, target: PrecisionTarget | None) -> SamplePlan:
        if target is None:
            return cls(order=None, look_ends=(measurement.size,), chunk_size=measurement.chunk_size)
        generator = torch.Generator().manual_seed(target.seed)
        order = torch.randperm(measurement.size, generator=generator)
        return cls(order=order, look_ends=target.look_ends(measurement.size), chunk_size=measurement.chunk_size)

    def chunk_ranges(self, look: int) -> Iterator[tuple[int, int]]:
        """[first, stop) positions in the order read by look ``look``, cut into chunks."""
        begin = 0 if look == 0 else self.look_ends[look - 1]
        for first in range(begin, self.look_ends[look], self.chunk_size):
            yield first, min(first + self.chunk_size, self.look_ends[look])

    def chunk(self, measurement: MeasurementSet, first: int, stop: int) -> Batch:
        """The samples at positions [first, stop) of the order (any batch structure)."""
        if self.order is None:
            return measurement.part(first, stop)
        return measurement.take(self.order[first:stop])


@dataclass(frozen=True)
class MeasuredSegment:
    """One segment measured: its point estimates, their uncertainty, and what the next
    segment reuses (per-sample losses at θ_{t+1} over the samples read, in plan order)."""

    losses: tuple[float, ...]
    summary: SegmentSummary
    uncertainty: SegmentUncertainty
    end_losses: torch.Tensor
    looks: int


def read_segment(
    points: SegmentPoints,
    measurement: MeasurementSet,
    plan: SamplePlan,
    bn_mode: BatchNormMode,
    *,
    carried_start: torch.Tensor | None = None,
    settled: Callable[[PairedLossMoments], bool] | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> tuple[PairedLossMoments, torch.Tensor, int]:
    """Read the plan look by look until ``settled(moments)`` or the set is exhausted.

    ``points`` must hold α = 0 first and α = 1 last. ``carried_start`` (per-sample losses at
    α = 0 for a prefix of what this process reads, in its reading order) replaces evaluating
    α = 0 where it reaches. Returns the moments (of every process's samples), the per-sample
    losses at α = 1 over the samples this process read, and the looks taken.

    With a ``shard`` of several processes each reads the chunks it owns (numbered across
    the looks, so every look is shared out) and the moments are merged after every look,
    before ``settled`` sees them: every process stops at the same look.
    """
    num_points = len(points.alphas)
    local = PairedLossMoments(num_points)
    moments = local
    end_losses: list[torch.Tensor] = []
    carried = 0 if carried_start is None else int(carried_start.shape[0])
    read = 0  # samples this process has read so far, the position in its carried vector
    looks = 0
    chunk_number = 0
    with measuring(points.model, "eval" if bn_mode == "recompute" else bn_mode):
        for look in range(len(plan.look_ends)):
            # This look's chunks: losses at α = 0 where carried, and the losses evaluated (on the device).
            pending: list[tuple[torch.Tensor | None, torch.Tensor]] = []
            for first, stop in plan.chunk_ranges(look):
                chunk_number += 1
                if not shard.owns(chunk_number - 1):
                    continue
                batch = plan.chunk(measurement, first, stop)
                count = stop - first
                if read + count <= carried:
                    assert carried_start is not None
                    pending.append((carried_start[read : read + count], points.losses(batch, skip_first=True)))
                else:
                    pending.append((None, points.losses(batch)))
                read += count
            for chunk in _on_host(pending):
                local.update(chunk)
                end_losses.append(chunk[-1])
            looks = look + 1
            moments = shard.merged_moments(local)
            if settled is not None and look + 1 < len(plan.look_ends) and settled(moments):
                break
    ended = torch.cat(end_losses) if end_losses else torch.zeros(0)
    return moments, ended, looks


def _on_host(chunks: Sequence[tuple[torch.Tensor | None, torch.Tensor]]) -> list[torch.Tensor]:
    """Each chunk's per-sample losses [P, m] on the host, its carried α = 0 row put first.

    One copy for the whole look: a copy per chunk would make the device wait once per chunk,
    where the stopping rule needs the losses only at the look's end. (A look's losses, P
    floats per sample, wait on the device meanwhile: small beside a chunk's activations.)
    """
    if not chunks:
        return []
    evaluated = [losses for _, losses in chunks]
    copied = torch.cat([losses.reshape(-1) for losses in evaluated]).cpu()
    pieces = torch.split(copied, [losses.numel() for losses in evaluated])
    on_host = []
    for (start_row, losses), piece in zip(chunks, pieces, strict=True):
        rows = piece.view(losses.shape)
        if start_row is not None:
            rows = torch.cat([start_row.to(device=rows.device, dtype=rows.dtype)[None, :], rows])
        on_host.append(rows)
    return on_host


def measure_segment(
    points: SegmentPoints,
    measurement: MeasurementSet,
    plan: SamplePlan,
    bn_mode: BatchNormMode,
    *,
    target: PrecisionTarget | None = None,
    carried_start: torch.Tensor | None = None,
    barrier_relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
    barrier_absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
    shard: Shard = SINGLE_PROCESS,
) -> MeasuredSegment:
    """Measure one segment (``points``: the α grid, then α = 1) under ``plan``.

    Without a target the whole plan is read (exact measurement). With one, reading stops at
    the first look where the barrier test is decided and the heights are as precise as asked.
    With a ``shard`` of several processes, each reads its share (see ``read_segment``) and
    every process returns the same segment; ``end_losses`` are this process's own.
    """
    alphas: Sequence[float] = points.alphas
    if alphas[0] != 0.0 or alphas[-1] != 1.0:
        raise ValueError("a segment's points run from α = 0 to α = 1")
    confidence = target.confidence if target is not None else BARRIER_TEST_CONFIDENCE
    num_looks = len(plan.look_ends)

    def assess(moments: PairedLossMoments) -> tuple[SegmentSummary, SegmentUncertainty]:
        means = moments.means
        summary = summarize_segment(
            alphas[:-1],
            means[:-1],
            float(means[-1]),
            barrier_relative_tolerance=barrier_relative_tolerance,
            barrier_absolute_tolerance=barrier_absolute_tolerance,
        )
        uncertainty = segment_uncertainty(
            means,
            moments.covariance,
            moments.count,
            confidence=confidence,
            looks=num_looks,
            relative_tolerance=barrier_relative_tolerance,
            absolute_tolerance=barrier_absolute_tolerance,
        )
        return summary, uncertainty

    def settled(moments: PairedLossMoments) -> bool:
        assert target is not None
        if not all(math.isfinite(value) for value in moments.means):
            return True  # a diverged segment: reading more samples cannot help
        summary, uncertainty = assess(moments)
        return uncertainty.barrier_test != "undecided" and target.heights_precise(summary, uncertainty)

    moments, end_losses, looks = read_segment(
        points,
        measurement,
        plan,
        bn_mode,
        carried_start=carried_start,
        settled=settled if target is not None else None,
        shard=shard,
    )
    means = moments.means
    if not all(math.isfinite(value) for value in means):
        raise NonFiniteSegment(tuple(float(value) for value in means))
    summary, uncertainty = assess(moments)
    return MeasuredSegment(
        losses=tuple(float(value) for value in means),
        summary=summary,
        uncertainty=uncertainty,
        end_losses=end_losses,
        looks=looks,
    )


class NonFiniteSegment(SgdwalkError, ArithmeticError):
    """A loss along the segment is not finite: the run diverged."""

    def __init__(self, losses: tuple[float, ...]) -> None:
        super().__init__(f"non-finite loss on the measurement set: {losses}")
        self.losses = losses
