"""The figures of `sgdwalk plot`, drawn from runs recorded by the real tracker.

Each run directory is written by ``RunWriter`` from the ``StepRecord``s of ``WalkTracker``
on a tiny model and read back with ``load_run``, so the figures are tested on what a real
run stores. The pure ``*_figure`` functions are checked through their artists (found by
gid); ``plot_run`` and the CLI through the files they write.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.artist import Artist
from matplotlib.collections import Collection, LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from numpy.typing import NDArray
from torch import nn

from sgdwalk import MeasurementSchedule, MeasurementSet, WalkTracker, every_kth, outputs_are_losses, windows
from sgdwalk.cli import main
from sgdwalk.cli.commands import plot as plot_command
from sgdwalk.runs import plots
from sgdwalk.runs.runlog import RunWriter, load_run
from sgdwalk.training.config import WalkConfig
from tests.helpers import classification_data, mlp

STEPS_PER_EPOCH = 12
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ recorded runs
class WavyLandscape(nn.Module):
    """1 + ½‖θ − x‖² + 0.3 Σ cos(6θ): a bowl with ripples, so that SGD at a large learning
    rate lands in valleys between ripples (interior floors) and steps over some (barriers)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([2.0, -1.5]))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 1.0 + 0.5 * ((self.theta - inputs) ** 2).sum(1) + 0.3 * torch.cos(6.0 * self.theta).sum()


def record_run(
    run_dir: Path,
    model: nn.Module,
    measurement: MeasurementSet,
    schedule: MeasurementSchedule,
    *,
    total_steps: int,
    lr: float,
    steps_per_epoch: int | None,
    write_epochs: bool,
) -> Path:
    """Train ``model`` by SGD on minibatches of the measurement set, recording as `walk` does."""
    generator = torch.Generator().manual_seed(0)
    metadata = {"status": "finished", **({"steps_per_epoch": steps_per_epoch} if steps_per_epoch else {})}
    writer = RunWriter.create(run_dir, WalkConfig(epochs=3, track_epochs=(1, 3)), metadata)
    tracker = WalkTracker(model, measurement, schedule=schedule, sinks=[writer.write_step])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = measurement.loss_fn
    epoch_length = steps_per_epoch or total_steps
    for step in range(total_steps):
        batch = torch.randint(0, measurement.size, (8,), generator=generator)
        optimizer.zero_grad()
        loss = loss_fn(model(measurement.inputs[batch]), measurement.targets[batch]).mean()
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=lr):
            optimizer.step()
        if write_epochs and (step + 1) % epoch_length == 0:
            with torch.no_grad():
                train_loss = float(loss_fn(model(measurement.inputs), measurement.targets).mean())
            writer.write_epoch(
                {
                    "epoch": (step + 1) // epoch_length,
                    "train_loss": train_loss,
                    "val_accuracy": 0.5 + 0.01 * step,
                    "lr": lr,
                    "sharpness": None,
                }
            )
    tracker.close()
    writer.close()
    return run_dir


@pytest.fixture(scope="module")
def wavy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps 0-17 measured: all of epoch 1 and half of epoch 2 (12 steps each), with
    barriers; two epochs of history."""
    inputs = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * 0.5
    measurement = MeasurementSet(inputs, torch.zeros(64), loss_fn=outputs_are_losses)
    return record_run(
        tmp_path_factory.mktemp("wavy") / "run",
        WavyLandscape(),
        measurement,
        windows([(0, 18)]),
        total_steps=2 * STEPS_PER_EPOCH,
        lr=0.45,
        steps_per_epoch=STEPS_PER_EPOCH,
        write_epochs=True,
    )


@pytest.fixture(scope="module")
def convex_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Softmax regression: the loss is convex along every segment, so no barrier can exist.
    No steps per epoch and no history: windows fall back to runs of consecutive steps."""
    with torch.random.fork_rng():  # seed the initialisation without moving other tests' stream
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
    measurement = MeasurementSet(*classification_data(1, 48))
    return record_run(
        tmp_path_factory.mktemp("convex") / "run",
        model,
        measurement,
        windows([(0, 8), (12, 15)]),
        total_steps=15,
        lr=0.5,
        steps_per_epoch=None,
        write_epochs=False,
    )


