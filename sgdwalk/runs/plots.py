"""The figures of a run: the paper's walk plots (Figures 1-2), heights, barriers, training.

Each ``*_figure`` function is pure: it takes data frames (one row per measured step with
the columns of ``StepRecord``, or one row per epoch) and returns a matplotlib ``Figure``
without saving or showing it, so tests can inspect its artists. ``plot_run`` is the one
function that reads a run directory (through ``load_run``) and writes files.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas instead of
``pyplot``: no global backend switch, no figure registry that leaks memory over hundreds
of pages, and nothing changes for a caller who uses pyplot interactively. Artists that
tests (or a caller restyling a figure) look up carry a ``gid``: the ``GID_*`` constants.

Files written by ``plot_run`` (into ``<run>/figures`` by default), ``<window>`` being
``epoch<E>`` when the run knows its steps per epoch (the windows of ``summary.json``) and
``steps<first>-<last>`` otherwise (see ``tracked_windows``):

- ``walk_<window>.png``: the layout of the paper's Figures 1-2. A window longer than
  ``max_steps`` (default 60, so that each iteration keeps ~17 px of width) is split into
  pages ``walk_<window>_p01.png``, ``_p02``, …; every page is written.
- ``heights.png``: height of the iterate above the valley floor, per step and per window.
- ``barriers.png``: barriers crossed per window and their heights relative to the loss.
- ``training.png``: per-epoch training curves, when the run has finished an epoch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from sgdwalk.base.atomic import atomic_write
from sgdwalk.instrument.tolerances import BARRIER_RELATIVE_TOLERANCE
from sgdwalk.runs.runlog import load_run
from sgdwalk.training.config import is_full_batch

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DPI",
    "Window",
    "barriers_figure",
    "check_formats",
    "heights_figure",
    "page_steps",
    "plot_run",
    "save_figure",
    "tracked_windows",
    "training_figure",
    "walk_figure",
    "walk_title",
]

#: Steps per walk page: at 60 steps each iteration gets ~17 px of a 1200 px figure, enough
#: to see the shape of its 10-point segment curve.
DEFAULT_MAX_STEPS: Final = 60
#: Pixels per inch of every written figure: a figure of (w, h) inches is (w·DPI, h·DPI) px.
DPI: Final = 100

WALK_FIGSIZE: Final = (12.0, 8.0)
HEIGHTS_FIGSIZE: Final = (12.0, 4.5)
BARRIERS_FIGSIZE: Final = (12.0, 4.5)
TRAINING_FIGSIZE: Final = (12.0, 4.0)
EDGE_FIGSIZE: Final = (12.0, 6.5)

GID_SEGMENTS: Final = "segment-losses"
GID_SEPARATORS: Final = "iteration-separators"
GID_FLOOR: Final = "valley-floor"
GID_INTERIOR_FLOORS: Final = "interior-floors"
GID_BARRIER_SEGMENTS: Final = "barrier-segments"
GID_BARRIER_MARKERS: Final = "barrier-markers"
GID_COSINE: Final = "cosine"
GID_DISTANCE: Final = "distance"
GID_HEIGHTS: Final = "heights"
GID_SEGMENT_BANDS: Final = "segment-error-bands"
GID_HEIGHT_ERRORS: Final = "height-errors"
GID_WINDOW_MEANS: Final = "window-means"
GID_BARRIER_COUNTS: Final = "barrier-counts"
GID_BARRIER_HEIGHTS: Final = "relative-barrier-heights"
GID_SHARPNESS: Final = "sharpness"
GID_SHARPNESS_ERRORS: Final = "sharpness-errors"
GID_STABILITY_EDGE: Final = "stability-edge"

# Colours as in the paper's figures: the loss in blue, the floor dashed orange, gray
# iteration separators; barriers in red so the rare event stands out.
LOSS_COLOR: Final = "tab:blue"
FLOOR_COLOR: Final = "tab:orange"
BARRIER_COLOR: Final = "tab:red"
COSINE_COLOR: Final = "tab:green"
DISTANCE_COLOR: Final = "tab:purple"
SEPARATOR_COLOR: Final = "0.8"
GRID_COLOR: Final = "0.92"

# Tick labels along a categorical axis beyond this count overlap at 12 in width.
MAX_CATEGORY_TICKS: Final = 12


# ------------------------------------------------------------------------------ data
def _numeric(frame: pd.DataFrame, column: str) -> NDArray[np.float64]:
    """A column as floats; None (JSON null), pd.NA and a missing column read as NaN."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    numbers = pd.to_numeric(frame[column], errors="coerce")
    values: NDArray[np.float64] = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _boolean(frame: pd.DataFrame, column: str) -> NDArray[np.bool_]:
    if column not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return np.array([bool(value) if value is not None and not pd.isna(value) else False for value in frame[column]])


