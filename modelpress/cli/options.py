"""Click options: the shared ones (threads, code trust, output folder) and those generated from config fields.

:func:`config_options` turns each field a config declares with :func:`modelpress.config.option` into one click
option — the flag (``--field-name`` or the declared ``cli=``), the help text and the default come from the
declaration, so the CLI and the YAML validator read the same source and cannot drift:

==========================  ====================================================================================
field                       click option
==========================  ====================================================================================
``bool`` (or ``bool|None``)  a flag pair ``--x/--no-x`` (or the declared pair, ``--dynamic-batch/--static-batch``)
``Options(...)``            ``click.Choice`` (the values as text)
``Interval(int|float)``     ``int`` / ``float``; the range is checked by the config, so a bad value through the
                            CLI and through YAML give the same message (``prune.amount must be in (0, 1), got
                            1.5``, exit 2) instead of click's own wording
``tuple[X, ...]``           a repeatable option (``multiple=True``)
anything else               a string
==========================  ====================================================================================

Fields declared with ``cli=False`` stay off the command line (YAML only); a command leaves out more with
``exclude={"field": "why"}`` — the reason is what tests/cli/test_config_parity.py reads.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from ..config import FieldSpec, Interval, Options, field_specs
from .common import note

def _check_threads(ctx: click.Context, param: click.Parameter, value: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if value > cores:
        note(f"--threads {value} is more than the {cores} cores this process may use; latency will suffer from "
             f"oversubscription")
    return value


def threads_option(fn: Any) -> Any:
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        callback=_check_threads, help="Intra-op threads, the same for every backend.")(fn)


def _allow_code(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    from ..sources import allow_code

    if param.name == "trust_code":
        allow_code(everything=bool(value))
    else:
        allow_code(value or ())


def code_options(fn: Any) -> Any:
    """What an artifact folder may run: --model-code REF (repeatable) or --trust-code (SECURITY.md).

    They set the invocation's trust scope (opened in :func:`modelpress.cli.main`) and reach no parameter.
    """
    fn = click.option("--trust-code", is_flag=True, expose_value=False, callback=_allow_code,
                      help="Let artifact manifests rebuild their model with any pkg.module:factory they name "
                           "(runs that code; only for artifacts you made yourself).")(fn)
    fn = click.option("--model-code", multiple=True, metavar="PKG.MODULE:FACTORY", expose_value=False,
                      callback=_allow_code,
                      help="A model factory that artifact manifests may name to rebuild their module; repeatable.")(fn)
    return fn


def trust_option(fn: Any) -> Any:
    """--trust-checkpoint plus the code options: every command that loads a model takes them."""
    fn = code_options(fn)
    return click.option("--trust-checkpoint", is_flag=True,
                        help="Allow full unpickling of a checkpoint you made yourself.")(fn)


def artifact_output_options(fn: Any) -> Any:
    """-o/--out, --force and --trust-checkpoint: what every stage command that writes an artifact folder takes."""
    fn = trust_option(fn)
    fn = click.option("--force", is_flag=True, help="Replace an existing output folder.")(fn)
    return click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
                        help="Artifact folder to write.")(fn)


# ---- options generated from config fields ----------------------------------------------------------------------
def _item_type(annotation: Any) -> Any:
    """``tuple[int, ...]`` → int; ``float | None`` → float; the type a single value is parsed as."""
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(annotation) is tuple:
        return _item_type(args[0]) if args else str
    if args and typing.get_origin(annotation) is not None and len(args) == 1:
        return _item_type(args[0])
    return annotation


class ConfigOption(click.Option):
    """A click option generated from a config field; ``config_field`` is its :class:`FieldSpec`."""

    def __init__(self, *args: Any, config_field: FieldSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_field = config_field


def cli_option(spec: FieldSpec, *, required: bool = False) -> Any:
    """The click option decorator of one config field (see the module docstring for the mapping)."""
    if spec.flag is None:
        raise ValueError(f"field {spec.name} is declared off the command line (cli=False)")
    item = _item_type(spec.annotation)
    default = None if required or spec.required else spec.default
    kwargs: dict[str, Any] = {"help": spec.help or None, "metavar": spec.metavar, "required": required}
    flag = spec.flag
    if item is bool:
        if "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        kwargs.update(default=default, show_default=default is not None)
    elif isinstance(spec.constraint, Options):
        kwargs.update(type=click.Choice([str(v) for v in spec.constraint.values]), default=default,
                      show_default=default is not None)
    else:
        click_type = {int: click.INT, float: click.FLOAT}.get(item, click.STRING)
        if isinstance(spec.constraint, Interval):
            click_type = click.INT if spec.constraint.type is int else click.FLOAT
        kwargs.update(type=click_type, default=default, show_default=default not in (None, ()))
    if spec.sequence:
        kwargs["multiple"] = True
        kwargs["default"] = () if default is None else tuple(default)
    if required and kwargs.get("default") is None:
        # click ≥ 8.2 treats an explicit ``default=None`` as a given value, so ``required`` would never fire and a
        # missing ``prune --method`` surfaced as "prune.method must be one of …, got None"
        kwargs.pop("default", None)
        kwargs.pop("show_default", None)
    return click.option(flag, spec.name, cls=ConfigOption, config_field=spec, **kwargs)


def config_options(cls: type, *, exclude: Mapping[str, str] | None = None,
                   required: tuple[str, ...] = ()) -> Any:
    """Decorator: a click option for every command-line field of config ``cls``, named by the field.

    Args:
        cls: A config dataclass whose fields are declared with :func:`modelpress.config.option`.
        exclude: ``{field: reason}`` for fields this command sets another way (``"features": "--feature A:B
            pairs, parsed here"``); fields declared ``cli=False`` are left out without one.
        required: Fields the command needs on its command line although the config has a default
            (``prune --method``).
    """
    exclude = dict(exclude or {})
    specs = [s for s in field_specs(cls) if s.flag is not None and s.name not in exclude]

    def decorate(fn: Any) -> Any:
        for spec in reversed(specs):
            fn = cli_option(spec, required=spec.name in required)(fn)
        # read by tests/cli/test_config_parity.py through ``command.callback``: which config, what it leaves out
        fn.__dict__.setdefault("config_sources", []).append((cls, exclude))
        return fn

    return decorate


def config_from_options(cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
    """``cls(**fields)`` from the parsed options: the fields ``cls`` has, plus ``fixed`` values set by the command."""
    names = {s.name for s in field_specs(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **fixed)