@pytest.fixture(scope="module")
def single_step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    measurement = MeasurementSet(*classification_data(2, 32))
    return record_run(
        tmp_path_factory.mktemp("single") / "run",
        mlp(3),
        measurement,
        windows([(2, 3)]),
        total_steps=4,
        lr=0.3,
        steps_per_epoch=STEPS_PER_EPOCH,
        write_epochs=False,
    )


@pytest.fixture(scope="module")
def wavy_steps(wavy_run: Path) -> pd.DataFrame:
    return load_run(wavy_run).steps


# ------------------------------------------------------------------------------ helpers
def by_gid(figure: Figure, gid: str) -> list[Artist]:
    return list(figure.findobj(lambda artist: artist.get_gid() == gid))


def curve(figure: Figure, gid: str) -> Line2D:
    """The one Line2D with this gid."""
    found = by_gid(figure, gid)
    assert len(found) == 1 and isinstance(found[0], Line2D), f"expected one line with gid {gid!r}, found {found}"
    return found[0]


def segments(figure: Figure, gid: str) -> list[NDArray[np.float64]]:
    """The polylines of the one LineCollection with this gid."""
    found = by_gid(figure, gid)
    assert len(found) == 1 and isinstance(found[0], LineCollection), f"expected one collection {gid!r}, found {found}"
    return [np.asarray(segment, dtype=np.float64) for segment in found[0].get_segments()]


def xs(line: Line2D) -> NDArray[np.float64]:
    return np.asarray(line.get_xdata(), dtype=np.float64)


def ys(line: Line2D) -> NDArray[np.float64]:
    return np.asarray(line.get_ydata(), dtype=np.float64)


def bar_heights(figure: Figure, gid: str) -> list[float]:
    return [bar.get_height() for bar in by_gid(figure, gid) if isinstance(bar, Rectangle)]


def texts(figure: Figure) -> str:
    return "\n".join(text.get_text() for text in figure.findobj(Text))


def legend_labels(figure: Figure) -> list[str]:
    legends = [legend for axes in figure.axes if (legend := axes.get_legend()) is not None]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def assert_artists_finite(figure: Figure) -> None:
    for line in figure.findobj(Line2D):
        if line.get_gid():
            xy = line.get_xydata()
            assert np.isfinite(xy).all(), f"NaN or inf in {line.get_gid()}"
    for collection in figure.findobj(LineCollection):
        for segment in collection.get_segments():
            assert np.isfinite(segment).all(), f"NaN or inf in {collection.get_gid()}"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which follows the signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def expected_pixels(figsize: tuple[float, float]) -> tuple[int, int]:
    return round(figsize[0] * plots.DPI), round(figsize[1] * plots.DPI)


# ------------------------------------------------------------------------------ windows
def test_windows_are_epochs_when_the_run_knows_its_epoch_length(wavy_steps: pd.DataFrame) -> None:
    found = plots.tracked_windows(wavy_steps)
    # One run of consecutive steps, split at the epoch boundary as summary.json splits it.
    assert [(w.label, w.name) for w in found] == [("epoch 1", "epoch1"), ("epoch 2", "epoch2")]
    assert [list(w.steps["step"]) for w in found] == [list(range(12)), list(range(12, 18))]
    assert all(w.consecutive for w in found)


def test_windows_are_runs_of_consecutive_steps_otherwise(convex_run: Path) -> None:
    found = plots.tracked_windows(load_run(convex_run).steps)
    assert [w.name for w in found] == ["steps0-7", "steps12-14"]


