"""The sgdwalk pytest plugin: claim markers, the ``claim`` fixture and the JSON ledger.

Loaded through the ``pytest11`` entry point ``sgdwalk`` (``pip install -e .``). Without
the install (or with PYTEST_DISABLE_PLUGIN_AUTOLOAD) load it with ``-p sgdwalk.claims.pytest_plugin``;
never both at once: pluggy refuses one module under two names.

The plugin is loaded in every project whose environment installs sgdwalk, so it owns only
names of its own: ``--sgdwalk-*`` options, the ``claim`` marker and fixture, the
``sgdwalk_*`` fixtures and the ledger. Suite policy (``--runslow``, the ``slow`` and ``gpu``
markers) is each project's own, in its conftest.py; sgdwalk's is in the repository's root
conftest.py.

- ``@pytest.mark.claim("C3")`` ties a test to a registered claim, and
  ``@pytest.mark.claim("W1", statement="...")`` to a claim of the project's own (an id the
  registry does not hold, its statement in the report); a bad marker is a usage error at
  collection time.
- The ``claim`` fixture records the setting and the statistics a claim test measured and
  asserts each statistic against its bound (``claim.check``).
- ``--sgdwalk-report PATH`` writes every claim test's outcome as JSON (schema in
  ``sgdwalk.claims.report``); a short claims table is printed at the end of the run.
- ``--sgdwalk-seeds 2001-2005`` (or ``2001,2002,2003``) gives the seeds the tiers run their
  checks on (``given_seeds``); the report records them in its ``settings``.
- A claim test's tier (the report's ``tier``) is what the ``pytest_sgdwalk_tier`` hook of a
  conftest.py above it answers (``sgdwalk.claims.pytest_hooks``), else ``unit``.

This module and the ledger modules import torch only when a test asks for
``sgdwalk_device``, so that ``pytest --help`` and the unit tier do not pay torch's import
(that also needs ``sgdwalk/__init__.py`` to stay light).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from sgdwalk.base.json_data import to_json_data
from sgdwalk.base.tables import text_table
from sgdwalk.claims.registry import CLAIMS, Claim
from sgdwalk.claims.report import (
    RELATIONS,
    TIERS,
    ClaimEntry,
    ClaimsReport,
    Statistic,
    entry_from_dict,
    entry_to_dict,
    format_statistic,
    main_statistic,
    relation_holds,
    save_report,
    short_test_name,
    sorted_entries,
)
from sgdwalk.training.config import MAX_SEED

if TYPE_CHECKING:
    import torch

__all__ = ["ClaimRecorder", "given_seeds", "is_xdist_worker", "parse_seeds"]

DEVICE_CHOICES: Final[tuple[str, ...]] = ("auto", "cpu", "cuda")
DATA_ROOT_ENV: Final = "SGDWALK_DATA_ROOT"
# The tier of a claim test no conftest.py's pytest_sgdwalk_tier answers for (sgdwalk.claims.pytest_hooks).
DEFAULT_TIER: Final = "unit"
# Package versions stored with every report; read from metadata so torch is not imported.
VERSIONED_PACKAGES: Final[tuple[str, ...]] = ("pytest", "torch", "numpy", "scipy", "sgdwalk")
# More seeds than any check could use (seeds_for_power and seeds_for_replication stop at 200):
# a longer set is a typo (2001-20005), refused before it is built.
MAX_GIVEN_SEEDS: Final = 1_000
SEEDS_USAGE: Final = "give a range (2001-2005) or a list (2001,2002,2003)"
_SEED_ITEM: Final = re.compile(r"([0-9]+)(?:-([0-9]+))?")


# --------------------------------------------------------------------------- seeds


def parse_seeds(text: str) -> tuple[int, ...]:
    """The seeds of ``--sgdwalk-seeds``: a range ``2001-2005`` (both ends in), a list
    ``2001,2002,2003``, or a list of both; ValueError, in one line, for anything else."""
    seeds: list[int] = []
    for item in text.split(","):
        match = _SEED_ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"{item.strip()!r} is not a seed or a range; {SEEDS_USAGE}")
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if last < first:
            raise ValueError(f"the range {item.strip()} runs backwards; {SEEDS_USAGE}")
        if last > MAX_SEED:
            raise ValueError(f"seeds go from 0 to {MAX_SEED} (2**63 - 1)")
        if len(seeds) + last - first + 1 > MAX_GIVEN_SEEDS:
            raise ValueError(f"more than {MAX_GIVEN_SEEDS} seeds")
        seeds.extend(range(first, last + 1))
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"seeds {repeated} are given more than once")
    return tuple(seeds)


def given_seeds(config: pytest.Config) -> tuple[int, ...] | None:
    """The seeds of ``--sgdwalk-seeds``, or None when not given (each tier runs its own)."""
    return config.stash.get(_given_seeds_key, None)


# --------------------------------------------------------------------------- options


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """pytest_sgdwalk_tier: each suite folder's conftest.py declares its tier."""
    from sgdwalk.claims import pytest_hooks

    pluginmanager.add_hookspecs(pytest_hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sgdwalk", "sgdwalk: claims of 'A Walk with SGD'")
    group.addoption(
        "--sgdwalk-report",
        metavar="PATH",
        default=None,
        help="Write the outcome and statistics of every claim test to PATH as JSON; "
        "parent folders are created. (default: none written)",
    )
    group.addoption(
        "--sgdwalk-device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="Device given to tests by the sgdwalk_device fixture; auto means cuda when "
        "available, else cpu. (default: auto)",
    )
    group.addoption(
        "--sgdwalk-profile",
        metavar="NAME",
        default=None,
        help="Name of the size profile the tiers read through the sgdwalk_profile fixture. (default: none)",
    )
    group.addoption(
        "--sgdwalk-data-root",
        metavar="PATH",
        default=None,
        help=f"Folder holding the data sets of the real tier. (default: ${DATA_ROOT_ENV}, else none)",
    )
    group.addoption(
        "--sgdwalk-seeds",
        metavar="SEEDS",
        default=None,
        help="Seeds the claim tiers (real, gpu) run on: a range 2001-2005 or a list 2001,2002,2003; a "
        "check run on n seeds by its profile takes the first n. Recorded in the report. "
        "(default: none; each profile's own seeds)",
    )


# --------------------------------------------------------------------------- session state


@dataclass
class _SessionState:
    """What the plugin keeps for one pytest session (in ``config.stash``, never globals)."""

    entries: dict[str, ClaimEntry] = field(default_factory=dict)
    resolved_device: str | None = None


_session_state_key: Final = pytest.StashKey[_SessionState]()
_recorder_key: Final = pytest.StashKey["ClaimRecorder"]()
# The phase reports of one item, kept until its teardown decides the final outcome.
_phase_reports_key: Final = pytest.StashKey[dict[str, pytest.TestReport]]()
# First line of each failed phase's exception, read while the exception is at hand.
_failure_reasons_key: Final = pytest.StashKey[dict[str, str]]()
_report_written_key: Final = pytest.StashKey[Path]()
_given_seeds_key: Final = pytest.StashKey[tuple[int, ...]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "claim(id, statement=None): ties the test to a registered claim of sgdwalk.claims.registry "
        "(e.g. claim('C3')), or to a claim of your own with its statement (claim('W1', statement='...')); "
        "enables the claim fixture and the --sgdwalk-report entry",
    )
    state = _SessionState()
    config.stash[_session_state_key] = state
    # Under pytest-xdist (-n) each worker records the entries of the tests it runs; they reach
    # the controller, which writes the report, on their teardown reports.
    if not is_xdist_worker(config):
        config.pluginmanager.register(_EntriesFromReports(state), "sgdwalk-claim-entries")
    seeds = config.getoption("sgdwalk_seeds")
    if seeds is not None:
        try:
            config.stash[_given_seeds_key] = parse_seeds(str(seeds))
        except ValueError as error:
            raise pytest.UsageError(f"--sgdwalk-seeds {seeds!r}: {error}") from None


# A claim test's entry, on the report of its teardown: how a pytest-xdist worker hands it over.
_ENTRY_PROPERTY: Final = "sgdwalk_claim_entry"


def is_xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (xdist gives only those ``workerinput``)."""
    return hasattr(config, "workerinput")


# eq=False: a plugin object must stay hashable (pluggy keeps plugins in sets).
@dataclass(eq=False)
class _EntriesFromReports:
    """Keeps, on the process that writes the report, the entries that pytest-xdist workers
    send on their tests' teardown reports (``_ENTRY_PROPERTY``)."""

    state: _SessionState

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == _ENTRY_PROPERTY:
                self.state.entries[report.nodeid] = entry_from_dict(value, report.nodeid)


# --------------------------------------------------------------------------- collection


def _claim_marker_error(item: pytest.Item) -> str | None:
    """Why the item's claim marker(s) are wrong, or None when they are fine."""
    markers = list(item.iter_markers("claim"))
    if not markers:
        return None
    if len(markers) > 1:
        ids = ", ".join(repr(marker.args) for marker in markers)
        return f"{item.nodeid}: one claim marker per test, found {len(markers)}: {ids}"
    marker = markers[0]
    statement = marker.kwargs.get("statement")
    if (
        set(marker.kwargs) - {"statement"}
        or len(marker.args) != 1
        or not isinstance(marker.args[0], str)
        or not marker.args[0]
        or (statement is not None and (not isinstance(statement, str) or not statement.strip()))
    ):
        return (
            f"{item.nodeid}: the claim marker takes one claim id, and for a claim of your own its statement: "
            f"@pytest.mark.claim('C3'), or @pytest.mark.claim('W1', statement='...'); "
            f"got args={marker.args!r} kwargs={marker.kwargs!r}"
        )
    claim_id = marker.args[0]
    if statement is not None and claim_id in CLAIMS:
        return (
            f"{item.nodeid}: {claim_id} is one of sgdwalk's registered claims, with its own statement; "
            "a claim of your own takes an id of its own"
        )
    if statement is None and claim_id not in CLAIMS:
        return (
            f"{item.nodeid}: unknown claim id {claim_id!r}; known ids: {', '.join(CLAIMS)}; a claim of your own "
            f"says what it claims: @pytest.mark.claim({claim_id!r}, statement='...')"
        )
    return None


def _claim_id(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("claim")
    return None if marker is None else str(marker.args[0])


# The source of a claim a test declares with its statement (not one of the registry's).
USER_CLAIM_SOURCE = "declared by its test (@pytest.mark.claim(id, statement=...))"


def _claim_of(item: pytest.Item) -> Claim:
    """The claim the item's marker names: a registered one, or the test's own (its statement)."""
    marker = item.get_closest_marker("claim")
    assert marker is not None, "called for claim tests only"
    claim_id = str(marker.args[0])
    statement = marker.kwargs.get("statement")
    return CLAIMS[claim_id] if statement is None else Claim(claim_id, str(statement), USER_CLAIM_SOURCE)


def _tier_error(item: pytest.Item) -> str | None:
    """Why the tier a conftest.py declares for the claim test ``item`` is wrong, or None."""
    if _claim_id(item) is None:
        return None
    tier = _declared_tier(item)
    if tier not in TIERS:
        return f"{item.nodeid}: pytest_sgdwalk_tier gave {tier!r}; a tier is one of {', '.join(TIERS)}"
    return None


# tryfirst: validate before -k/-m deselect anything, so a bad marker cannot hide.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    errors = [error for error in map(_claim_marker_error, items) if error is not None]
    if errors:
        raise pytest.UsageError("invalid claim marker:\n  " + "\n  ".join(errors))
    errors = [error for error in map(_tier_error, items) if error is not None]
    if errors:
        raise pytest.UsageError("invalid tier:\n  " + "\n  ".join(errors))


def _declared_tier(item: pytest.Item) -> object:
    """What the conftest.py files above ``item`` answer to pytest_sgdwalk_tier (item.ihook
    calls only those), else DEFAULT_TIER. Checked against TIERS at collection."""
    tier = item.ihook.pytest_sgdwalk_tier(item=item)
    return DEFAULT_TIER if tier is None else tier


def _tier(item: pytest.Item) -> str:
    return str(_declared_tier(item))


# --------------------------------------------------------------------------- fixtures


def _json_ready(key: str, value: object) -> object:
    """``value`` as plain JSON data (numpy/torch scalars, paths and non-finite floats
    converted by the package's one rule, ``sgdwalk.base.json_data``)."""
    try:
        return to_json_data(value, repr(key))
    except TypeError as error:
        raise TypeError(f"claim setting {error} (use str, int, float, bool, None, lists and dicts of those)") from error


class ClaimRecorder:
    """What a claim test measured: setting, statistics, notes. Given by the ``claim`` fixture.

    ``check`` asserts like ``assert`` does (the first failing check ends the test), but the
    statistic is recorded before it raises, so the report and a strict ``xfail`` keep it.
    """

    def __init__(self, claim: Claim, tier: str) -> None:
        self._claim = claim
        self._tier = tier
        self.setting_values: dict[str, Any] = {}
        self.statistics: list[Statistic] = []
        self.notes: list[str] = []

    @property
    def id(self) -> str:
        return self._claim.id

    @property
    def statement(self) -> str:
        return self._claim.statement

    @property
    def tier(self) -> str:
        return self._tier

    @tier.setter
    def tier(self, tier: str) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        self._tier = tier

    def setting(self, **values: object) -> None:
        """Record the setting (architecture, data, lr, batch, steps, seeds, ...); merges."""
        for key, value in values.items():
            self.setting_values[key] = _json_ready(key, value)

    def note(self, text: str) -> None:
        self.notes.append(str(text))

    def check(
        self,
        name: str,
        value: float,
        bound: float,
        relation: str,
        *,
        interval: tuple[float, float] | None = None,
        detail: str = "",
    ) -> None:
        """Record ``value relation bound`` and raise AssertionError when it does not hold.

        ``interval`` (e.g. a bootstrap interval of ``value``) is reported, not tested:
        pass an interval end as ``value`` to check the conservative side.
        """
        __tracebackhide__ = True
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
        measured = float(value)
        bound_value = float(bound)
        interval_values: tuple[float, float] | None = None
        if interval is not None:
            low, high = interval
            interval_values = (float(low), float(high))
        statistic = Statistic(
            name=name,
            value=measured,
            bound=bound_value,
            relation=relation,
            held=relation_holds(measured, relation, bound_value),
            interval=interval_values,
            detail=detail,
        )
        self.statistics.append(statistic)
        line = f"{self.id} {format_statistic(statistic)}"
        print(line)
        if not statistic.held:
            raise AssertionError(line)


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> ClaimRecorder:
    """The recorder of a test marked ``@pytest.mark.claim(id)``."""
    node = request.node
    claim_id = _claim_id(node)
    if claim_id is None:
        pytest.fail(
            f"{node.nodeid}: the claim fixture needs @pytest.mark.claim('<id>') on the test",
            pytrace=False,
        )
    recorder = ClaimRecorder(_claim_of(node), _tier(node))
    node.stash[_recorder_key] = recorder
    return recorder


@pytest.fixture(scope="session")
def sgdwalk_device(pytestconfig: pytest.Config) -> torch.device:
    """The torch.device chosen by ``--sgdwalk-device`` (auto: cuda if available, else cpu)."""
    import torch  # deferred: see the module docstring

    requested = str(pytestconfig.getoption("sgdwalk_device"))
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif requested == "cuda" and not torch.cuda.is_available():
        # Asked for explicitly: silently measuring on the CPU would mislabel the results.
        pytest.fail("--sgdwalk-device cuda, but torch.cuda.is_available() is False", pytrace=False)
    else:
        device = torch.device(requested)
    pytestconfig.stash[_session_state_key].resolved_device = str(device)
    return device


@pytest.fixture(scope="session")
def sgdwalk_profile(pytestconfig: pytest.Config) -> str | None:
    """``--sgdwalk-profile NAME``, or None."""
    profile = pytestconfig.getoption("sgdwalk_profile")
    return None if profile is None else str(profile)


@pytest.fixture(scope="session")
def sgdwalk_seeds(pytestconfig: pytest.Config) -> tuple[int, ...] | None:
    """``--sgdwalk-seeds``, parsed, or None."""
    return given_seeds(pytestconfig)


@pytest.fixture(scope="session")
def sgdwalk_data_root(pytestconfig: pytest.Config) -> Path | None:
    """``--sgdwalk-data-root``, else ``$SGDWALK_DATA_ROOT``, else None."""
    data_root = pytestconfig.getoption("sgdwalk_data_root") or os.environ.get(DATA_ROOT_ENV)
    return Path(data_root).expanduser() if data_root else None


@pytest.fixture(scope="session")
def sgdwalk_shared_folder(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A folder all the processes of this session share, or None in a session of one process.

    Under pytest-xdist (``-n``) it is ``sgdwalk-shared`` in the controller's temporary folder
    (fresh each session), the parent of the workers' own: the claim tiers keep their runs
    there as sweep cells (``SweepRunCache``), so that a run one worker made is read by the
    others, never made twice. A session of one process keeps its runs in memory.
    """
    if not is_xdist_worker(pytestconfig):
        return None
    folder = tmp_path_factory.getbasetemp().parent / "sgdwalk-shared"
    folder.mkdir(exist_ok=True)
    return folder


# --------------------------------------------------------------------------- recording


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    # A skip's longrepr is (path, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def _failure_reason(report: pytest.TestReport, call: pytest.CallInfo[None] | None) -> str:
    if isinstance(report.longrepr, str):
        return report.longrepr.splitlines()[0] if report.longrepr else ""
    if call is not None and call.excinfo is not None:
        return call.excinfo.exconly().splitlines()[0]
    return report.longreprtext.splitlines()[-1] if report.longreprtext else ""


def _outcome(reports: Mapping[str, pytest.TestReport], call_info: Mapping[str, str]) -> tuple[str, str]:
    """(outcome, reason) of one item from its setup/call/teardown reports."""
    setup, call, teardown = reports.get("setup"), reports.get("call"), reports.get("teardown")
    if setup is not None and setup.skipped:
        if hasattr(setup, "wasxfail"):
            return "xfailed", str(setup.wasxfail)
        return "skipped", _skip_reason(setup)
    if setup is not None and setup.failed:
        return "error", call_info.get("setup", "")
    outcome, reason = "passed", ""
    if call is not None:
        if call.skipped and hasattr(call, "wasxfail"):
            outcome, reason = "xfailed", str(call.wasxfail)
        elif call.skipped:
            outcome, reason = "skipped", _skip_reason(call)
        elif call.failed and isinstance(call.longrepr, str) and call.longrepr.startswith("[XPASS(strict)]"):
            outcome, reason = "xpassed", call.longrepr.removeprefix("[XPASS(strict)]").strip()
        elif call.failed:
            outcome, reason = "failed", call_info.get("call", "")
        elif hasattr(call, "wasxfail"):
            # Non-strict xpass; the project sets xfail_strict, so this is rare.
            outcome, reason = "xpassed", str(call.wasxfail)
    if teardown is not None and teardown.failed and outcome == "passed":
        return "error", call_info.get("teardown", "")
    return outcome, reason


# tryfirst makes this the outermost wrapper: it sees the report after skipping.py has
# turned failures into xfails.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    claim_id = _claim_id(item)
    if claim_id is None:
        return report
    reports = item.stash.setdefault(_phase_reports_key, {})
    failure_reasons = item.stash.setdefault(_failure_reasons_key, {})
    reports[report.when] = report
    if report.failed:
        failure_reasons[report.when] = _failure_reason(report, call)
    if report.when == "teardown":
        entry = _record_entry(item, claim_id, reports, failure_reasons)
        if is_xdist_worker(item.config):
            report.user_properties.append((_ENTRY_PROPERTY, entry_to_dict(entry)))
    return report


def _record_entry(
    item: pytest.Item,
    claim_id: str,
    reports: Mapping[str, pytest.TestReport],
    failure_reasons: Mapping[str, str],
) -> ClaimEntry:
    state = item.config.stash[_session_state_key]
    recorder = item.stash.get(_recorder_key, None)
    outcome, reason = _outcome(reports, failure_reasons)
    call_report = reports.get("call")
    device = "cpu"
    if "sgdwalk_device" in getattr(item, "fixturenames", ()):
        # Skipped before setup: the fixture never resolved; say what was asked for.
        device = state.resolved_device or str(item.config.getoption("sgdwalk_device"))
    state.entries[item.nodeid] = ClaimEntry(
        id=claim_id,
        test=item.nodeid,
        statement=_claim_of(item).statement,
        tier=recorder.tier if recorder is not None else _tier(item),
        outcome=outcome,
        setting=dict(recorder.setting_values) if recorder is not None else {},
        statistics=tuple(recorder.statistics) if recorder is not None else (),
        notes=tuple(recorder.notes) if recorder is not None else (),
        reason=reason,
        duration_s=call_report.duration if call_report is not None else 0.0,
        device=device,
    )
    return state.entries[item.nodeid]


# --------------------------------------------------------------------------- session end


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        module = sys.modules.get(package)
        # An imported module knows its exact build (torch's "+cu121"); metadata otherwise.
        version = getattr(module, "__version__", None) if module is not None else None
        if version is None:
            try:
                version = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                version = None
        versions[package] = None if version is None else str(version)
    return versions


def build_report(config: pytest.Config) -> ClaimsReport:
    state = config.stash[_session_state_key]
    seeds = given_seeds(config)
    return ClaimsReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        pytest_args=tuple(str(arg) for arg in config.invocation_params.args),
        versions=_package_versions(),
        claims=tuple(sorted_entries(state.entries.values())),
        settings={} if seeds is None else {"seeds": list(seeds)},
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    report_path = config.getoption("sgdwalk_report")
    # Nothing ran after a usage error (e.g. a bad claim marker); an empty ledger would lie.
    if not report_path or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return
    if is_xdist_worker(config):
        return
    written = save_report(build_report(config), Path(report_path))
    config.stash[_report_written_key] = written


def _statistic_summary(entry: ClaimEntry) -> str:
    statistic = main_statistic(entry)
    if statistic is None:
        return "-"
    text = format_statistic(statistic)
    more = len(entry.statistics) - 1
    return f"{text} (+{more} more)" if more > 0 else text


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    entries = sorted_entries(config.stash[_session_state_key].entries.values())
    if not entries:
        return
    terminalreporter.write_sep("=", "sgdwalk claims")
    header = ("claim", "test", "statistic", "outcome")
    rows: list[Sequence[str]] = [
        (
            entry.id,
            short_test_name(entry.test),
            _statistic_summary(entry),
            f"{entry.outcome}: {entry.reason}" if entry.reason and entry.outcome != "passed" else entry.outcome,
        )
        for entry in entries
    ]
    for line in text_table(header, rows):
        terminalreporter.write_line(line)
    written = config.stash.get(_report_written_key, None)
    if written is not None:
        terminalreporter.write_line(f"claims report written to {written}")
