"""``sgdwalk sweep GRID``: run every cell of a grid (here, or as a Slurm job array) and tabulate them.

The logic lives in ``sgdwalk.runs.sweep``; this module parses arguments, prints and picks exit codes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from sgdwalk.base.settings import declared_fields
from sgdwalk.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, usage_error
from sgdwalk.cli.setting_flags import add_setting_flags

# Only the Slurm and throughput defaults at import: the sweep module imports torch, which --help must not.
from sgdwalk.runs.slurm_options import SlurmOptions, SlurmOptionsError
from sgdwalk.runs.throughput import ASSUMED_ACHIEVED_FRACTION, DEFAULT_THROUGHPUT_FLOPS, H100_FLOAT32_PEAK_FLOPS, TERA

# Where cells go when --out is not given (relative to the working directory).
DEFAULT_SWEEPS_ROOT: Final = Path("sweeps")
# pool: this machine's processes; slurm: a job array; local / debug: submitit's own
# stand-ins for Slurm (a subprocess per job / in this process), to try a submission here.
EXECUTORS: Final[tuple[str, ...]] = ("pool", "slurm", "local", "debug")
# One cell at a time: the machines this was written on have two cores, shared.
DEFAULT_WORKERS: Final = 1

DESCRIPTION: Final = """\
Run every cell of a grid of `sgdwalk walk` configurations. Each cell is a run directory
OUT/cells/<hash> (the hash of the fields that change the records); cells already finished
are skipped, interrupted ones resume from their last checkpoint, so rerunning the same
command after a crash or a Slurm time-out finishes the sweep.

Grid file (TOML or JSON): a [base] table of WalkConfig fields, an [axes] table of lists whose
cartesian product gives the cells, and optional [[cells]] override tables (each crossed with
the axes). Example: examples/sweep-grid.toml.
"""

EPILOG: Final = """\
Executors:
  pool    (default) a local process pool of --workers processes.
  slurm   one submitit job array (AutoExecutor.map_array), one cell per job, with
          --partition, --time-min, --gpus-per-node, --cpus-per-task, --mem-gb and
          --array-parallelism; returns once submitted unless --wait.
  local   submitit's local executor (a subprocess per cell), waits.
  debug   submitit's debug executor (in this process), waits; a cell that raises opens
          pdb (submitit's debugging behaviour).

A cell another process is running (another sweep of the same grid) is waited for, not failed.

Exit codes: 0 every cell done or submitted, 1 some cell failed, 2 bad grid or flags or a
refused submission (e.g. no Slurm here), 130 interrupted (rerun to resume).
"""


def add_parser(subparsers: Any) -> None:
    """Register ``sgdwalk sweep``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sweep",
        help="run a grid of walks, here or as a Slurm job array",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("grid", metavar="GRID", help="grid file (.toml or .json)")
    parser.add_argument("--out", metavar="DIR", help=f"sweep folder (default: {DEFAULT_SWEEPS_ROOT}/<grid file name>)")
    parser.add_argument("--executor", choices=EXECUTORS, default="pool", help="where cells run (default: pool)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells, their status and their FLOPs and hours by the cost model, run nothing (default: run)",
    )
    parser.add_argument(
        "--tflops",
        type=float,
        default=DEFAULT_THROUGHPUT_FLOPS / TERA,
        metavar="RATE",
        help="device throughput achieved, in TFLOP/s, that --dry-run turns FLOPs into hours with (default: "
        f"{DEFAULT_THROUGHPUT_FLOPS / TERA:.3g}, an H100's {H100_FLOAT32_PEAK_FLOPS / TERA:.0f} TFLOP/s of float32 "
        f"times an assumed {ASSUMED_ACHIEVED_FRACTION}; see sgdwalk/runs/throughput.py)",
    )
    pool = parser.add_argument_group("pool executor")
    pool.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"cells run at once, each with its config's cpu_threads intra-op threads (default: {DEFAULT_WORKERS})",
    )
    slurm = parser.add_argument_group("slurm executor (submitit)")
    add_setting_flags(slurm, declared_fields(SlurmOptions), defaults=SlurmOptions())
    slurm.add_argument(
        "--wait",
        action="store_true",
        help="with --executor slurm, wait for the jobs and print the table (default: return once submitted)",
    )
    parser.set_defaults(func=run_sweep_command)


def _out_root(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else DEFAULT_SWEEPS_ROOT / Path(args.grid).stem


def run_sweep_command(args: argparse.Namespace) -> int:
    from sgdwalk.runs.sweep import (
        SweepError,
        expand_grid,
        format_table,
        pending_configs,
        read_grid,
        run_local,
        submit_cells,
        summarize_cells,
        write_manifest,
    )
    from sgdwalk.training.config import ConfigError

    try:
        configs = expand_grid(read_grid(args.grid))
    except SweepError as error:
        return usage_error("sweep", error)
    if args.workers < 1:
        return usage_error("sweep", f"--workers must be at least 1, got {args.workers}")
    if not args.tflops > 0:
        return usage_error("sweep", f"--tflops must be positive, got {args.tflops}")
    try:
        options = SlurmOptions(**{field.name: getattr(args, field.name) for field in declared_fields(SlurmOptions)})
    except SlurmOptionsError as error:
        return usage_error("sweep", error)
    out_root = _out_root(args)
    todo = pending_configs(configs, out_root)
    print(f"{len(configs)} cells in {out_root}: {len(configs) - len(todo)} done, {len(todo)} to run")
    if args.dry_run:  # writes nothing
        try:
            rows = summarize_cells(configs, out_root, with_cost=True)
        except ConfigError as error:  # a network its data cannot feed (an image too small for it)
            return usage_error("sweep", error)
        sys.stdout.write(format_table(rows, args.tflops * TERA))
        return EXIT_OK
    write_manifest(configs, out_root, args.grid)

    errors: dict[str, str] = {}
    try:
        if args.executor == "pool":

            def report(config: Any, error: str | None) -> None:
                print(f"  {config.result_hash} {'failed: ' + error if error else 'done'}", flush=True)

            def report_busy(config: Any, message: str) -> None:
                print(f"  {config.result_hash} running elsewhere, waiting for it: {message}", flush=True)

            errors = run_local(configs, out_root, workers=args.workers, on_cell=report, on_busy=report_busy)
        else:
            try:
                jobs = submit_cells(configs, out_root, cluster=args.executor, options=options)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:  # no Slurm here, sbatch refused
                return usage_error("sweep", f"submitting to {args.executor} failed: {error}")
            print(
                f"submitted {len(jobs)} jobs ({args.executor}): {', '.join(str(job.job_id) for _, job in jobs[:5])}"
                f"{' ...' if len(jobs) > 5 else ''}; logs in {out_root / 'submitit'}"
            )
            if args.executor == "slurm" and not args.wait:
                print(f"rerun `sgdwalk sweep {args.grid} --out {out_root} --dry-run` for the table")
                return EXIT_OK
            errors = _wait(jobs)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    sys.stdout.write(format_table(summarize_cells(configs, out_root, errors)))
    return EXIT_FAILED if errors else EXIT_OK


def _wait(jobs: list[tuple[Any, Any]]) -> dict[str, str]:
    """Wait for each (config, job); {hash: error} of the cells whose job raised."""
    errors: dict[str, str] = {}
    for config, job in jobs:
        try:
            job.result()
        except Exception as error:  # submitit.FailedJobError / UncompletedJobError, or the cell's own (debug)
            errors[config.result_hash] = (
                f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
            )
    return errors
