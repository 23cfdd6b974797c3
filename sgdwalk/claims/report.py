"""The claims ledger: the JSON report the pytest plugin writes, and pure functions over it.

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "created": "2025-01-31T12:00:00+00:00",          # ISO 8601, UTC
      "pytest_args": ["suites/real", "--runslow"],
      "versions": {"python": "3.11.7", "pytest": "9.2.0", "torch": "2.4.0", ...},
      "settings": {"seeds": [2001, 2002, 2003, 2004, 2005]},   # optional, see below
      "claims": [
        {
          "id": "C3",                                   # a key of sgdwalk.claims.registry.CLAIMS
          "test": "suites/real/test_claims.py::test_claim[C3-mlp-batch-cosine]",   # pytest node id
          "statement": "At a fixed learning rate, ...",
          "tier": "real",                               # unit | synthetic | real | gpu
          "setting": {"lr": 0.1, "batch": 64, ...},     # free JSON
          "statistics": [
            {"name": "mean_cosine_gap", "value": 0.123, "interval": [0.05, 0.2],
             "bound": 0.0, "relation": ">", "held": true, "detail": ""}
          ],
          "notes": ["free text"],
          "outcome": "passed",          # passed|failed|error|skipped|xfailed|xpassed
          "reason": "",                 # skip/xfail reason or the failure's first line
          "duration_s": 1.25,           # call phase only
          "device": "cpu"
        }
      ]
    }

Non-finite statistic values are written as the strings "nan", "inf", "-inf" so that the
file stays strict JSON (jq, browsers); ``load_report`` turns them back into floats (the
package's one rule, ``sgdwalk.base.json_data``).
``settings`` (absent when empty) holds what the session set for every claim at once: the
seeds of ``--sgdwalk-seeds``. Merged reports (``merge_reports``) also carry ``merged_from``:
the created/pytest_args/versions (and settings) of each input.

Regression rule used by ``compare_reports``: a claim regresses when its baseline outcome
is ``passed`` and its new outcome is ``failed`` or ``error``, or it was not checked: missing
from the new report or skipped there (unless that is allowed: a claim not checked is not
known to hold, and a tier run without its data or its ``--runslow`` skips them all); and
whatever its baseline, when its new outcome is ``xpassed``: an xfail that passes no longer
describes the claim (under this project's ``xfail_strict = true`` it fails the run too), and
its baseline must be made again. A claim whose check itself changed is ``changed``, which fails the comparison
as a regression does: another claim id, other statistics (by name), or other seeds, in its
setting or in the session's ``settings``; its baseline is then about another check. Every
other change of outcome is a flip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from sgdwalk.base.atomic import atomic_write_text
from sgdwalk.base.errors import SgdwalkError
from sgdwalk.base.json_data import dumps, float_from_json, float_to_json
from sgdwalk.base.tables import text_table
from sgdwalk.claims.registry import CLAIMS

__all__ = [
    "OUTCOMES",
    "REGRESSING_OUTCOMES",
    "RELATIONS",
    "SCHEMA_VERSION",
    "TIERS",
    "ClaimEntry",
    "ClaimsReport",
    "Comparison",
    "ComparisonRow",
    "ReportError",
    "Statistic",
    "compare_reports",
    "format_comparison",
    "format_statistic",
    "format_value",
    "load_report",
    "main_statistic",
    "merge_reports",
    "relation_holds",
    "render_markdown_table",
    "report_from_dict",
    "report_to_dict",
    "save_report",
]

SCHEMA_VERSION: Final = 1
Relation = Literal["<", "<=", ">", ">="]
RELATIONS: Final[tuple[str, ...]] = ("<", "<=", ">", ">=")
TIERS: Final[tuple[str, ...]] = ("unit", "synthetic", "real", "gpu")
OUTCOMES: Final[tuple[str, ...]] = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
# Outcomes that turn a baseline "passed" into a regression (see the module docstring).
REGRESSING_OUTCOMES: Final[frozenset[str]] = frozenset({"failed", "error", "xpassed"})
# Outcomes of a claim that was not checked: a regression from "passed" unless allowed.
UNCHECKED_OUTCOMES: Final[frozenset[str]] = frozenset({"skipped", "missing"})
MISSING: Final = "missing"


class ReportError(SgdwalkError, ValueError):
    """A report file that cannot be read or does not follow the schema."""


def relation_holds(value: float, relation: str, bound: float) -> bool:
    """Whether ``value relation bound``; NaN never holds, as with a plain comparison."""
    if relation == "<":
        return value < bound
    if relation == "<=":
        return value <= bound
    if relation == ">":
        return value > bound
    if relation == ">=":
        return value >= bound
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def format_value(value: float) -> str:
    """Four significant digits: enough to judge a statistic against its bound at a glance."""
    return f"{value:.4g}"


@dataclass(frozen=True)
class Statistic:
    """One measured statistic held against a bound: ``value relation bound``."""

    name: str
    value: float
    bound: float
    relation: str
    held: bool
    interval: tuple[float, float] | None = None
    detail: str = ""


def format_statistic(statistic: Statistic) -> str:
    """``name = value [lo, hi] relation bound PASS|FAIL``, ASCII only (CI logs, Windows)."""
    interval = ""
    if statistic.interval is not None:
        low, high = statistic.interval
        interval = f" [{format_value(low)}, {format_value(high)}]"
    verdict = "PASS" if statistic.held else "FAIL"
    text = (
        f"{statistic.name} = {format_value(statistic.value)}{interval} "
        f"{statistic.relation} {format_value(statistic.bound)} {verdict}"
    )
    return f"{text} ({statistic.detail})" if statistic.detail else text


@dataclass(frozen=True)
class ClaimEntry:
    """The outcome of one claim test (one pytest item)."""

    id: str
    test: str
    statement: str
    tier: str
    outcome: str
    setting: Mapping[str, Any] = field(default_factory=dict)
    statistics: tuple[Statistic, ...] = ()
    notes: tuple[str, ...] = ()
    reason: str = ""
    duration_s: float = 0.0
    device: str = "cpu"


@dataclass(frozen=True)
class ClaimsReport:
    created: str
    pytest_args: tuple[str, ...]
    versions: Mapping[str, str | None]
    claims: tuple[ClaimEntry, ...]
    merged_from: tuple[Mapping[str, Any], ...] = ()
    schema_version: int = SCHEMA_VERSION
    # What the session set for every claim (``{"seeds": [...]}`` from --sgdwalk-seeds); each
    # entry's own setting records what it ran with.
    settings: Mapping[str, Any] = field(default_factory=dict)


def main_statistic(entry: ClaimEntry) -> Statistic | None:
    """The statistic to show in one table cell: the first that failed, else the first."""
    for statistic in entry.statistics:
        if not statistic.held:
            return statistic
    return entry.statistics[0] if entry.statistics else None


# --------------------------------------------------------------------------- (de)serialise


def _float_from_json(raw: object, where: str) -> float:
    try:
        return float_from_json(raw)
    except ValueError as error:
        raise ReportError(f"{where}: {error}") from None


def _statistic_to_dict(statistic: Statistic) -> dict[str, Any]:
    return {
        "name": statistic.name,
        "value": float_to_json(statistic.value),
        "interval": (None if statistic.interval is None else [float_to_json(bound) for bound in statistic.interval]),
        "bound": float_to_json(statistic.bound),
        "relation": statistic.relation,
        "held": statistic.held,
        "detail": statistic.detail,
    }


def entry_to_dict(entry: ClaimEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "test": entry.test,
        "statement": entry.statement,
        "tier": entry.tier,
        "setting": dict(entry.setting),
        "statistics": [_statistic_to_dict(statistic) for statistic in entry.statistics],
        "notes": list(entry.notes),
        "outcome": entry.outcome,
        "reason": entry.reason,
        "duration_s": entry.duration_s,
        "device": entry.device,
    }


def report_to_dict(report: ClaimsReport) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema_version": report.schema_version,
        "created": report.created,
        "pytest_args": list(report.pytest_args),
        "versions": dict(report.versions),
        # Only when set, so that reports of sessions that set nothing read as before.
        **({"settings": dict(report.settings)} if report.settings else {}),
        "claims": [entry_to_dict(entry) for entry in report.claims],
    }
    if report.merged_from:
        document["merged_from"] = [dict(source) for source in report.merged_from]
    return document


def _require(document: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in document:
        raise ReportError(f"{where}: missing key {key!r}")
    value = document[key]
    # bool is an int subclass; a flag where a number belongs is a schema error.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ReportError(f"{where}.{key}: expected {kind}, got {value!r}")
    if not isinstance(value, kind):
        raise ReportError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _statistic_from_dict(raw: object, where: str) -> Statistic:
    if not isinstance(raw, dict):
        raise ReportError(f"{where}: expected an object")
    relation = _require(raw, "relation", str, where)
    if relation not in RELATIONS:
        raise ReportError(f"{where}.relation: expected one of {RELATIONS}, got {relation!r}")
    interval_raw = raw.get("interval")
    interval: tuple[float, float] | None = None
    if interval_raw is not None:
        if not isinstance(interval_raw, list) or len(interval_raw) != 2:
            raise ReportError(f"{where}.interval: expected [low, high] or null")
        interval = (
            _float_from_json(interval_raw[0], f"{where}.interval[0]"),
            _float_from_json(interval_raw[1], f"{where}.interval[1]"),
        )
    if "value" not in raw or "bound" not in raw:
        raise ReportError(f"{where}: missing key 'value' or 'bound'")
    return Statistic(
        name=_require(raw, "name", str, where),
        value=_float_from_json(raw["value"], f"{where}.value"),
        bound=_float_from_json(raw["bound"], f"{where}.bound"),
        relation=relation,
        held=_require(raw, "held", bool, where),
        interval=interval,
        detail=str(raw.get("detail", "")),
    )


def entry_from_dict(raw: object, where: str) -> ClaimEntry:
    if not isinstance(raw, dict):
        raise ReportError(f"{where}: expected an object")
    outcome = _require(raw, "outcome", str, where)
    if outcome not in OUTCOMES:
        raise ReportError(f"{where}.outcome: expected one of {OUTCOMES}, got {outcome!r}")
    tier = _require(raw, "tier", str, where)
    if tier not in TIERS:
        raise ReportError(f"{where}.tier: expected one of {TIERS}, got {tier!r}")
    statistics_raw = _require(raw, "statistics", list, where)
    notes_raw = raw.get("notes", [])
    if not isinstance(notes_raw, list) or not all(isinstance(note, str) for note in notes_raw):
        raise ReportError(f"{where}.notes: expected a list of strings")
    return ClaimEntry(
        # Ids are not checked against the registry: old reports must stay readable after
        # a claim is renamed or retired.
        id=_require(raw, "id", str, where),
        test=_require(raw, "test", str, where),
        statement=_require(raw, "statement", str, where),
        tier=tier,
        outcome=outcome,
        setting=_require(raw, "setting", dict, where),
        statistics=tuple(
            _statistic_from_dict(statistic, f"{where}.statistics[{index}]")
            for index, statistic in enumerate(statistics_raw)
        ),
        notes=tuple(notes_raw),
        reason=_require(raw, "reason", str, where),
        duration_s=float(_require(raw, "duration_s", (int, float), where)),
        device=_require(raw, "device", str, where),
    )


def report_from_dict(document: object) -> ClaimsReport:
    """Validate a decoded JSON document against schema 1; ReportError says where it breaks."""
    if not isinstance(document, dict):
        raise ReportError("report: expected a JSON object at the top level")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportError(f"report: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    claims_raw = _require(document, "claims", list, "report")
    claims = tuple(entry_from_dict(raw, f"claims[{index}]") for index, raw in enumerate(claims_raw))
    seen: set[str] = set()
    for entry in claims:
        # Entries are matched by node id when comparing; duplicates would make that ambiguous.
        if entry.test in seen:
            raise ReportError(f"report: test {entry.test!r} appears more than once")
        seen.add(entry.test)
    versions = _require(document, "versions", dict, "report")
    pytest_args = _require(document, "pytest_args", list, "report")
    merged_from = document.get("merged_from", [])
    if not isinstance(merged_from, list) or not all(isinstance(item, dict) for item in merged_from):
        raise ReportError("report.merged_from: expected a list of objects")
    settings = document.get("settings", {})
    if not isinstance(settings, dict):
        raise ReportError("report.settings: expected an object")
    return ClaimsReport(
        created=_require(document, "created", str, "report"),
        pytest_args=tuple(str(arg) for arg in pytest_args),
        versions={str(name): None if value is None else str(value) for name, value in versions.items()},
        claims=claims,
        merged_from=tuple(merged_from),
        settings=settings,
    )


def load_report(path: str | os.PathLike[str]) -> ClaimsReport:
    """Read and validate a report; ReportError for a missing, non-JSON or off-schema file."""
    report_path = Path(path)
    try:
        text = report_path.read_text(encoding="utf-8")
    except OSError as error:
        raise ReportError(f"{report_path}: cannot read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ReportError(f"{report_path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{report_path}: not valid JSON ({error})") from error
    try:
        return report_from_dict(document)
    except ReportError as error:
        raise ReportError(f"{report_path}: {error}") from error


def save_report(report: ClaimsReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as strict JSON (parent folders created); returns the path written."""
    report_path = Path(path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all, so a crashed run never leaves half a ledger behind.
    return atomic_write_text(report_path, dumps(report_to_dict(report), indent=2) + "\n")


# --------------------------------------------------------------------------- ordering


def _row_sort_key(row: ComparisonRow) -> tuple[int, str, str]:
    entry = row.new or row.baseline
    assert entry is not None  # a row is made for a test in the baseline, the new report or both
    return _claim_sort_key(entry)


def _claim_sort_key(entry: ClaimEntry) -> tuple[int, str, str]:
    # Registry order (C1..C11, S1..S9, X1-X3), not string order (C10 before C2).
    registry_order = {claim_id: index for index, claim_id in enumerate(CLAIMS)}
    return (registry_order.get(entry.id, len(registry_order)), entry.id, entry.test)


def sorted_entries(entries: Iterable[ClaimEntry]) -> list[ClaimEntry]:
    return sorted(entries, key=_claim_sort_key)


# --------------------------------------------------------------------------- compare


Verdict = Literal["same", "regression", "changed", "flip"]


@dataclass(frozen=True)
class ComparisonRow:
    """One claim test in both reports; ``changes`` says what of its check differs (``changed``)."""

    test: str
    claim_id: str
    baseline: ClaimEntry | None
    new: ClaimEntry | None
    verdict: Verdict
    changes: tuple[str, ...] = ()

    @property
    def baseline_outcome(self) -> str:
        return self.baseline.outcome if self.baseline is not None else MISSING

    @property
    def new_outcome(self) -> str:
        return self.new.outcome if self.new is not None else MISSING


@dataclass(frozen=True)
class Comparison:
    rows: tuple[ComparisonRow, ...]
    allow_missing: bool
    # The sessions' settings (``ClaimsReport.settings``: the seeds of --sgdwalk-seeds) where
    # they differ, baseline's then new's; None where they agree.
    settings_differ: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None

    @property
    def regressions(self) -> tuple[ComparisonRow, ...]:
        return tuple(row for row in self.rows if row.verdict == "regression")

    @property
    def changed(self) -> tuple[ComparisonRow, ...]:
        return tuple(row for row in self.rows if row.verdict == "changed")

    @property
    def flips(self) -> tuple[ComparisonRow, ...]:
        return tuple(row for row in self.rows if row.verdict == "flip")

    @property
    def failed(self) -> bool:
        """Whether the new report does not hold what the baseline did: a regression, a check
        that changed, or sessions run on other settings (seeds)."""
        return bool(self.regressions or self.changed or self.settings_differ)


def _verdict(baseline_outcome: str, new_outcome: str, allow_missing: bool) -> Verdict:
    # An xfail that passes, whatever the baseline held (an xpass there too): its xfail no longer
    # describes the claim.
    if new_outcome == "xpassed":
        return "regression"
    if baseline_outcome == new_outcome:
        return "same"
    if baseline_outcome == "passed":
        if new_outcome in REGRESSING_OUTCOMES:
            return "regression"
        if new_outcome in UNCHECKED_OUTCOMES and not allow_missing:
            return "regression"
    return "flip"


def _statistic_names(entry: ClaimEntry) -> tuple[str, ...]:
    return tuple(statistic.name for statistic in entry.statistics)


def check_changes(baseline: ClaimEntry, new: ClaimEntry) -> tuple[str, ...]:
    """What of the check itself differs between two entries of one test: its claim id, its
    statistics' names (where both have statistics: a skipped or broken test has none) and its
    seeds (where both settings name them). Values, outcomes and settings the run chose from
    its data (a tuned learning rate) are the measurement, not the check."""
    changes: list[str] = []
    if baseline.id != new.id:
        changes.append(f"claim {baseline.id} -> {new.id}")
    if baseline.statistics and new.statistics and _statistic_names(baseline) != _statistic_names(new):
        changes.append(f"statistics {list(_statistic_names(baseline))} -> {list(_statistic_names(new))}")
    old_seeds, new_seeds = baseline.setting.get("seeds"), new.setting.get("seeds")
    if old_seeds is not None and new_seeds is not None and list(old_seeds) != list(new_seeds):
        changes.append(f"seeds {list(old_seeds)} -> {list(new_seeds)}")
    return tuple(changes)


def compare_reports(baseline: ClaimsReport, new: ClaimsReport, *, allow_missing: bool = False) -> Comparison:
    """Match entries by test node id and classify each as same / regression / changed / flip."""
    baseline_by_test = {entry.test: entry for entry in baseline.claims}
    new_by_test = {entry.test: entry for entry in new.claims}
    rows: list[ComparisonRow] = []
    for test in {*baseline_by_test, *new_by_test}:
        baseline_entry = baseline_by_test.get(test)
        new_entry = new_by_test.get(test)
        # The id can change with a re-labelled test; the new report's id is the current one.
        shown = new_entry if new_entry is not None else baseline_entry
        assert shown is not None
        verdict = _verdict(
            baseline_entry.outcome if baseline_entry else MISSING,
            new_entry.outcome if new_entry else MISSING,
            allow_missing,
        )
        changes = check_changes(baseline_entry, new_entry) if baseline_entry and new_entry else ()
        if changes and verdict != "regression":
            verdict = "changed"
        rows.append(
            ComparisonRow(
                test=test,
                claim_id=shown.id,
                baseline=baseline_entry,
                new=new_entry,
                verdict=verdict,
                changes=changes,
            )
        )
    rows.sort(key=_row_sort_key)
    # A merged report keeps only the settings all its inputs shared (none where they differ),
    # so a merged one without settings says nothing of its entries' sessions: there each
    # entry's own seeds are compared.
    sessions_comparable = not any(report.merged_from and not report.settings for report in (baseline, new))
    settings_differ = (
        (baseline.settings, new.settings)
        if sessions_comparable and dict(baseline.settings) != dict(new.settings)
        else None
    )
    return Comparison(rows=tuple(rows), allow_missing=allow_missing, settings_differ=settings_differ)


def _statistic_cell(entry: ClaimEntry | None) -> str:
    if entry is None:
        return "-"
    statistic = main_statistic(entry)
    if statistic is None:
        return "-"
    return f"{statistic.name} = {format_value(statistic.value)} {statistic.relation} {format_value(statistic.bound)}"


def short_test_name(test: str) -> str:
    """``path/to/test_x.py::TestA::test_b[p]`` -> ``test_x.py::TestA::test_b[p]``."""
    path, separator, rest = test.partition("::")
    return f"{path.rsplit('/', 1)[-1]}{separator}{rest}"


def format_comparison(comparison: Comparison) -> str:
    """The table, then one ``REGRESSION:`` or ``FLIP:`` line per changed claim, then a total."""
    header = ("claim", "test", "baseline", "statistic", "new", "statistic", "verdict")
    table_rows = [
        (
            row.claim_id,
            short_test_name(row.test),
            row.baseline_outcome,
            _statistic_cell(row.baseline),
            row.new_outcome,
            _statistic_cell(row.new),
            {"same": "", "regression": "REGRESSION", "changed": "CHANGED", "flip": "FLIP"}[row.verdict],
        )
        for row in comparison.rows
    ]
    lines = text_table(header, table_rows, rule=True) if table_rows else ["(no claims in either report)"]
    lines.append("")
    if comparison.settings_differ is not None:
        old_settings, new_settings = comparison.settings_differ
        lines.append(
            f"SETTINGS: the sessions ran with other settings: {dict(old_settings)} -> {dict(new_settings)} "
            "(compare a report with the baseline of its own seeds)"
        )
    for row in comparison.rows:
        if row.verdict == "same":
            continue
        label = {"regression": "REGRESSION", "changed": "CHANGED", "flip": "FLIP"}[row.verdict]
        why = ""
        if row.changes:
            why = f" (the check changed: {'; '.join(row.changes)})"
        elif row.new is not None and row.new.reason:
            why = f" ({row.new.reason})"
        lines.append(f"{label}: {row.claim_id} {row.test}: {row.baseline_outcome} -> {row.new_outcome}{why}")
    lines.append(
        f"{len(comparison.rows)} claim tests compared: {len(comparison.regressions)} regressions, "
        f"{len(comparison.changed)} changed, {len(comparison.flips)} flips"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- merge


def merge_reports(reports: Sequence[ClaimsReport]) -> tuple[ClaimsReport, tuple[str, ...]]:
    """One report holding every entry; a test found in several reports keeps the last one.

    Returns the merged report and the node ids that a later report replaced. Top-level
    ``versions`` are the first report's, ``settings`` those all inputs share (none where they
    differ); each input's own are kept in ``merged_from``.
    """
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    by_test: dict[str, ClaimEntry] = {}
    replaced: list[str] = []
    merged_from: list[Mapping[str, Any]] = []
    for report in reports:
        for entry in report.claims:
            if entry.test in by_test:
                replaced.append(entry.test)
            by_test[entry.test] = entry
        # A merged input contributes its own sources, so provenance survives re-merging.
        merged_from.extend(
            report.merged_from
            or (
                {
                    "created": report.created,
                    "pytest_args": list(report.pytest_args),
                    "versions": dict(report.versions),
                    **({"settings": dict(report.settings)} if report.settings else {}),
                },
            )
        )
    merged = replace(
        reports[0],
        created=max(report.created for report in reports),
        pytest_args=(),
        claims=tuple(sorted_entries(by_test.values())),
        merged_from=tuple(merged_from),
        settings=reports[0].settings if all(report.settings == reports[0].settings for report in reports) else {},
    )
    return merged, tuple(replaced)


# --------------------------------------------------------------------------- markdown


def _markdown_cell(text: str) -> str:
    # A bare "|" would end the cell; newlines would end the row.
    return text.replace("|", "\\|").replace("\n", " ")


def _outcome_cell(entry: ClaimEntry) -> str:
    if entry.reason and entry.outcome != "passed":
        return f"{entry.outcome}: {entry.reason}"
    return entry.outcome


def render_markdown_table(report: ClaimsReport) -> str:
    """The README table: claim, statement, tier, statistics, outcome; one row per test."""
    lines = [
        "| claim | statement | tier | statistic | outcome |",
        "|---|---|---|---|---|",
    ]
    for entry in sorted_entries(report.claims):
        statistics = "<br>".join(format_statistic(statistic) for statistic in entry.statistics) or "-"
        cells = (entry.id, entry.statement, entry.tier, statistics, _outcome_cell(entry))
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- replication
NOT_REPLICATED: Final = "not replicated"


def _seeds_cell(entry: ClaimEntry | None) -> str:
    seeds = None if entry is None else entry.setting.get("seeds")
    return ",".join(str(seed) for seed in seeds) if isinstance(seeds, list) else "-"


def _decisive_cell(entry: ClaimEntry | None) -> str:
    statistic = None if entry is None else main_statistic(entry)
    if statistic is None:
        return "-"
    interval = "" if statistic.interval is None else f" [{', '.join(map(format_value, statistic.interval))}]"
    return f"{format_value(statistic.value)}{interval}"


def replication_rows(first: ClaimsReport, second: ClaimsReport) -> list[tuple[str, ...]]:
    """One row per test of either report: each seed set's seeds, outcome and decisive value
    (with its interval), and whether the two outcomes agree ("replicated") or not."""
    rows: list[tuple[str, ...]] = []
    for row in compare_reports(first, second, allow_missing=True).rows:
        agreed = row.baseline_outcome == row.new_outcome
        rows.append(
            (
                row.claim_id,
                short_test_name(row.test).split("[", 1)[-1].rstrip("]"),
                f"{row.baseline_outcome} ({_seeds_cell(row.baseline)})",
                _decisive_cell(row.baseline),
                f"{row.new_outcome} ({_seeds_cell(row.new)})",
                _decisive_cell(row.new),
                "replicated" if agreed else NOT_REPLICATED,
            )
        )
    return rows


def render_replication_table(first: ClaimsReport, second: ClaimsReport) -> str:
    """Markdown: each check's outcome on two seed sets side by side, and whether they agree."""
    lines = [
        "| claim | check | first seeds: outcome | value [95% CI] | second seeds: outcome | value [95% CI] | |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = replication_rows(first, second)
    for cells in rows:
        marked = tuple(f"**{cell}**" if cell == NOT_REPLICATED else cell for cell in cells)
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in marked) + " |")
    differing = sum(cells[-1] == NOT_REPLICATED for cells in rows)
    lines.append("")
    lines.append(f"{len(rows) - differing} of {len(rows)} checks replicated; {differing} not replicated.")
    return "\n".join(lines) + "\n"