def test_without_epochs_a_gap_wider_than_usual_starts_a_window(wavy_steps: pd.DataFrame) -> None:
    steps = wavy_steps.drop(columns="epoch")
    every_third = steps.iloc[::3]
    assert [w.name for w in plots.tracked_windows(every_third)] == ["steps0-15"]
    two_runs = steps[(steps["step"] < 4) | (steps["step"] >= 10)]
    assert [w.name for w in plots.tracked_windows(two_runs)] == ["steps0-3", "steps10-17"]
    assert plots.tracked_windows(steps.iloc[:0]) == []


def test_pages_cover_a_window_in_order(wavy_steps: pd.DataFrame) -> None:
    pages = plots.page_steps(wavy_steps, max_steps=5)
    assert [len(page) for page in pages] == [5, 5, 5, 3]
    assert list(pd.concat(pages)["step"]) == list(range(18))
    with pytest.raises(ValueError, match="max_steps"):
        plots.page_steps(wavy_steps, max_steps=0)


# --------------------------------------------------------------------------------- walk
def test_walk_figure_has_the_papers_layout(wavy_steps: pd.DataFrame) -> None:
    window = plots.tracked_windows(wavy_steps)[0].steps
    n = len(window)
    figure = plots.walk_figure(window)
    _, cosine_axes, distance_axes = figure.axes
    assert len(figure.axes) == 3
    assert distance_axes.get_xlabel() == "iteration"
    assert all(axes.get_ylabel() for axes in figure.axes)

    curves = segments(figure, plots.GID_SEGMENTS)
    assert len(curves) == n
    first = curves[0]
    np.testing.assert_allclose(first[:, 0], 0 + np.asarray(window["segment_alphas"][0]))  # step 0 spans [0, 1]
    np.testing.assert_allclose(first[:, 1], window["segment_losses"][0])
    separators = segments(figure, plots.GID_SEPARATORS)
    np.testing.assert_array_equal(sorted(s[0, 0] for s in separators), np.arange(n + 1))

    floor = curve(figure, plots.GID_FLOOR)
    assert floor.get_linestyle() == "--" and floor.get_color() == plots.FLOOR_COLOR
    assert len(xs(floor)) == n  # every floor, interior or not, on the dashed line
    np.testing.assert_allclose(xs(floor), window["step"] + window["alpha_star"])
    np.testing.assert_allclose(ys(floor), window["floor"])
    assert len(xs(curve(figure, plots.GID_INTERIOR_FLOORS))) == int(window["interior_floor"].sum())

    barriers = window[window["barrier"]]
    assert len(barriers) > 0, "the wavy landscape should cross barriers"
    markers = curve(figure, plots.GID_BARRIER_MARKERS)
    np.testing.assert_allclose(xs(markers), barriers["step"] + barriers["barrier_alpha"])
    # The marker sits on the segment curve at barrier_alpha (the highest interior point).
    curve_top = [max(losses[1:-1]) for losses in barriers["segment_losses"]]
    np.testing.assert_allclose(ys(markers), curve_top, rtol=1e-12)
    assert len(segments(figure, plots.GID_BARRIER_SEGMENTS)) == len(barriers)

    assert len(xs(curve(figure, plots.GID_COSINE))) == int(window["cosine"].notna().sum()) == n - 1  # none at first
    assert any(ys(line)[0] == 0.0 for line in cosine_axes.get_lines() if line.get_gid() is None)  # the 0 line
    np.testing.assert_allclose(xs(curve(figure, plots.GID_DISTANCE)), window["step"] + 1)  # measured at θ_{t+1}

    labels = legend_labels(figure)
    assert any("valley floor" in label for label in labels)
    assert any("barrier" in label for label in labels)
    assert any("loss along the step" in label for label in labels)
    assert f"{n} steps" in figure.get_suptitle()
    assert_artists_finite(figure)


