"""Regression gates: what a gate is (thresholds, validated once), and how each one is judged on paired data.

A CI job must fail on a real regression and pass on noise, so a gate fails only when the change is both larger than
its threshold *and* statistically significant at ``alpha``:

- accuracy: exact McNemar test on the paired per-sample predictions (``predictions.npz``);
- macro F1 and ROC-AUC: paired bootstrap (samples resampled jointly), significant when the ``1 - alpha`` interval of
  the drop excludes 0;
- latency: ratio of medians with a 95 % CI: over the interleaved rounds of one run when both stages come from the
  same run (the candidate row's ``speedup`` against the baseline stage), else a block bootstrap over the stored
  per-call samples (blocks of consecutive calls); fails only when the CI's
  lower bound is above the threshold, and only when both runs used the same CPU, CPU flags, threads and runtime
  versions (otherwise the gate is skipped with a warning, unless ``force_latency``);
- top-1 agreement between baseline and candidate: one-sided exact binomial test against the floor;
- size: deterministic, compared directly.

Without paired predictions the metric gates fall back to the bare numbers of report.json and say so.

Gate keys (a pipeline's ``gates:`` section, :meth:`GateConfig.from_mapping`, and the ``compare`` flags):

``max_accuracy_drop``, ``max_f1_drop`` (macro F1), ``max_auc_drop``
    Percentage points as a number (``1.5`` = may fall from 92.0 % to 90.5 %; ``"1.5pts"`` also reads), or relative
    to the baseline's value with a ``%`` suffix (``"2%"`` = may lose 2 % of the baseline's value).
``max_latency_ratio``
    Candidate median / baseline median, per backend and batch size measured in both (``1.1`` = at most 10 % slower).
``max_size_bytes`` / ``max_size_ratio``
    Candidate artifact size in bytes, or candidate / baseline size.
``min_fidelity``
    Minimum top-1 agreement of candidate with baseline predictions, a fraction (``0.99``) or percentage (``"99%"``).
``alpha`` (0.05), ``force_latency`` (false), ``n_boot`` (2000), ``seed`` (0)
    Significance level, gate latency across different machines anyway, bootstrap resamples, bootstrap seed.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..config import Checked, Interval, option
from ..errors import InputError
from ..metric_schema import gateable
from .stats import binomial_below, latency_ratio, mcnemar_exact, paired_bootstrap

__all__ = ["GATE_KEYS", "GateConfig", "GateResult", "PairedPredictions", "Threshold", "judge_gates"]

#: Drop gates: gate key → the declared task metric it limits (a paired test decides significance).
_DROP_GATES = {gate: m for gate, m in gateable().items() if m.section == "metrics"}
#: The gate keys, in the order their results are listed.
GATE_KEYS = (*_DROP_GATES, "max_latency_ratio", "max_size_bytes", "max_size_ratio", "min_fidelity")
_THRESHOLD_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|pts?|points?)?\s*$")
#: Slack for float comparisons with thresholds (a drop of exactly the limit passes).
_EPS = 1e-9


@dataclass(frozen=True)
class Threshold:
    """An allowed metric drop: percentage points (absolute) or a percentage of the baseline's value (relative)."""

    value: float
    relative: bool = False

    @classmethod
    def parse(cls, raw: Any, *, key: str) -> Threshold:
        """``1.5``, ``"1.5"``, ``"1.5pts"`` → 1.5 points; ``"2%"`` → 2 % of the baseline's value."""
        if isinstance(raw, Threshold):
            return raw
        text = str(raw) if isinstance(raw, (str, numbers.Real)) and not isinstance(raw, bool) else None
        match = _THRESHOLD_RE.match(text) if text is not None else None
        if match is None:
            raise InputError(f"{key} = {raw!r} is not a threshold",
                             hint="use percentage points such as 1.5 or a relative share such as 2%")
        value = float(match.group(1))
        if not 0.0 <= value <= 100.0:
            raise InputError(f"{key} = {raw!r} is out of range; allowed: 0 to 100 (points or %)")
        return cls(value, relative=match.group(2) == "%")

    def allowed_drop_pts(self, baseline: float) -> float:
        """The largest allowed drop in percentage points, given the baseline's value as a fraction."""
        return self.value * baseline if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}% of baseline" if self.relative else f"{self.value:g} pts"