def _steps(frame: pd.DataFrame) -> NDArray[np.int64]:
    steps: NDArray[np.int64] = frame["step"].to_numpy(dtype=np.int64)
    return steps


@dataclass(frozen=True)
class Window:
    """The measured steps of one tracked window, in step order.

    ``label`` is for people ("epoch 5", "steps 0-99"), ``name`` for file names ("epoch5").
    """

    label: str
    name: str
    steps: pd.DataFrame

    @property
    def consecutive(self) -> bool:
        """Whether each segment's α = 1 is the next one's α = 0 (no unmeasured step between)."""
        return bool(np.all(np.diff(_steps(self.steps)) == 1))


def tracked_windows(steps: pd.DataFrame) -> list[Window]:
    """Split the measured steps into windows.

    With an ``epoch`` column (``load_run`` adds it when the run knows its steps per epoch)
    a window is an epoch holding measured steps, as in ``summary.json``. Otherwise a new
    window starts wherever the gap between measured steps exceeds the usual (median) gap:
    runs of consecutive steps for tracked windows, one window for every k-th step. (The
    claims cut at every unmeasured step instead: ``claims.window_statistics.consecutive_step_windows``.)
    """
    if steps.empty:
        return []
    ordered = steps.sort_values("step", kind="stable").reset_index(drop=True)
    epochs = _numeric(ordered, "epoch")
    if np.isfinite(epochs).all():
        # cast: pandas-stubs types every groupby key as a tuple; grouped by one array, each is an int.
        return [
            Window(f"epoch {int(cast(int, epoch))}", f"epoch{int(cast(int, epoch))}", group.reset_index(drop=True))
            for epoch, group in ordered.groupby(epochs.astype(np.int64), sort=True)
        ]
    gaps = np.diff(_steps(ordered))
    usual_gap = float(np.median(gaps)) if gaps.size else 1.0
    window_ids = np.cumsum(np.concatenate(([True], gaps > max(usual_gap, 1.0))))
    windows = []
    for _, group in ordered.groupby(window_ids, sort=True):
        first, last = int(group["step"].iloc[0]), int(group["step"].iloc[-1])
        windows.append(Window(f"steps {first}-{last}", f"steps{first}-{last}", group.reset_index(drop=True)))
    return windows


def page_steps(steps: pd.DataFrame, max_steps: int = DEFAULT_MAX_STEPS) -> list[pd.DataFrame]:
    """Consecutive pages of at most ``max_steps`` rows that together cover ``steps``."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    return [steps.iloc[i : i + max_steps].reset_index(drop=True) for i in range(0, len(steps), max_steps)]


def _segment_curves(steps: pd.DataFrame) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """(α grid, losses) per step, α = 1 included; kept per row so grids may differ."""
    curves = []
    for alphas, losses in zip(steps["segment_alphas"], steps["segment_losses"], strict=True):
        a, v = np.asarray(alphas, dtype=np.float64), np.asarray(losses, dtype=np.float64)
        if a.shape != v.shape or a.ndim != 1:
            raise ValueError(f"segment_alphas {a.shape} and segment_losses {v.shape} do not match")
        curves.append((a, v))
    return curves


#: Half-width of the error bands, in standard errors: ±1.96 is a 95 % interval per point.
ERROR_BAND_Z: Final = 1.96


def _segment_bands(steps: pd.DataFrame, x0: NDArray[np.float64]) -> list[NDArray[np.float64]]:
    """One polygon per step: each loss ± ERROR_BAND_Z standard errors of its height above the
    segment's floor (the paired error of the valley's shape; none for steps recorded
    without standard errors). The losses' own errors are much wider but shared by every
    point of a segment (the same samples), so they say nothing about the valley's shape."""
    if "segment_floor_se" not in steps:
        return []
    bands = []
    columns = (steps["segment_alphas"], steps["segment_losses"], steps["segment_floor_se"])
    for x, alphas, losses, errors in zip(x0, *columns, strict=True):
        if errors is None or (isinstance(errors, float) and math.isnan(errors)):
            continue
        a, v, e = (np.asarray(values, dtype=np.float64) for values in (alphas, losses, errors))
        upper, lower = np.column_stack((x + a, v + ERROR_BAND_Z * e)), np.column_stack((x + a, v - ERROR_BAND_Z * e))
        bands.append(np.concatenate([upper, lower[::-1]]))
    return bands


