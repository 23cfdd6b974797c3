"""Command-line flags made from a settings dataclass's declarations (``sgdwalk.base.settings``).

Each field becomes one flag: a switch ``--x / --no-x`` for a boolean, a choice for a field
with choices, else a value parsed by its kind. Its help is the declaration's, followed by
``(default: …)``. The values parsed are only read here; the dataclass checks them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sgdwalk.base.settings import DeclaredField, ValueKind, declared_fields


# ----------------------------------------------------------------- value parsers
def _none_word(text: str) -> bool:
    return text.strip().lower() in ("none", "0", "")


def optional_int(text: str) -> int | None:
    """A count where 0, "none" and "" mean none (no limit, never)."""
    if _none_word(text):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 0 or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 0 or 'none', got {value}")
    return value


def optional_float(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(piece) for piece in text.split(",") if piece.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,10,25, got {text!r}") from None


# (kind, None allowed) -> the parser of a flag's text; step windows are parsed by the dataclass.
_PARSERS: dict[tuple[ValueKind, bool], Callable[[str], Any]] = {
    ("int", False): int,
    ("int", True): optional_int,
    ("float", False): float,
    ("float", True): optional_float,
    ("text", False): str,
    ("text", True): str,
    ("int-list", False): int_list,
    ("windows", False): str,
}


def show(value: Any) -> str:
    """A default as ``--help`` shows it (and as a flag would spell it)."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{v[0]}:{v[1]}" if isinstance(v, tuple) else str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def fields_in_section(cls: type, section: str) -> list[DeclaredField]:
    return [field for field in declared_fields(cls) if field.setting.section == section]


def add_setting_flags(
    group: argparse._ActionsContainer,
    fields: Iterable[DeclaredField],
    *,
    defaults: object | None = None,
    shown_defaults: Mapping[str, str] | None = None,
) -> None:
    """Add a flag to ``group`` for each field, its ``dest`` the field's name.

    ``defaults``: an instance whose values the flags default to; None leaves a flag not given
    out of the namespace (the parser's ``argument_default=argparse.SUPPRESS``), so that only
    flags given override a config file. ``shown_defaults``: a field's default in ``--help``
    where the caller knows it better (the CLI's own run directory, for one).
    """
    for field in fields:
        shown = (shown_defaults or {}).get(field.name) or field.setting.shown_default or show(field.default)
        options: dict[str, Any] = {"dest": field.name, "help": f"{field.setting.help} (default: {shown})"}
        if defaults is not None:
            options["default"] = getattr(defaults, field.name)
        if field.kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        elif field.choices is not None:
            options.update(type=_PARSERS[field.kind, field.optional], choices=field.choices)
        else:
            options.update(type=_PARSERS[field.kind, field.optional], metavar=field.setting.metavar)
        group.add_argument(field.flag, **options)


__all__ = ["add_setting_flags", "fields_in_section", "int_list", "optional_float", "optional_int", "show"]