@dataclass(frozen=True)
class GateConfig(Checked):
    """Which gates to check and how strictly; every field is optional. See the module docstring for the keys."""

    max_accuracy_drop: Threshold | None = option(None, help="Largest accuracy drop: points (1.5) or % of baseline.")
    max_f1_drop: Threshold | None = option(None, help="Largest macro-F1 drop: points or % of baseline.")
    max_auc_drop: Threshold | None = option(None, help="Largest ROC-AUC drop: points or % of baseline.")
    max_latency_ratio: float | None = option(None, Interval(float, 0, closed="neither"),
                                             help="Largest candidate/baseline median latency ratio.")
    max_size_bytes: int | None = option(None, Interval(int, 0, closed="neither"), help="Largest artifact size.")
    max_size_ratio: float | None = option(None, Interval(float, 0, closed="neither"),
                                          help="Largest candidate/baseline size ratio.")
    min_fidelity: float | None = option(None, help="Smallest top-1 agreement with the baseline: 0.99 or 99%.")
    alpha: float = option(0.05, Interval(float, 0, 1, closed="neither"), help="Significance level of every test.")
    force_latency: bool = option(False, help="Gate latency across different CPUs, threads or runtime versions.")
    n_boot: int = option(2000, Interval(int, 100), help="Bootstrap resamples.")
    seed: int = option(0, Interval(int, 0), help="Bootstrap seed.")

    def field_message(self, key: str, constraint: Any, value: Any) -> str:
        allowed = {"max_latency_ratio": "a number > 0 (e.g. 1.1)", "max_size_ratio": "a number > 0 (e.g. 1.1)",
                   "max_size_bytes": "an integer > 0 (bytes)", "alpha": "0 < alpha < 1 (e.g. 0.05)"}
        text = allowed.get(key) or constraint.describe().replace("≥", ">=")
        return f"{key} = {value!r} is out of range; allowed: {text}"

    def check(self) -> None:
        for key in _DROP_GATES:
            raw = getattr(self, key)
            if raw is not None:
                object.__setattr__(self, key, Threshold.parse(raw, key=key))
        if self.min_fidelity is not None:
            object.__setattr__(self, "min_fidelity", _parse_fraction(self.min_fidelity, key="min_fidelity"))
        if not isinstance(self.force_latency, bool):
            raise InputError(f"force_latency = {self.force_latency!r} should be true or false")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, *, where: str = "gates") -> GateConfig:
        """Build from a pipeline's ``gates:`` section (or any dict with the documented keys).

        Raises:
            InputError: an unknown key (the message lists the known ones) or a value out of range.
        """
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise InputError(f"{where} should be a mapping of gate names to thresholds, got {type(mapping).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(known)}")
        return cls(**{k: v for k, v in mapping.items() if v is not None})

    @property
    def any_gate(self) -> bool:
        """Whether at least one gate is set (``alpha``, ``n_boot`` and the like only tune them)."""
        return any(getattr(self, key) is not None for key in GATE_KEYS)


@dataclass
class GateResult:
    """One gate's verdict. ``status`` is "passed", "failed" or "skipped"; ``message`` is one line."""

    name: str
    status: str
    threshold: float | None
    value: float | None
    unit: str
    message: str
    test: str | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "passed": self.passed, "threshold": self.threshold,
                "value": self.value, "unit": self.unit, "test": self.test, "p_value": self.p_value,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "message": self.message}


class PairedPredictions:
    """Per-sample predictions of both stages on the same samples."""

    def __init__(self, y: np.ndarray, proba_b: np.ndarray, proba_c: np.ndarray) -> None:
        self.y, self.proba_b, self.proba_c = y, proba_b, proba_c
        self.pred_b, self.pred_c = proba_b.argmax(axis=1), proba_c.argmax(axis=1)
        self.mcnemar = mcnemar_exact(self.pred_b == y, self.pred_c == y)
        self.agree = int(np.count_nonzero(self.pred_b == self.pred_c))

    def summary(self) -> dict[str, Any]:
        return {**self.mcnemar, "top1_agreement": self.agree / self.y.size,
                "baseline_accuracy": float(np.mean(self.pred_b == self.y)),
                "candidate_accuracy": float(np.mean(self.pred_c == self.y))}


