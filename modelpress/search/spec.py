"""Search specs: the base pipeline, the space, objectives, constraints, sampler and budget, validated at once.

A search spec is YAML read with the pipeline reader (:func:`modelpress.pipeline.spec.read_yaml`: safe, bounded, with
the line of every key), so its errors name ``file:line`` and the key path like a pipeline's::

    search.yaml:9: space.stages.prune.amout: unknown parameter path; did you mean 'stages.prune.amount'?

Layout (see examples/digits-search.yaml)::

    name: digits-search                    # the search folder: OUT/<name>/
    base: digits-base.yaml                 # a pipeline file (relative to this file) or an inline pipeline mapping
    space:                                 # parameter paths: stages.<type or index>.<field>
      stages.prune.amount: [0.25, 0.5]     # a list: choices (any YAML values, lists of layer names included)
      stages.train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}      # a float range (log scale)
      stages.prune.finetune_epochs: {low: 1, high: 5, step: 2}     # an int range (ints: step 1 by default)
      stages.quantize.calibrate: {choices: [minmax, entropy], when: {stages.quantize.mode: static}}
    objectives:                            # maximize / minimize a declared metric (modelpress.metric_schema)
      - maximize: metrics.accuracy
      - {minimize: latency.median_ms, batch: 1, backend: onnxruntime, threads: 1}
      - minimize: footprint.size_bytes
    constraints:                           # gate names (judged like the gates: McNemar, bootstrap) ...
      max_accuracy_drop: 1
      metrics.f1_macro: {min: 0.9}         # ... or bounds on a declared metric of the final stage
    sampler: grid                          # grid | random | tpe | nsga2 (the last two need optuna)
    seed: 0
    budget: {trials: 12, minutes: 20}

Every value the space can take is checked against the stage's config declaration before anything runs: each choice
and both ends of a range are put into the base pipeline and validated by :func:`modelpress.pipeline.parse_spec`, and
an error is reported on the space key's own line.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..compress.registry import STAGES
from ..config import field_specs
from ..errors import BackendUnavailable, InputError
from ..metric_schema import METRICS, Metric
from ..pipeline.spec import Located, Path_, PipelineSpec, read_spec_file, read_yaml
from ..pipeline.validate import NAME_PATTERN, parse_spec

__all__ = ["SAMPLERS", "Constraint", "Objective", "Param", "SearchSpec", "load_search", "parse_search"]

TOP_KEYS = ("name", "base", "space", "objectives", "constraints", "sampler", "seed", "budget")
SAMPLERS = ("grid", "random", "tpe", "nsga2")
OPTUNA_SAMPLERS = ("tpe", "nsga2")
MAX_GRID = 100_000
_SECTIONS = ("metrics", "fidelity", "footprint", "latency", "knn")


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``stages.<type or index>.<field>`` of the base pipeline."""

    path: str
    stage: int
    key: str
    kind: str  # "choice", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # active only when each named parameter has one of the values

    def active(self, values: dict[str, Any]) -> bool:
        return all(path in values and _in(values[path], allowed) for path, allowed in self.when)

    def grid(self) -> list[Any]:
        """Every value grid search tries."""
        if self.kind == "choice":
            return list(self.choices)
        assert self.low is not None and self.high is not None and self.step is not None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(round(v)) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def describe(self) -> str:
        if self.kind == "choice":
            text = "{" + ", ".join(json.dumps(c) for c in self.choices) + "}"
        else:
            text = f"[{self.low:g}, {self.high:g}]" + (f" step {self.step:g}" if self.step else "") + (
                " log" if self.log else "")
        if self.when:
            text += " when " + ", ".join(f"{p} in {list(v)}" for p, v in self.when)
        return text


