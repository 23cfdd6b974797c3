"""No module of the package is over ``MAX_LINES`` lines unless it is one idea, said here.

A long module that holds several concerns is split by concern (the runner into its data,
builders, distribution and the run; the claims engine into the check, the run cache, tuned
settings and window statistics); one that is long because its one idea is, is listed in
``ONE_IDEA`` with the reason. An entry whose module has come under the limit is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PACKAGE = Path(__file__).resolve().parents[1] / "sgdwalk"

# About what one reader holds in mind at once; past it a module is split unless it is one idea.
MAX_LINES: Final = 500

ONE_IDEA: Final[dict[str, str]] = {
    "instrument/tracker.py": "one class, WalkTracker: the one stateful piece a training loop calls",
    "instrument/measurement.py": "the loss at parameter vectors the model does not hold, and its fast paths",
    "instrument/sharpness.py": "the top Hessian eigenpair: Lanczos on Hessian-vector products, with its error",
    "training/config.py": "one frozen value, WalkConfig, with its fields' documentation and validation",
    "runs/runner.py": "the run itself: _WalkRun from set-up to its last record, and run_walk / resume_walk",
    "runs/runlog.py": "the run directory's files and format, the one place that knows them",
    "runs/sweep.py": "sweeps: a grid of configs, one run directory per cell, run locally or on Slurm",
    "runs/plots.py": "a run's figures: one pure function per figure, sharing one style (colours, gids, helpers)",
    "claims/report.py": "the claims ledger: its JSON schema and the pure functions over it",
    "claims/pytest_plugin.py": "the pytest plugin: claim markers, the claim fixture and the ledger it writes",
}


def module_lines(root: Path = PACKAGE) -> dict[str, int]:
    """Lines of every module under ``root``, by its path relative to it."""
    return {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(root.rglob("*.py"))
    }


def modules_over(lines: dict[str, int], allowed: dict[str, str]) -> dict[str, int]:
    """The modules over ``MAX_LINES`` that ``allowed`` does not name."""
    return {name: count for name, count in lines.items() if count > MAX_LINES and name not in allowed}


def test_no_module_is_over_the_limit_unless_it_is_one_idea() -> None:
    over = modules_over(module_lines(), ONE_IDEA)
    assert not over, (
        f"modules over {MAX_LINES} lines: {over}; split each by concern, or add it to ONE_IDEA with its reason"
    )


def test_each_one_idea_module_is_still_over_the_limit() -> None:
    lines = module_lines()
    stale = {name: lines.get(name) for name in ONE_IDEA if lines.get(name, 0) <= MAX_LINES}
    assert not stale, f"remove these ONE_IDEA entries (gone, or now within {MAX_LINES} lines): {stale}"


def test_the_check_finds_a_long_module_and_lets_a_listed_one_pass(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    lines = module_lines(tmp_path)
    assert lines == {"inner/long.py": MAX_LINES + 1, "short.py": MAX_LINES}
    assert modules_over(lines, {}) == {"inner/long.py": MAX_LINES + 1}
    assert modules_over(lines, {"inner/long.py": "one idea"}) == {}
