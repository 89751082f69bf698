"""Samplers: which parameter values the next trial gets.

``grid`` walks every combination in the order of the space (conditional parameters only where they apply); ``random``
draws from a generator seeded by the spec's seed, so the same spec proposes the same trials in the same order; ``tpe``
and ``nsga2`` are Optuna's samplers driven through its ask-and-tell interface (multi-objective; an infeasible trial's
constraint violation is set on its Optuna trial, so the sampler prefers feasible ones). Every sampler skips proposals
a resumed search has already finished, and Optuna's study is rebuilt from them (``add_trial``), so a resume continues
the same search.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from ..errors import InputError
from .spec import OPTUNA_SAMPLERS, Param, SearchSpec, canonical_values, require_optuna

__all__ = ["Sampler", "make_sampler"]


class Sampler:
    """``ask()`` → the next trial's values (``None`` when the space is exhausted); ``tell()`` its outcome."""

    def __init__(self, spec: SearchSpec, finished: list[dict[str, Any]]) -> None:
        self.spec = spec
        self.done = {canonical_values(t["params"]) for t in finished}

    def ask(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def tell(self, values: dict[str, Any], objectives: list[float] | None, violation: float | None) -> None:
        """A finished trial: its objective values (``None``: failed) and how far it missed the constraints."""


class GridSampler(Sampler):
    def __init__(self, spec: SearchSpec, finished: list[dict[str, Any]]) -> None:
        super().__init__(spec, finished)
        self.points = [v for v in spec.grid() if canonical_values(v) not in self.done]

    def ask(self) -> dict[str, Any] | None:
        return self.points.pop(0) if self.points else None


class RandomSampler(Sampler):
    MAX_DRAWS = 1000  # a proposal already finished or proposed is drawn again, this many times at most

    def __init__(self, spec: SearchSpec, finished: list[dict[str, Any]]) -> None:
        super().__init__(spec, finished)
        self.rng = random.Random(spec.seed)
        self.proposed: set[str] = set()

    def ask(self) -> dict[str, Any] | None:
        for _ in range(self.MAX_DRAWS):
            values = self.spec.active_values({p.path: draw(p, self.rng) for p in self.spec.params})
            key = canonical_values(values)
            if key in self.proposed:
                continue
            self.proposed.add(key)
            if key not in self.done:
                return values
        return None


def draw(param: Param, rng: random.Random) -> Any:
    """One value of ``param``: a choice, a grid step, or uniform (log-uniform) in the range."""
    if param.kind == "choice" or param.step is not None:
        return rng.choice(param.grid())
    assert param.low is not None and param.high is not None
    if param.log:
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    else:
        value = rng.uniform(param.low, param.high)
    return int(round(value)) if param.kind == "int" else value


class OptunaSampler(Sampler):
    def __init__(self, spec: SearchSpec, finished: list[dict[str, Any]]) -> None:
        super().__init__(spec, finished)
        optuna = require_optuna(spec.sampler)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna

        def constraints(trial: Any) -> list[float]:
            return [float(trial.user_attrs.get("violation", 0.0))]

        kinds = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
        # Optuna 5 reads constraints set on the trial (set_constraint); Optuna 4 asks a constraints_func
        self.native = hasattr(optuna.trial.Trial, "set_constraint")
        options = {} if self.native else {"constraints_func": constraints}
        sampler = kinds[spec.sampler](seed=spec.seed, **options)
        self.study = optuna.create_study(directions=[o.direction for o in spec.objectives], sampler=sampler)
        self.pending: dict[str, list[Any]] = {}
        # unconditional parameters first, so a condition is decided before the parameter it guards
        self.order = sorted(spec.params, key=lambda p: bool(p.when))
        for trial in finished:
            self._add(trial)

    def _distribution(self, param: Param) -> Any:
        d = self.optuna.distributions
        if param.kind == "choice":
            return d.CategoricalDistribution([_encode(c) for c in param.choices])
        if param.kind == "int":
            return d.IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
        return d.FloatDistribution(float(param.low), float(param.high), log=param.log, step=param.step)

    def _add(self, trial: dict[str, Any]) -> None:
        params = {p.path: trial["params"][p.path] for p in self.order if p.path in trial["params"]}
        encoded = {k: _encode(v) if self._param(k).kind == "choice" else v for k, v in params.items()}
        distributions = {k: self._distribution(self._param(k)) for k in params}
        objectives = trial.get("objective_values")
        state = self.optuna.trial.TrialState
        if objectives is None or any(v is None for v in objectives):
            frozen = self.optuna.trial.create_trial(params=encoded, distributions=distributions, state=state.FAIL)
        else:
            violation = float(trial.get("violation") or 0.0)
            extra = {"constraints": {"violation": violation}} if self.native else {}
            frozen = self.optuna.trial.create_trial(params=encoded, distributions=distributions, values=objectives,
                                                    user_attrs={"violation": violation}, **extra)
        self.study.add_trial(frozen)

    def _param(self, path: str) -> Param:
        return next(p for p in self.spec.params if p.path == path)

    def ask(self) -> dict[str, Any] | None:
        trial = self.study.ask()
        values: dict[str, Any] = {}
        for param in self.order:
            if not param.active(values):
                continue
            dist = self._distribution(param)
            raw = _suggest(trial, param, dist)
            values[param.path] = _decode(raw, param) if param.kind == "choice" else raw
        values = self.spec.active_values(values)
        self.pending.setdefault(canonical_values(values), []).append(trial)
        return values

    def tell(self, values: dict[str, Any], objectives: list[float] | None, violation: float | None) -> None:
        trials = self.pending.get(canonical_values(values))
        if not trials:
            return
        trial = trials.pop(0)
        if objectives is None or any(v is None or not math.isfinite(v) for v in objectives):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        trial.set_user_attr("violation", float(violation or 0.0))
        if self.native:
            trial.set_constraint("violation", float(violation or 0.0))
        self.study.tell(trial, objectives)


def _suggest(trial: Any, param: Param, dist: Any) -> Any:
    d = dist
    if param.kind == "choice":
        return trial.suggest_categorical(param.path, d.choices)
    if param.kind == "int":
        return trial.suggest_int(param.path, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(param.path, d.low, d.high, step=d.step, log=d.log)


def _encode(value: Any) -> Any:
    """Optuna's categorical values are None/bool/int/float/str: anything else (a list of layers) goes as JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + json.dumps(_plain(value))


def _decode(value: Any, param: Param) -> Any:
    if isinstance(value, str) and value.startswith("json:"):
        decoded = json.loads(value[5:])
        return next(c for c in param.choices if _plain(c) == decoded)
    return value


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def make_sampler(spec: SearchSpec, finished: list[dict[str, Any]]) -> Sampler:
    """The spec's sampler, told about the trials a resumed search already finished."""
    if spec.sampler == "grid":
        return GridSampler(spec, finished)
    if spec.sampler == "random":
        return RandomSampler(spec, finished)
    if spec.sampler in OPTUNA_SAMPLERS:
        return OptunaSampler(spec, finished)
    raise InputError(f"unknown sampler {spec.sampler!r}")
