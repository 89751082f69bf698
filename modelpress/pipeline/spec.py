"""Pipeline specs: the types a validated spec becomes, and the safe YAML reader with line numbers.

The YAML is untrusted input. It is read with a size cap, composed with PyYAML's *safe* composer (which keeps the
line of every node) and turned into plain values here: only the standard tags (str, int, float, bool, null, map,
seq, merge) are accepted, so ``!!python/...`` tags are refused before anything is constructed; aliases
are followed with a node budget and a depth limit, so an "anchor bomb" fails fast instead of eating memory. Every
error names the file, the line and the key path (:meth:`Located.error`)::

    pipeline.yaml:7: stages[1].amout: unknown key for stage 'prune'; did you mean 'amount'?

What the values must be is :mod:`.validate`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..compress.registry import StageConfig
from ..errors import InputError
from ..evaluate.evaluator import EvalConfig

__all__ = ["MAX_SPEC_BYTES", "DataSpec", "Located", "PipelineSpec", "format_path", "read_spec_file", "read_yaml"]

MAX_SPEC_BYTES = 1 << 20  # a pipeline spec is a page of YAML; a megabyte is already absurd
MAX_NODES = 100_000  # nodes visited while following aliases: a billion-laughs document stops here
MAX_DEPTH = 64
_YAML_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML_TAG}{t}" for t in ("str", "int", "float", "bool", "null")}
_TIMESTAMP = f"{_YAML_TAG}timestamp"


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


class Located:
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
    before :meth:`Located.build` could count; the event parser keeps an explicit stack and is safe to run first.
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


def read_yaml(text: str, source: str) -> tuple[Any, Located]:
    """Plain values from YAML ``text`` and where each came from; InputError (file:line) when it is not plain,
    bounded YAML."""
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise InputError(f"{source} is over the {MAX_SPEC_BYTES}-byte limit for a pipeline spec")
    located = Located(source)
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


def read_spec_file(path: str | Path) -> str:
    """The text of a spec file: it must exist, fit :data:`MAX_SPEC_BYTES` and be UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pipeline file {p} does not exist")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise InputError(f"{p} is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a pipeline spec")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p} is not UTF-8 text (byte {exc.start})") from None