class _Judge:
    """Evaluates each configured gate on one pair of stages."""

    def __init__(self, config: GateConfig, base: dict[str, Any], cand: dict[str, Any], paired: PairedPredictions | None,
                 b_pred: Mapping[str, np.ndarray] | None, c_pred: Mapping[str, np.ndarray] | None, *,
                 differences: list[str], notes: list[str], same_run: bool = False) -> None:
        self.config, self.base, self.cand, self.paired = config, base, cand, paired
        self.same_run = same_run
        self.b_pred, self.c_pred, self.differences, self.notes = b_pred or {}, c_pred or {}, differences, notes

    def run(self) -> list[GateResult]:
        c = self.config
        out: list[GateResult] = []
        for key, declared in _DROP_GATES.items():
            if getattr(c, key) is not None:
                out.append(self.drop_gate(key, declared.key, getattr(c, key)))
        if c.max_latency_ratio is not None:
            out += self.latency_gates(c.max_latency_ratio)
        if c.max_size_bytes is not None:
            size = self.size(self.cand, "candidate")
            out.append(GateResult("max_size_bytes", "passed" if size <= c.max_size_bytes else "failed",
                                  float(c.max_size_bytes), float(size), "bytes",
                                  f"candidate size {size:,} bytes {'≤' if size <= c.max_size_bytes else '>'} "
                                  f"{c.max_size_bytes:,}"))
        if c.max_size_ratio is not None:
            b_size, c_size = self.size(self.base, "baseline"), self.size(self.cand, "candidate")
            ratio = c_size / b_size
            ok = ratio <= c.max_size_ratio + _EPS
            out.append(GateResult("max_size_ratio", "passed" if ok else "failed", c.max_size_ratio, ratio, "ratio",
                                  f"size {b_size:,} → {c_size:,} bytes = {ratio:.3g}× {'≤' if ok else '>'} "
                                  f"{c.max_size_ratio:g}×"))
        if c.min_fidelity is not None:
            out.append(self.fidelity_gate(c.min_fidelity))
        return out

    def drop_gate(self, key: str, metric: str, threshold: Threshold) -> GateResult:
        c, paired = self.config, self.paired
        declared = _DROP_GATES[key]
        label = declared.label
        if paired is None:
            b_val, c_val = self.metric(self.base, metric, "baseline"), self.metric(self.cand, metric, "candidate")
            drop = (b_val - c_val) * 100
            limit = threshold.allowed_drop_pts(b_val)
            failed = drop > limit + _EPS
            text = (f"{label} {b_val:.2%} → {c_val:.2%} ({-drop:+.2f} pts), limit {limit:.2f} pts; no paired "
                    "predictions, so not tested for significance")
            return GateResult(key, "failed" if failed else "passed", limit, drop, "pts", text)
        if metric == "roc_auc":
            self.metric(self.base, metric, "baseline")
            self.metric(self.cand, metric, "candidate")
        boot = paired_bootstrap(metric, paired.y, paired.proba_b, paired.proba_c, n_boot=c.n_boot, seed=c.seed,
                                alpha=c.alpha)
        drop, limit = boot["drop"] * 100, threshold.allowed_drop_pts(boot["baseline"])
        low, high = boot["ci_low"] * 100, boot["ci_high"] * 100
        level = f"{1 - c.alpha:.0%} CI of the drop {low:+.2f} to {high:+.2f} pts"
        if declared.paired_test == "mcnemar":
            p_value, test = paired.mcnemar["p_value"], "mcnemar-exact"
            significant = p_value < c.alpha and drop > 0
            evidence = (f"McNemar exact p = {p_value:.3g} ({paired.mcnemar['baseline_only']} samples only the "
                        f"baseline got right, {paired.mcnemar['candidate_only']} only the candidate); {level}")
        else:
            p_value, test = boot["p_value"], "paired-bootstrap"
            significant = low > 0
            evidence = f"paired bootstrap p = {p_value:.3g}, {level} ({boot['n_valid']} resamples)"
        exceeds = drop > limit + _EPS
        head = f"{label} {boot['baseline']:.2%} → {boot['candidate']:.2%} ({-drop:+.2f} pts), limit {limit:.2f} pts"
        if exceeds and significant:
            status, verdict = "failed", f"drop exceeds the limit and is significant at α = {c.alpha:g}"
        elif exceeds:
            status, verdict = "passed", f"drop exceeds the limit but is not significant at α = {c.alpha:g} (noise)"
            self.notes.append(f"{key} passed although the {label} drop of {drop:.2f} pts exceeds {limit:.2f} pts: "
                              f"not significant (p = {p_value:.3g}, α = {c.alpha:g}); more samples would tell")
        else:
            status, verdict = "passed", "within the limit"
        return GateResult(key, status, limit, drop, "pts", f"{head}: {verdict}; {evidence}", test=test,
                          p_value=p_value, ci_low=low, ci_high=high)

    def latency_gates(self, threshold: float) -> list[GateResult]:
        b_rows = {(r["backend"], r["batch_size"]): r for r in self.base["latency"]}
        c_rows = {(r["backend"], r["batch_size"]): r for r in self.cand["latency"]}
        common = [key for key in b_rows if key in c_rows]
        if not common:
            def show(rows: dict) -> str:
                return ", ".join(f"{b} b={bs}" for b, bs in rows) or "none"

            raise InputError(f"max_latency_ratio: no latency row (backend, batch size) was measured in both stages: "
                             f"baseline has {show(b_rows)}, candidate has {show(c_rows)}",
                             hint="evaluate both with the same --backend and --batch-size, without --no-latency")
        out = []
        for backend, bs in common:
            b_row, c_row = b_rows[(backend, bs)], c_rows[(backend, bs)]
            name = f"max_latency_ratio[{backend} b={bs}]"
            reasons = list(self.differences)
            if b_row.get("threads") != c_row.get("threads"):
                reasons.append(f"threads {b_row.get('threads')} vs {c_row.get('threads')}")
            if reasons and not self.config.force_latency:
                out.append(GateResult(name, "skipped", threshold, None, "ratio",
                                      f"not comparable ({'; '.join(reasons)}); pass --force-latency to gate anyway"))
                continue
            out.append(self.latency_gate(name, threshold, backend, bs, b_row, c_row))
            if b_row.get("unstable") or c_row.get("unstable"):
                self.notes.append(f"latency {backend} b={bs} is unstable (IQR over 10 % of the median) in "
                                  f"{'both runs' if b_row.get('unstable') and c_row.get('unstable') else 'one run'}")
        return out

    def latency_gate(self, name: str, threshold: float, backend: str, bs: int, b_row: dict[str, Any],
                     c_row: dict[str, Any]) -> GateResult:
        speedup = c_row.get("speedup")
        if self.same_run and isinstance(speedup, Mapping) and speedup.get("reference") == self.base["name"] \
                and all(_is_number(speedup.get(k)) and speedup[k] > 0 for k in ("ratio", "ci_low", "ci_high")):
            # timed side by side in the same interleaved rounds of one run: the CI over rounds is the evidence
            ratio, low, high = 1 / speedup["ratio"], 1 / speedup["ci_high"], 1 / speedup["ci_low"]
            failed = low > threshold
            text = (f"median {b_row.get('median_ms'):.4g} → {c_row.get('median_ms'):.4g} ms = {ratio:.3g}× (95% CI "
                    f"{low:.3g} to {high:.3g} over {speedup.get('rounds')} interleaved rounds of this run); CI lower "
                    f"bound {'above' if failed else 'not above'} the limit {threshold:g}×")
            return GateResult(name, "failed" if failed else "passed", threshold, ratio, "ratio", text,
                              test="bootstrap-rounds-median-ratio", ci_low=low, ci_high=high)
        key = f"{backend}::b{bs}"
        b_samples = self.b_pred.get(f"latency_ms::{self.base['name']}::{key}")
        c_samples = self.c_pred.get(f"latency_ms::{self.cand['name']}::{key}")
        if b_samples is not None and c_samples is not None:
            r = latency_ratio(b_samples, c_samples, n_boot=self.config.n_boot, seed=self.config.seed)
            failed = r["ci_low"] > threshold
            relation = "above" if failed else "not above"
            text = (f"median {np.median(b_samples):.4g} → {np.median(c_samples):.4g} ms = {r['ratio']:.3g}× "
                    f"(95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}, block bootstrap of {np.size(b_samples)} and "
                    f"{np.size(c_samples)} calls); CI lower bound {relation} the limit {threshold:g}×")
            return GateResult(name, "failed" if failed else "passed", threshold, r["ratio"], "ratio", text,
                              test="bootstrap-median-ratio", ci_low=r["ci_low"], ci_high=r["ci_high"])
        b_med, c_med = b_row.get("median_ms"), c_row.get("median_ms")
        if not (_is_number(b_med) and _is_number(c_med) and b_med > 0):
            raise InputError(f"{name}: a stage has no median latency for {backend} b={bs}")
        ratio = c_med / b_med
        failed = ratio > threshold + _EPS
        return GateResult(name, "failed" if failed else "passed", threshold, ratio, "ratio",
                          f"median {b_med:.4g} → {c_med:.4g} ms = {ratio:.3g}× {'>' if failed else '≤'} {threshold:g}×;"
                          " no per-call samples, so no confidence interval")

    def fidelity_gate(self, floor: float) -> GateResult:
        alpha = self.config.alpha
        if self.paired is None:
            fid = self.cand.get("fidelity") or {}
            value = fid.get("top1_agreement")
            if not _is_number(value):
                raise InputError("min_fidelity: no paired predictions and the candidate stage records no "
                                 "fidelity.top1_agreement", hint="compare runs that wrote predictions.npz")
            failed = value < floor - _EPS
            return GateResult("min_fidelity", "failed" if failed else "passed", floor, value, "fraction",
                              f"top-1 agreement {value:.2%} with {fid.get('reference')!s} (recorded in the candidate "
                              f"report) {'<' if failed else '≥'} {floor:.2%}; not tested for significance")
        n, agree = self.paired.y.size, self.paired.agree
        value, p_value = agree / n, binomial_below(agree, n, floor)
        below = value < floor - _EPS
        failed = below and p_value < alpha
        verdict = ("significantly below the floor" if failed else
                   f"below the floor but not significantly (α = {alpha:g})" if below else "at or above the floor")
        if below and not failed:
            self.notes.append(f"min_fidelity passed although top-1 agreement {value:.2%} is below {floor:.2%}: "
                              f"not significant (p = {p_value:.3g}, α = {alpha:g})")
        return GateResult("min_fidelity", "failed" if failed else "passed", floor, value, "fraction",
                          f"top-1 agreement with the baseline {value:.2%} ({agree} of {n}), floor {floor:.2%}: "
                          f"{verdict}; one-sided binomial p = {p_value:.3g}", test="binomial", p_value=p_value)

    @staticmethod
    def metric(stage: dict[str, Any], key: str, side: str) -> float:
        metrics = stage.get("metrics") or {}
        value = metrics.get(key)
        if not _is_number(value):
            reason = metrics.get(f"{key}_reason")
            raise InputError(f"{side} stage {stage['name']!r} has no {key}" + (f" ({reason})" if reason else ""))
        return float(value)

    @staticmethod
    def size(stage: dict[str, Any], side: str) -> int:
        for section in ("footprint", "artifact"):
            value = (stage.get(section) or {}).get("size_bytes")
            if _is_number(value) and value > 0:
                return int(value)
        raise InputError(f"{side} stage {stage['name']!r} records no size_bytes (footprint or artifact)")


