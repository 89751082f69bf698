"""Declared constraints on config fields: one declaration that the config, the CLI and the YAML validator all read.

Why: before, each CLI option was a hand copy of a config field (its default, its range, its help), and the YAML
validator checked types by hand, so the three drifted. A config field is now declared once with :func:`option`:

    @dataclass(frozen=True)
    class PruneConfig(StageConfig):
        steps: int = option(1, Interval(int, 1, 100), help="Prune in this many equal increments.")

:func:`check_fields` (called from each config's ``__post_init__`` through :class:`Checked`) validates every declared
constraint with a message that names the key, the bad value and the allowed range; the CLI builds its click options
from :func:`field_specs`, and the YAML validator checks the same constraints with file:line.

Modelled on scikit-learn's ``_parameter_constraints`` with ``Interval`` and ``StrOptions``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import InputError

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Interval:
    """A number in a range. ``closed``: which ends belong to it ("both", "left", "right", "neither")."""

    type: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def __post_init__(self) -> None:
        if self.type not in (int, float):
            raise TypeError(f"Interval type must be int or float, got {self.type!r}")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both/left/right/neither, got {self.closed!r}")

    def describe(self) -> str:
        kind = "an integer" if self.type is int else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'≥' if self.closed in ('both', 'left') else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'≤' if self.closed in ('both', 'right') else '<'} {_num(self.high)}"
        return kind

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type is int and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if not math.isfinite(float(value)):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return bool(low_ok and high_ok)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, usually)."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


Constraint = Interval | Options


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def option(default: Any = _MISSING, constraint: Constraint | None = None, *, help: str = "",
           cli: str | bool | None = None, metavar: str | None = None) -> Any:
    """A config field with its constraint and help text.

    Args:
        default: the default value (immutable: use tuples, not lists).
        constraint: :class:`Interval` or :class:`Options`; ``None`` for free values. ``None`` values always pass
            when the field's type allows ``None``.
        help: one line for ``--help`` and the YAML reference.
        cli: ``False`` to keep the field off the command line, a string to name its flag (``"--calibrate"``),
            ``None`` for the default ``--field-name``.
        metavar: the placeholder shown in ``--help``.
    """
    metadata = {"constraint": constraint, "help": help, "cli": cli, "metavar": metavar}
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FieldSpec:
    """What the interfaces need to know about one config field."""

    name: str
    annotation: Any
    default: Any
    constraint: Constraint | None
    help: str
    cli: str | bool | None
    metavar: str | None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.annotation)

    @property
    def flag(self) -> str | None:
        """The command-line flag, or ``None`` when the field is not on the command line."""
        if self.cli is False:
            return None
        if isinstance(self.cli, str):
            return self.cli
        return "--" + self.name.replace("_", "-")


def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """Every dataclass field of ``cls`` with its declared constraint (``None`` where none is declared)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved at run time: fall back to the raw strings
        hints = {}
    specs = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else _MISSING)
        specs.append(FieldSpec(f.name, hints.get(f.name, f.type), default, f.metadata.get("constraint"),
                               f.metadata.get("help", ""), f.metadata.get("cli"), f.metadata.get("metavar")))
    return tuple(specs)


def check_fields(config: Any, *, section: str) -> None:
    """Validate every declared constraint of a dataclass instance; the message names ``section.key``.

    Raises:
        InputError: ``"prune.steps must be an integer in [1, 100], got 0"``.
    """
    for spec in field_specs(type(config)):
        if spec.constraint is None:
            continue
        value = getattr(config, spec.name)
        if value is None and spec.nullable:
            continue
        if not spec.constraint.accepts(value):
            raise InputError(f"{section}.{spec.name} must be {spec.constraint.describe()}, got {value!r}")
        if isinstance(spec.constraint, Interval) and spec.constraint.type is int and isinstance(value, float):
            object.__setattr__(config, spec.name, int(value))


class Checked:
    """Mixin for frozen dataclass configs: ``__post_init__`` checks the declared constraints, then ``check()``.

    Subclasses put cross-field rules ("target_macs only with method structured") in ``check()``; single-field
    ranges and choices are declared on the field and never written again by hand.
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, section=self.section or type(self).__name__)
        self.check()

    def check(self) -> None:
        """Cross-field rules; the default has none."""
