"""Sweeps: a grid of ``WalkConfig``s, one run directory per cell, run locally or on Slurm.

A grid file (TOML, or JSON with the same keys)::

    [base]  # WalkConfig fields every cell shares
    arch = "mlp"
    epochs = 2

    [axes]  # lists; the cells are their cartesian product, in this order
    lr = [0.05, 0.1]
    seed = [1111, 1112]

    [[cells]]  # optional: override tables, each crossed with the axes
    optimizer = "sgd"

    [[cells]]
    optimizer = "gd"
    epochs = 20

A cell's config is ``base``, then its ``cells`` table, then its axis values. A field may not be
an axis and sit in a ``cells`` table too (which should win would be a guess). Cells are keyed
by ``WalkConfig.result_hash``, the hash of the fields that change the records (not data_root,
download, out_dir, progress or checkpointing), and run into ``OUT/cells/<hash>/``, a normal
run directory (see ``runlog``) written by ``run_walk``.

Reruns and crashes, per cell:

- metadata status "finished" or "diverged": done, skipped (a divergence is a result);
- "running", "interrupted" or "failed": resumed from its last checkpoint (``resume_walk``),
  from the start if it has none;
- a directory without ``config.json`` and ``metadata.json`` (killed while being created):
  its files are removed and the cell starts again;
- a cell some other process is running is owned by it (``owner.hold_run_directory``: a lock
  on ``OUT/cells/<hash>/.lock``, released by the kernel when that process dies): it is left
  alone while the other cells run, then looked at every ``BUSY_POLL_SECONDS`` until that
  process is done with it (then it is done here too, or resumed if that process died).

Every cell runs through ``run_cell(config_dict, out_root)``, a top-level function of plain
data, so it pickles to a process pool (``run_local``) or a submitit job array (``submit_cells``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sgdwalk.base.atomic import atomic_write_text
from sgdwalk.base.errors import SgdwalkError
from sgdwalk.base.json_data import dumps
from sgdwalk.base.mapping_files import read_mapping_file
from sgdwalk.base.tables import text_table
from sgdwalk.runs.owner import RunDirectoryBusyError, hold_run_directory
from sgdwalk.runs.runlog import clear_run_files, count_step_records, last_epoch_entry, load_run
from sgdwalk.runs.runlog import run_status as cell_status  # a cell's status is its run directory's
from sgdwalk.runs.slurm_options import SlurmOptions
from sgdwalk.runs.throughput import DEFAULT_THROUGHPUT_FLOPS, TERA, format_flops
from sgdwalk.training.config import DATA_FIELDS, ConfigError, WalkConfig, data_key

if TYPE_CHECKING:
    from sgdwalk.runs.run_data import WalkData
    from sgdwalk.runs.walk_result import WalkResult

GRID_KEYS: Final = frozenset({"base", "axes", "cells"})
CELLS_FOLDER: Final = "cells"
SUBMITIT_FOLDER: Final = "submitit"
# The cells of the last expansion, with their hashes, for whoever reads OUT without the grid.
MANIFEST_FILE: Final = "sweep.json"
# A divergence is an outcome of the config, not an accident: rerunning gives it again.
DONE_STATUSES: Final = frozenset({"finished", "diverged"})
RESUMABLE_STATUSES: Final = frozenset({"running", "interrupted", "failed"})
# Imported once by the pool's fork server, so that its workers start without importing torch.
FORKSERVER_PRELOAD: Final[tuple[str, ...]] = ("sgdwalk.runs.runner",)
# A frozen value, shared as the default of submit_cells.
DEFAULT_SLURM_OPTIONS: Final = SlurmOptions()
# How often a cell busy in another process (another sweep of the same grid) is looked at
# again: cells take seconds to hours, and a look is one lock attempt and one small file read.
BUSY_POLL_SECONDS: Final = 2.0
# Loaded data sets kept per process: CIFAR-10's 45k images are 0.55 GB as float32, and a
# sweep's cells mostly share one or two (data, subset, padding) choices.
DATA_CACHE_SIZE: Final = 4


class SweepError(SgdwalkError, ValueError):
    """A grid file or sweep folder that cannot be used (the message says why)."""


class CellBusyError(SgdwalkError, RuntimeError):
    """Another process holds the cell's lock (it is being run right now)."""


# ---------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class Grid:
    """What a grid file says: shared fields, axes, and override tables."""

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    cells: tuple[Mapping[str, Any], ...] = ({},)