def test_walk_figure_shades_each_loss_with_its_error_band(wavy_steps: pd.DataFrame) -> None:
    window = plots.tracked_windows(wavy_steps)[0].steps.reset_index(drop=True)
    figure = plots.walk_figure(window)
    (bands,) = by_gid(figure, plots.GID_SEGMENT_BANDS)
    assert isinstance(bands, Collection), type(bands).__name__
    polygons = [np.asarray(path.vertices, dtype=np.float64) for path in bands.get_paths()]
    assert len(polygons) == len(window)
    alphas, losses, errors = (
        np.asarray(window[column][2], dtype=np.float64)
        for column in ("segment_alphas", "segment_losses", "segment_floor_se")
    )
    top = polygons[2][: alphas.size]  # the band's upper edge runs left to right first
    np.testing.assert_allclose(top[:, 0], 2 + alphas)
    np.testing.assert_allclose(top[:, 1], losses + plots.ERROR_BAND_Z * errors)
    assert any("95 % interval" in label for label in legend_labels(figure))
    assert min(errors) == 0.0  # the floor itself has no height to be unsure of
    # Records written without standard errors draw no band.
    assert by_gid(plots.walk_figure(window.assign(segment_floor_se=None)), plots.GID_SEGMENT_BANDS) == []


def test_heights_figure_draws_each_steps_error(wavy_steps: pd.DataFrame) -> None:
    found = plots.tracked_windows(wavy_steps)
    figure = plots.heights_figure(found)
    errors = by_gid(figure, plots.GID_HEIGHT_ERRORS)
    assert errors, "the heights figure should show the measurement's error per step"
    assert sum(len(w.steps) for w in found) == len(
        np.concatenate([w.steps["height_start_se"].to_numpy() for w in found])
    )


def test_walk_figure_without_barriers(convex_run: Path) -> None:
    steps = load_run(convex_run).steps
    assert not steps["barrier"].any()
    figure = plots.walk_figure(plots.tracked_windows(steps)[0].steps)
    assert by_gid(figure, plots.GID_BARRIER_MARKERS) == []
    assert by_gid(figure, plots.GID_BARRIER_SEGMENTS) == []
    assert not any("barrier crossed" in label for label in legend_labels(figure))
    assert "0 barriers crossed" in figure.get_suptitle()
    assert plots.walk_title(steps.iloc[:1]).startswith("Walk over step 0: 1 step, ")
    assert_artists_finite(figure)


def test_walk_figure_of_a_single_step(single_step_run: Path) -> None:
    steps = load_run(single_step_run).steps
    assert list(steps["step"]) == [2]
    figure = plots.walk_figure(steps)
    assert len(segments(figure, plots.GID_SEGMENTS)) == 1
    assert len(segments(figure, plots.GID_SEPARATORS)) == 2
    assert len(xs(curve(figure, plots.GID_FLOOR))) == 1
    # Step 1 was not measured but its gradient was kept for step 2's cosine.
    assert len(xs(curve(figure, plots.GID_COSINE))) == int(steps["cosine"].notna().sum()) == 1
    assert_artists_finite(figure)
    without_cosine = plots.walk_figure(steps.assign(cosine=pd.Series([None], index=steps.index, dtype=object)))
    assert len(xs(curve(without_cosine, plots.GID_COSINE))) == 0
    assert "no consecutive gradients" in texts(without_cosine)


def test_walk_figure_of_sparse_steps_gives_each_a_unit_and_names_the_real_steps(tmp_path: Path) -> None:
    inputs = torch.randn(16, 2, generator=torch.Generator().manual_seed(4)) * 0.5
    measurement = MeasurementSet(inputs, torch.zeros(16), loss_fn=outputs_are_losses)
    run = record_run(
        tmp_path / "run",
        WavyLandscape(),
        measurement,
        every_kth(3),
        total_steps=10,
        lr=0.45,
        steps_per_epoch=STEPS_PER_EPOCH,
        write_epochs=False,
    )
    steps = load_run(run).steps
    assert list(steps["step"]) == [0, 3, 6, 9]
    (window,) = plots.tracked_windows(steps)
    assert not window.consecutive
    figure = plots.walk_figure(window.steps)
    np.testing.assert_allclose(xs(curve(figure, plots.GID_FLOOR)), np.arange(4) + steps["alpha_star"])
    assert [tick.get_text() for tick in figure.axes[2].get_xticklabels()] == ["0", "3", "6", "9"]
    assert "not consecutive" in figure.axes[2].get_xlabel()


