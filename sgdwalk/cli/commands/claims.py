"""``sgdwalk claims``: compare, render and merge the claims reports written by the plugin.

The logic lives in ``sgdwalk.claims.report`` as pure functions; this module only parses
arguments, reads files and chooses exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from sgdwalk.claims.registry import CLAIMS
from sgdwalk.claims.report import (
    ReportError,
    compare_reports,
    format_comparison,
    load_report,
    merge_reports,
    render_markdown_table,
    render_replication_table,
    save_report,
)
from sgdwalk.cli.exits import EXIT_FAILED, EXIT_OK, usage_error

COMPARE_EPILOG: Final = """\
Entries are matched by pytest node id; the claim id is shown beside it.

A REGRESSION is a claim test whose baseline outcome is "passed" and whose new outcome is
"failed" or "error", or that was not checked: missing from NEW or skipped there (a tier
run without its data or --runslow skips every claim), unless --allow-missing; and any
claim test whose new outcome is "xpassed": an xfail that passes (strict or not) no longer
describes the claim, and its baseline must be made again.

A claim test is CHANGED when its check is no longer the one the baseline holds: another
claim id, other statistics (by name), or other seeds. The whole comparison fails too when
the sessions ran with other settings (SETTINGS: the seeds of --sgdwalk-seeds): compare a
report with the baseline of its own seed set.

Every other change of outcome (xfailed -> passed, a claim new in NEW, a claim missing or
skipped with --allow-missing, ...) prints a line starting with "FLIP:" and leaves the exit
code at 0.

Exit codes: 0 nothing failed, 1 a regression, a changed check or other settings,
2 a report cannot be read.
"""


def run_compare(args: argparse.Namespace) -> int:
    try:
        baseline = load_report(args.baseline)
        new = load_report(args.new)
    except ReportError as error:
        return usage_error("claims", error)
    comparison = compare_reports(baseline, new, allow_missing=args.allow_missing)
    print(format_comparison(comparison))
    return EXIT_FAILED if comparison.failed else EXIT_OK


def _print_or_write(text: str, output: str | None) -> int:
    """A rendered table to stdout, or to ``output`` (its folder made) with one line saying so."""
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    output_path = Path(output)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(text, encoding="utf-8")
    print(f"wrote {output_path}")
    return EXIT_OK


def run_table(args: argparse.Namespace) -> int:
    try:
        report = load_report(args.report)
    except ReportError as error:
        return usage_error("claims", error)
    return _print_or_write(render_markdown_table(report), args.output)


def run_replication(args: argparse.Namespace) -> int:
    try:
        first, second = load_report(args.first), load_report(args.second)
    except ReportError as error:
        return usage_error("claims", error)
    return _print_or_write(render_replication_table(first, second), args.output)


def run_merge(args: argparse.Namespace) -> int:
    try:
        reports = [load_report(path) for path in args.reports]
    except ReportError as error:
        return usage_error("claims", error)
    merged, replaced = merge_reports(reports)
    for test in replaced:
        print(f"note: {test} appears in several reports; the last one is kept")
    written = save_report(merged, args.out)
    print(f"wrote {written} ({len(merged.claims)} claim tests from {len(reports)} reports)")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    for claim in CLAIMS.values():
        print(f"{claim.id:<4} {claim.statement}  [{claim.source}]")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``sgdwalk claims {compare,table,replication,merge,list}``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "claims",
        help="compare, render and merge claims reports (pytest --sgdwalk-report)",
        description="Work with the JSON claims reports written by `pytest --sgdwalk-report PATH`.",
    )
    actions = parser.add_subparsers(dest="claims_command", required=True, metavar="ACTION")

    compare = actions.add_parser(
        "compare",
        help="compare two reports; exit 1 on a regression",
        description="Compare the claim outcomes of two reports, test by test.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("baseline", metavar="BASELINE", help="the reference report (JSON)")
    compare.add_argument("new", metavar="NEW", help="the report to check against it (JSON)")
    compare.add_argument(
        "--allow-missing",
        action="store_true",
        help="a baseline claim missing from NEW, or skipped there, is a FLIP, not a regression (default: regression)",
    )
    compare.set_defaults(func=run_compare)

    table = actions.add_parser(
        "table",
        help="render a report as a Markdown table",
        description="Render a report as a Markdown table (claim, statement, tier, statistic, outcome) for the README.",
    )
    table.add_argument("report", metavar="REPORT", help="a claims report (JSON)")
    table.add_argument("--output", metavar="FILE", default=None, help="write the table to FILE (default: stdout)")
    table.set_defaults(func=run_table)

    replication = actions.add_parser(
        "replication",
        help="one tier on two seed sets: each check's outcomes side by side, 'not replicated' where they differ",
        description="Render, as Markdown, each check's outcome and decisive value in two reports of one tier run "
        "on different seeds (--sgdwalk-seeds), marking 'not replicated' where the outcomes differ. Always exits 0 "
        "once both reports are read: `claims compare` is the gate.",
    )
    replication.add_argument("first", metavar="FIRST", help="the tier's report on its own seeds (JSON)")
    replication.add_argument("second", metavar="SECOND", help="the same tier's report on other seeds (JSON)")
    replication.add_argument("--output", metavar="FILE", default=None, help="write the table to FILE (default: stdout)")
    replication.set_defaults(func=run_replication)

    merge = actions.add_parser(
        "merge",
        help="merge several reports (e.g. one per tier) into one",
        description="Merge reports into OUT; a test present in several reports keeps the entry of the last one.",
    )
    merge.add_argument("out", metavar="OUT", help="the merged report to write (JSON)")
    merge.add_argument("reports", metavar="REPORT", nargs="+", help="reports to merge, in order")
    merge.set_defaults(func=run_merge)

    listing = actions.add_parser("list", help="list the registered claim ids and statements")
    listing.set_defaults(func=run_list)
