"""``sgdwalk walk``: train a network, measure its walk, write the records, print the summary.

Every ``WalkConfig`` field is a flag, made from its declaration (``sgdwalk.cli.setting_flags``).
Flags override ``--config FILE``, which overrides the defaults. Flag defaults are ``argparse.SUPPRESS`` so that only flags actually given
reach the config (the help text shows the ``WalkConfig`` default instead).
"""

from __future__ import annotations

import argparse
import datetime as _datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sgdwalk.base.settings import declared_fields, sections
from sgdwalk.cli.exits import EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, usage_error
from sgdwalk.cli.setting_flags import add_setting_flags, fields_in_section
from sgdwalk.integrations.sink_spec import log_to_help
from sgdwalk.training.config import FILES, ConfigError, WalkConfig, read_config_file

# Where runs go when --out is not given (relative to the working directory).
DEFAULT_RUNS_ROOT: Final = Path("runs")

DESCRIPTION: Final = """\
Train a network and measure, at the tracked steps, the loss along each update step
(valley floor, height, barriers), the cosine of consecutive gradients and the distance
from initialization (definitions: docs/definitions.md).

The defaults are a laptop run (about a minute on two shared CPU cores): the paper's MLP on
10,000 Fashion-MNIST images, 5 epochs, the first 50 steps of epochs 1 and 5 measured on
1,000 training images. The paper's CIFAR-10 protocol is, for example:
  sgdwalk walk --arch vgg11 --data cifar10 --augment --train-subset 0 --epochs 100 \\
      --track-epochs 1,10,25,100 --steps-per-window 0 --measurement-size 0
"""

EPILOG: Final = """\
Records (in --out DIR): config.json, metadata.json, steps.jsonl (one line per measured
step, flushed as it is made), epochs.jsonl, summary.json, checkpoint.pt. Read them with
sgdwalk.runs.runlog.load_run(DIR); figures go to DIR/figures.

For optional numbers, 0 or "none" means none (no limit, never).

Exit codes: 0 finished, 2 bad flags / configuration / data set not found / unusable run
directory / a run directory another process is writing, 3 the run diverged (a non-finite
loss, or one past 1000 times its start; records kept), 1 the run directory could not be
written (a full disk: one line; resume with --resume DIR once there is room), 130
interrupted (resume with --resume DIR).

Under torchrun (torchrun --nproc-per-node N -m sgdwalk walk ...) the run trains with
DistributedDataParallel, each process on an equal share of every global minibatch of
--batch-size, and measures its share of the measurement set's chunks (choose --chunk-size
so that the set has at least N chunks); process 0 alone writes the run directory and prints.
Batch norm then normalises each process's share of the batch: with it, the updates differ
from a single process's on the same batch. Such a run resumes under the same N
(torchrun --nproc-per-node N -m sgdwalk walk --resume DIR), which continues its trajectory;
--resume under another number of processes is refused (exit 2).
"""


def _flag(field_name: str) -> str:
    (field,) = (field for field in declared_fields(WalkConfig) if field.name == field_name)
    return field.flag


def add_parser(subparsers: Any) -> None:
    """Register ``sgdwalk walk``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "walk",
        help="train a network and measure how SGD walks its loss landscape",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    groups = {}
    for section in sections(WalkConfig):
        groups[section] = group = parser.add_argument_group(section)
        if section == FILES:  # the file that the flags override, listed first among the files
            group.add_argument(
                "--config", metavar="FILE", help="read settings from a JSON or TOML file; flags override it"
            )
        add_setting_flags(
            group,
            fields_in_section(WalkConfig, section),
            shown_defaults={"out_dir": f"{DEFAULT_RUNS_ROOT}/<arch>-<data>-<timestamp>"},
        )
    files = groups[FILES]
    files.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint, with its own config (no other settings)",
    )
    files.add_argument("--no-figures", dest="figures", action="store_false", help="do not draw the figures at the end")
    files.add_argument(
        "--log-to",
        metavar="KIND:WHERE",
        action="append",
        help=log_to_help(),
    )
    parser.set_defaults(func=run_walk_command, _parser=parser)


# ---------------------------------------------------------------------- running
_NON_CONFIG_KEYS: Final = frozenset({"func", "_parser", "config", "resume", "figures", "command", "log_to"})


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key not in _NON_CONFIG_KEYS}


def default_out_dir(config: WalkConfig) -> Path:
    stamp = _datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = DEFAULT_RUNS_ROOT / f"{config.arch}-{config.data}-{stamp}"
    candidate, number = base, 1
    while candidate.exists():  # two runs started in the same second
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def build_config(args: argparse.Namespace) -> WalkConfig:
    """Defaults ← ``--config FILE`` ← flags. Raises ``ConfigError``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(read_config_file(args.config))
    values.update(_given_settings(args))
    config = WalkConfig.from_dict(values)
    if config.out_dir is None:
        config = config.replace(out_dir=str(default_out_dir(config)))
    return config


def _announce(what: str) -> Callable[[Path | None], None]:
    """Say where the records go once the run has really started (data found, folder made)."""

    def announce(run_dir: Path | None) -> None:
        print(f"{what} {run_dir}", file=sys.stderr, flush=True)

    return announce


