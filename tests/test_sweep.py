"""Sweeps: grid expansion, cell hashes, local and submitit execution, reruns and resumption.

Runs are a tiny MLP on tiny synthetic Fashion-MNIST files (``tests.fixtures_data``): 120
training images (the validation split starts at image 50,000, so it is empty), batch 40, one
or two epochs; each cell takes well under a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import runpy
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import sgdwalk.runs.sweep as sweep
from sgdwalk.claims.sweep_cache import SweepRunCache
from sgdwalk.cli import main as cli_main
from sgdwalk.runs.cost import run_cost
from sgdwalk.runs.owner import LOCK_FILE
from sgdwalk.runs.runlog import load_run
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.sweep import (
    CellBusyError,
    CellRow,
    SlurmOptions,
    SweepError,
    cell_dir,
    cell_status,
    expand_grid,
    format_table,
    load_cell_result,
    parse_grid,
    read_grid,
    run_cell,
    run_local,
    submit_cells,
    summarize_cells,
)
from sgdwalk.runs.throughput import format_flops
from sgdwalk.training.config import WalkConfig
from tests.conftest import SWEEP_TRAIN_IMAGES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_root(sweep_data_root: Path) -> Path:
    return sweep_data_root


def tiny_base(data_root: Path) -> dict[str, Any]:
    """A cell that trains in a fraction of a second: a 5%-width MLP, one epoch, all steps measured."""
    return {
        "arch": "mlp",
        "data": "fashion-mnist",
        "data_root": str(data_root),
        "train_subset": None,
        "width_multiplier": 0.05,
        "batch_size": 40,
        "epochs": 1,
        "track_epochs": [],
        "track_steps": [[0, 3]],
        "measurement_size": 40,
        "chunk_size": 40,
        "device": "cpu",
        "progress": False,
    }


def tiny_grid(data_root: Path, **axes: list[Any]) -> sweep.Grid:
    return parse_grid({"base": tiny_base(data_root), "axes": axes or {"lr": [0.05, 0.1], "seed": [1, 2]}})


# ------------------------------------------------------------------------ expansion
def test_axes_expand_to_their_cartesian_product_in_file_order(data_root: Path) -> None:
    configs = expand_grid(tiny_grid(data_root, lr=[0.05, 0.1], seed=[1, 2]))
    assert [(c.lr, c.seed) for c in configs] == [(0.05, 1), (0.05, 2), (0.1, 1), (0.1, 2)]
    assert all(c.arch == "mlp" and c.batch_size == 40 for c in configs)


def test_cell_tables_override_base_and_cross_the_axes(data_root: Path) -> None:
    grid = parse_grid(
        {
            "base": tiny_base(data_root),
            "axes": {"seed": [1, 2]},
            "cells": [{"optimizer": "sgd"}, {"optimizer": "gd", "epochs": 3, "track-steps": [[0, 3]]}],
        }
    )
    configs = expand_grid(grid)
    assert [(c.optimizer, c.epochs, c.seed) for c in configs] == [
        ("sgd", 1, 1),
        ("sgd", 1, 2),
        ("gd", 3, 1),
        ("gd", 3, 2),
    ]


def test_a_field_in_an_axis_and_a_cell_is_refused(data_root: Path) -> None:
    with pytest.raises(SweepError, match="also an axis"):
        parse_grid({"base": tiny_base(data_root), "axes": {"lr": [0.1]}, "cells": [{"lr": 0.2}]})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bases": {}}, "unknown grid key"),
        ({"axes": {"lr": 0.1}}, "non-empty list"),
        ({"axes": {"lr": []}}, "non-empty list"),
        ({"cells": []}, "non-empty list of tables"),
    ],
)
def test_malformed_grids_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        parse_grid(values)


def test_an_invalid_combination_names_its_cell(data_root: Path) -> None:
    with pytest.raises(SweepError, match=r"cells\[0\] batch_size=0"):
        expand_grid(tiny_grid(data_root, batch_size=[40, 0]))


def test_cells_describing_the_same_run_appear_once(data_root: Path) -> None:
    # progress and out_dir do not change the records: the two cells are one run.
    configs = expand_grid(tiny_grid(data_root, progress=[True, False], seed=[1, 2]))
    assert [c.seed for c in configs] == [1, 2]


def test_toml_and_json_grids_give_the_same_cells(tmp_path: Path, data_root: Path) -> None:
    toml = tmp_path / "grid.toml"
    toml.write_text(
        f'[base]\narch = "mlp"\ndata_root = "{data_root}"\ntrack_epochs = []\nepochs = 1\n'
        "[axes]\nlr = [0.05, 0.1]\nseed = [1, 2]\n",
        encoding="utf-8",
    )
    as_json = tmp_path / "grid.json"
    as_json.write_text(
        json.dumps(
            {"axes": {"seed": [1, 2], "lr": [0.05, 0.1]}, "base": {"epochs": 1, "track_epochs": [], "arch": "mlp"}}
        ),
        encoding="utf-8",
    )
    assert sorted(c.result_hash for c in expand_grid(read_grid(toml))) == sorted(
        c.result_hash for c in expand_grid(read_grid(as_json))
    )


def test_the_example_grid_expands() -> None:
    configs = expand_grid(read_grid(REPO / "examples" / "sweep-grid.toml"))
    assert len(configs) == len({c.result_hash for c in configs}) > 1


# ---------------------------------------------------------------------------- hashes
def test_the_cell_hash_ignores_where_records_go_and_follows_what_changes_them(data_root: Path) -> None:
    config = WalkConfig.from_dict(tiny_base(data_root))
    same_run = config.replace(
        out_dir="/elsewhere", data_root="/other/data", progress=True, checkpoint_every_epochs=None
    )
    assert same_run.result_hash == config.result_hash
    assert cell_dir("OUT", same_run) == cell_dir("OUT", config) == Path("OUT/cells") / config.result_hash
    for change in ({"lr": 0.2}, {"seed": 2}, {"device": "cuda"}, {"track_steps": ((0, 2),)}):
        assert config.replace(**change).result_hash != config.result_hash, change


def test_the_cell_hash_survives_a_json_round_trip(data_root: Path) -> None:
    # Lists from a grid file and tuples in memory are one config, in any key order.
    config = WalkConfig.from_dict(tiny_base(data_root))
    reread = WalkConfig.from_dict(dict(reversed(list(json.loads(config.to_json()).items()))))
    assert reread.result_hash == config.result_hash


# ----------------------------------------------------------------------- local runs
def test_a_local_grid_runs_and_a_rerun_skips_finished_cells(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = expand_grid(tiny_grid(data_root, lr=[0.05, 0.1], seed=[1, 2]))
    out = tmp_path / "out"
    assert run_local(configs, out) == {}
    assert [cell_status(cell_dir(out, c)) for c in configs] == ["finished"] * 4
    stamps = {c.result_hash: (cell_dir(out, c) / "metadata.json").stat().st_mtime_ns for c in configs}

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr("sgdwalk.runs.runner.run_walk", no_training)
    monkeypatch.setattr("sgdwalk.runs.runner.resume_walk", no_training)
    assert run_local(configs, out) == {}
    assert {c.result_hash: (cell_dir(out, c) / "metadata.json").stat().st_mtime_ns for c in configs} == stamps

    table = format_table(summarize_cells(configs, out))
    assert "4 finished" in table and "lr" in table and "seed" in table and "train loss" in table


def test_killed_cells_resume_and_finished_ones_are_not_redone(tmp_path: Path, data_root: Path) -> None:
    base = {**tiny_base(data_root), "epochs": 2, "track_steps": [[0, 6]], "checkpoint_every_epochs": 1}
    done, killed, half_made = expand_grid(parse_grid({"base": base, "axes": {"seed": [1, 2, 3]}}))
    out = tmp_path / "out"
    run_cell(done.to_dict(), str(out))
    done_stamp = (cell_dir(out, done) / "metadata.json").stat().st_mtime_ns

    # killed: died in epoch 2 after the epoch-1 checkpoint, with no handler to update its status.
    class Killed(BaseException):
        pass

    def die_in_epoch_two(record: Any) -> None:
        if record.step == 4:
            raise Killed

    with pytest.raises(Killed):
        run_walk(killed.replace(out_dir=str(cell_dir(out, killed))), on_record=die_in_epoch_two)
    metadata_path = cell_dir(out, killed) / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    metadata.update(status="running", error=None)
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    # half_made: killed between writing config.json and metadata.json.
    cell_dir(out, half_made).mkdir(parents=True)
    (cell_dir(out, half_made) / "config.json").write_text(half_made.to_json(), encoding="utf-8")
    assert [cell_status(cell_dir(out, c)) for c in (done, killed, half_made)] == ["finished", "running", "incomplete"]

    assert run_local([done, killed, half_made], out) == {}
    assert [cell_status(cell_dir(out, c)) for c in (done, killed, half_made)] == ["finished"] * 3
    assert (cell_dir(out, done) / "metadata.json").stat().st_mtime_ns == done_stamp
    resumed = load_cell_result(cell_dir(out, killed))
    # Resumed once, from the epoch-1 checkpoint (2 epoch lines kept: initialisation and epoch 1).
    assert [entry["after_epoch"] for entry in resumed.metadata["resumed"]] == [1]
    uninterrupted = run_walk(killed)
    assert [r.as_dict() for r in resumed.records] == [r.as_dict() for r in uninterrupted.records]


def test_a_cell_another_process_runs_is_waited_for_not_failed(tmp_path: Path, data_root: Path) -> None:
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    out = tmp_path / "out"
    directory = cell_dir(out.resolve(), config)
    directory.mkdir(parents=True)
    busy_messages: list[str] = []
    with open(directory / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # what a running cell holds
        with pytest.raises(CellBusyError, match="another sgdwalk process"):
            run_cell(config.to_dict(), str(out))
        # The other process lets the cell go after a moment: the sweep waits, then runs it.
        release = threading.Timer(0.3, lambda: fcntl.flock(handle, fcntl.LOCK_UN))
        release.start()
        errors = run_local([config], out, on_busy=lambda _, message: busy_messages.append(message), poll_seconds=0.05)
        release.join()
    assert errors == {} and len(busy_messages) == 1
    assert cell_status(directory) == "finished"


@pytest.mark.slow  # two fresh interpreters importing torch: ~10 s, run by scripts/test.sh's slow step
def test_two_sweeps_of_one_grid_at_once_both_finish_with_exit_0(tmp_path: Path, data_root: Path) -> None:
    """The same tiny grid run twice at once; a cell busy in the other sweep was a
    failure (exit 1, CellBusyError) though every cell finished."""
    grid = tmp_path / "grid.json"
    base = {**tiny_base(data_root), "epochs": 3, "track_steps": [[0, 9]]}
    grid.write_text(json.dumps({"base": base, "axes": {"seed": [1, 2, 3, 4]}}), encoding="utf-8")
    out = tmp_path / "out"
    script = "import sys\nfrom sgdwalk.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    command = [sys.executable, "-c", script, "sweep", str(grid), "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)]
    sweeps.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment))
    outputs = [process.communicate(timeout=300) for process in sweeps]
    for process, (stdout, stderr) in zip(sweeps, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
        assert "4 finished" in stdout and "failed" not in stdout
    for config in expand_grid(read_grid(grid)):
        run = load_run(cell_dir(out, config))  # each record once, in order
        assert run.status == "finished" and list(run.steps["step"]) == list(range(9))


def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path: Path, data_root: Path) -> None:
    good = WalkConfig.from_dict(tiny_base(data_root))
    # Validated only when the data are known: a batch larger than the 120 training images.
    bad = good.replace(batch_size=500)
    out = tmp_path / "out"
    errors = run_local([bad, good], out)
    assert list(errors) == [bad.result_hash] and "ConfigError" in errors[bad.result_hash]
    rows = summarize_cells([bad, good], out, errors)
    assert [row.status for row in rows] == ["error", "finished"]
    assert rows[1].train_loss is not None and rows[1].measured_steps == 3


@pytest.mark.slow  # 6 s: kept out of the quick tier's minute, run by scripts/test.sh
def test_two_workers_run_cells_in_forked_server_processes(tmp_path: Path, data_root: Path) -> None:
    configs = expand_grid(tiny_grid(data_root, seed=[1, 2]))
    assert run_local(configs, tmp_path / "out", workers=2) == {}
    assert [cell_status(cell_dir(tmp_path / "out", c)) for c in configs] == ["finished", "finished"]


# --------------------------------------------------------------------------- submitit
# submitit's DebugJob adds logging.FileHandlers for a job's logs and removes them without
# closing them: the files are closed by the garbage collector, with a ResourceWarning.
DEBUG_JOB_LOG_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*submitit/DEBUG_:pytest.PytestUnraisableExceptionWarning"
)


@DEBUG_JOB_LOG_LEAK
def test_a_job_array_is_built_with_submitits_debug_executor(tmp_path: Path, data_root: Path) -> None:
    configs = expand_grid(tiny_grid(data_root, seed=[1, 2, 3]))
    out = tmp_path / "out"
    run_cell(configs[0].to_dict(), str(out))  # done already: not submitted
    jobs = submit_cells(configs, out, cluster="debug", options=SlurmOptions(gpus_per_node=0))
    assert [config.seed for config, _ in jobs] == [2, 3]
    assert [Path(job.result()) for _, job in jobs] == [cell_dir(out.resolve(), c) for c, _ in jobs]
    assert [cell_status(cell_dir(out, c)) for c in configs] == ["finished"] * 3
    assert (out / sweep.SUBMITIT_FOLDER).is_dir()


@DEBUG_JOB_LOG_LEAK
def test_slurm_parameters_reach_the_executor(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    seen: dict[str, Any] = {}
    original = submitit.AutoExecutor.update_parameters

    def spy(self: submitit.AutoExecutor, **kwargs: Any) -> None:
        seen.update(kwargs)
        original(self, **kwargs)

    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", spy)
    options = SlurmOptions(
        partition="gpu", time_min=30, gpus_per_node=0, cpus_per_task=2, mem_gb=8, array_parallelism=3
    )
    configs = expand_grid(tiny_grid(data_root, seed=[1]))
    for _, job in submit_cells(configs, tmp_path / "out", cluster="debug", options=options):
        job.result()
    assert seen == {
        "name": "sgdwalk-sweep",
        "timeout_min": 30,
        "gpus_per_node": 0,
        "cpus_per_task": 2,
        "mem_gb": 8,
        "slurm_array_parallelism": 3,
        "slurm_partition": "gpu",
    }


# ------------------------------------------------------------------ the claims engine
def test_the_run_cache_reads_finished_cells_instead_of_training(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    in_memory = run_walk(config)
    out = tmp_path / "out"
    run_cell(config.to_dict(), str(out))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache trained instead of reading the cell")

    monkeypatch.setattr("sgdwalk.claims.sweep_cache.run_walk", no_training)
    monkeypatch.setattr("sgdwalk.runs.runner.run_walk", no_training)
    cache = SweepRunCache(out_root=out)
    # The claim engine asks with out_dir=None and progress=False: the same run.
    result = cache.run(config.replace(out_dir=None, progress=False))
    assert cache.reused and result.status == "finished"
    assert [r.as_dict() for r in result.records] == [r.as_dict() for r in in_memory.records]

    def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]

    assert without_timing(result.history) == without_timing(in_memory.history)
    assert result.windows == in_memory.windows


def test_the_run_cache_writes_missing_cells_when_asked(tmp_path: Path, data_root: Path) -> None:
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    out = tmp_path / "out"
    SweepRunCache(out_root=out).run(config)
    assert cell_status(cell_dir(out, config)) == "finished"
    SweepRunCache(out_root=out / "untouched", write=False).run(config)
    assert not (out / "untouched").exists()


# --------------------------------------------------------------------------------- CLI
@DEBUG_JOB_LOG_LEAK
def test_the_sweep_command_runs_a_grid_file_and_prints_the_table(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": tiny_base(data_root), "axes": {"seed": [1, 2]}}), encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["sweep", str(grid), "--out", str(out), "--dry-run"]) == 0
    assert "2 missing" in capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing, not even the manifest
    assert cli_main(["sweep", str(grid), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 done, 2 to run" in printed and "2 finished" in printed
    assert json.loads((out / sweep.MANIFEST_FILE).read_text(encoding="utf-8"))["cells"][0]["config"]["seed"] == 1
    assert cli_main(["sweep", str(grid), "--out", str(out), "--executor", "debug"]) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out


def test_a_dry_run_prints_each_cells_flops_and_hours_and_their_total(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.json"
    base = {**tiny_base(data_root), "train_subset": SWEEP_TRAIN_IMAGES}  # the cost model reads sizes off the config
    grid.write_text(json.dumps({"base": base, "axes": {"epochs": [1, 2]}}), encoding="utf-8")
    configs = expand_grid(read_grid(grid))
    costs = [run_cost(config).total for config in configs]
    assert costs[1] > costs[0]  # the second epoch trains and evaluates again
    assert cli_main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run", "--tflops", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-2:] == ["FLOPs", "hours"]
    seconds = [flops / 2e12 for flops in costs]
    for line, config, flops, time in zip(lines[2:4], configs, costs, seconds, strict=True):
        assert line.startswith(config.result_hash)
        assert line.split()[-3:] == [*format_flops(flops).split(), f"{time / 3600:.3g}"]
    assert lines[-1] == (
        f"estimated cost of the 2 cells: {format_flops(sum(costs))}, {sum(seconds) / 3600:.3g} h "
        f"({sum(seconds) / 60:.1f} min) at 2 TFLOP/s"
    )
    assert not (tmp_path / "out").exists()


def test_the_cost_line_counts_apart_the_cells_still_to_run() -> None:
    rows = [
        CellRow("a", "finished", {}, None, None, None, flops=3.6e15),
        CellRow("b", "missing", {}, None, None, None, flops=1.8e15),
    ]
    assert format_table(rows, 1e12).splitlines()[-1] == (
        "estimated cost of the 2 cells: 5.4 PFLOP, 1.5 h (90.0 min) at 1 TFLOP/s; "
        "of the 1 still to run: 1.8 PFLOP, 0.5 h (30.0 min)"
    )
    # Rows without FLOPs (a run, not a dry run) show no cost.
    assert "FLOPs" not in format_table([CellRow("a", "finished", {}, None, None, None)])


def test_the_sweep_command_refuses_a_throughput_that_is_not_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\narch = 'mlp'\n", encoding="utf-8")
    assert cli_main(["sweep", str(grid), "--dry-run", "--tflops", "0"]) == 2
    assert "--tflops must be positive, got 0.0" in capsys.readouterr().err


def test_the_sweep_command_says_when_there_is_no_slurm(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, whatever this machine has
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": tiny_base(data_root)}), encoding="utf-8")
    assert cli_main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    assert "submitting to slurm failed" in capsys.readouterr().err


def test_a_cell_of_the_wrong_kind_is_refused_by_a_dry_run_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cell with ``batch_size = 2.5`` passed ``--dry-run``, then failed and stayed "running"."""
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\nbatch_size = 2.5\n", encoding="utf-8")
    assert cli_main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "sgdwalk sweep: error: cells[0]: batch_size must be an integer, got 2.5"
    assert not (tmp_path / "out").exists()


