"""The tracker's private state stays in its module: integrations (the attachment, the
Lightning callback, any new one) use its public hook interface (``begin_optimizer_step``,
``end_optimizer_step``, ``take_noted_loss``, ``closed``), so the tracker can change its
internals without breaking them silently."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
TRACKER_MODULE = "sgdwalk/instrument/tracker.py"


def _names_a_tracker(node: ast.expr) -> bool:
    """``tracker``, ``self.tracker``, ``callback.tracker``, ``self._started()``'s result named so..."""
    if isinstance(node, ast.Name):
        return "tracker" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "tracker" in node.attr.lower()
    return False


def private_tracker_uses(source: str) -> list[tuple[int, str]]:
    """(line, attribute) of every ``<tracker>._name`` in ``source`` (dunder names excepted)."""
    return [
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and _names_a_tracker(node.value)
    ]


def test_the_check_finds_a_reach_in() -> None:
    source = "def hook(tracker, self):\n    tracker._in_step = False\n    return self.tracker._noted_loss\n"
    assert private_tracker_uses(source) == [(2, "_in_step"), (3, "_noted_loss")]
    assert private_tracker_uses("tracker.closed\ntracker.__class__\n") == []


def test_no_private_tracker_member_is_used_outside_its_module() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPOSITORY, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    # Tests may inspect internals on purpose; the package, suites, examples and benchmarks may not.
    scanned = [name for name in listed if name != TRACKER_MODULE and not name.startswith("tests/")]
    found = {
        name: uses
        for name in scanned
        if (uses := private_tracker_uses((REPOSITORY / name).read_text(encoding="utf-8")))
    }
    assert scanned and not found, f"private tracker members used outside {TRACKER_MODULE}: {found}"