@dataclass(frozen=True)
class Objective:
    """Maximize or minimize one declared metric of a trial's final stage (latency: at one batch size/backend)."""

    metric: Metric
    direction: str  # "maximize" or "minimize"
    batch: int | None = None
    backend: str | None = None

    @property
    def name(self) -> str:
        if self.metric.section == "latency":
            return f"{self.metric.path}@b{self.batch}" + (f"/{self.backend}" if self.backend else "")
        return self.metric.path

    @property
    def label(self) -> str:
        if self.metric.section == "latency":
            return f"{self.metric.label} b{self.batch}" + (f" {self.backend}" if self.backend else "")
        return self.metric.label

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


@dataclass(frozen=True)
class Constraint:
    """A gate (``max_accuracy_drop: 1``, judged by the pipeline's gates) or a bound on a declared metric."""

    name: str
    gate: bool
    value: Any = None  # the gate's threshold
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        if self.gate:
            return f"{self.name} {self.value}"
        parts = ([f">= {self.low:g}"] if self.low is not None else []) + (
            [f"<= {self.high:g}"] if self.high is not None else [])
        return f"{self.name} {' and '.join(parts)}"


@dataclass(frozen=True)
class SearchSpec:
    name: str
    source: str
    base_doc: dict[str, Any]
    base: PipelineSpec
    base_dir: Path | None
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    sampler: str = "grid"
    seed: int = 0
    trials: int | None = None
    minutes: float | None = None
    threads: int = 1
    warnings: tuple[str, ...] = field(default=())

    @property
    def gates(self) -> dict[str, Any]:
        """The gates every trial's pipeline is judged by: the base's, with the constraints' on top."""
        return {**self.base.gates, **{c.name: c.value for c in self.constraints if c.gate}}

    def trial_doc(self, values: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
        """The base pipeline with ``values`` set (inactive conditional parameters left as the base has them)."""
        doc = copy.deepcopy(self.base_doc)
        stages = doc["stages"]
        for param in self.params:
            if param.path in values and param.active(values):
                entry = stages[param.stage]
                stages[param.stage] = entry = {"type": entry} if isinstance(entry, str) else entry
                entry[param.key] = _plain(values[param.path])
        if self.gates:
            doc["gates"] = dict(self.gates)
        evaluate = doc.setdefault("evaluate", {}) or {}
        doc["evaluate"] = evaluate
        for objective in self.objectives:
            if objective.metric.section == "latency":
                batches = list(evaluate.get("batch_sizes", [1, 32]))
                if objective.batch not in batches:
                    evaluate["batch_sizes"] = [*batches, objective.batch]
                if objective.backend:
                    backends = list(evaluate.get("backends", []))
                    if objective.backend not in backends:
                        evaluate["backends"] = [*backends, objective.backend]
                if evaluate.get("latency") is False:
                    evaluate["latency"] = True
        evaluate["threads"] = self.threads
        if name:
            doc["name"] = name
        return doc

    def active_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """Only the parameters that apply (a conditional one whose condition fails is dropped)."""
        return {p.path: values[p.path] for p in self.params if p.path in values and p.active(values)}

    def trial_yaml(self, values: dict[str, Any], *, name: str, header: str = "") -> str:
        text = yaml.safe_dump(self.trial_doc(values, name=name), sort_keys=False, allow_unicode=True)
        return header + text

    def trial_spec(self, values: dict[str, Any], *, name: str) -> PipelineSpec:
        return parse_spec(self.trial_yaml(values, name=name), source=f"<{name}>", base_dir=self.base_dir)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' grid values; conditional ones only where they apply (deduplicated)."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for combo in itertools.product(*(p.grid() for p in self.params)):
            values = self.active_values({p.path: v for p, v in zip(self.params, combo, strict=True)})
            key = canonical_values(values)
            if key not in seen:
                seen.add(key)
                out.append(values)
        return out

    def digest(self) -> str:
        """What makes finished trials reusable on resume: the base, the space, the objectives and constraints."""
        parts = [self.base_doc, [p.__dict__ for p in self.params], [(o.name, o.direction) for o in self.objectives],
                 [c.__dict__ for c in self.constraints], self.sampler, self.seed, self.threads]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def canonical_values(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def load_search(path: str | Path) -> SearchSpec:
    """Read and validate a search spec file (InputError with ``file:line`` and the key path)."""
    p = Path(path)
    return parse_search(read_spec_file(p), source=str(p), base_dir=p.resolve().parent)


def parse_search(text: str, *, source: str = "<search>", base_dir: Path | None = None) -> SearchSpec:
    doc, loc = read_yaml(text, source)
    return _Checker(loc, base_dir).spec(doc, source)


class _Checker:
    def __init__(self, loc: Located, base_dir: Path | None) -> None:
        self.loc, self.base_dir = loc, base_dir

    def spec(self, doc: Any, source: str) -> SearchSpec:
        loc = self.loc
        if not isinstance(doc, dict):
            raise loc.error((), "a search spec is a mapping (base, space, objectives, ...)",
                            hint="see examples/digits-search.yaml")
        for key in doc:
            if key not in TOP_KEYS:
                raise loc.error((key,), "unknown key", hint=_suggest(str(key), TOP_KEYS))
        for key in ("base", "space", "objectives"):
            if key not in doc:
                raise loc.error((), f"missing required key {key!r}", hint="see examples/digits-search.yaml")
        base_doc, base, base_dir = self.base(doc["base"])
        default_name = Path(source).stem if not source.startswith("<") else f"{base.name}-search"
        name = doc.get("name", default_name)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise loc.error(("name",), f"{name!r} is not a usable folder name",
                            hint="use letters, digits, '.', '_' and '-' (at most 100 characters)")
        objectives = self.objectives(doc["objectives"])
        threads = self.threads(objectives, base)
        constraints = self.constraints(doc.get("constraints") or {}, base_doc)
        sampler, sampler_seed = self.sampler(doc.get("sampler", "grid"))
        seed = doc.get("seed", sampler_seed if sampler_seed is not None else 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise loc.error(("seed",), f"expected an integer ≥ 0, got {seed!r}")
        params = self.space(doc["space"], base_doc, base)
        trials, minutes = self.budget(doc.get("budget"), sampler)
        spec = SearchSpec(name=name, source=source, base_doc=base_doc, base=base, base_dir=base_dir,
                          params=params, objectives=objectives, constraints=constraints, sampler=sampler, seed=seed,
                          trials=trials, minutes=minutes, threads=threads)
        self.check_values(spec)
        if sampler == "grid":
            size = len(spec.grid()) if _grid_size(params) <= MAX_GRID else _grid_size(params)
            if size > MAX_GRID:
                raise loc.error(("space",), f"the grid has {size:,} points, over {MAX_GRID:,}",
                                hint="use sampler: random or tpe with a trials budget")
        return spec

    # -- base --------------------------------------------------------------------------------------------------
    def base(self, value: Any) -> tuple[dict[str, Any], PipelineSpec, Path | None]:
        loc = self.loc
        if isinstance(value, str):
            path = Path(value)
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            if not path.is_file():
                raise loc.error(("base",), f"pipeline file {value} does not exist",
                                hint="give a pipeline YAML path (relative to this file) or an inline mapping")
            text = read_spec_file(path)
            base = parse_spec(text, source=str(path), base_dir=path.resolve().parent)
            doc, _ = read_yaml(text, str(path))
            return _absolute(doc, base), base, path.resolve().parent
        if not isinstance(value, dict):
            raise loc.error(("base",), "expected a pipeline file path or a pipeline mapping")
        doc = {k: v for k, v in value.items() if not str(k).startswith("x-")}
        text = yaml.safe_dump(doc, sort_keys=False)
        try:
            base = parse_spec(text, source="<base>", base_dir=self.base_dir)
        except InputError as exc:
            raise self.relocate(exc, ("base",), "") from None
        return _absolute(doc, base), base, self.base_dir

    def relocate(self, exc: InputError, at: Path_, prefix: str) -> InputError:
        """An error from validating a generated pipeline, placed on this file's line of the key it names."""
        match = re.match(r"^<[^>]*>:\d+: (?:([A-Za-z_][\w.\[\]-]*): )?(.*)$", exc.message)
        if not match:
            return self.loc.error(at, f"{prefix}{exc.message}", hint=exc.hint)
        where, message = match.groups()
        path: Path_ = at
        if where and at == ("base",):
            path = (*at, *_parse_path(where))
        text = f"{prefix}{where + ': ' if where and at != ('base',) else ''}{message}"
        return self.loc.error(path, text, hint=exc.hint)

    # -- space -------------------------------------------------------------------------------------------------
    def space(self, value: Any, base_doc: dict[str, Any], base: PipelineSpec) -> tuple[Param, ...]:
        loc = self.loc
        if not isinstance(value, dict):
            raise loc.error(("space",), "expected a mapping of parameter paths to values",
                            hint="e.g. 'stages.prune.amount: [0.25, 0.5]'")
        if not value:
            raise loc.error(("space",), "the space is empty: nothing to search",
                            hint="add a parameter, e.g. 'stages.prune.amount: [0.25, 0.5]'")
        valid = _valid_paths(base)
        params = []
        for path, spec in value.items():
            where: Path_ = ("space", path)
            if path not in valid:
                raise loc.error(where, "unknown parameter path", hint=_suggest(str(path), list(valid)))
            stage, key = valid[path]
            params.append(self.param(str(path), stage, key, spec, where))
        names = [p.path for p in params]
        targets = {(p.stage, p.key): p.path for p in params}
        if len(targets) != len(params):
            dup = next(n for n in names if sum(targets.get((p.stage, p.key)) == n for p in params) != 1)
            raise loc.error(("space", dup), "the same parameter is named twice (by type and by index)")
        for param in params:
            for cond, allowed in param.when:
                if cond == param.path or cond not in names:
                    raise loc.error(("space", param.path, "when"), f"condition on {cond!r}, which is not "
                                    f"another parameter of the space", hint=_suggest(cond, names))
                other = next(p for p in params if p.path == cond)
                if other.kind == "choice":
                    bad = [a for a in allowed if not _in(a, other.choices)]
                    if bad:
                        raise loc.error(("space", param.path, "when", cond),
                                        f"{bad[0]!r} is not one of {cond}'s choices {list(other.choices)}")
        return tuple(params)

    def param(self, path: str, stage: int, key: str, spec: Any, where: Path_) -> Param:
        loc = self.loc
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise loc.error(where, f"expected a list of choices or a mapping (choices, or low/high), got {spec!r}",
                            hint="e.g. [0.25, 0.5] or {low: 0.1, high: 0.9, step: 0.1}")
        allowed = ("choices", "low", "high", "step", "log", "when")
        for k in spec:
            if k not in allowed:
                raise loc.error((*where, k), "unknown key", hint=_suggest(str(k), allowed))
        when = self.when(spec.get("when"), (*where, "when"))
        if "choices" in spec:
            if any(k in spec for k in ("low", "high", "step", "log")):
                raise loc.error(where, "give either choices or a range (low, high), not both")
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise loc.error((*where, "choices"), "expected a non-empty list of values")
            if len({json.dumps(c, sort_keys=True, default=str) for c in choices}) != len(choices):
                raise loc.error((*where, "choices"), "a value is listed twice")
            return Param(path, stage, key, "choice", choices=tuple(_freeze(c) for c in choices), when=when)
        if "low" not in spec or "high" not in spec:
            raise loc.error(where, "a range needs both low and high (or give choices)")
        low, high, step = spec["low"], spec["high"], spec.get("step")
        for k, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise loc.error((*where, k), f"expected a number, got {v!r}")
        if not low < high:
            raise loc.error(where, f"low must be below high, got low {low} and high {high}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise loc.error((*where, "log"), f"expected true or false, got {log!r}")
        if log and low <= 0:
            raise loc.error((*where, "low"), f"a log range needs low > 0, got {low}")
        if step is not None and (step <= 0 or step > high - low):
            raise loc.error((*where, "step"), f"step must be in (0, high - low], got {step}")
        if log and step is not None:
            raise loc.error((*where, "step"), "a log range takes no step (give choices for a log grid)")
        kind = "int" if all(isinstance(v, int) for v in (low, high) if v is not None) and (
            step is None or isinstance(step, int)) else "float"
        if kind == "int" and step is None and not log:
            step = 1
        return Param(path, stage, key, kind, low=low, high=high, step=step, log=log, when=when)

    def when(self, value: Any, where: Path_) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict) or not value:
            raise self.loc.error(where, "expected a mapping of parameter paths to a value or a list of values",
                                 hint="e.g. when: {stages.quantize.mode: static}")
        return tuple((str(k), tuple(_freeze(x) for x in (v if isinstance(v, list) else [v])))
                     for k, v in value.items())

    def check_values(self, spec: SearchSpec) -> None:
        """Each choice and both ends of each range, validated in the base pipeline by the pipeline validator."""
        by_path = {p.path: p for p in spec.params}
        for param in spec.params:
            values = param.choices if param.kind == "choice" else (param.low, param.high)
            # a conditional parameter is checked where it applies: its conditions set to their first allowed value
            context = [(by_path[cond], allowed[0]) for cond, allowed in param.when]
            for value in values:
                doc = copy.deepcopy(spec.base_doc)
                for target, setting in [*context, (param, value)]:
                    entry = doc["stages"][target.stage]
                    doc["stages"][target.stage] = entry = {"type": entry} if isinstance(entry, str) else entry
                    entry[target.key] = _plain(setting)
                try:
                    parse_spec(yaml.safe_dump(doc, sort_keys=False), source="<space>", base_dir=spec.base_dir)
                except InputError as exc:
                    raise self.relocate(exc, ("space", param.path), f"value {_plain(value)!r}: ") from None

    # -- objectives and constraints ----------------------------------------------------------------------------
    def objectives(self, value: Any) -> tuple[Objective, ...]:
        loc = self.loc
        if not isinstance(value, list) or not value:
            raise loc.error(("objectives",), "expected a non-empty list, e.g. '- maximize: metrics.accuracy'")
        out: list[Objective] = []
        self._threads: list[tuple[int, Any]] = []
        for i, item in enumerate(value):
            where: Path_ = ("objectives", i)
            if isinstance(item, str):
                raise loc.error(where, f"write '- maximize: {item}' or '- minimize: {item}'")
            if not isinstance(item, dict):
                raise loc.error(where, "expected a mapping like {maximize: metrics.accuracy}")
            directions = [k for k in ("maximize", "minimize") if k in item]
            if len(directions) != 1:
                raise loc.error(where, "give exactly one of maximize or minimize")
            direction = directions[0]
            for k in item:
                if k not in (direction, "batch", "backend", "threads"):
                    raise loc.error((*where, k), "unknown key",
                                    hint=_suggest(str(k), [direction, "batch", "backend", "threads"]))
            declared = self.metric(item[direction], (*where, direction))
            if declared.higher_is_better is not None and declared.higher_is_better != (direction == "maximize"):
                better = "higher" if declared.higher_is_better else "lower"
                raise loc.error((*where, direction), f"{declared.path} is better {better}; "
                                f"{'maximize' if declared.higher_is_better else 'minimize'} it")
            batch = backend = None
            if declared.section == "latency":
                batch = item.get("batch", 1)
                if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
                    raise loc.error((*where, "batch"), f"expected an integer ≥ 1, got {batch!r}")
                backend = item.get("backend")
                if backend is not None:
                    from ..runtime.sessions import BACKENDS

                    if backend not in BACKENDS:
                        raise loc.error((*where, "backend"), f"unknown backend {backend!r}",
                                        hint=_suggest(str(backend), list(BACKENDS)))
                if "threads" in item:
                    self._threads.append((i, item["threads"]))
            elif any(k in item for k in ("batch", "backend", "threads")):
                raise loc.error(where, "batch, backend and threads apply to latency objectives only")
            objective = Objective(declared, direction, batch, backend)
            if any(o.name == objective.name for o in out):
                raise loc.error(where, f"objective {objective.name} is listed twice")
            out.append(objective)
        return tuple(out)

    def threads(self, objectives: tuple[Objective, ...], base: PipelineSpec) -> int:
        """The evaluation threads of every trial: the latency objectives' ``threads`` (one value), else the base's."""
        del objectives
        chosen: int | None = None
        for i, threads in self._threads:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise self.loc.error(("objectives", i, "threads"), f"expected an integer ≥ 1, got {threads!r}")
            if chosen is not None and threads != chosen:
                raise self.loc.error(("objectives", i, "threads"), "every latency objective must use the same "
                                     "threads (timings at different thread counts do not compare)")
            chosen = threads
        return chosen or base.evaluate.threads

    def metric(self, value: Any, where: Path_) -> Metric:
        if not isinstance(value, str) or not value:
            raise self.loc.error(where, f"expected a metric path like metrics.accuracy, got {value!r}")
        path = "latency.median_ms" if value == "latency" else ("footprint.size_bytes" if value == "size" else value)
        declared = METRICS.find(path)
        if declared is None or declared.section not in _SECTIONS:
            names = [p for p, m in METRICS.items() if m.section in _SECTIONS]
            raise self.loc.error(where, f"unknown metric {value!r}", hint=_suggest(value, names, label="metrics"))
        return declared

    def constraints(self, value: Any, base_doc: dict[str, Any]) -> tuple[Constraint, ...]:
        del base_doc
        loc = self.loc
        if not isinstance(value, dict):
            raise loc.error(("constraints",), "expected a mapping (gate: threshold, or metric: {min:, max:})")
        from ..reports.gates import GateConfig

        gate_keys = [f.name for f in field_specs(GateConfig)]
        out: list[Constraint] = []
        gates: dict[str, Any] = {}
        for key, threshold in value.items():
            where: Path_ = ("constraints", key)
            if key in gate_keys:
                gates[key] = threshold
                out.append(Constraint(str(key), True, threshold))
                continue
            if "." not in str(key):
                names = gate_keys + [p for p, m in METRICS.items() if m.section in _SECTIONS]
                raise loc.error(where, "unknown constraint: neither a gate nor a metric path",
                                hint=_suggest(str(key), names))
            declared = self.metric(key, where)
            if not isinstance(threshold, dict) or not threshold or any(k not in ("min", "max") for k in threshold):
                raise loc.error(where, "a metric constraint is a mapping with min and/or max, e.g. {min: 0.95}")
            for k, v in threshold.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise loc.error((*where, k), f"expected a number, got {v!r}")
            if declared.section == "latency":
                raise loc.error(where, "bound latency with an objective and the max_latency_ratio gate, not a "
                                "fixed number of milliseconds (those depend on the machine)")
            out.append(Constraint(declared.path, False, low=threshold.get("min"), high=threshold.get("max")))
        try:
            GateConfig.from_mapping(gates, where="constraints")
        except InputError as exc:
            key = next((k for k in gates if k in exc.message), None)
            raise loc.error(("constraints", key) if key else ("constraints",), exc.message, hint=exc.hint) from None
        return tuple(out)

    def sampler(self, value: Any) -> tuple[str, int | None]:
        loc = self.loc
        seed = None
        if isinstance(value, dict):
            for k in value:
                if k not in ("type", "seed"):
                    raise loc.error(("sampler", k), "unknown key", hint=_suggest(str(k), ["type", "seed"]))
            seed = value.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
                raise loc.error(("sampler", "seed"), f"expected an integer ≥ 0, got {seed!r}")
            value = value.get("type", "grid")
            where: Path_ = ("sampler", "type")
        else:
            where = ("sampler",)
        if value not in SAMPLERS:
            raise loc.error(where, f"unknown sampler {value!r}", hint=_suggest(str(value), SAMPLERS, label="samplers"))
        if value in OPTUNA_SAMPLERS:
            require_optuna(value)
        return str(value), seed

    def budget(self, value: Any, sampler: str) -> tuple[int | None, float | None]:
        loc = self.loc
        if value is None:
            if sampler != "grid":
                raise loc.error(("budget",), f"sampler {sampler} needs a budget: {{trials: N}} (and/or minutes)")
            return None, None
        if not isinstance(value, dict):
            raise loc.error(("budget",), "expected a mapping: {trials: N, minutes: M}")
        for k in value:
            if k not in ("trials", "minutes"):
                raise loc.error(("budget", k), "unknown key", hint=_suggest(str(k), ["trials", "minutes"]))
        trials, minutes = value.get("trials"), value.get("minutes")
        if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
            raise loc.error(("budget", "trials"), f"must be an integer ≥ 1, got {trials!r}")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                    or not minutes > 0 or not math.isfinite(minutes)):
            raise loc.error(("budget", "minutes"), f"must be a number > 0, got {minutes!r}")
        if trials is None and minutes is None:
            raise loc.error(("budget",), "give trials and/or minutes")
        return trials, None if minutes is None else float(minutes)


def require_optuna(sampler: str) -> Any:
    try:
        import optuna
    except ImportError:
        raise BackendUnavailable(f"sampler {sampler} needs optuna, which is not installed",
                                 hint="pip install 'modelpress[search]' (or use sampler: grid or random)") from None
    return optuna


def _valid_paths(base: PipelineSpec) -> dict[str, tuple[int, str]]:
    """``stages.<type>.<field>`` (types used once) and ``stages.<index>.<field>`` → (stage index, field)."""
    kinds = [c.kind for c in base.stages]
    out: dict[str, tuple[int, str]] = {}
    for index, config in enumerate(base.stages):
        names = [s.name for s in field_specs(STAGES.get(config.kind).config)]
        for name in names:
            out[f"stages.{index}.{name}"] = (index, name)
            if kinds.count(config.kind) == 1:
                out[f"stages.{config.kind}.{name}"] = (index, name)
    return out


def _absolute(doc: dict[str, Any], base: PipelineSpec) -> dict[str, Any]:
    """The base document with every reference the validator resolved against its folder written out resolved, so
    a trial's pipeline (and best.yaml) runs from any folder."""
    doc = copy.deepcopy(doc)
    doc = {k: v for k, v in doc.items() if not str(k).startswith("x-")}
    doc["model"] = base.model
    if base.weights is not None:
        doc["weights"] = base.weights
    data = doc.get("data")
    if isinstance(data, str):
        doc["data"] = base.data.eval
    elif isinstance(data, dict):
        for role in ("eval", "train", "calibration"):
            if data.get(role) is not None:
                data[role] = getattr(base.data, role)
    stages = doc.get("stages") or []
    for i, config in enumerate(base.stages):
        entry = stages[i]
        if not isinstance(entry, dict):
            continue
        for key in getattr(type(config), "references", {}):
            if isinstance(entry.get(key), str):
                entry[key] = getattr(config, key)
    if isinstance(doc.get("tensorboard"), str):
        doc["tensorboard"] = base.tensorboard
    doc.pop("name", None)
    doc = {"name": base.name, **doc}
    return doc


def _grid_size(params: tuple[Param, ...]) -> int:
    size = 1
    for p in params:
        if p.kind == "float" and p.step is None:
            return -1
        size *= len(p.grid()) if p.kind == "choice" or (p.high - p.low) / p.step < MAX_GRID else MAX_GRID + 1
    return size


def _parse_path(text: str) -> Path_:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _in(value: Any, allowed: tuple[Any, ...]) -> bool:
    """``value`` is one of ``allowed`` (``True`` is not ``1`` here, as YAML keeps them apart)."""
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)


def _suggest(key: str, valid: Any, *, label: str = "valid keys") -> str:
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return f"{label}: {shown}"