# --------------------------------------------------------------------------- helpers
def _new_figure(figsize: tuple[float, float]) -> Figure:
    # Constrained layout, not tight_layout: it makes room for the legends above the axes,
    # which tight_layout ignores, and tight_layout's "not compatible" warnings would fail
    # the tests (filterwarnings = error).
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _note(axes: Axes, text: str) -> None:
    """A centred message in an otherwise empty panel, so that empty never looks like a bug."""
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="0.4")


#: Log y only over more than this ratio of largest to smallest value: below a decade a log
#: axis shows no labelled major tick and reads worse than a linear one.
LOG_SCALE_MIN_RATIO: Final = 10.0


def _log_if_positive(axes: Axes, values: NDArray[np.float64]) -> None:
    """Log scale when every finite value is positive and they span more than a decade
    (heights fall by orders of magnitude over training: Table 2)."""
    finite = values[np.isfinite(values)]
    if finite.size and bool(np.all(finite > 0)) and finite.max() / finite.min() > LOG_SCALE_MIN_RATIO:
        axes.set_yscale("log")


def _category_ticks(axes: Axes, positions: Sequence[float] | NDArray[np.float64], labels: Sequence[str]) -> None:
    """Ticks at ``positions`` labelled ``labels``, thinned so that labels never overlap."""
    stride = max(1, math.ceil(len(labels) / MAX_CATEGORY_TICKS))
    axes.set_xticks(list(positions)[::stride], list(labels)[::stride])
    if len(labels) > 4:
        axes.tick_params(axis="x", labelrotation=30)


def _light_grid(*axes_list: Axes) -> None:
    for axes in axes_list:
        axes.grid(axis="y", color=GRID_COLOR, linewidth=0.6)


