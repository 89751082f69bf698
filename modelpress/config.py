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
import numbers
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import InputError

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Interval:
    """A number in a range. ``closed``: which ends belong to it ("both", "left", "right", "neither").

    ``noun=False`` leaves "an integer" / "a number" out of the description ("in (0, 1)" rather than "a number in
    (0, 1)"), for messages users already know; ``unit`` is named after the range ("an integer > 0 (MiB)").
    """

    type: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    noun: bool = True
    unit: str = ""

    def __post_init__(self) -> None:
        if self.type not in (int, float):
            raise TypeError(f"Interval type must be int or float, got {self.type!r}")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both/left/right/neither, got {self.closed!r}")

    def describe(self, *, plural: bool = False) -> str:
        """``"an integer in [1, 100]"``; ``plural``: for the items of a tuple field (``"integers ≥ 1"``)."""
        if plural:
            kind = "integers" if self.type is int else "numbers"
        else:
            kind = "an integer" if self.type is int else "a number"
        if not self.noun and not plural:
            kind = ""
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            text = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{'≥' if self.closed in ('both', 'left') else '>'} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'≤' if self.closed in ('both', 'right') else '<'} {_num(self.high)}"
        else:
            text = ""
        text = " ".join(part for part in (kind, text) if part) or ("an integer" if self.type is int else "a number")
        return f"{text} ({self.unit})" if self.unit else text

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real
            return False
        if self.type is int and not (isinstance(value, numbers.Integral) or float(value).is_integer()):
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
    #: The description in messages when "one of a, b" is not how users know it ("onnx or tensorrt").
    text: str | None = None

    def describe(self, *, plural: bool = False) -> str:
        if self.text:
            return self.text
        return ("each one of " if plural else "one of ") + ", ".join(str(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


Constraint = Interval | Options


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def option(default: Any = _MISSING, constraint: Constraint | None = None, *, help: str = "",
           cli: str | bool | None = None, metavar: str | None = None, flatten: bool = False,
           label: str | None = None) -> Any:
    """A config field with its constraint and help text.

    Args:
        default: the default value (immutable: use tuples, not lists).
        constraint: :class:`Interval` or :class:`Options`; ``None`` for free values. ``None`` values always pass
            when the field's type allows ``None``.
        help: one line for ``--help`` and the YAML reference.
        cli: ``False`` to keep the field off the command line, a string to name its flag (``"--calibrate"``),
            ``None`` for the default ``--field-name``.
        metavar: the placeholder shown in ``--help``.
        flatten: the field holds a nested config whose fields the interfaces show as this config's own keys
            (the export stage's TensorRT settings); :func:`field_specs` lists them in its place.
        label: how messages name the key when the bare field name says too little (``"knn (k)"``).
    """
    metadata = {"constraint": constraint, "help": help, "cli": cli, "metavar": metavar, "flatten": flatten,
                "label": label}
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
    def sequence(self) -> bool:
        """Whether the field holds a tuple of values (its constraint then applies to each item)."""
        return any(typing.get_origin(a) is tuple for a in (self.annotation, *typing.get_args(self.annotation)))

    @property
    def flag(self) -> str | None:
        """The command-line flag, or ``None`` when the field is not on the command line."""
        if self.cli is False:
            return None
        if isinstance(self.cli, str):
            return self.cli
        return "--" + self.name.replace("_", "-")


def field_specs(cls: type, *, flatten: bool = True) -> tuple[FieldSpec, ...]:
    """Every dataclass field of ``cls`` with its declared constraint (``None`` where none is declared).

    A field declared with ``option(..., flatten=True)`` is replaced by its nested config's fields (``flatten=False``
    keeps it as one field).
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved at run time: fall back to the raw strings
        hints = {}
    specs: list[FieldSpec] = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else _MISSING)
        if flatten and f.metadata.get("flatten"):
            specs.extend(field_specs(type(default)))
            continue
        specs.append(FieldSpec(f.name, hints.get(f.name, f.type), default, f.metadata.get("constraint"),
                               f.metadata.get("help", ""), f.metadata.get("cli"), f.metadata.get("metavar")))
    return tuple(specs)


def check_fields(config: Any, *, section: str) -> None:
    """Validate every declared constraint of a dataclass instance; the message names ``section.key``.

    A tuple field's constraint applies to each of its items (``batch_sizes: tuple[int, ...]`` with
    ``Interval(int, 1)``); an integral float given for an int field becomes an int (YAML and JSON write ``3.0``).

    Raises:
        InputError: ``"prune.steps must be an integer in [1, 100], got 0"``.
    """
    labels = {f.name: f.metadata.get("label") or f.name for f in dataclasses.fields(config)}
    for spec in field_specs(type(config), flatten=False):  # a nested config checked itself when it was made
        if spec.constraint is None:
            continue
        key = labels[spec.name]
        value = getattr(config, spec.name)
        if value is None and spec.nullable:
            continue
        if spec.sequence and isinstance(value, (tuple, list)):
            if not all(spec.constraint.accepts(item) for item in value):
                raise InputError(f"{section}.{key} must be {spec.constraint.describe(plural=True)}, "
                                 f"got {list(value)}")
            continue
        if not spec.constraint.accepts(value):
            custom = getattr(config, "field_message", None)
            message = custom(key, spec.constraint, value) if custom else None
            raise InputError(message or f"{section}.{key} must be {spec.constraint.describe()}, got {value!r}")
        if isinstance(spec.constraint, Interval) and spec.constraint.type is int and isinstance(value, float):
            object.__setattr__(config, spec.name, int(value))


class Checked:
    """Mixin for frozen dataclass configs: ``__post_init__`` checks the declared constraints, then ``check()``.

    Subclasses put cross-field rules ("target_macs only with method structured") in ``check()``; single-field
    ranges and choices are declared on the field and never written again by hand. Messages name ``section.key``;
    ``section`` defaults to a stage config's ``kind``.
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, section=self.section or getattr(type(self), "kind", "") or type(self).__name__)
        self.check()

    def check(self) -> None:
        """Cross-field rules; the default has none."""

    def field_message(self, key: str, constraint: Constraint, value: Any) -> str | None:
        """The message for a value outside its declared constraint; ``None``: the standard one
        (``"prune.steps must be an integer in [1, 100], got 0"``). Override to keep a wording users know."""
        return None