def _draw_figures(run_dir: Path) -> list[Path] | None:
    """The figures of ``plot_run``, or None when the plotting module is not installed."""
    try:
        from sgdwalk.runs.plots import plot_run
    except ModuleNotFoundError as error:
        if error.name != "sgdwalk.runs.plots":
            raise
        return None
    return list(plot_run(run_dir))


def check_data_root(config: WalkConfig) -> None:
    """An explicit data root must exist (else the search would go on to the system folders
    and read another copy than the one named), unless the data set is to be downloaded into it."""
    if config.data_root is not None and not config.download and not Path(config.data_root).is_dir():
        problem = "is not a folder" if Path(config.data_root).exists() else "does not exist"
        raise ConfigError(
            f"data_root {config.data_root} {problem}; name the folder holding the data set, "
            "or add --download to fetch it there"
        )


def _resume_hint(run_dir: Path) -> str:
    """What to do once the cause is fixed: resume from the last checkpoint, when there is a run."""
    message = _interrupted_message(run_dir)
    return message[message.index("continue") :] if "continue with" in message else "nothing to resume"


def _interrupted_message(run_dir: Path) -> str:
    from sgdwalk.base.errors import SgdwalkError
    from sgdwalk.runs.launch import launched_world_size
    from sgdwalk.runs.runlog import is_run_directory, load_run_metadata
    from sgdwalk.runs.world import recorded_world_size, resume_command

    if is_run_directory(run_dir):
        # The same number of processes: another would split the minibatches differently.
        try:
            world_size = recorded_world_size(load_run_metadata(run_dir))
        except SgdwalkError:  # metadata.json being rewritten as the interrupt came: the command names it
            world_size = launched_world_size()
        return f"sgdwalk walk: interrupted; continue with `{resume_command(run_dir, world_size)}`"
    return f"sgdwalk walk: interrupted before {run_dir} was written; nothing to resume"


def _check_resume_world_size(run_dir: Path) -> None:
    """Refuse, before any process group is made, a resume under another number of processes
    than the run last ran under (``sgdwalk.runs.world``); ``resume_walk`` says why a
    directory that is not a run cannot be resumed."""
    from sgdwalk.runs.launch import launched_world_size
    from sgdwalk.runs.runlog import is_run_directory, load_run_metadata
    from sgdwalk.runs.world import check_resume_world_size

    if is_run_directory(run_dir):
        check_resume_world_size(run_dir, load_run_metadata(run_dir), launched_world_size())


def run_walk_command(args: argparse.Namespace) -> int:
    from sgdwalk.base.errors import SgdwalkError

    parser: argparse.ArgumentParser = args._parser
    resume = args.__dict__.get("resume")
    config: WalkConfig | None = None
    if resume is not None:
        # Settings that leave the records alone may change on resume: the bar, where the tracker keeps its vectors.
        extra = sorted(set(_given_settings(args)) - {"progress", "offload"}) + (
            ["config"] if args.__dict__.get("config") else []
        )
        if extra:
            parser.error(f"--resume uses the run's own config; drop {', '.join(_flag(name) for name in extra)}")
        run_dir = Path(resume)
        try:
            _check_resume_world_size(run_dir)
        except SgdwalkError as error:
            return usage_error("walk", error)
    else:
        # Checked before torch and the data are loaded: a bad setting fails at once, writing nothing.
        try:
            config = build_config(args)
            check_data_root(config)
        except SgdwalkError as error:
            return usage_error("walk", error)
        run_dir = Path(str(config.out_dir))

    from sgdwalk.runs.launched_walk import LaunchedWalk, launch_resume, launch_walk
    from sgdwalk.runs.summary import render_table

    launched = LaunchedWalk(run_dir)
    sink_specs = list(args.__dict__.get("log_to") or [])
    try:
        if config is None:
            progress = args.__dict__.get("progress")
            offload = args.__dict__.get("offload")
            result = launch_resume(
                run_dir, sink_specs, _announce("resuming"), launched, progress=progress, offload=offload
            )
        else:
            result = launch_walk(config, sink_specs, _announce("run directory:"), launched)
    except SgdwalkError as error:  # a bad config, a data set not found, an unusable or busy run directory, --log-to
        return usage_error("walk", error)
    except KeyboardInterrupt:
        if launched.reports:  # under torchrun, process 0 says it for all (Ctrl-C reaches every process)
            print("\n" + _interrupted_message(launched.run_dir), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # the run directory's disk full or gone: its records up to here are whole
        print(f"sgdwalk walk: error: {error}; {_resume_hint(launched.run_dir)}", file=sys.stderr)
        return EXIT_FAILED
    if not launched.reports:  # under torchrun, process 0 reports for all
        return EXIT_DIVERGED if result.diverged else EXIT_OK

    print(render_table(result.windows), end="")
    records_dir = result.run_dir
    print(f"records: {records_dir}")
    if args.__dict__.get("figures", True) and records_dir is not None:
        try:
            figures = _draw_figures(records_dir)
        except Exception as error:  # the records are the product; a figure failing must not hide them
            print(f"sgdwalk walk: figures not drawn: {type(error).__name__}: {error}", file=sys.stderr)
        else:
            if figures is None:
                print("figures: not drawn (sgdwalk.runs.plots is not installed)")
            elif figures:
                print(f"figures: {figures[0].parent} ({len(figures)} files)")
    if result.diverged:
        print(f"sgdwalk walk: the run diverged: {result.divergence} (records kept in {records_dir})", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK
