"""Pipeline specs: a YAML file validated, all at once and before anything runs, into typed config.

The YAML is untrusted input. It is read with a size cap, composed with PyYAML's *safe* composer (which keeps the
line of every node) and turned into plain values here: only the standard tags (str, int, float, bool, null, map,
seq, merge) are accepted, so ``!!python/...`` tags are refused before anything is constructed; aliases
are followed with a node budget and a depth limit, so an "anchor bomb" fails fast instead of eating memory. Every
error names the file, the line and the key path, and suggests the closest valid key::

    pipeline.yaml:7: stages[1].amout: unknown key for stage 'prune'; did you mean 'amount'?

Stage entries use one form: ``type`` plus the stage's parameters side by side (``- type: prune`` then
``amount: 0.5`` on the next line), and an optional ``optional: true`` that lets a stage whose backend is missing
(BackendUnavailable) be skipped with a note instead of failing the run. Top-level keys starting with ``x-`` are
ignored, so shared settings can be defined once as anchors (``x-ft: &ft {lr: 0.001}``, then ``<<: *ft``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from . import compress  # noqa: F401  (registers the stages)
from .compress.registry import CONFIGS, StageConfig
from .errors import InputError
from .evaluate.backends import BACKENDS
from .evaluate.evaluator import EvalConfig
from .evaluate.latency import LatencyConfig

__all__ = ["MAX_SPEC_BYTES", "DataSpec", "PipelineSpec", "load_spec", "parse_spec"]

MAX_SPEC_BYTES = 1 << 20  # a pipeline spec is a page of YAML; a megabyte is already absurd
MAX_NODES = 100_000  # nodes visited while following aliases: a billion-laughs document stops here
MAX_DEPTH = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SCHEME_REF = re.compile(r"^[A-Za-z_][\w.]*:")  # zoo:, sklearn:, hf:, pkg.module:fn — not a file path
_YAML_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML_TAG}{t}" for t in ("str", "int", "float", "bool", "null")}
_TIMESTAMP = f"{_YAML_TAG}timestamp"

TOP_KEYS = ("name", "model", "weights", "model_kwargs", "seed", "plugins", "data", "stages", "evaluate", "gates",
            "tensorboard", "model_code")
DATA_KEYS = ("eval", "train", "calibration", "label_column")
EVAL_KEYS = ("backends", "batch_sizes", "threads", "precise", "latency", "predict_batch_size",
             "memory", "knn", "knn_layer", "knn_folds", "noise", "seed", "token_noise")  # README "More measurements"
LATENCY_KEYS = tuple(f.name for f in dataclasses.fields(LatencyConfig))
STAGE_RESERVED = ("type", "optional")


@dataclass(frozen=True)
class DataSpec:
    """Data references per role; ``train``/``calibration`` default to the eval source's other split."""

    eval: str
    train: str | None = None
    calibration: str | None = None
    label_column: str = "label"


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: what :func:`modelpress.pipeline.run_pipeline` runs.

    ``optional`` holds the 0-based indexes of stages that are skipped (with a note) when their backend is
    unavailable. ``gates`` maps a gate name to its threshold (the keys of
    :class:`modelpress.reports.compare.GateConfig`), checked on the final stage against the original.
    """

    name: str
    model: str
    data: DataSpec
    stages: tuple[StageConfig, ...] = ()
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    weights: str | None = None
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    optional: frozenset[int] = frozenset()
    gates: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    source: str | None = None
    tensorboard: bool | str = False  # true: <run folder>/tensorboard; a folder: there (pipeline.tensorboard_dir)
    model_code: tuple[str, ...] = ()  # pkg.module:factory refs that artifact folders named here may rebuild with

    def named_code(self) -> tuple[str, ...]:
        """Every model reference this spec names itself (model, model_code, stage teacher/student): the code its
        artifact folders may be rebuilt with (SECURITY.md). Non-code references are filtered by the trust scope."""
        refs = [self.model, *self.model_code]
        for config in self.stages:
            for key, kind in getattr(type(config), "references", {}).items():
                if kind == "model" and isinstance(getattr(config, key, None), str):
                    refs.append(getattr(config, key))
        return tuple(refs)


# ---- reading YAML safely, with line numbers -----------------------------------------------------------------------
Path_ = tuple[Union[str, int], ...]  # noqa: UP007  (a runtime alias: py3.10 needs Union)


class _Located:
    """Plain values from a YAML file plus the line of every key and list item (by key path)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {(): 1}
        self._budget = 0
        self._loader = yaml.SafeLoader("")

    def line(self, path: Path_) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Path_, message: str, *, hint: str | None = None) -> InputError:
        where = f"{self.source}:{self.line(path)}"
        return InputError(f"{where}: {format_path(path)}: {message}" if path else f"{where}: {message}", hint=hint)

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        self._budget += 1
        if self._budget > MAX_NODES:
            raise self.error(path, f"the YAML expands to more than {MAX_NODES} nodes (an alias bomb?)",
                             hint="write the values out instead of nesting aliases")
        if depth > MAX_DEPTH:
            raise self.error(path[:4], f"the YAML nests deeper than {MAX_DEPTH} levels (a recursive alias?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        tag = node.tag or ""
        if isinstance(node, yaml.ScalarNode):
            if tag == _TIMESTAMP:
                return str(node.value)  # a date-looking string stays a string
            if tag not in _SCALAR_TAGS:
                raise self._tag_error(node, path)
            return self._loader.construct_object(node)
        if isinstance(node, yaml.SequenceNode):
            if tag != f"{_YAML_TAG}seq":
                raise self._tag_error(node, path)
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode) or tag != f"{_YAML_TAG}map":
            raise self._tag_error(node, path)
        return self._mapping(node, path, depth)

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_YAML_TAG}merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value = self.build(source, path, depth + 1)
                    if not isinstance(value, dict):
                        raise self.error(path, "a '<<' merge needs a mapping (or a list of mappings)")
                    merged = {**value, **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise self.error(path, f"line {key_node.start_mark.line + 1}: keys must be plain strings")
            key = str(self._loader.construct_object(key_node))
            line = key_node.start_mark.line + 1
            if key in seen:
                self.lines[(*path, key)] = line
                raise self.error((*path, key), f"duplicate key (first at line {seen[key]})")
            seen[key] = line
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return {**merged, **result}

    def _tag_error(self, node: yaml.Node, path: Path_) -> InputError:
        self.lines.setdefault(path, node.start_mark.line + 1)
        tag = (node.tag or "").replace(_YAML_TAG, "!!")
        return self.error(path, f"YAML tag {tag} is not allowed",
                          hint="modelpress reads plain YAML only (no python/object tags)")


def format_path(path: Path_) -> str:
    """``("stages", 2, "amount")`` → ``stages[2].amount``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` from the parser's event stream, before composing.

    PyYAML's composer recurses once per level, so a 1 KB file of 500 ``[`` exhausts Python's stack (RecursionError)
    before :meth:`_Located.build` could count; the event parser keeps an explicit stack and is safe to run first.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"{source}:{event.start_mark.line + 1}: the YAML nests deeper than {MAX_DEPTH} "
                                 f"levels", hint="a pipeline spec needs a handful of levels; flatten the value")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _read_yaml(text: str, source: str) -> tuple[Any, _Located]:
    located = _Located(source)
    try:
        _check_depth(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc).split())
        raise InputError(f"{source}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None
    if root is None:
        raise InputError(f"{source}: the file is empty", hint="see examples/digits.yaml")
    return located.build(root, ()), located


# ---- validation ------------------------------------------------------------------------------------------------
def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline YAML file; relative file references resolve against the file's folder.

    Raises:
        InputError: the file is missing, over :data:`MAX_SPEC_BYTES`, not plain YAML, or does not validate; the
            message names ``file:line`` and the key path.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pipeline file {p} does not exist")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise InputError(f"{p} is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a pipeline spec")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 text (byte {exc.start})") from None
    return parse_spec(text, source=str(p), base_dir=p.resolve().parent)


def parse_spec(text: str, *, source: str = "<pipeline>", base_dir: Path | None = None) -> PipelineSpec:
    """Validate YAML ``text`` into a :class:`PipelineSpec` (see the module docstring for the rules)."""
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise InputError(f"{source} is over the {MAX_SPEC_BYTES}-byte limit for a pipeline spec")
    doc, loc = _read_yaml(text, source)
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
    model = check.path_ref(check.string(doc["model"], ("model",)), model=True)
    weights = doc.get("weights")
    weights = None if weights is None else check.path_ref(check.string(weights, ("weights",)), plain=True)
    model_kwargs = check.mapping(doc.get("model_kwargs", {}), ("model_kwargs",), None)
    if model_kwargs and not model.startswith("zoo:"):
        raise loc.error(("model_kwargs",), f"model_kwargs apply to zoo: models only, not {model!r}")
    seed = check.integer(doc.get("seed", 0), ("seed",), low=0)
    model_code = tuple(check.str_list(doc.get("model_code", []), ("model_code",)))
    for i, ref in enumerate(model_code):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", ref):
            raise loc.error(("model_code", i), f"{ref!r} is not a pkg.module:factory reference")
    spec = PipelineSpec(
        model_code=model_code,
        name=name, model=model, data=check.data(doc["data"]), weights=weights, seed=seed,
        evaluate=check.evaluate(doc.get("evaluate", {})), model_kwargs=dict(model_kwargs),
        gates=check.gates(doc.get("gates", {})), plugins=plugins, source=source,
        tensorboard=check.tensorboard(doc.get("tensorboard", False)),
        **check.stages(doc["stages"]),
    )
    return spec


class _Checker:
    def __init__(self, loc: _Located, base_dir: Path | None) -> None:
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

    def int_list(self, value: Any, path: Path_, *, low: int) -> list[int]:
        if not isinstance(value, list) or not value:
            raise self.loc.error(path, f"expected a non-empty list of integers, got {_kind(value)}")
        return [self.integer(v, (*path, i), low=low) for i, v in enumerate(value)]

    def plugin(self, module: str, path: Path_) -> None:
        """Import a plugin module (trusted code the user names) so its stages/sources register before checks."""
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
            raise self.loc.error(path, f"{module!r} is not a Python module name")
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise self.loc.error(path, f"cannot import plugin {module!r}: {type(exc).__name__}: {exc}") from None

    def path_ref(self, ref: str, *, model: bool = False, plain: bool = False) -> str:
        """Resolve a relative file reference against the spec's folder; schemes (zoo:, sklearn:, pkg.mod:fn) stay."""
        if self.base_dir is None:
            return ref
        if model and "@" in ref and not ref.startswith("hf:"):
            head, weights = ref.rsplit("@", 1)
            return f"{self.path_ref(head, model=True)}@{self.path_ref(weights, plain=True)}"
        suffix = ""
        if not plain and not model and "#" in ref:
            ref, split = ref.rsplit("#", 1)
            suffix = f"#{split}"
        if ref.startswith("text:") and not model:  # text:FILE?options: the file is relative to the spec too
            file, sep, query = ref[5:].partition("?")
            return f"text:{self.path_ref(file, plain=True)}{sep}{query}{suffix}"
        if _SCHEME_REF.match(ref) or Path(ref).is_absolute():
            return ref + suffix
        return str(self.base_dir / ref) + suffix

    # -- sections --
    def data(self, value: Any) -> DataSpec:
        path: Path_ = ("data",)
        if isinstance(value, str):
            return DataSpec(eval=self.path_ref(self.string(value, path)))
        doc = self.mapping(value, path, DATA_KEYS, required=("eval",))
        refs = {k: self.path_ref(self.string(doc[k], (*path, k))) for k in ("eval", "train", "calibration")
                if doc.get(k) is not None}
        label = self.string(doc.get("label_column", "label"), (*path, "label_column"))
        return DataSpec(label_column=label, **refs)

    def evaluate(self, value: Any) -> EvalConfig:
        path: Path_ = ("evaluate",)
        doc = self.mapping(value if value is not None else {}, path, EVAL_KEYS)
        backends = self.str_list(doc.get("backends", []), (*path, "backends"))
        for i, b in enumerate(backends):
            if b not in BACKENDS:
                raise self.loc.error((*path, "backends", i), f"unknown backend {b!r}", hint=_suggest(b, BACKENDS))
        batch_sizes = self.int_list(doc.get("batch_sizes", [1, 32]), (*path, "batch_sizes"), low=1)
        threads = self.integer(doc.get("threads", 1), (*path, "threads"), low=1)
        predict_bs = self.integer(doc.get("predict_batch_size", 256), (*path, "predict_batch_size"), low=1)
        precise = self.boolean(doc.get("precise", False), (*path, "precise"))
        latency_doc = doc.get("latency", True)
        measure = True
        latency = LatencyConfig.precise() if precise else LatencyConfig()
        if isinstance(latency_doc, dict):
            if precise:
                raise self.loc.error((*path, "latency"), "give either precise: true or latency settings, not both")
            settings = self.mapping(latency_doc, (*path, "latency"), LATENCY_KEYS)
            try:
                latency = LatencyConfig(**settings)
            except InputError as exc:
                key = _named_key(exc.message, settings)
                raise self.loc.error((*path, "latency", key) if key else (*path, "latency"),
                                     exc.message, hint=exc.hint) from None
        else:
            measure = self.boolean(latency_doc, (*path, "latency"))
        return EvalConfig(backends=tuple(backends), batch_sizes=tuple(batch_sizes), threads=threads,
                          latency=latency, predict_batch_size=predict_bs, measure_latency=measure,
                          **self.breadth(doc, path))

    def breadth(self, doc: dict[str, Any], path: Path_) -> dict[str, Any]:
        """memory, knn, knn_layer, knn_folds, noise, seed, token_noise (README "More measurements")."""
        out: dict[str, Any] = {"memory": self.boolean(doc.get("memory", False), (*path, "memory"))}
        if doc.get("knn") is not None:
            out["knn"] = self.integer(doc["knn"], (*path, "knn"), low=1)
        if doc.get("knn_layer") is not None:
            out["knn_layer"] = self.string(doc["knn_layer"], (*path, "knn_layer"))
        out["knn_folds"] = self.integer(doc.get("knn_folds", 5), (*path, "knn_folds"), low=2)
        noise = doc.get("noise", [])
        if not isinstance(noise, list):
            raise self.loc.error((*path, "noise"), f"expected a list of noise levels, got {_kind(noise)}")
        for i, level in enumerate(noise):
            if isinstance(level, bool) or not isinstance(level, (int, float)) or not level >= 0:
                raise self.loc.error((*path, "noise", i), f"noise level (sigma) must be a number ≥ 0, got "
                                                          f"{_kind(level)}")
        out["noise"] = tuple(float(v) for v in noise)
        out["seed"] = self.integer(doc.get("seed", 0), (*path, "seed"), low=0)
        token_noise = self.string(doc.get("token_noise", "replace"), (*path, "token_noise"))
        if token_noise not in ("replace", "dropout"):
            raise self.loc.error((*path, "token_noise"), f"expected replace or dropout, got {token_noise!r}")
        out["token_noise"] = token_noise
        return out

    def tensorboard(self, value: Any) -> bool | str:
        """``true`` / ``false``, or a folder (relative paths resolve against the spec's folder)."""
        if isinstance(value, bool):
            return value
        return self.path_ref(self.string(value, ("tensorboard",)), plain=True)

    def gates(self, value: Any) -> dict[str, Any]:
        """Gate thresholds, validated by the compare module's :class:`GateConfig` (its keys, its ranges)."""
        path: Path_ = ("gates",)
        doc = self.mapping(value if value is not None else {}, path, None)
        from .reports.compare import GateConfig

        self.mapping(doc, path, [f.name for f in dataclasses.fields(GateConfig)], what=" (gate)")
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
        if isinstance(entry, dict) and "type" not in entry and len(entry) == 1 and next(iter(entry)) in CONFIGS:
            kind = next(iter(entry))
            raise self.loc.error(path, f"a stage is written '- type: {kind}' with its parameters beside it",
                                 hint=f"e.g. '- type: {kind}' then 'optional: true' on the next line, not "
                                      f"'- {kind}: {{...}}'")
        doc = self.mapping(entry, path, None, required=("type",))
        kind = self.string(doc["type"], (*path, "type"))
        if kind not in CONFIGS:
            raise self.loc.error((*path, "type"), f"unknown stage type {kind!r}",
                                 hint=_suggest(kind, sorted(CONFIGS), label="known stages"))
        cls = CONFIGS[kind]
        optional = self.boolean(doc.get("optional", False), (*path, "optional"))
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation that cannot be resolved: the config's own __post_init__ still checks
            hints = {}
        fields = [f.name for f in dataclasses.fields(cls)]
        params: dict[str, Any] = {}
        for key, val in doc.items():
            if key in STAGE_RESERVED and key not in fields:
                continue
            if key not in fields:
                hint = _suggest(key, [*fields, "optional"])
                if key == "params":
                    hint = "write the parameters next to 'type:' (e.g. '- type: prune' then 'amount: 0.5')"
                raise self.loc.error((*path, key), f"unknown key for stage {kind!r}", hint=hint)
            params[key] = _coerce(val, hints.get(key, Any), (*path, key), self.loc)
        for key, ref_kind in cls.references.items():  # file references in stage parameters: relative to the spec
            value = params.get(key)
            if isinstance(value, str) and value and value not in cls.keywords:
                params[key] = self.path_ref(value, model=ref_kind == "model", plain=ref_kind == "path")
        if "optional" in fields:
            params["optional"] = optional
        try:
            return cls(**params), optional
        except InputError as exc:
            key = _named_key(exc.message, params)
            raise self.loc.error((*path, key) if key else path, f"stage {kind!r}: {exc.message}",
                                 hint=exc.hint) from None
        except (TypeError, ValueError) as exc:
            raise self.loc.error(path, f"stage {kind!r}: {exc}") from None


def _coerce(value: Any, hint: Any, path: Path_, loc: _Located) -> Any:
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
                return _coerce(value, option, path, loc)
            except InputError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise loc.error(path, f"unexpected value {_kind(value)}")
    if origin is Literal:
        if value not in args:
            raise loc.error(path, f"expected one of {list(args)}, got {value!r}", hint=_suggest(str(value), args))
        return value
    checks: dict[Any, tuple[str, Any]] = {
        bool: ("true or false", lambda v: isinstance(v, bool)),
        int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
    }
    if hint in checks:
        label, ok = checks[hint]
        if not ok(value):
            raise loc.error(path, f"expected {label}, got {_kind(value)}")
        return float(value) if hint is float else value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise loc.error(path, f"expected a list, got {_kind(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise loc.error(path, f"expected a list of {len(args)} items, got {len(value)}")
        if not args:
            item_types: list[Any] = [Any] * len(value)
        elif origin is tuple and args[-1] is not Ellipsis:
            item_types = list(args)  # a fixed-length tuple, its length checked above
        else:
            item_types = [args[0]] * len(value)  # tuple[X, ...] or list[X]
        items = [_coerce(v, t, (*path, i), loc) for i, (v, t) in enumerate(zip(value, item_types, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise loc.error(path, f"expected a mapping, got {_kind(value)}")
        return value
    return value


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