def _field_names(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    # Accept the CLI spelling (track-steps) as well as the field name (track_steps), as config files do.
    if not isinstance(values, Mapping):
        raise SweepError(f"{where} must be a table of WalkConfig fields, got {type(values).__name__}")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def parse_grid(values: Mapping[str, Any]) -> Grid:
    """A ``Grid`` from the mapping of a grid file (keys ``base``, ``axes``, ``cells``)."""
    unknown = sorted(set(values) - GRID_KEYS)
    if unknown:
        raise SweepError(f"unknown grid key(s) {', '.join(unknown)}; a grid has {', '.join(sorted(GRID_KEYS))}")
    base = _field_names(values.get("base", {}), "base")
    axes: dict[str, tuple[Any, ...]] = {}
    for name, choices in _field_names(values.get("axes", {}), "axes").items():
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"axis {name!r} must be a non-empty list of values, got {choices!r}")
        axes[name] = tuple(choices)
    raw_cells = values.get("cells", [{}])
    if not isinstance(raw_cells, list) or not raw_cells:
        raise SweepError("cells must be a non-empty list of tables")
    cells = tuple(_field_names(cell, f"cells[{index}]") for index, cell in enumerate(raw_cells))
    for index, cell in enumerate(cells):
        both = sorted(set(cell) & set(axes))
        if both:
            raise SweepError(f"cells[{index}] sets {', '.join(both)}, which is also an axis; keep it in one place")
    return Grid(base, axes, cells)


def read_grid(path: str | Path) -> Grid:
    """The grid in a ``.toml`` or ``.json`` file."""
    return parse_grid(read_mapping_file(path, "grid file", SweepError))


def expand_grid(grid: Grid) -> list[WalkConfig]:
    """Every cell's config, in file order (cells, then axes with the last one fastest).

    Cells that describe the same run (equal ``result_hash``) appear once. A combination
    that is not a valid config raises ``SweepError`` naming it.
    """
    configs: list[WalkConfig] = []
    seen: set[str] = set()
    names = list(grid.axes)
    for cell_index, cell in enumerate(grid.cells):
        for combination in itertools.product(*grid.axes.values()):
            values = {**grid.base, **cell, **dict(zip(names, combination, strict=True))}
            try:
                config = WalkConfig.from_dict(values)
            except ConfigError as error:
                where = "".join(f" {name}={value!r}," for name, value in zip(names, combination, strict=True))
                raise SweepError(f"cells[{cell_index}]{where.rstrip(',')}: {error}") from None
            if config.result_hash not in seen:
                seen.add(config.result_hash)
                configs.append(config)
    return configs


def varying_fields(configs: Sequence[WalkConfig]) -> list[str]:
    """The fields whose values differ between cells, in ``WalkConfig`` order."""
    if not configs:
        return []
    dicts = [config.to_dict() for config in configs]
    return [name for name in dicts[0] if any(json.dumps(d[name]) != json.dumps(dicts[0][name]) for d in dicts)]


# ---------------------------------------------------------------------------- cells
def cell_dir(out_root: str | Path, config: WalkConfig) -> Path:
    return Path(out_root) / CELLS_FOLDER / config.result_hash


@contextlib.contextmanager
def _cell_lock(directory: Path) -> Iterator[None]:
    """Own the cell's run directory (``owner.hold_run_directory``), or raise ``CellBusyError``
    at once if another process does."""
    try:
        with hold_run_directory(directory):
            yield
    except RunDirectoryBusyError as error:
        raise CellBusyError(str(error)) from None


@functools.lru_cache(maxsize=DATA_CACHE_SIZE)
def _load_data(key: tuple[Any, ...]) -> WalkData:
    from sgdwalk.runs.run_data import load_walk_data

    config = WalkConfig(
        **dict(zip(DATA_FIELDS, key, strict=True)),
        track_epochs=(),
        epochs=1,
        # The data does not depend on the measurement set (drawn from it later, per run).
        measurement_size=None,
    )
    return load_walk_data(config)


def load_cell_data(config: WalkConfig) -> WalkData:
    """The config's data (as ``load_walk_data``), read once per process."""
    return _load_data(data_key(config))


def run_cell(config_dict: Mapping[str, Any], out_root: str) -> str:
    """Run (or resume, or skip) one cell into ``out_root/cells/<hash>``; return that folder.

    A top-level function of plain data, so that a process pool or submitit can pickle it.
    Raises what the run raises (a missing data set, a bad config), and ``CellBusyError`` when
    another process is running the cell.
    """
    from sgdwalk.runs.runner import resume_walk, run_walk

    config = WalkConfig.from_dict(config_dict)
    directory = cell_dir(Path(out_root).resolve(), config)
    with _cell_lock(directory):
        status = cell_status(directory)
        if status in DONE_STATUSES:
            return str(directory)
        data = load_cell_data(config)
        if status in RESUMABLE_STATUSES:
            resume_walk(directory, data=data, progress=False)
        else:
            clear_run_files(directory)  # "incomplete" leftovers; nothing for "missing"
            run_walk(config.replace(out_dir=str(directory), progress=False), data=data)
    return str(directory)


