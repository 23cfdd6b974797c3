"""A run on disk: the one place that knows the files of a run directory and their format.

    RUN_DIR/config.json      the WalkConfig (``WalkConfig.to_dict``); absent from a run written
                             by a loop of one's own (``RunDirectorySink``): no WalkConfig describes it
    RUN_DIR/metadata.json    provenance and status (see ``base_metadata``), rewritten on change
    RUN_DIR/steps.jsonl      one ``StepRecord.as_dict()`` per line, flushed as each is made
    RUN_DIR/epochs.jsonl     one history entry per finished epoch (losses, accuracy, lr, …)
    RUN_DIR/summary.json     per-window summaries and the final state, written at the end
    RUN_DIR/checkpoint.pt    the state to resume from (written by the runner at epoch ends)
    RUN_DIR/.lock            who writes the run now (``sgdwalk.runs.owner``: one process at a time)

This module is the only one that knows these names and formats: writers go through
``RunWriter``, readers through ``load_run`` (a whole run), ``run_status`` and
``last_epoch_entry`` (what a sweep's table needs without reading every record), and
``read_checkpoint``. JSON is strict; a non-finite float is written as the string "nan",
"inf" or "-inf" and read back as that float (``sgdwalk.base.json_data``), so a run read
from disk holds what the run held in memory. (The runner stops a diverging run before any
such value reaches a step record; an epoch's training loss may still be NaN.)
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
import os
import pickle
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import pandas as pd
import torch

from sgdwalk.base.atomic import atomic_write, atomic_write_text
from sgdwalk.base.json_data import dumps, loads
from sgdwalk.instrument.record import RECORD_FIELDS, TUPLE_FIELDS, StepRecord, record_from_dict
from sgdwalk.runs.owner import (  # RunDirectoryError lives with the owner, the lowest of these modules
    LOCK_FILE,
    RunDirectoryBusyError,
    RunDirectoryError,
    acquire_run_directory,
    hold_run_directory,
    release_run_directory,
)
from sgdwalk.training.config import WalkConfig

CONFIG_FILE: Final = "config.json"
METADATA_FILE: Final = "metadata.json"
STEPS_FILE: Final = "steps.jsonl"
EPOCHS_FILE: Final = "epochs.jsonl"
SUMMARY_FILE: Final = "summary.json"
CHECKPOINT_FILE: Final = "checkpoint.pt"
# The owner's lock file (sgdwalk.runs.owner) is not one of RUN_FILES: it is never removed.
# Every file a run may hold: what a restart of a half-created run removes.
RUN_FILES: Final[tuple[str, ...]] = (CONFIG_FILE, METADATA_FILE, STEPS_FILE, EPOCHS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)

# Bumped when a file's meaning changes, so an old run is never misread. 2: a non-finite
# float is the string "nan"/"inf"/"-inf" (version 1 wrote null, as for a missing value).
FORMAT_VERSION: Final = 2
# The checkpoint's own layout (its keys), checked when a run resumes.
CHECKPOINT_FORMAT_VERSION: Final = 1

RunStatus = Literal["running", "finished", "diverged", "interrupted", "failed"]

# metadata.json's ``written_by`` of a run that a loop of one's own wrote through
# ``RunDirectorySink``: it has no config.json, and only that loop can continue it.
WRITTEN_BY_KEY: Final = "written_by"
WRITTEN_BY_LOOP: Final = "RunDirectorySink"

# `git rev-parse HEAD` is a local read; if it takes longer the checkout is unusual and the
# commit is simply not recorded.
GIT_TIMEOUT_SECONDS: Final = 5.0


# ----------------------------------------------------------------------------- JSON
def dumps_line(value: Mapping[str, Any]) -> str:
    """One JSON line of a ``.jsonl`` file (strict JSON, non-finite floats as strings)."""
    return dumps(value) + "\n"


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    atomic_write_text(path, dumps(value, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"{path.parent} is not a run directory: {path.name} is missing") from None
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RunDirectoryError(f"{path} must hold a JSON object")
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file. A last line cut short by a crash is dropped, any
    other broken line is an error."""
    return _read_jsonl_and_cut(path)[0]