def test_the_sweep_command_refuses_a_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text('{"axes": {"lr": 0.1}}', encoding="utf-8")
    assert cli_main(["sweep", str(grid)]) == 2
    assert "non-empty list" in capsys.readouterr().err


# -------------------------------------------------------------------------- benchmark
@pytest.mark.slow  # 6 s: kept out of the quick tier's minute, run by scripts/test.sh
def test_the_gpu_speed_benchmark_runs_on_a_cpu_at_tiny_size(tmp_path: Path) -> None:
    """A smoke call: the script runs end to end and writes its JSON (its numbers mean nothing here)."""
    out = tmp_path / "speed.json"
    script = runpy.run_path(str(REPO / "benchmarks" / "gpu_speed.py"), run_name="gpu_speed")
    assert script["main"](["--device", "cpu", "--tiny", "--precision", "--out", str(out)]) == 0
    numbers = json.loads(out.read_text(encoding="utf-8"))
    assert numbers["device_name"].startswith("cpu") and numbers["tier"] is None
    assert len(numbers["images_per_second"]) == 9 and all(v > 0 for v in numbers["images_per_second"].values())
    assert numbers["precision_policy"] == "keep float32 for measurements"


def test_a_cells_data_loads_for_a_subset_smaller_than_the_default_measurement_set(fashion_root: Path) -> None:
    # The data-only config must not inherit the default measurement size (1,000), which a
    # subset of 50 images would refuse (the gpu tier's tiny profile reads 100-200 images).
    from sgdwalk.runs.sweep import load_cell_data

    config = WalkConfig(data_root=str(fashion_root), train_subset=50, measurement_size=16, track_epochs=(), epochs=1)
    assert load_cell_data(config).train_targets.shape[0] == 50