# ------------------------------------------------------------------------------ walk
def walk_figure(steps: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The paper's Figures 1-2 for one window or one page of it.

    Top: the loss along each segment θ_t → θ_{t+1} over x ∈ [t, t+1] (shaded: ±1.96
    standard errors of each point's height above the floor, when the records carry them),
    thin gray lines at
    iteration boundaries, the segments' floors (α*, y_t) joined by a dashed orange line
    (filled markers: interior floors, hollow: floor at an endpoint), barriers in red.
    Middle: cos(g_{t−1}, g_t) at x = t. Bottom: ‖θ_{t+1} − θ_0‖ at x = t + 1.

    When the steps are not consecutive (a run measuring every k-th step) each segment
    still gets one unit of width, side by side, and the ticks name the real steps.
    """
    if steps.empty:
        raise ValueError("walk_figure needs at least one measured step")
    steps = steps.sort_values("step", kind="stable").reset_index(drop=True)
    step = _steps(steps)
    consecutive = bool(np.all(np.diff(step) == 1))
    # Left edge of each segment on the x axis: its step, or its rank when steps are sparse.
    x0 = step.astype(np.float64) if consecutive else np.arange(len(steps), dtype=np.float64)
    curves = _segment_curves(steps)

    figure = _new_figure(WALK_FIGSIZE)
    loss_axes, cosine_axes, distance_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": (3.0, 1.2, 1.2)}
    )
    _loss_panel(loss_axes, steps, x0, curves)
    _cosine_panel(cosine_axes, steps, x0)
    _distance_panel(distance_axes, steps, x0, step, consecutive=consecutive)
    _light_grid(loss_axes, cosine_axes, distance_axes)

    figure.suptitle(title or walk_title(steps))
    return figure


def _segment_lines(
    axes: Axes,
    steps: pd.DataFrame,
    x0: NDArray[np.float64],
    curves: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
) -> list[NDArray[np.float64]]:
    """The loss along each segment (its error band beneath, when the records carry one) and
    the iteration separators; returns the segments' polylines."""
    segments = [np.column_stack((x + a, v)) for x, (a, v) in zip(x0, curves, strict=True)]
    bands = _segment_bands(steps, x0)
    if bands:
        axes.add_collection(
            PolyCollection(
                bands,
                facecolors=LOSS_COLOR,
                alpha=0.18,
                linewidths=0,
                zorder=1,
                label="95 % interval of each loss's height above the floor",
                gid=GID_SEGMENT_BANDS,
            )
        )
    axes.add_collection(
        LineCollection(
            segments,
            colors=LOSS_COLOR,
            linewidths=1.3,
            label=r"loss along the step $\theta_t \to \theta_{t+1}$",
            gid=GID_SEGMENTS,
        )
    )
    axes.vlines(
        np.append(x0, x0[-1] + 1.0),
        0,
        1,
        transform=axes.get_xaxis_transform(),
        colors=SEPARATOR_COLOR,
        linewidths=0.6,
        zorder=0,
        gid=GID_SEPARATORS,
    )
    return segments


def _floor_markers(axes: Axes, steps: pd.DataFrame, x0: NDArray[np.float64]) -> None:
    """The segments' floors (α*, y_t) joined by a dashed line; interior floors filled."""
    floor_x, floor_y = x0 + _numeric(steps, "alpha_star"), _numeric(steps, "floor")
    interior = _boolean(steps, "interior_floor")
    axes.plot(
        floor_x,
        floor_y,
        linestyle="--",
        color=FLOOR_COLOR,
        linewidth=1.2,
        marker="o",
        markersize=4,
        markerfacecolor="white",
        label="valley floor (filled: interior)",
        gid=GID_FLOOR,
    )
    # Interior floors filled, drawn over the hollow markers: they are the paper's valleys.
    axes.plot(
        floor_x[interior],
        floor_y[interior],
        linestyle="none",
        marker="o",
        markersize=4,
        color=FLOOR_COLOR,
        gid=GID_INTERIOR_FLOORS,
    )


def _barrier_marks(
    axes: Axes, steps: pd.DataFrame, x0: NDArray[np.float64], segments: list[NDArray[np.float64]]
) -> None:
    """The segments that cross a barrier, redrawn in red, with a marker at each barrier's top."""
    barrier = _boolean(steps, "barrier")
    if barrier.any():
        axes.add_collection(
            LineCollection(
                [segments[i] for i in np.flatnonzero(barrier)],
                colors=BARRIER_COLOR,
                linewidths=1.8,
                gid=GID_BARRIER_SEGMENTS,
            )
        )
        # The barrier's top is by definition the higher endpoint plus the barrier height.
        top = np.maximum(_numeric(steps, "loss_start"), _numeric(steps, "loss_end")) + _numeric(steps, "barrier_height")
        axes.plot(
            (x0 + _numeric(steps, "barrier_alpha"))[barrier],
            top[barrier],
            linestyle="none",
            marker="v",
            markersize=7,
            color=BARRIER_COLOR,
            label=f"barrier crossed ({int(barrier.sum())})",
            gid=GID_BARRIER_MARKERS,
        )


def _loss_panel(
    axes: Axes,
    steps: pd.DataFrame,
    x0: NDArray[np.float64],
    curves: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
) -> None:
    """Top panel: the loss along each step, its floors and barriers."""
    segments = _segment_lines(axes, steps, x0, curves)
    _floor_markers(axes, steps, x0)
    _barrier_marks(axes, steps, x0, segments)
    axes.autoscale_view()
    axes.set_ylabel("training loss\n(measurement set)")
    axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False, fontsize="small")


def _cosine_panel(axes: Axes, steps: pd.DataFrame, x0: NDArray[np.float64]) -> None:
    """Middle panel: cos(g_{t−1}, g_t) at x = t."""
    cosine = _numeric(steps, "cosine")
    has_cosine = np.isfinite(cosine)
    axes.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    axes.plot(x0[has_cosine], cosine[has_cosine], marker=".", color=COSINE_COLOR, linewidth=1.0, gid=GID_COSINE)
    if not has_cosine.any():
        _note(axes, "no consecutive gradients measured here")
    axes.set_ylim(-1.08, 1.08)
    axes.set_ylabel(r"$\cos(g_{t-1}, g_t)$")


def _distance_panel(
    axes: Axes, steps: pd.DataFrame, x0: NDArray[np.float64], step: NDArray[np.int64], *, consecutive: bool
) -> None:
    """Bottom panel: ‖θ_{t+1} − θ_0‖ at x = t + 1, and the x axis the three panels share."""
    distance = _numeric(steps, "distance_from_init")
    has_distance = np.isfinite(distance)
    # distance_from_init of step t is measured at θ_{t+1}, the end of its segment.
    axes.plot(
        (x0 + 1.0)[has_distance],
        distance[has_distance],
        marker=".",
        color=DISTANCE_COLOR,
        linewidth=1.0,
        gid=GID_DISTANCE,
    )
    axes.set_ylabel(r"$\|\theta - \theta_0\|_2$")
    if consecutive:
        axes.set_xlabel("iteration")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        axes.set_xlabel("measured step (not consecutive: one unit per measured step)")
        _category_ticks(axes, x0, [str(s) for s in step])
    # Half an iteration of margin so that end markers are not cut by the frame.
    axes.set_xlim(x0[0] - 0.5, x0[-1] + 1.5)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _step_range(steps: pd.DataFrame) -> str:
    step = _steps(steps)
    return f"step {step[0]}" if len(step) == 1 else f"steps {step[0]}-{step[-1]}"


def walk_title(page: pd.DataFrame, window: Window | None = None, number: int = 1, total: int = 1) -> str:
    """ "Walk over steps 5-9 (epoch 1, page 2 of 3): 5 steps, 4 interior floors, 1 barrier crossed"."""
    where = [] if window is None or window.label == _step_range(window.steps) else [window.label]
    if total > 1:
        where.append(f"page {number} of {total}")
    context = f" ({', '.join(where)})" if where else ""
    return (
        f"Walk over {_step_range(page)}{context}: {_plural(len(page), 'step')}, "
        f"{_plural(int(_boolean(page, 'interior_floor').sum()), 'interior floor')}, "
        f"{_plural(int(_boolean(page, 'barrier').sum()), 'barrier')} crossed"
    )


# --------------------------------------------------------------------------- heights
def heights_figure(windows: Sequence[Window], *, title: str | None = None) -> Figure:
    """Height L(θ_t) − y_t of the iterate above its segment's floor.

    Left, every measured step in order with ±1.96 standard errors of its measurement (when
    the records carry them), windows side by side (dotted lines between them)
    so that far-apart windows (epochs 1 and 100) each get their share of the width.
    Right, mean ± sd per window: the paper's Table 2.
    """
    figure = _new_figure(HEIGHTS_FIGSIZE)
    per_step, per_window = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (2.2, 1.0)})
    heights = [_numeric(w.steps, "height_start") for w in windows]
    all_heights = np.concatenate(heights) if heights else np.empty(0)
    finite = np.isfinite(all_heights)
    per_step.plot(
        np.arange(all_heights.size)[finite],
        all_heights[finite],
        linestyle="none",
        marker=".",
        markersize=4,
        color=LOSS_COLOR,
        label=r"height of $\theta_t$ above its floor",
        gid=GID_HEIGHTS,
    )
    starts = np.cumsum([0, *(len(h) for h in heights)])[:-1]
    for start in starts[1:]:
        per_step.axvline(start - 0.5, color="0.6", linestyle=":", linewidth=0.8)
    errors = np.concatenate([_numeric(w.steps, "height_start_se") for w in windows]) if heights else np.empty(0)
    shown = finite & np.isfinite(errors)
    if shown.any():
        per_step.errorbar(
            np.arange(all_heights.size)[shown],
            all_heights[shown],
            yerr=ERROR_BAND_Z * errors[shown],
            linestyle="none",
            elinewidth=0.6,
            color=LOSS_COLOR,
            alpha=0.5,
            label="±1.96 standard errors",
            gid=GID_HEIGHT_ERRORS,
        )
    _category_ticks(per_step, starts, [w.label for w in windows])
    per_step.set_xlabel("measured steps in order, window by window (ticks: each window's first step)")
    per_step.set_ylabel(r"height $L(\theta_t) - y_t$")

    stats = [(np.mean(h[np.isfinite(h)]), np.std(h[np.isfinite(h)])) for h in heights if np.isfinite(h).any()]
    index = [i for i, h in enumerate(heights) if np.isfinite(h).any()]
    if stats:
        means, spreads = np.array(stats).T
        per_window.errorbar(
            index,
            means,
            yerr=spreads,
            linestyle="none",
            marker="o",
            capsize=4,
            color=FLOOR_COLOR,
            label="mean ± sd per window",
            gid=GID_WINDOW_MEANS,
        )
    _category_ticks(per_window, range(len(windows)), [w.label for w in windows])
    per_window.set_xlim(-0.6, max(len(windows), 1) - 0.4)
    per_window.set_xlabel("window")
    _log_if_positive(per_step, all_heights)
    if not finite.any():
        _note(per_step, "no measured steps")
    else:
        for axes in (per_step, per_window):
            axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize="small")
    _light_grid(per_step, per_window)
    figure.suptitle(title or "Height of the iterate above the valley floor")
    return figure