def _read_jsonl_and_cut(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The lines of a JSON-lines file, and whether its last line was cut short (dropped)."""
    if not path.exists():
        return [], False
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                return entries, True  # the record in flight when the process died
            raise RunDirectoryError(f"{path}:{number} is not valid JSON: {error}") from None
    return entries, False


def cut_record_files(run_dir: str | Path) -> tuple[str, ...]:
    """The record files (steps, epochs) of a run whose last line a crash cut short: readers
    leave that line out, and ``--resume`` trims it."""
    return tuple(name for name in (STEPS_FILE, EPOCHS_FILE) if _read_jsonl_and_cut(Path(run_dir) / name)[1])


def now_iso() -> str:
    return _datetime.datetime.now(_datetime.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------- metadata
def git_commit() -> str | None:
    """HEAD of the checkout holding this package, or None (not a checkout, no git, …)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def base_metadata(config: WalkConfig, device: torch.device) -> dict[str, Any]:
    """Provenance of a new run; the runner adds data and model facts to it."""
    return {
        **_new_run_metadata(),
        "config_hash": config.result_hash,
        "seed": config.seed,
        "device": str(device),
        "device_name": device_name(device),
    }


def loop_metadata(steps_per_epoch: int | None, description: Mapping[str, Any] | None) -> dict[str, Any]:
    """Provenance of a run a loop of one's own writes (``RunDirectorySink``): what any run's
    metadata holds, ``written_by``, and what the loop says of itself (``description``)."""
    metadata = {**_new_run_metadata(), WRITTEN_BY_KEY: WRITTEN_BY_LOOP, "description": dict(description or {})}
    if steps_per_epoch is not None:
        metadata["steps_per_epoch"] = steps_per_epoch
    return metadata


def _new_run_metadata() -> dict[str, Any]:
    from sgdwalk import __version__

    return {
        "format_version": FORMAT_VERSION,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "sgdwalk": __version__,
        },
        "git_commit": git_commit(),
        "started": now_iso(),
        "finished": None,
        "status": "running",
        "divergence": None,
        "error": None,
        "resumed": [],
    }


def written_by_loop(metadata: Mapping[str, Any]) -> bool:
    """The run was written by a loop of one's own (``RunDirectorySink``), not by ``sgdwalk walk``."""
    return metadata.get(WRITTEN_BY_KEY) == WRITTEN_BY_LOOP


