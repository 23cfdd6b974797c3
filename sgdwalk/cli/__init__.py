"""Layer 5, the `sgdwalk` command: a thin dispatcher over one module per subcommand.

Each command module exposes ``add_parser(subparsers)`` (registers its sub-parser and sets
``func`` on it) so that this file never grows with the commands' flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from sgdwalk.cli.exits import EXIT_USAGE

# One module per subcommand; imported lazily so `sgdwalk --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "sgdwalk.cli.commands.walk",
    "sgdwalk.cli.commands.plot",
    "sgdwalk.cli.commands.claims",
    "sgdwalk.cli.commands.sweep",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser with a usage error on one line, ``PROG: error: MESSAGE (see PROG
    --help)``, exit 2: the usage of `sgdwalk walk` runs to dozens of lines, which would bury
    the one that says what is wrong. Sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="sgdwalk",
        description="Measure how SGD walks the loss landscape of a network.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
