"""Strict JSON for every file sgdwalk writes, and its one rule for non-finite numbers.

JSON has no NaN or infinity (``json.dumps`` would write the non-standard ``NaN``, which jq,
browsers and most parsers reject), yet a diverged run's loss or a claim statistic can be
NaN, and that is information. The rule, the same in every file (run directories, claims
reports, sweep manifests): a non-finite float is written as the string ``"nan"``, ``"inf"``
or ``"-inf"`` and read back as that float.

``to_json_data`` also turns what numerical code hands over into plain JSON data: tuples
become lists, numpy and torch scalars and arrays Python numbers and lists (duck-typed by
``tolist``/``item``, so this module imports neither), paths strings.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, Final

# The written form of each non-finite float; the keys are what readers accept back.
NON_FINITE_TEXT: Final[Mapping[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def float_to_json(value: float) -> float | str:
    """A finite float as it is; NaN and ±infinity as their strings (see the module docstring)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def float_from_json(raw: object) -> float:
    """The inverse of ``float_to_json``; ValueError for anything but a number or those strings."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"expected a number, got {raw!r}")
    if isinstance(raw, str) and raw not in NON_FINITE_TEXT:
        raise ValueError(f"expected a number or one of {', '.join(map(repr, NON_FINITE_TEXT))}, got {raw!r}")
    return float(raw)


def to_json_data(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON data under the non-finite rule; TypeError (naming ``where``) otherwise."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):  # numpy's float64 is a float too
        return float_to_json(float(value))
    if isinstance(value, Mapping):
        return {str(key): to_json_data(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_data(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy and torch arrays and scalars
        return to_json_data(value.tolist(), where)
    if hasattr(value, "item"):
        return to_json_data(value.item(), where)
    raise TypeError(f"{where} = {value!r} ({type(value).__name__}) is not JSON data")


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as strict JSON text: indented, or on one line without spaces (JSON lines)."""
    separators = None if indent is not None else (",", ":")
    return json.dumps(
        to_json_data(value),
        indent=indent,
        sort_keys=sort_keys,
        allow_nan=False,
        ensure_ascii=False,
        separators=separators,
    )


def restore_non_finite(value: Any) -> Any:
    """Parsed JSON with the non-finite strings turned back into floats, at any depth."""
    if isinstance(value, str):
        return NON_FINITE_TEXT.get(value, value)
    if isinstance(value, dict):
        return {key: restore_non_finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_non_finite(item) for item in value]
    return value


def loads(text: str) -> Any:
    """JSON text written by ``dumps`` back into Python values, non-finite floats included.

    Only for files whose strings are never the words "nan", "inf", "-inf" themselves (run
    records); readers of free text (a claims report) restore the numeric fields one by one.
    """
    return restore_non_finite(json.loads(text))


__all__ = [
    "NON_FINITE_TEXT",
    "dumps",
    "float_from_json",
    "float_to_json",
    "loads",
    "restore_non_finite",
    "to_json_data",
]