def test_walk_figure_refuses_no_steps(wavy_steps: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="at least one"):
        plots.walk_figure(wavy_steps.iloc[:0])


# ------------------------------------------------------------------ heights and barriers
def test_heights_figure_per_step_and_per_window(wavy_steps: pd.DataFrame) -> None:
    found = plots.tracked_windows(wavy_steps)
    figure = plots.heights_figure(found)
    assert len(figure.axes) == 2
    np.testing.assert_allclose(ys(curve(figure, plots.GID_HEIGHTS)), wavy_steps.sort_values("step")["height_start"])
    means = [line for line in by_gid(figure, plots.GID_WINDOW_MEANS) if isinstance(line, Line2D)]
    np.testing.assert_allclose(ys(means[0]), [w.steps["height_start"].mean() for w in found])
    heights = wavy_steps["height_start"]
    spans_decades = (heights > 0).all() and heights.max() / heights.min() > plots.LOG_SCALE_MIN_RATIO
    expected_scale = "log" if spans_decades else "linear"
    assert figure.axes[0].get_yscale() == expected_scale
    assert [t.get_text() for t in figure.axes[1].get_xticklabels()] == ["epoch 1", "epoch 2"]
    assert legend_labels(figure)
    assert_artists_finite(figure)


def test_barriers_figure_counts_per_window(wavy_steps: pd.DataFrame) -> None:
    found = plots.tracked_windows(wavy_steps)
    figure = plots.barriers_figure(found)
    assert bar_heights(figure, plots.GID_BARRIER_COUNTS) == [int(w.steps["barrier"].sum()) for w in found]
    assert found[0].steps["barrier"].sum() > 0
    barriers = wavy_steps[wavy_steps["barrier"]]
    higher = np.maximum(barriers["loss_start"], barriers["loss_end"])
    np.testing.assert_allclose(ys(curve(figure, plots.GID_BARRIER_HEIGHTS)), barriers["barrier_height"] / higher)
    assert f"{len(barriers)} of {len(wavy_steps)} measured steps" in figure.get_suptitle()
    assert_artists_finite(figure)


def test_barriers_figure_without_barriers(convex_run: Path) -> None:
    figure = plots.barriers_figure(plots.tracked_windows(load_run(convex_run).steps))
    assert bar_heights(figure, plots.GID_BARRIER_COUNTS) == [0, 0]
    assert "0/8" in texts(figure) and "0/3" in texts(figure)
    assert by_gid(figure, plots.GID_BARRIER_HEIGHTS) == []
    assert "no barrier crossed" in texts(figure)


# ------------------------------------------------------------------------------ training
def test_training_figure_draws_the_curves_present(wavy_run: Path) -> None:
    epochs = load_run(wavy_run).epochs
    figure = plots.training_figure(epochs)  # sharpness is all null here: two panels
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy"]
    np.testing.assert_allclose(ys(curve(figure, "train_loss")), epochs["train_loss"])
    assert by_gid(figure, "val_loss") == []  # this history has no validation loss
    assert legend_labels(figure) == ["training", "validation"]
    more = epochs.assign(
        sharpness=pd.Series([None, 4.0], index=epochs.index), val_loss=[2.5, 2.0], train_accuracy=[0.4, 0.5]
    )
    figure = plots.training_figure(more)
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy", "sharpness (top Hessian eigenvalue)"]
    # A split keeps its colour across panels.
    assert curve(figure, "train_loss").get_color() == curve(figure, "train_accuracy").get_color()
    assert curve(figure, "val_loss").get_color() == curve(figure, "val_accuracy").get_color()
    np.testing.assert_allclose(xs(curve(figure, "sharpness")), [2])  # null epochs are left out
    with pytest.raises(ValueError, match="no training curve"):
        plots.training_figure(epochs[["epoch", "lr"]])


