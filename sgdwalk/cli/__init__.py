"""Layer 5, the `sgdwalk` command: a thin dispatcher over one module per subcommand.

Each command module exposes ``add_parser(subparsers)`` (registers its sub-parser and sets
``func`` on it) so that this file never grows with the commands' flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# One module per subcommand; imported lazily so `sgdwalk --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "sgdwalk.cli.commands.walk",
    "sgdwalk.cli.commands.plot",
    "sgdwalk.cli.commands.claims",
    "sgdwalk.cli.commands.sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