# -------------------------------------------------------------------------- barriers
def barriers_figure(windows: Sequence[Window], *, title: str | None = None) -> Figure:
    """Barriers crossed per window (bars labelled k/n: the paper's Table 1) and each
    barrier's height relative to the loss (excess over the higher endpoint / that loss)."""
    figure = _new_figure(BARRIERS_FIGSIZE)
    counts_axes, heights_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": (1.0, 1.6)})
    counts = [int(_boolean(w.steps, "barrier").sum()) for w in windows]
    bars = counts_axes.bar(range(len(windows)), counts, color=BARRIER_COLOR, alpha=0.8, gid=GID_BARRIER_COUNTS)
    counts_axes.bar_label(
        bars, labels=[f"{k}/{len(w.steps)}" for k, w in zip(counts, windows, strict=True)], fontsize="small"
    )
    _category_ticks(counts_axes, range(len(windows)), [w.label for w in windows])
    counts_axes.set_xlim(-0.6, max(len(windows), 1) - 0.4)
    counts_axes.set_ylim(0, max([1, *counts]) * 1.2)  # room for the k/n labels, also at 0
    counts_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts_axes.set_xlabel("window")
    counts_axes.set_ylabel("barriers crossed (k of n steps)")

    steps = pd.concat([w.steps for w in windows], ignore_index=True) if windows else pd.DataFrame({"step": []})
    barrier = _boolean(steps, "barrier")
    higher_end = np.abs(np.maximum(_numeric(steps, "loss_start"), _numeric(steps, "loss_end")))
    relative = np.full(len(steps), np.nan)
    np.divide(_numeric(steps, "barrier_height"), higher_end, out=relative, where=higher_end > 0)
    shown = barrier & np.isfinite(relative)
    if shown.any():
        heights_axes.plot(
            _steps(steps)[shown],
            relative[shown],
            linestyle="none",
            marker="v",
            color=BARRIER_COLOR,
            label="barrier height / loss at the higher endpoint",
            gid=GID_BARRIER_HEIGHTS,
        )
        heights_axes.axhline(
            BARRIER_RELATIVE_TOLERANCE,
            color="0.5",
            linestyle=":",
            linewidth=0.8,
            label=f"detection threshold ({BARRIER_RELATIVE_TOLERANCE:g})",
        )
        _log_if_positive(heights_axes, relative[shown])
        # Above the panel: inside it would hide barriers, and loc="best" warns when slow.
        heights_axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False, fontsize="small")
        heights_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _note(heights_axes, "no barrier crossed")
    heights_axes.set_xlabel("step")
    heights_axes.set_ylabel("relative barrier height")
    _light_grid(counts_axes, heights_axes)
    figure.suptitle(title or f"Barriers crossed: {sum(counts)} of {_plural(len(steps), 'measured step')}")
    return figure


