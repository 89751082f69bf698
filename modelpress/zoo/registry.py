"""The zoo's name → factory table and the one function that builds from it.

A factory takes the data's per-sample ``input_shape`` and ``n_classes`` as keyword arguments, plus JSON-plain width
or option arguments, so that a model is rebuilt from its manifest without pickle (``sources.check_builder`` accepts
exactly the keyword arguments a factory declares).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from torch import nn

from ..errors import InputError
from ..registry import Registry

#: ``zoo:NAME`` → factory, filled by the model modules this package's ``__init__`` imports. No entry-point group:
#: a manifest (a file, never trusted) may name a zoo model, and only modelpress's own builders are allow-listed, so
#: naming one must not import third-party code (plugins add models as ``pkg.module:factory`` or a model source).
ZOO: Registry[Callable[..., nn.Module]] = Registry("zoo model")


def register_zoo(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ZOO.add(name, factory)
        return factory

    return decorate


def _query_kwargs(name: str, query: str) -> dict[str, object]:
    """``pretrained=1&dropout=0.1`` → typed keyword arguments, checked against the factory's defaults' types."""
    params = inspect.signature(ZOO[name]).parameters
    out: dict[str, object] = {}
    for key, text in parse_qsl(query, keep_blank_values=True):
        if key not in params or key in ("input_shape", "n_classes"):
            allowed = sorted(k for k in params if k not in ("input_shape", "n_classes"))
            raise InputError(f"zoo:{name} has no option {key!r}", hint=f"options: {', '.join(allowed) or 'none'}")
        default = params[key].default
        if isinstance(default, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise InputError(f"zoo:{name} option {key}={text!r} is not a boolean", hint="use 1 or 0")
            out[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            try:
                out[key] = type(default)(text)
            except ValueError:
                raise InputError(f"zoo:{name} option {key}={text!r} is not a {type(default).__name__}") from None
        else:
            out[key] = text
    return out


def build_zoo(name: str, *, input_shape: Sequence[int], n_classes: int, **kwargs: object) -> nn.Module:
    """Build ``zoo:NAME`` (or ``zoo:NAME?option=value``) for samples of ``input_shape`` (without the batch axis)."""
    name, _, query = name.partition("?")
    if name not in ZOO:
        raise InputError(f"unknown zoo model {name!r}", hint=f"choose one of {', '.join(sorted(ZOO))}")
    if n_classes < 2:
        raise InputError(f"zoo:{name} needs at least 2 classes, got {n_classes}")
    if query:
        kwargs = {**_query_kwargs(name, query), **kwargs}
    try:
        return ZOO[name](input_shape=tuple(int(d) for d in input_shape), n_classes=int(n_classes), **kwargs)
    except TypeError as exc:
        raise InputError(f"zoo:{name}: {exc}") from None