def load_cell_result(directory: str | Path) -> WalkResult:
    """The ``WalkResult`` of a done cell (finished or diverged), rebuilt from its files."""
    from sgdwalk.runs.walk_result import WalkResult

    run = load_run(directory)
    if run.status not in DONE_STATUSES:
        raise SweepError(f"{directory} is {run.status}, not done")
    return WalkResult.from_run(run)


# ------------------------------------------------------------------------- executors
def pending_configs(configs: Sequence[WalkConfig], out_root: str | Path) -> list[WalkConfig]:
    """The cells not done yet."""
    return [config for config in configs if cell_status(cell_dir(out_root, config)) not in DONE_STATUSES]


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def run_local(
    configs: Sequence[WalkConfig],
    out_root: str | Path,
    *,
    workers: int = 1,
    on_cell: Callable[[WalkConfig, str | None], None] | None = None,
    on_busy: Callable[[WalkConfig, str], None] | None = None,
    poll_seconds: float = BUSY_POLL_SECONDS,
) -> dict[str, str]:
    """Run the pending cells here, ``workers`` at a time; return {hash: error} of those that failed.

    One worker runs the cells in this process, one after another. More use a pool of
    processes forked from a ``forkserver`` that has imported the runner once (a plain fork
    after torch has started threads can deadlock; spawn would import torch in every worker).
    Each run sets its own intra-op threads (the config's ``cpu_threads``, 1 by default), so
    ``workers`` runs use ``workers × cpu_threads`` cores. ``on_cell(config, error or None)``
    is called as each cell ends.

    A cell another process is running (``CellBusyError``) is not a failure: ``on_busy(config,
    message)`` is called, and once the other cells are over it is looked at again every
    ``poll_seconds`` until that process lets it go; it then ends like any cell (done, resumed
    here if that process died, or failed).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out_root = Path(out_root).resolve()
    errors: dict[str, str] = {}
    busy: list[WalkConfig] = []

    def finished(config: WalkConfig, error: BaseException | None) -> None:
        if isinstance(error, CellBusyError):
            busy.append(config)
            if on_busy is not None:
                on_busy(config, str(error))
            return
        if error is not None:
            errors[config.result_hash] = _error_text(error)
        if on_cell is not None:
            on_cell(config, None if error is None else errors[config.result_hash])

    todo = pending_configs(configs, out_root)
    if workers == 1:
        for config in todo:
            finished(config, _run_cell_here(config, out_root))
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_cell, config.to_dict(), str(out_root)): config for config in todo}
            for future in as_completed(futures):
                finished(futures[future], future.exception())
    while busy:
        time.sleep(poll_seconds)
        waiting, busy[:] = list(busy), []
        for config in waiting:
            outcome = _run_cell_here(config, out_root)
            if isinstance(outcome, CellBusyError):
                busy.append(config)  # still running there: no second message
            else:
                finished(config, outcome)
    return errors


def _run_cell_here(config: WalkConfig, out_root: Path) -> BaseException | None:
    """Run one cell in this process; the exception it raised, or None."""
    try:
        run_cell(config.to_dict(), str(out_root))
    except Exception as error:  # one cell's failure must not stop the others
        return error
    return None


def submit_cells(
    configs: Sequence[WalkConfig],
    out_root: str | Path,
    *,
    cluster: str | None = "slurm",
    options: SlurmOptions = DEFAULT_SLURM_OPTIONS,
) -> list[tuple[WalkConfig, Any]]:
    """Submit the pending cells as one submitit job array (``map_array``); return (config, job) pairs.

    ``cluster``: "slurm", or submitit's "local" (a subprocess per job) or "debug" (in this
    process, when a job's result is asked for), or None to let submitit detect it. Logs and
    pickles go to ``OUT/submitit/<job id>``; results go to the cells as with ``run_local``.
    """
    import submitit

    out_root = Path(out_root).resolve()
    todo = pending_configs(configs, out_root)
    if not todo:
        return []
    executor = submitit.AutoExecutor(folder=out_root / SUBMITIT_FOLDER / "%j", cluster=cluster)
    parameters: dict[str, Any] = {
        "name": "sgdwalk-sweep",
        "timeout_min": options.time_min,
        "gpus_per_node": options.gpus_per_node,
        "cpus_per_task": options.cpus_per_task,
        "mem_gb": options.mem_gb,
        "slurm_array_parallelism": options.array_parallelism,
    }
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_cell, [config.to_dict() for config in todo], [str(out_root)] * len(todo))
    return list(zip(todo, jobs, strict=True))


# --------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class CellRow:
    """One cell of the summary table."""

    hash: str
    status: str
    values: Mapping[str, Any]
    train_loss: float | None
    val_accuracy: float | None
    measured_steps: int | None
    error: str | None = None
    # The cell's FLOPs by the cost model (``cost.run_cost``); None unless asked for.
    flops: float | None = None


def summarize_cells(
    configs: Sequence[WalkConfig],
    out_root: str | Path,
    errors: Mapping[str, str] | None = None,
    *,
    with_cost: bool = False,
) -> list[CellRow]:
    """A row per cell: its status, the fields that vary, final train loss and validation
    accuracy, and with ``with_cost`` its FLOPs by the cost model (``cost.run_cost``)."""
    from sgdwalk.runs.cost import run_cost  # counts each network once, on the meta device

    errors = errors or {}
    varying = varying_fields(configs)
    rows = []
    for config in configs:
        directory = cell_dir(out_root, config)
        status = cell_status(directory)
        started = status not in ("missing", "incomplete")
        last = last_epoch_entry(directory) if started else {}
        measured = count_step_records(directory) if started else None
        error = errors.get(config.result_hash)
        if error is not None and status not in DONE_STATUSES:
            status = "busy" if error.startswith(CellBusyError.__name__) else "error"
        rows.append(
            CellRow(
                hash=config.result_hash,
                status=status,
                values={name: getattr(config, name) for name in varying},
                train_loss=last.get("train_loss"),
                val_accuracy=last.get("val_accuracy"),
                measured_steps=measured,
                error=error,
                flops=run_cost(config).total if with_cost else None,
            )
        )
    return rows


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        if value and all(isinstance(item, tuple) for item in value):
            return ",".join(":".join(_cell_text(part) for part in item) for item in value)  # step windows
        return ",".join(_cell_text(item) for item in value) or "()"
    return str(value)


def format_table(rows: Sequence[CellRow], flops_per_second: float = DEFAULT_THROUGHPUT_FLOPS) -> str:
    """The rows as an aligned plain-text table, errors listed below it; where every row has
    its FLOPs, each cell's FLOPs and hours at ``flops_per_second`` and their total."""
    if not rows:
        return "no cells\n"
    fields = list(rows[0].values)
    costed = all(row.flops is not None for row in rows)
    header = ["cell", "status", *fields, "train loss", "val acc", "steps", *(["FLOPs", "hours"] if costed else [])]
    body = [
        [
            row.hash,
            row.status,
            *(_cell_text(row.values[name]) for name in fields),
            _cell_text(row.train_loss),
            _cell_text(row.val_accuracy),
            _cell_text(row.measured_steps),
            *(_cost_texts(row.flops, flops_per_second) if row.flops is not None else []),
        ]
        for row in rows
    ]
    lines = text_table(header, body)
    lines += [f"{row.hash}: {row.error}" for row in rows if row.error]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    lines.append(", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    if costed:
        lines.append(cost_summary(rows, flops_per_second))
    return "\n".join(lines) + "\n"


def _cost_texts(flops: float, flops_per_second: float) -> list[str]:
    return [format_flops(flops), f"{flops / flops_per_second / 3600:.3g}"]


def cost_summary(rows: Sequence[CellRow], flops_per_second: float) -> str:
    """The cells' total FLOPs and time at ``flops_per_second`` (and of those still to run)."""

    def total(chosen: Sequence[CellRow]) -> str:
        flops = sum(row.flops or 0.0 for row in chosen)
        seconds = flops / flops_per_second
        return f"{format_flops(flops)}, {seconds / 3600:.3g} h ({seconds / 60:.1f} min)"

    pending = [row for row in rows if row.status not in DONE_STATUSES]
    line = f"estimated cost of the {len(rows)} cells: {total(rows)} at {flops_per_second / TERA:.3g} TFLOP/s"
    if len(pending) < len(rows):
        line += f"; of the {len(pending)} still to run: {total(pending)}"
    return line


def write_manifest(configs: Sequence[WalkConfig], out_root: str | Path, grid_path: str | Path | None = None) -> Path:
    """``OUT/sweep.json``: the grid file's path and every cell's hash and config."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "grid": None if grid_path is None else str(grid_path),
        "cells": [{"hash": config.result_hash, "config": config.to_dict()} for config in configs],
    }
    return atomic_write_text(out_root / MANIFEST_FILE, dumps(manifest, indent=2) + "\n")


__all__ = [
    "BUSY_POLL_SECONDS",
    "CellBusyError",
    "CellRow",
    "Grid",
    "SlurmOptions",
    "SweepError",
    "cell_dir",
    "cell_status",
    "cost_summary",
    "expand_grid",
    "format_table",
    "load_cell_data",
    "load_cell_result",
    "parse_grid",
    "pending_configs",
    "read_grid",
    "run_cell",
    "run_local",
    "submit_cells",
    "summarize_cells",
    "varying_fields",
    "write_manifest",
]