# -------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainingPanel:
    """One panel of ``training.png``, drawn when the run has values in ``column``; the
    ``companion`` column (the other split) joins it when present."""

    column: str
    ylabel: str
    companion: str | None = None
    log: bool = False


TRAINING_PANELS: Final[tuple[TrainingPanel, ...]] = (
    TrainingPanel("train_loss", "loss", companion="val_loss", log=True),
    TrainingPanel("val_accuracy", "accuracy", companion="train_accuracy"),
    TrainingPanel("sharpness", "sharpness (top Hessian eigenvalue)"),
)
# Each split keeps its colour and legend label in every panel.
SPLIT_STYLES: Final[dict[str, tuple[str, str]]] = {
    "train": ("training", LOSS_COLOR),
    "val": ("validation", FLOOR_COLOR),
}


def training_panels(epochs: pd.DataFrame) -> list[TrainingPanel]:
    """The ``TRAINING_PANELS`` whose column holds at least one finite value."""
    return [panel for panel in TRAINING_PANELS if np.isfinite(_numeric(epochs, panel.column)).any()]


def training_figure(epochs: pd.DataFrame, *, title: str | None = None) -> Figure:
    """One panel per per-epoch quantity present: loss and accuracy (training and
    validation, when recorded) and sharpness."""
    panels = training_panels(epochs)
    if not panels:
        raise ValueError(f"no training curve to draw: none of {[p.column for p in TRAINING_PANELS]} has a value")
    figure = _new_figure(TRAINING_FIGSIZE)
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    epoch = _numeric(epochs, "epoch") if "epoch" in epochs.columns else np.arange(1.0, len(epochs) + 1.0)
    for axes, panel in zip(axes_row, panels, strict=True):
        columns = sorted({panel.column, *([panel.companion] if panel.companion else [])})  # train_ before val_
        drawn = []
        for column in columns:
            values = _numeric(epochs, column)
            finite = np.isfinite(values) & np.isfinite(epoch)
            if not finite.any():
                continue
            label, color = SPLIT_STYLES.get(column.split("_")[0], (None, LOSS_COLOR))
            axes.plot(epoch[finite], values[finite], marker=".", linewidth=1.2, color=color, label=label, gid=column)
            drawn.append(values[finite])
        if panel.log:
            _log_if_positive(axes, np.concatenate(drawn))
        axes.set_xlabel("epoch")
        axes.set_ylabel(panel.ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(color=GRID_COLOR, linewidth=0.6)
        if any(line.get_label() and not line.get_label().startswith("_") for line in axes.get_lines()):
            axes.legend(fontsize="small", loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)
    figure.suptitle(title or "Training")
    return figure


# ------------------------------------------------------------------ edge of stability
def edge_of_stability_figure(steps: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Sharpness against 2/lr over the updates (top; ±1.96 standard errors where the
    records carry them) and the consecutive-gradient cosine (bottom): the picture of the
    edge of stability (X1, Cohen et al. 2021), where GD's sharpness rises to 2/lr and stays
    while consecutive gradients point nearly opposite. Raises ValueError without at least
    two sharpness estimates or a learning rate."""
    step = _steps(steps).astype(np.float64)
    sharpness = _numeric(steps, "sharpness")
    lr = _numeric(steps, "lr")
    has_sharpness = np.isfinite(sharpness)
    if has_sharpness.sum() < 2:
        raise ValueError("an edge-of-stability figure needs at least two sharpness estimates")
    usable_lr = np.isfinite(lr) & (lr > 0)
    if not usable_lr.any():
        raise ValueError("an edge-of-stability figure needs the learning rate of the measured steps")
    figure = _new_figure(EDGE_FIGSIZE)
    sharp_axes, cosine_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    errors = _numeric(steps, "sharpness_se") if "sharpness_se" in steps.columns else np.full_like(sharpness, np.nan)
    with_error = has_sharpness & np.isfinite(errors)
    if with_error.any():
        sharp_axes.errorbar(
            step[with_error],
            sharpness[with_error],
            yerr=ERROR_BAND_Z * errors[with_error],
            fmt="none",
            ecolor=LOSS_COLOR,
            alpha=0.5,
            gid=GID_SHARPNESS_ERRORS,
        )
    sharp_axes.plot(
        step[has_sharpness],
        sharpness[has_sharpness],
        marker=".",
        color=LOSS_COLOR,
        label="sharpness",
        gid=GID_SHARPNESS,
    )
    sharp_axes.plot(
        step[usable_lr],
        2.0 / lr[usable_lr],
        linestyle="--",
        color=BARRIER_COLOR,
        label="2 / learning rate",
        gid=GID_STABILITY_EDGE,
    )
    sharp_axes.set_ylabel("top Hessian eigenvalue")
    sharp_axes.legend(fontsize="small", loc="lower right", frameon=False)
    cosine = _numeric(steps, "cosine")
    finite = np.isfinite(cosine)
    cosine_axes.plot(step[finite], cosine[finite], linewidth=0.8, color=COSINE_COLOR, gid=GID_COSINE)
    cosine_axes.axhline(0.0, color=SEPARATOR_COLOR, linewidth=0.8)
    cosine_axes.set_ylim(-1.05, 1.05)
    cosine_axes.set_ylabel("cos(g_t, g_{t-1})")
    cosine_axes.set_xlabel("update")
    _light_grid(sharp_axes, cosine_axes)
    figure.suptitle(title or "Edge of stability: sharpness against 2/lr, consecutive-gradient cosine")
    return figure


def draws_edge_of_stability(steps: pd.DataFrame) -> bool:
    """Whether a run has what ``edge_of_stability_figure`` draws: two sharpness estimates
    and the learning rate of its measured steps."""
    if steps.empty or "sharpness" not in steps.columns or "lr" not in steps.columns:
        return False
    return bool(np.isfinite(_numeric(steps, "sharpness")).sum() >= 2 and np.isfinite(_numeric(steps, "lr")).any())


# ----------------------------------------------------------------------------- files
def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats lower-cased and without dots; ValueError names those matplotlib cannot write."""
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    cleaned = tuple(fmt.strip().lower().lstrip(".") for fmt in formats if fmt.strip())
    unknown = [fmt for fmt in cleaned if fmt not in supported]
    if not cleaned or unknown:
        raise ValueError(
            f"unsupported figure format(s): {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(sorted(supported))}"
        )
    return cleaned


def _savefig(figure: Figure, fmt: str, path: Path) -> None:
    figure.savefig(path, format=fmt, dpi=DPI)


def save_figure(figure: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``<stem>.<format>`` for each format at ``DPI``, each whole or not at all (a
    killed `sgdwalk plot` leaves no truncated file under a figure's name); returns the paths."""
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write(path, functools.partial(_savefig, figure, fmt))
        paths.append(path)
    return paths


def plot_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = ("png",),
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[Path]:
    """Draw every figure of the run in ``run_dir`` into ``out_dir`` (default ``<run_dir>/figures``).

    Returns the paths written: walk pages (window by window), heights, barriers, the edge of
    stability (a full-batch run with sharpness estimates), training.
    A run without measured steps gets only its training figure, one that has not finished
    an epoch no training figure. Raises ``RunDirectoryError`` for an unreadable run and
    ``ValueError`` for an unknown format or a non-positive ``max_steps``.
    """
    formats = check_formats(formats)
    if max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    steps = run.steps
    if run.steps_per_epoch == 1 and "epoch" in steps.columns:
        # A full-batch run: an epoch is one update, so windows are runs of consecutive steps.
        steps = steps.drop(columns="epoch")
    windows = tracked_windows(steps)
    for window in windows:
        pages = page_steps(window.steps, max_steps)
        for number, page in enumerate(pages, start=1):
            stem = f"walk_{window.name}" if len(pages) == 1 else f"walk_{window.name}_p{number:02d}"
            figure = walk_figure(page, title=walk_title(page, window, number, len(pages)))
            written += save_figure(figure, out / stem, formats)
    if windows:
        written += save_figure(heights_figure(windows), out / "heights", formats)
        written += save_figure(barriers_figure(windows), out / "barriers", formats)
    if run.walk_config is not None and is_full_batch(run.walk_config) and draws_edge_of_stability(steps):
        written += save_figure(edge_of_stability_figure(steps), out / "edge_of_stability", formats)
    if not run.epochs.empty and training_panels(run.epochs):
        written += save_figure(training_figure(run.epochs), out / "training", formats)
    return written