# ------------------------------------------------------------------------------- files
@pytest.mark.slow  # every figure of a run written to disk: an end-to-end check
def test_plot_run_writes_every_figure_at_its_size(wavy_run: Path) -> None:
    paths = plots.plot_run(wavy_run)
    assert {p.parent for p in paths} == {wavy_run / "figures"}  # the default out_dir
    assert [p.name for p in paths] == [
        "walk_epoch1.png",
        "walk_epoch2.png",
        "heights.png",
        "barriers.png",
        "training.png",
    ]
    sizes = {
        "walk": plots.WALK_FIGSIZE,
        "heights": plots.HEIGHTS_FIGSIZE,
        "barriers": plots.BARRIERS_FIGSIZE,
        "training": plots.TRAINING_FIGSIZE,
    }
    for path in paths:
        assert path.stat().st_size > 10_000, f"{path.name} looks empty"
        assert png_size(path) == expected_pixels(sizes[path.stem.split("_")[0]])


def test_long_windows_get_pages_named_in_their_titles(wavy_steps: pd.DataFrame) -> None:
    window = plots.tracked_windows(wavy_steps)[0]
    pages = plots.page_steps(window.steps, max_steps=5)
    assert [len(page) for page in pages] == [5, 5, 2]
    figure = plots.walk_figure(pages[1], title=plots.walk_title(pages[1], window, 2, len(pages)))
    title = figure.get_suptitle()
    assert "steps 5-9" in title and "epoch 1, page 2 of 3" in title
    np.testing.assert_array_equal(sorted(s[0, 0] for s in segments(figure, plots.GID_SEPARATORS)), range(5, 11))


def test_plot_run_rejects_bad_arguments(wavy_run: Path, tmp_path: Path) -> None:
    assert plots.check_formats([".PNG", " pdf "]) == ("png", "pdf")
    with pytest.raises(ValueError, match="unsupported figure format"):
        plots.plot_run(wavy_run, tmp_path, formats=("png", "nope"))
    with pytest.raises(ValueError, match="max_steps"):
        plots.plot_run(wavy_run, tmp_path, max_steps=0)


# --------------------------------------------------------------------------------- CLI
def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plot", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # a run and every figure through the CLI: end-to-end
def test_cli_prints_the_written_paths(
    single_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A single step: one walk page, heights and barriers; no history, so no training figure.
    code, out, err = run_cli(capsys, str(single_step_run), "--out", str(tmp_path / "out"), "--format", "PDF")
    assert code == 0, err
    written = [Path(line) for line in out.splitlines()]
    assert [p.name for p in written] == ["walk_epoch1.pdf", "heights.pdf", "barriers.pdf"]
    assert all(p.parent == tmp_path / "out" and p.read_bytes().startswith(b"%PDF") for p in written)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda run, tmp: [str(tmp / "missing")], "does not exist"),
        (lambda run, tmp: [str(run), "--out", str(tmp), "--format", "png,nope"], "unsupported figure format"),
        (lambda run, tmp: [str(tmp)], "config.json is missing"),
    ],
    ids=["missing-run", "bad-format", "not-a-run"],
)
def test_cli_reports_unusable_input_with_exit_2(
    make_args: Callable[[Path, Path], list[str]],
    message: str,
    single_step_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, *make_args(single_step_run, tmp_path))
    assert code == 2
    assert out == ""
    assert err.startswith("sgdwalk plot: error:") and message in err


def test_cli_rejects_a_non_positive_max_steps(single_step_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(single_step_run), "--max-steps", "0"])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_cli_run_without_records_has_nothing_to_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RunWriter.create(tmp_path / "run", WalkConfig(), {"status": "running"}).close()
    code, out, err = run_cli(capsys, str(tmp_path / "run"))
    assert code == 1 and out == "" and "nothing to plot" in err


def test_cli_default_matches_the_library() -> None:
    assert plot_command.DEFAULT_MAX_STEPS == plots.DEFAULT_MAX_STEPS


