"""Validate a pipeline spec, all at once and before anything runs, into typed config.

What a section may hold is generated from the config it becomes — a stage's config class, :class:`EvalConfig`,
:class:`LatencyConfig` — through :func:`modelpress.config.field_specs`: the keys are the config's fields, a value's
type is the field's annotation (YAML lists become tuples where one is declared), and a declared constraint
(``Interval``, ``Options``; for a list, on each item) is checked here so that the error points at the key's own line.
Rules a config checks itself (cross-field rules, constraints not declared yet) run when it is constructed; their
message is placed on the line of the key it names. A list field whose default is not empty must not be empty.
So the YAML, the CLI and the library cannot drift: there is one declaration. Every error names the file, the line
and the key path and suggests the closest valid key::

    pipeline.yaml:7: stages[1].amout: unknown key for stage 'prune'; did you mean 'amount'?

Stage entries use one form: ``type`` plus the stage's parameters side by side (``- type: prune`` then
``amount: 0.5`` on the next line), and an optional ``optional: true`` that lets a stage whose backend is missing
(BackendUnavailable) be skipped with a note instead of failing the run. Top-level keys starting with ``x-`` are
ignored, so shared settings can be defined once as anchors (``x-ft: &ft {lr: 0.001}``, then ``<<: *ft``).

References (model, weights, data, stage parameters naming a model or data) are parsed by :mod:`modelpress.refs`;
relative file parts resolve against the spec's folder through :meth:`Reference.resolved_against`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from ..compress.registry import STAGES, StageConfig
from ..config import FieldSpec, field_specs
from ..data import data_schemes
from ..errors import InputError
from ..evaluate.evaluator import EvalConfig
from ..refs import CODE_REF, Reference, parse_data_ref, parse_model_ref
from ..runtime.latency import LatencyConfig
from ..runtime.sessions import BACKENDS
from ..sources import model_schemes
from .spec import DataSpec, Located, Path_, PipelineSpec, read_spec_file, read_yaml

__all__ = ["load_spec", "parse_spec"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TOP_KEYS = ("name", "model", "weights", "model_kwargs", "seed", "plugins", "data", "stages", "evaluate", "gates",
            "tensorboard", "model_code")
DATA_KEYS = ("eval", "train", "calibration", "label_column")
STAGE_RESERVED = ("type", "optional")
#: ``evaluate:`` in YAML is EvalConfig's fields, except that ``latency`` is ``true``/``false`` (EvalConfig's
#: ``measure_latency``) or a mapping of LatencyConfig's fields, and ``precise: true`` picks LatencyConfig.precise().
EVAL_NOT_IN_YAML = ("measure_latency",)
EVAL_YAML_ONLY = ("precise",)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline YAML file; relative file references resolve against the file's folder.

    Raises:
        InputError: the file is missing, over :data:`~.spec.MAX_SPEC_BYTES`, not plain YAML, or does not validate;
            the message names ``file:line`` and the key path.
    """
    p = Path(path)
    return parse_spec(read_spec_file(p), source=str(p), base_dir=p.resolve().parent)


def parse_spec(text: str, *, source: str = "<pipeline>", base_dir: Path | None = None) -> PipelineSpec:
    """Validate YAML ``text`` into a :class:`PipelineSpec` (see the module docstring for the rules)."""
    doc, loc = read_yaml(text, source)
    check = _Checker(loc, base_dir)
    if isinstance(doc, dict):  # top-level "x-..." keys are ignored: a place to define YAML anchors
        doc = {k: v for k, v in doc.items() if not k.startswith("x-")}
    check.mapping(doc, (), TOP_KEYS, required=("model", "data", "stages"))
    plugins = tuple(check.str_list(doc.get("plugins", []), ("plugins",)))
    for i, module in enumerate(plugins):
        check.plugin(module, ("plugins", i))
    default_name = Path(source).stem if source and not source.startswith("<") else "pipeline"
    name = check.string(doc.get("name", default_name), ("name",))
    if not NAME_PATTERN.match(name):
        raise loc.error(("name",), f"{name!r} is not a usable folder name",
                        hint="use letters, digits, '.', '_' and '-' (at most 100 characters)")
    model_text = check.string(doc["model"], ("model",))
    model_ref = check.reference(model_text, ("model",), role="model")
    weights = doc.get("weights")
    weights = None if weights is None else check.ref_text(check.string(weights, ("weights",)), ("weights",),
                                                           role="path")
    model_kwargs = check.mapping(doc.get("model_kwargs", {}), ("model_kwargs",), None)
    if model_kwargs and model_ref.scheme != "zoo":
        raise loc.error(("model_kwargs",), f"model_kwargs apply to zoo: models only, not {str(model_ref)!r}")
    seed = check.integer(doc.get("seed", 0), ("seed",), low=0)
    model_code = tuple(check.str_list(doc.get("model_code", []), ("model_code",)))
    for i, ref in enumerate(model_code):
        if not CODE_REF.match(ref):
            raise loc.error(("model_code", i), f"{ref!r} is not a pkg.module:factory reference")
    return PipelineSpec(
        model_code=model_code,
        name=name, model=_text(model_ref, model_text), data=check.data(doc["data"]), weights=weights, seed=seed,
        evaluate=check.evaluate(doc.get("evaluate", {})), model_kwargs=dict(model_kwargs),
        gates=check.gates(doc.get("gates", {})), plugins=plugins, source=source,
        tensorboard=check.tensorboard(doc.get("tensorboard", False)),
        **check.stages(doc["stages"]),
    )


