"""A field of a settings dataclass, declared once: its help, its section, the values it takes.

A frozen dataclass of settings (``WalkConfig``, ``SlurmOptions``) declares each field as
``name: annotation = setting(default, help, ...)``. Everything else is read from that one
declaration: the kind of value (a switch, an integer, a number, a name, a list of integers,
step windows) and whether None is allowed come from the annotation, the choices of a
``Literal`` annotation too; ``value_problem`` checks a value against it, and
``sgdwalk.cli.setting_flags`` makes the command-line flag. Rules that relate several fields
stay with the dataclass (``WalkConfig.validate``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin

# The key of a field's ``metadata`` that holds its ``Setting``.
SETTING_KEY: Final = "sgdwalk.setting"

ValueKind = Literal["bool", "int", "float", "text", "int-list", "windows"]


@dataclass(frozen=True)
class Setting:
    """What a field means and which values it takes, besides its annotation.

    ``help``: one phrase for ``--help`` (the default is appended there). ``section``: the
    heading its flag is listed under. ``metavar``: the placeholder of its value in ``--help``.
    ``choices``: the names it takes, for a ``str`` field (a ``Literal`` annotation gives its own).
    ``positive``, ``at_least``, ``at_most``: bounds on the value (on each item of a list), and
    ``why``: the reason for a bound, said when it is broken. ``flag``: the flag where it is not
    ``--field-name``. ``shown_default``: the default in words where the value would mislead.
    """

    help: str
    section: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    positive: bool = False
    at_least: int | float | None = None
    at_most: int | float | None = None
    why: str = ""
    flag: str | None = None
    shown_default: str | None = None


def setting(default: Any, help: str, **details: Any) -> Any:
    """A dataclass field with ``default`` and its ``Setting`` (``help`` and ``details``) as metadata.

    Typed ``Any`` like ``dataclasses.field``, so that ``name: int = setting(3, ...)`` type-checks.
    """
    return dataclasses.field(default=default, metadata={SETTING_KEY: Setting(help, **details)})


@dataclass(frozen=True)
class DeclaredField:
    """One field of a settings dataclass, with what its annotation and its ``Setting`` say."""

    name: str
    default: Any
    kind: ValueKind
    optional: bool
    choices: tuple[str, ...] | None
    setting: Setting

    @property
    def flag(self) -> str:
        return self.setting.flag or "--" + self.name.replace("_", "-")


def _kind_of(annotation: Any) -> tuple[ValueKind, bool, tuple[str, ...] | None]:
    """(kind, None allowed, choices of a ``Literal``) of a resolved annotation."""
    arguments = get_args(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType):
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        kind, _, choices = _kind_of(inner)
        return kind, True, choices
    if get_origin(annotation) is Literal:
        return "text", False, tuple(str(argument) for argument in arguments)
    if get_origin(annotation) is tuple:
        return ("windows" if get_origin(arguments[0]) is tuple else "int-list"), False, None
    simple: dict[Any, ValueKind] = {bool: "bool", int: "int", float: "float", str: "text"}
    if annotation not in simple:
        raise TypeError(f"no kind of setting for the annotation {annotation!r}")
    return simple[annotation], False, None


@functools.cache
def declared_fields(cls: type) -> tuple[DeclaredField, ...]:
    """The fields of the settings dataclass ``cls``, in their order; each must be a ``setting``."""
    annotations = typing.get_type_hints(cls)
    declared = []
    for spec in dataclasses.fields(cls):
        if SETTING_KEY not in spec.metadata:
            raise TypeError(f"{cls.__name__}.{spec.name} is not declared with setting(...)")
        kind, optional, literal_choices = _kind_of(annotations[spec.name])
        meta: Setting = spec.metadata[SETTING_KEY]
        choices = meta.choices if meta.choices is not None else literal_choices
        declared.append(DeclaredField(spec.name, spec.default, kind, optional, choices, meta))
    return tuple(declared)


def _type_problem(name: str, kind: ValueKind, value: Any) -> str | None:
    """Whether ``value`` is of the kind: an integer field takes no float (100.0 would pass a
    range check, then break the run) and a number must be finite (an infinite learning rate
    is no setting)."""
    if kind == "bool" and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} must be an integer, got {value!r}"
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}"
    if kind == "text":
        if not isinstance(value, str):
            return f"{name} must be a string, got {value!r}"
        if not value.strip():  # an empty folder name would silently mean the working directory
            return f"{name} must not be empty"
    return None


def _bound_problem(name: str, meta: Setting, number: int | float) -> str | None:
    why = f" ({meta.why})" if meta.why else ""
    if meta.positive and not number > 0:
        return f"{name} must be positive{why}, got {number!r}"
    low, high = meta.at_least, meta.at_most
    if low is not None and high is not None and not low <= number <= high:
        return f"{name} must be from {low} to {high}{why}, got {number!r}"
    if low is not None and number < low:
        bound = "non-negative" if low == 0 else f"at least {low}"
        return f"{name} must be {bound}{why}, got {number!r}"
    if high is not None and number > high:
        return f"{name} must be at most {high}{why}, got {number!r}"
    return None


def value_problem(field: DeclaredField, value: Any) -> str | None:
    """What is wrong with ``value`` for ``field``, in one line naming it; None when nothing."""
    if value is None and field.optional:
        return None
    problem = _type_problem(field.name, field.kind, value)
    if problem is None and field.choices is not None and value not in field.choices:
        problem = f"{field.name} must be one of {', '.join(field.choices)}; got {value!r}"
    if problem is not None or field.kind not in ("int", "float", "int-list"):
        return problem
    for number in value if field.kind == "int-list" else (value,):  # a list's bounds hold for each item
        problem = _bound_problem(field.name, field.setting, number)
        if problem is not None:
            return problem
    return None


def first_problem(cls: type, instance: object) -> str | None:
    """The first field of ``instance`` (a ``cls``) whose value its declaration refuses."""
    for field in declared_fields(cls):
        problem = value_problem(field, getattr(instance, field.name))
        if problem is not None:
            return problem
    return None


def sections(cls: type) -> tuple[str, ...]:
    """The sections of ``cls``'s fields, in the order of their first field."""
    return tuple(dict.fromkeys(field.setting.section for field in declared_fields(cls)))


__all__ = [
    "SETTING_KEY",
    "DeclaredField",
    "Setting",
    "ValueKind",
    "declared_fields",
    "first_problem",
    "sections",
    "setting",
    "value_problem",
]