def judge_gates(config: GateConfig, base: dict[str, Any], cand: dict[str, Any], paired: PairedPredictions | None,
                baseline_predictions: Mapping[str, np.ndarray] | None,
                candidate_predictions: Mapping[str, np.ndarray] | None, *, differences: list[str],
                notes: list[str], same_run: bool = False) -> list[GateResult]:
    """Judge every gate set in ``config`` on a baseline and a candidate stage (report stage dicts).

    Args:
        config: The gates.
        base: The baseline stage. Same for ``cand``.
        paired: Per-sample predictions of both stages on the same samples, or None (bare report numbers are used).
        baseline_predictions: The baseline's predictions.npz arrays, for the per-call latency samples.
        differences: What differs between the runs' hardware and versions (:func:`latency_differences`); latency
            gates are skipped when it is not empty, unless ``config.force_latency``.
        notes: Appended to (e.g. unstable latency rows).
        same_run: both stages come from one run: a candidate row's ``speedup`` against the baseline stage (timed in
            the same interleaved rounds) is then the latency gate's evidence, before the per-call samples.

    Raises:
        InputError: a gate's inputs are missing (a metric, latency rows, a size).
    """
    return _Judge(config, base, cand, paired, baseline_predictions, candidate_predictions, differences=differences,
                  notes=notes, same_run=same_run).run()


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _parse_fraction(raw: Any, *, key: str) -> float:
    text = raw.strip() if isinstance(raw, str) else None
    try:
        if text is not None and text.endswith("%"):
            value = float(text[:-1]) / 100
        elif _is_number(raw) or text is not None:
            value = float(raw)
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"{key} = {raw!r} is not a fraction", hint="use e.g. 0.99 or 99%") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{key} = {raw!r} is out of range; allowed: 0 to 1 (or 0% to 100%)",
                         hint="use e.g. 0.99 or 99%")
    return value