def _schemes(role: str) -> tuple[str, ...]:
    """Scheme names a reference may start with, registered ones included (a ``plugins:`` module registers its own
    before any reference is read), so ``myloader:data/x.bin`` stays a scheme and is not taken for a relative path."""
    return model_schemes() if role == "model" else data_schemes()


class _Checker:
    def __init__(self, loc: Located, base_dir: Path | None) -> None:
        self.loc = loc
        self.base_dir = base_dir

    # -- shapes --
    def mapping(self, value: Any, path: Path_, allowed: Sequence[str] | None, *, required: Sequence[str] = (),
                what: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.loc.error(path, f"expected a mapping, got {_kind(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.loc.error((*path, key), f"unknown key{what}", hint=_suggest(key, allowed))
        for key in required:
            if key not in value:
                raise self.loc.error(path, f"missing required key {key!r}")
        return value

    def string(self, value: Any, path: Path_) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.loc.error(path, f"expected a non-empty string, got {_kind(value)}")
        return value.strip()

    def integer(self, value: Any, path: Path_, *, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.loc.error(path, f"expected an integer, got {_kind(value)}")
        if value < low:
            raise self.loc.error(path, f"must be ≥ {low}, got {value}")
        return value

    def boolean(self, value: Any, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.loc.error(path, f"expected true or false, got {_kind(value)}")
        return value

    def str_list(self, value: Any, path: Path_) -> list[str]:
        if not isinstance(value, list):
            raise self.loc.error(path, f"expected a list, got {_kind(value)}")
        return [self.string(v, (*path, i)) for i, v in enumerate(value)]

    def plugin(self, module: str, path: Path_) -> None:
        """Import a plugin module (trusted code the user names) so its stages/sources register before checks."""
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
            raise self.loc.error(path, f"{module!r} is not a Python module name")
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise self.loc.error(path, f"cannot import plugin {module!r}: {type(exc).__name__}: {exc}") from None

    # -- references --
    def reference(self, text: str, path: Path_, *, role: str) -> Reference:
        """Parse a ``role`` ("model", "data" or "path": a plain file) reference; relative file parts resolve
        against the spec's folder. A file that exists there wins over another reading of the text (refs.py's
        rule), and ``hf:NAME`` stays an installed-package lookup unless ``NAME`` is a folder beside the spec."""
        base = self.base_dir
        exists = (lambda p: os.path.lexists(base / p)) if base is not None else os.path.lexists
        try:
            if role == "path":
                ref = Reference(text, "path", body=text)
            elif role == "model":
                ref = parse_model_ref(text, schemes=_schemes("model"), exists=exists)
            else:
                ref = parse_data_ref(text, schemes=_schemes("data"), exists=exists)
        except InputError as exc:
            raise self.loc.error(path, exc.message, hint=exc.hint) from None
        if base is None or (ref.kind == "code" and not ref.weights) or (ref.scheme == "hf" and not exists(ref.body)):
            return ref
        resolved = ref.resolved_against(base)
        same = (resolved.body, resolved.weights) == (ref.body, ref.weights)
        return ref if same else resolved

    def ref_text(self, text: str, path: Path_, *, role: str) -> str:
        """The reference as the loaders will read it: the user's text, or its canonical form once a relative
        file part was resolved."""
        return _text(self.reference(text, path, role=role), text)

    # -- config sections, generated from the config's fields --
    def config_values(self, cls: type, doc: dict[str, Any], path: Path_, *, label: str,
                      skip: Iterable[str] = (), extra: Iterable[str] = ()) -> dict[str, Any]:
        """The fields of ``cls`` given in ``doc``, type- and constraint-checked at their own line. Keys in ``extra``
        are left to the caller; fields in ``skip`` are not YAML keys. ``label`` prefixes constraint messages."""
        specs = {s.name: s for s in field_specs(cls) if s.name not in set(skip)}
        allowed = list(dict.fromkeys([*specs, *extra]))
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key in extra:
                continue
            if key not in specs:
                raise self.loc.error((*path, key), f"unknown key{label and f' for {label}'}",
                                     hint=_suggest(key, allowed))
            values[key] = self.field_value(specs[key], value, (*path, key), label=label)
        return values

    def field_value(self, spec: FieldSpec, value: Any, path: Path_, *, label: str = "") -> Any:
        nonempty = isinstance(spec.default, tuple) and bool(spec.default)
        value = _coerce(value, spec.annotation, path, self.loc, nonempty=nonempty)
        constraint = spec.constraint
        if constraint is None or value is None:
            return value
        items = list(enumerate(value)) if spec.sequence and isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            if not constraint.accepts(item):
                where = path if index is None else (*path, index)
                raise self.loc.error(where, f"{label and f'{label}: '}must be {constraint.describe()}, got {item!r}")
        return value

    def construct(self, cls: type, values: dict[str, Any], path: Path_, *, label: str = "") -> Any:
        """``cls(**values)``; a rule the config checks itself is reported on the line of the key it names."""
        try:
            return cls(**values)
        except InputError as exc:
            key = _named_key(exc.message, values)
            message = _without_key_prefix(exc.message, key) if key else exc.message
            raise self.loc.error((*path, key) if key else path, f"{label and f'{label}: '}{message}",
                                 hint=exc.hint) from None
        except (TypeError, ValueError) as exc:
            raise self.loc.error(path, f"{label and f'{label}: '}{exc}") from None

    # -- sections --
    def data(self, value: Any) -> DataSpec:
        path: Path_ = ("data",)
        if isinstance(value, str):
            return DataSpec(eval=self.ref_text(self.string(value, path), path, role="data"))
        doc = self.mapping(value, path, DATA_KEYS, required=("eval",))
        refs = {k: self.ref_text(self.string(doc[k], (*path, k)), (*path, k), role="data")
                for k in ("eval", "train", "calibration") if doc.get(k) is not None}
        label = self.string(doc.get("label_column", "label"), (*path, "label_column"))
        return DataSpec(label_column=label, **refs)

    def evaluate(self, value: Any) -> EvalConfig:
        path: Path_ = ("evaluate",)
        doc = self.mapping(value if value is not None else {}, path, None)
        values = self.config_values(EvalConfig, doc, path, label="", skip=EVAL_NOT_IN_YAML,
                                    extra=("latency", *EVAL_YAML_ONLY))
        for i, name in enumerate(values.get("backends", ())):
            if name not in BACKENDS:
                raise self.loc.error((*path, "backends", i), f"unknown backend {name!r}",
                                     hint=_suggest(name, list(BACKENDS)))
        precise = self.boolean(doc.get("precise", False), (*path, "precise"))
        latency_doc = doc.get("latency", True)
        values["latency"] = LatencyConfig.precise() if precise else LatencyConfig()
        if isinstance(latency_doc, dict):
            if precise:
                raise self.loc.error((*path, "latency"), "give either precise: true or latency settings, not both")
            lat_path = (*path, "latency")
            settings = self.config_values(LatencyConfig, self.mapping(latency_doc, lat_path, None), lat_path,
                                          label="")
            values["latency"] = self.construct(LatencyConfig, settings, lat_path)
        else:
            values["measure_latency"] = self.boolean(latency_doc, (*path, "latency"))
        return self.construct(EvalConfig, values, path)

    def tensorboard(self, value: Any) -> bool | str:
        """``true`` / ``false``, or a folder (relative paths resolve against the spec's folder)."""
        if isinstance(value, bool):
            return value
        return self.ref_text(self.string(value, ("tensorboard",)), ("tensorboard",), role="path")

    def gates(self, value: Any) -> dict[str, Any]:
        """Gate thresholds, validated by the compare module's :class:`GateConfig` (its keys, its ranges)."""
        path: Path_ = ("gates",)
        doc = self.mapping(value if value is not None else {}, path, None)
        from ..reports.compare import GateConfig

        self.mapping(doc, path, [s.name for s in field_specs(GateConfig)], what=" (gate)")
        try:
            GateConfig.from_mapping(doc)
        except InputError as exc:
            key = _named_key(exc.message, doc)
            raise self.loc.error((*path, key) if key else path, exc.message, hint=exc.hint) from None
        return dict(doc)

    def stages(self, value: Any) -> dict[str, Any]:
        path: Path_ = ("stages",)
        if not isinstance(value, list):
            raise self.loc.error(path, f"expected a list of stages, got {_kind(value)}")
        configs: list[StageConfig] = []
        optional: set[int] = set()
        for i, entry in enumerate(value):
            config, is_optional = self.stage(entry, (*path, i))
            configs.append(config)
            if is_optional:
                optional.add(i)
        return {"stages": tuple(configs), "optional": frozenset(optional)}

    def stage(self, entry: Any, path: Path_) -> tuple[StageConfig, bool]:
        if isinstance(entry, str):
            entry = {"type": entry}
        if isinstance(entry, dict) and "type" not in entry and len(entry) == 1 and next(iter(entry)) in STAGES:
            kind = next(iter(entry))
            raise self.loc.error(path, f"a stage is written '- type: {kind}' with its parameters beside it",
                                 hint=f"e.g. '- type: {kind}' then 'optional: true' on the next line, not "
                                      f"'- {kind}: {{...}}'")
        doc = self.mapping(entry, path, None, required=("type",))
        kind = self.string(doc["type"], (*path, "type"))
        stage = STAGES.find(kind)
        if stage is None:
            raise self.loc.error((*path, "type"), f"unknown stage type {kind!r}",
                                 hint=_suggest(kind, sorted(STAGES.names()), label="known stages"))
        cls = stage.config
        optional = self.boolean(doc.get("optional", False), (*path, "optional"))
        fields = [s.name for s in field_specs(cls)]
        if "params" in doc and "params" not in fields:
            raise self.loc.error((*path, "params"), f"unknown key for stage {kind!r}",
                                 hint="write the parameters next to 'type:' (e.g. '- type: prune' then "
                                      "'amount: 0.5')")
        reserved = [k for k in STAGE_RESERVED if k not in fields]
        label = f"stage {kind!r}"
        params = self.config_values(cls, doc, path, label=label, extra=reserved)
        for key, ref_kind in cls.references.items():  # file references in stage parameters: relative to the spec
            value = params.get(key)
            if isinstance(value, str) and value and value not in cls.keywords:
                params[key] = self.ref_text(value, (*path, key), role=ref_kind)
        if "optional" in fields:
            params["optional"] = optional
        return self.construct(cls, params, path, label=label), optional


def _text(ref: Reference, text: str) -> str:
    """The user's text when nothing was resolved (options keep their spelling), else the canonical form."""
    return text if ref.text == text else str(ref)


_LABELS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
           str: ("a string", "strings")}


def _coerce(value: Any, hint: Any, path: Path_, loc: Located, *, nonempty: bool = False) -> Any:
    """Check ``value`` against a dataclass field annotation; YAML lists become tuples where one is declared."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path, loc, nonempty=nonempty)
            except InputError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise loc.error(path, f"unexpected value {_kind(value)}")
    if origin is Literal:
        if value not in args:
            raise loc.error(path, f"expected one of {list(args)}, got {value!r}", hint=_suggest(str(value), args))
        return value
    checks: dict[Any, Any] = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }
    if hint in checks:
        if not checks[hint](value):
            raise loc.error(path, f"expected {_LABELS[hint][0]}, got {_kind(value)}")
        return float(value) if hint is float else value
    if origin in (tuple, list):
        fixed = origin is tuple and bool(args) and args[-1] is not Ellipsis
        item = args[0] if args and not fixed else None
        if not isinstance(value, list) or (nonempty and not value):
            what = f"a list of {len(args)} items" if fixed else (
                f"a {'non-empty ' if nonempty else ''}list" + (f" of {_LABELS[item][1]}" if item in _LABELS else ""))
            raise loc.error(path, f"expected {what}, got {_kind(value)}")
        if fixed and len(args) != len(value):
            raise loc.error(path, f"expected a list of {len(args)} items, got {len(value)}")
        if not args:
            item_types: list[Any] = [Any] * len(value)
        elif fixed:
            item_types = list(args)
        else:
            item_types = [args[0]] * len(value)  # tuple[X, ...] or list[X]
        items = [_coerce(v, t, (*path, i), loc) for i, (v, t) in enumerate(zip(value, item_types, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise loc.error(path, f"expected a mapping, got {_kind(value)}")
        return value
    return value


def _without_key_prefix(message: str, key: str) -> str:
    """``evaluate.knn (k) must be ...`` → ``must be ...``: the located error already names the key path."""
    return re.sub(rf"^\w[\w.]*\.{re.escape(key)}(\s*\([^)]*\))?:?\s+(?=\S)", "", message, count=1)


def _named_key(message: str, params: dict[str, Any]) -> str | None:
    """The parameter a config's own error message is about (``prune.amount must ...`` → ``amount``)."""
    for key in sorted(params, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", message):
            return key
    return None


def _suggest(key: str, valid: Sequence[str], *, label: str = "valid keys") -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"{label}: {', '.join(str(v) for v in valid)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value[:40]!r} (a string)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