def test_a_figure_is_written_whole_or_not_at_all(wavy_steps: pd.DataFrame, tmp_path: Path) -> None:
    figure = plots.walk_figure(plots.tracked_windows(wavy_steps)[0].steps)
    (written,) = plots.save_figure(figure, tmp_path / "walk", ["png"])
    assert written.read_bytes().startswith(b"\x89PNG")

    def killed_midway(path: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"\x89PNG half")  # what a killed process leaves behind
        raise KeyboardInterrupt

    figure.savefig = killed_midway  # type: ignore[method-assign,assignment]  # the interruption, by hand
    with pytest.raises(KeyboardInterrupt):
        plots.save_figure(figure, tmp_path / "other", ["png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.png"]


# ------------------------------------------------------------------ edge of stability
class Quadratic(nn.Module):
    """½ Σ_i λ_i (θ_i − x_i)² per sample: its Hessian is diag(λ) at every θ, so the top
    eigenvalue is max λ wherever the run goes."""

    CURVATURES = (4.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.tensor(self.CURVATURES) * (self.theta - inputs) ** 2).sum(1)


@pytest.fixture(scope="module")
def gd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-batch GD on the quadratic at lr 0.45 (2/lr ≈ 4.44 > 4: stable), every step
    measured, the sharpness every 4 steps, one update per epoch as `walk` runs GD."""
    lr, updates = 0.45, 20
    run_dir = tmp_path_factory.mktemp("gd") / "run"
    inputs = torch.randn(32, 2, generator=torch.Generator().manual_seed(1)) * 0.1
    measurement = MeasurementSet(inputs, torch.zeros(32), loss_fn=outputs_are_losses)
    config = WalkConfig(optimizer="gd", lr=lr, epochs=updates, track_epochs=(), track_steps=((0, updates),))
    writer = RunWriter.create(run_dir, config, {"status": "finished", "steps_per_epoch": 1})
    model = Quadratic()
    tracker = WalkTracker(model, measurement, sharpness_every=4, sinks=[writer.write_step])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(1, updates + 1):
        optimizer.zero_grad()
        loss = model(inputs).mean()
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=lr):
            optimizer.step()
        writer.write_epoch(
            {"epoch": epoch, "train_loss": float(loss.detach()), "val_accuracy": None, "sharpness": None}
        )
    tracker.close()
    writer.close()
    return run_dir


def test_the_edge_of_stability_figure_draws_the_sharpness_against_two_over_the_learning_rate(gd_run: Path) -> None:
    steps = load_run(gd_run).steps
    figure = plots.edge_of_stability_figure(steps)

    sharpness = curve(figure, plots.GID_SHARPNESS)
    assert xs(sharpness).tolist() == [0, 4, 8, 12, 16]
    # The Hessian is diag(4, 1) everywhere: Lanczos finds 4 to its convergence tolerance.
    assert np.allclose(ys(sharpness), max(Quadratic.CURVATURES), rtol=1e-4)
    assert np.allclose(ys(curve(figure, plots.GID_STABILITY_EDGE)), 2 / 0.45)
    assert len(xs(curve(figure, plots.GID_COSINE))) == 19  # every step but the first has a cosine
    assert_artists_finite(figure)


@pytest.mark.slow  # two runs and every figure drawn: an end-to-end check
def test_plot_draws_it_for_a_full_batch_run_only(gd_run: Path, wavy_run: Path, tmp_path: Path) -> None:
    written = plots.plot_run(gd_run, tmp_path / "gd")
    assert tmp_path / "gd" / "edge_of_stability.png" in written
    # A full-batch run's windows are its runs of consecutive steps, not its one-update epochs.
    assert [path.name for path in written if path.name.startswith("walk_")] == ["walk_steps0-19.png"]
    assert not any(path.name.startswith("edge") for path in plots.plot_run(wavy_run, tmp_path / "sgd"))


def test_the_edge_of_stability_figure_needs_two_sharpness_estimates(wavy_steps: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="two sharpness estimates"):
        plots.edge_of_stability_figure(wavy_steps)