# --------------------------------------------------------------------------- writer
class RunWriter:
    """Appends a run's records to its directory as they are made.

    ``create`` starts a new directory; ``reopen`` continues one from a checkpoint, first
    cutting the record files back to the lines that checkpoint had seen (records made
    after it are made again, identically).
    """

    def __init__(self, run_dir: Path, metadata: dict[str, Any]) -> None:
        """Called by ``create`` and ``reopen`` once they own the directory; ``close`` releases it."""
        self.run_dir = run_dir
        self._closed = False
        self.metadata = metadata
        # Open for the writer's life (records arrive one by one); close() closes them.
        self._steps: IO[str] = open(run_dir / STEPS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._epochs: IO[str] = open(run_dir / EPOCHS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self.steps_written = _count_lines(run_dir / STEPS_FILE)
        self.epochs_written = _count_lines(run_dir / EPOCHS_FILE)

    @classmethod
    def create(cls, run_dir: str | Path, config: WalkConfig | None, metadata: dict[str, Any]) -> RunWriter:
        """A new run in ``run_dir``; ``config`` None for a loop of one's own (no config.json)."""
        run_dir = Path(run_dir)
        acquire_run_directory(run_dir)  # before the check: two new runs into one folder race
        try:
            if (run_dir / CONFIG_FILE).exists() or (run_dir / STEPS_FILE).exists():
                raise RunDirectoryError(
                    f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
                )
            if config is not None:
                atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
            _write_json(run_dir / METADATA_FILE, metadata)
            for name in (STEPS_FILE, EPOCHS_FILE):
                (run_dir / name).write_text("", encoding="utf-8")
            return cls(run_dir, metadata)
        except BaseException:
            release_run_directory(run_dir)
            raise

    @classmethod
    def reopen(cls, run_dir: str | Path, *, steps_kept: int, epochs_kept: int) -> RunWriter:
        run_dir = Path(run_dir)
        acquire_run_directory(run_dir)
        try:
            metadata = _read_json(run_dir / METADATA_FILE)
            _truncate_lines(run_dir / STEPS_FILE, steps_kept)
            kept_epochs = _truncate_lines(run_dir / EPOCHS_FILE, epochs_kept)
            (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
            metadata.update(status="running", finished=None, divergence=None, error=None)
            # The last epoch the kept records finished (0: from the start, before any epoch).
            after_epoch = int(kept_epochs[-1]["epoch"]) if kept_epochs else 0
            metadata.setdefault("resumed", []).append({"at": now_iso(), "after_epoch": after_epoch})
            _write_json(run_dir / METADATA_FILE, metadata)
            return cls(run_dir, metadata)
        except BaseException:
            release_run_directory(run_dir)
            raise

    def write_step(self, record: StepRecord) -> None:
        # Flushed at once: a crash loses at most the record being written.
        self._steps.write(dumps_line(record.as_dict()))
        self._steps.flush()
        self.steps_written += 1

    def write_epoch(self, entry: Mapping[str, Any]) -> None:
        self._epochs.write(dumps_line(entry))
        self._epochs.flush()
        self.epochs_written += 1

    def update_metadata(self, **changes: Any) -> None:
        # Read back first: the --log-to sinks add their own keys (``update_run_metadata``)
        # between the writer's updates, and a whole rewrite from memory would drop them.
        self.metadata = update_run_metadata(self.run_dir, **changes)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        _write_json(self.run_dir / SUMMARY_FILE, summary)

    def write_checkpoint(self, state: Mapping[str, Any]) -> None:
        """``state`` (tensors, generator states, the record counts) as the run's checkpoint.

        The counts of records written so far are added, so that ``reopen`` can cut the
        record files back to what the checkpoint saw.
        """
        payload = {
            **state,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "steps_written": self.steps_written,
            "epochs_written": self.epochs_written,
        }
        atomic_write(self.run_dir / CHECKPOINT_FILE, lambda temporary: torch.save(payload, temporary))

    def close(self) -> None:
        """Close the record files and give up the directory (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        # Each step is tried whatever the one before did (a full disk fails the flush of a
        # close): the directory is given up in any case.
        try:
            self._steps.close()
        finally:
            try:
                self._epochs.close()
            finally:
                release_run_directory(self.run_dir)


def load_run_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The run's metadata.json."""
    return _read_json(Path(run_dir) / METADATA_FILE)


def load_run_config(run_dir: str | Path) -> WalkConfig:
    """The run's ``WalkConfig`` (config.json) alone, without its records."""
    return WalkConfig.from_dict(_read_json(Path(run_dir) / CONFIG_FILE))


def update_run_metadata(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Set ``changes`` in the run's metadata.json (atomically); returns the whole metadata."""
    path = Path(run_dir) / METADATA_FILE
    metadata = {**_read_json(path), **changes}
    _write_json(path, metadata)
    return metadata


def last_step(run_dir: str | Path) -> int | None:
    """The step of the run's last step record (None: no record yet)."""
    entries = _read_jsonl(Path(run_dir) / STEPS_FILE)
    return int(entries[-1]["step"]) if entries else None


def _count_lines(path: Path) -> int:
    return len(_read_jsonl(path))


def _truncate_lines(path: Path, keep: int) -> list[dict[str, Any]]:
    """Keep the first ``keep`` records of a JSON-lines file; returns them."""
    entries = _read_jsonl(path)
    if len(entries) < keep:
        raise RunDirectoryError(f"{path} holds {len(entries)} records but its checkpoint saw {keep}")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(dumps_line(entry) for entry in entries[:keep])
    return entries[:keep]


def read_checkpoint(run_dir: str | Path, map_location: torch.device) -> dict[str, Any] | None:
    """The run's checkpoint, or None when it died before its first one (it then starts over)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, OSError, pickle.UnpicklingError) as error:  # cut short, or not a checkpoint
        # Its first sentence: torch's own message goes on for several about corrupted files.
        text = str(error).strip()
        first_line = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
        raise RunDirectoryError(
            f"{path} cannot be read ({first_line}); remove it to rerun the run from its start with --resume"
        ) from None
    if not isinstance(checkpoint, dict):
        raise RunDirectoryError(f"{path} holds a {type(checkpoint).__name__}, not a run's checkpoint")
    if checkpoint.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} has checkpoint format {checkpoint.get('format_version')}, expected {CHECKPOINT_FORMAT_VERSION}"
        )
    return checkpoint


def clear_run_files(run_dir: str | Path) -> None:
    """Remove every run file of ``run_dir`` (the leftovers of a run killed while being created)."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- reader
STEP_COLUMNS: Final[tuple[str, ...]] = (*RECORD_FIELDS, "epoch")


@dataclass(frozen=True)
class Run:
    """One run as read from its directory.

    ``walk_config`` is the run's ``WalkConfig``, None for a run a loop of one's own wrote
    (``RunDirectorySink``: ``written_by_loop``); ``config`` is the same, and raises for such a
    run, where no ``WalkConfig`` describes the walk. ``steps`` has one row per measured step,
    columns ``RECORD_FIELDS`` plus ``epoch`` (1-based); ``segment_alphas`` / ``segment_losses`` hold tuples. ``epochs`` has one row
    per finished epoch. ``summary`` is empty while a run has not finished. The frames are
    for analysis (pandas turns a missing value into NaN); ``step_records`` and
    ``epoch_entries`` give the records exactly as written (None stays None, NaN stays NaN).
    """

    path: Path
    walk_config: WalkConfig | None
    metadata: dict[str, Any]
    steps: pd.DataFrame
    epochs: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    step_dicts: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    epoch_dicts: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # Record files whose last line a crash cut short; that line is left out of the frames.
    cut_files: tuple[str, ...] = ()

    @property
    def config(self) -> WalkConfig:
        """The ``WalkConfig`` the run was made with; ``RunDirectoryError`` for a loop's run."""
        if self.walk_config is None:
            raise RunDirectoryError(
                f"{self.path} was written by a loop of its own (RunDirectorySink), not by `sgdwalk walk`: "
                "no WalkConfig describes its walk, and only that loop can continue it"
            )
        return self.walk_config

    @property
    def written_by_loop(self) -> bool:
        """Written by a loop of one's own (``RunDirectorySink``): no config.json, ``walk_config`` None."""
        return self.walk_config is None

    @property
    def status(self) -> str:
        return str(self.metadata.get("status", "unknown"))

    @property
    def steps_per_epoch(self) -> int | None:
        value = self.metadata.get("steps_per_epoch")
        return None if value is None else int(value)

    def step_records(self) -> list[StepRecord]:
        """The steps as ``StepRecord`` objects (tuples restored), in file order."""
        return [record_from_dict(entry) for entry in self.step_dicts]

    def epoch_entries(self) -> list[dict[str, Any]]:
        """The per-epoch history as written (None where a value is missing)."""
        return [dict(entry) for entry in self.epoch_dicts]

    def segment_curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alphas [K+1], losses [n, K+1], steps [n]): each measured segment's loss curve.

        The last α is 1: the loss at θ_{t+1}.
        """
        if self.steps.empty:
            if self.walk_config is None:  # a loop's run: its grid is known only from its records
                return np.zeros(0), np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
            num_alphas = self.walk_config.num_alphas
            alphas = np.append(np.arange(num_alphas) / num_alphas, 1.0)
            return alphas, np.zeros((0, alphas.size)), np.zeros(0, dtype=np.int64)
        alphas = np.asarray(self.steps["segment_alphas"].iloc[0], dtype=np.float64)
        losses = np.array([np.asarray(curve, dtype=np.float64) for curve in self.steps["segment_losses"]])
        return alphas, losses, self.steps["step"].to_numpy(dtype=np.int64)


def frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a frame as dicts with str keys, pandas' NaN for a missing value as None."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value.item() if isinstance(value, np.generic) else value

    return [{str(key): plain(value) for key, value in row.items()} for row in frame.to_dict("records")]


def _steps_frame(entries: list[dict[str, Any]], steps_per_epoch: int | None) -> pd.DataFrame:
    if not entries:
        return pd.DataFrame(columns=list(STEP_COLUMNS))
    frame = pd.DataFrame(entries, columns=list(RECORD_FIELDS))
    # Some are absent in runs written before the record had them (standard errors, group rates).
    for column in TUPLE_FIELDS:
        frame[column] = pd.Series(
            # A column absent from the file comes as NaN, which is not a sequence.
            [tuple(curve) if isinstance(curve, (list, tuple)) else None for curve in frame[column]],
            index=frame.index,
            dtype=object,
        )
    if steps_per_epoch:
        frame["epoch"] = frame["step"] // steps_per_epoch + 1
    else:
        frame["epoch"] = pd.NA
    return frame


def _check_order(entries: list[dict[str, Any]], key: str, path: Path) -> None:
    """Each record's ``key`` (step or epoch) above the one before: a record out of order or
    repeated means two processes wrote the run, and no reading of it can be trusted."""
    for number in range(1, len(entries)):
        before, after = entries[number - 1].get(key), entries[number].get(key)
        if not (isinstance(before, int) and isinstance(after, int) and after > before):
            raise RunDirectoryError(
                f"{path}: record {number + 1} has {key} {after!r} after {key} {before!r}; records out of order "
                "or repeated (was the run written by two processes at once?)"
            )


def load_run(path: str | Path) -> Run:
    """Read a run directory (finished, diverged, or still being written).

    A record file's last line cut short by a crash is left out and named in ``cut_files``
    (``--resume`` trims it); in a run that finished it is an error. Raises
    ``RunDirectoryError`` for a missing or unreadable file and for step or epoch records out
    of order or repeated."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a directory")
    metadata_path = run_dir / METADATA_FILE
    # A loop's run has no config.json; any other run without one is broken (read, to say so).
    loop_run = (
        not (run_dir / CONFIG_FILE).exists() and metadata_path.is_file() and written_by_loop(_read_json(metadata_path))
    )
    config = None if loop_run else load_run_config(run_dir)
    metadata = _read_json(metadata_path)
    steps_per_epoch = metadata.get("steps_per_epoch")
    step_entries, steps_cut = _read_jsonl_and_cut(run_dir / STEPS_FILE)
    epoch_entries, epochs_cut = _read_jsonl_and_cut(run_dir / EPOCHS_FILE)
    cut_files = tuple(name for name, cut in ((STEPS_FILE, steps_cut), (EPOCHS_FILE, epochs_cut)) if cut)
    if cut_files and metadata.get("status") == "finished":
        # A finished run wrote every line whole: a cut one was damaged afterwards.
        raise RunDirectoryError(
            f"{run_dir} finished, but the last line of {' and '.join(cut_files)} is cut short: "
            "the file was damaged after the run ended"
        )
    _check_order(step_entries, "step", run_dir / STEPS_FILE)
    _check_order(epoch_entries, "epoch", run_dir / EPOCHS_FILE)
    steps = _steps_frame(step_entries, steps_per_epoch)
    epochs = pd.DataFrame(epoch_entries)
    summary = _read_json(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).exists() else {}
    return Run(run_dir, config, metadata, steps, epochs, summary, tuple(step_entries), tuple(epoch_entries), cut_files)


def is_run_directory(path: str | Path) -> bool:
    """Whether ``path`` holds a run's config and metadata (a run that got past its creation)."""
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / METADATA_FILE).is_file()


def run_status(path: str | Path) -> str:
    """ "missing" (no run files), "incomplete" (killed while being created), or the metadata's status."""
    run_dir = Path(path)
    if is_run_directory(run_dir):
        try:
            return str(_read_json(run_dir / METADATA_FILE).get("status", "incomplete"))
        except RunDirectoryError:
            return "incomplete"
    if any((run_dir / name).exists() for name in RUN_FILES):
        return "incomplete"
    return "missing"


def last_epoch_entry(path: str | Path) -> dict[str, Any]:
    """The last finished epoch's entry: the summary's when written, else the last of the
    epochs file; empty when the run has none."""
    run_dir = Path(path)
    if (run_dir / SUMMARY_FILE).is_file():
        final = _read_json(run_dir / SUMMARY_FILE).get("final_epoch")
        if final:
            return dict(final)
    entries = _read_jsonl(run_dir / EPOCHS_FILE)
    return dict(entries[-1]) if entries else {}


def count_step_records(path: str | Path) -> int:
    """How many step records the run has written (a line cut short by a crash not counted)."""
    return _count_lines(Path(path) / STEPS_FILE)


__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT_VERSION",
    "CONFIG_FILE",
    "EPOCHS_FILE",
    "LOCK_FILE",
    "METADATA_FILE",
    "RUN_FILES",
    "Run",
    "RunDirectoryBusyError",
    "RunDirectoryError",
    "RunWriter",
    "STEPS_FILE",
    "SUMMARY_FILE",
    "WRITTEN_BY_KEY",
    "WRITTEN_BY_LOOP",
    "acquire_run_directory",
    "base_metadata",
    "clear_run_files",
    "count_step_records",
    "frame_rows",
    "hold_run_directory",
    "is_run_directory",
    "last_epoch_entry",
    "last_step",
    "load_run",
    "load_run_config",
    "load_run_metadata",
    "loop_metadata",
    "read_checkpoint",
    "record_from_dict",
    "release_run_directory",
    "run_status",
    "update_run_metadata",
    "written_by_loop",
]
