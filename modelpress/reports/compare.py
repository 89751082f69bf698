"""Compare two runs side by side and judge regression gates on them (``modelpress compare``).

Loads two reports with their predictions.npz, refuses runs of different data (sha256, class names, class count,
sample count: their numbers are not comparable), pairs the per-sample predictions of the two stages, decides whether
latency is comparable (same CPU, CPU flags, threads and runtime versions), and judges the gates with the paired
statistics of :mod:`modelpress.reports.gates` (which documents the gate keys). The resulting :class:`Comparison`
renders as Markdown (:mod:`~modelpress.reports.compare_md`), JUnit XML (:mod:`~modelpress.reports.junit`) or JSON.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GateFailed, InputError
from ..io import _json_safe
from .gates import GATE_KEYS, GateConfig, GateResult, PairedPredictions, Threshold, judge_gates
from ..metric_schema import compared
from .storage import PREDICTIONS_FILENAME, load_predictions, report_path
from .schema import REPORT_FILENAME, load_report, validate_report

__all__ = [
    "GATE_KEYS",
    "LATENCY_RUN_KEYS",
    "Comparison",
    "GateConfig",
    "GateResult",
    "Threshold",
    "compare_reports",
    "compare_runs",
    "latency_differences",
    "load_predictions",
]

#: Run fields that must match for latencies to be comparable (they change which kernels run, or how many at once).
LATENCY_RUN_KEYS = ("cpu", "cpu_flags", "threads", "torch", "onnxruntime")


@dataclass
class Comparison:
    """Everything ``compare`` found: sides, table rows, paired counts, gate verdicts and notes."""

    baseline: dict[str, Any]
    candidate: dict[str, Any]
    data: dict[str, Any]
    rows: list[dict[str, Any]]
    latency_rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    paired: dict[str, Any] | None
    gates: list[GateResult]
    latency_comparable: bool
    latency_differences: list[str]
    alpha: float
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        """One line: how many gates passed, failed and were skipped, with the failures' messages."""
        if not self.gates:
            return "no gates were set"
        skipped = sum(g.status == "skipped" for g in self.gates)
        tail = f", {skipped} skipped" if skipped else ""
        if self.passed:
            return f"all {len(self.gates) - skipped} gates passed{tail}"
        failures = "; ".join(f"{g.name}: {g.message}" for g in self.failed)
        return f"{len(self.failed)} of {len(self.gates)} gates failed{tail}: {failures}"

    def raise_for_gates(self) -> None:
        """Raise :class:`GateFailed` (exit 1) with :meth:`summary` when a gate failed."""
        if not self.passed:
            raise GateFailed(self.summary())

    def gate_entries(self) -> list[dict[str, Any]]:
        """The gates in the report schema's shape (``name, threshold, value, passed`` plus details)."""
        return [g.as_dict() for g in self.gates]

    def to_json(self) -> str:
        """Strict JSON (non-finite numbers become null), for ``--json``."""
        return json.dumps(_json_safe(self.as_dict()), indent=2, allow_nan=False)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary(), "alpha": self.alpha, "baseline": self.baseline,
                "candidate": self.candidate, "data": self.data, "gates": self.gate_entries(),
                "latency_comparable": self.latency_comparable, "latency_differences": self.latency_differences,
                "paired": self.paired, "metrics": self.rows, "latency": self.latency_rows, "runs": self.runs,
                "notes": self.notes}


# ------------------------------------------------------------------------------------------------- loading


def compare_runs(baseline: str | os.PathLike[str], candidate: str | os.PathLike[str], *,
                 gates: GateConfig | Mapping[str, Any] | None = None, baseline_stage: str | None = None,
                 candidate_stage: str | None = None) -> Comparison:
    """Load two report folders (or report.json files) with their predictions.npz and compare them.

    See :func:`compare_reports`; the paths name the sides in messages.
    """
    base_path, cand_path = report_path(baseline), report_path(candidate)  # a reports folder with one run works too
    return compare_reports(
        load_report(base_path), load_report(cand_path), gates=gates, baseline_stage=baseline_stage,
        candidate_stage=candidate_stage, baseline_predictions=load_predictions(base_path),
        candidate_predictions=load_predictions(cand_path), baseline_source=_report_file(base_path),
        candidate_source=_report_file(cand_path),
    )


def _report_file(path: Path) -> str:
    return str(path / REPORT_FILENAME if path.is_dir() else path)


# ------------------------------------------------------------------------------------------------- compare


def compare_reports(
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    gates: GateConfig | Mapping[str, Any] | None = None,
    baseline_stage: str | None = None,
    candidate_stage: str | None = None,
    baseline_predictions: Mapping[str, np.ndarray] | None = None,
    candidate_predictions: Mapping[str, np.ndarray] | None = None,
    baseline_source: str = "baseline",
    candidate_source: str = "candidate",
) -> Comparison:
    """Compare one stage of each report and judge the gates.

    The pipeline runner can gate a stage against the original in the same run with
    ``compare_reports(report, report, gates=spec_gates, baseline_stage="00-original", candidate_stage=name,
    baseline_predictions=arrays, candidate_predictions=arrays)`` and store ``comparison.gate_entries()``.

    Args:
        baseline: The baseline report (validated here).
        candidate: The candidate report.
        gates: A :class:`GateConfig` or a ``gates:`` mapping (keys in the module docstring); None = no gates.
        baseline_stage: Stage name in the baseline; default its last stage. Same for ``candidate_stage``.
        baseline_predictions: The baseline's predictions.npz arrays (``y_true``, ``proba::STAGE``,
            ``latency_ms::STAGE::BACKEND::bN``); without them gates use the bare report numbers.
        baseline_source: How messages name the baseline (its path). Same for ``candidate_source``.

    Returns:
        The :class:`Comparison`; call :meth:`Comparison.raise_for_gates` to turn a failure into exit code 1.

    Raises:
        InputError: invalid reports, different data (sha256, classes, sample count), an unknown stage, malformed
            predictions, or a gate whose inputs neither report has (e.g. a latency gate without latency rows).
    """
    started = time.perf_counter()
    config = gates if isinstance(gates, GateConfig) else GateConfig.from_mapping(gates)
    base = validate_report(dict(baseline), source=baseline_source)
    cand = validate_report(dict(candidate), source=candidate_source)
    notes = _check_same_data(base, cand, baseline_source, candidate_source)
    b_stage = _select_stage(base, baseline_stage, baseline_source, "--baseline-stage")
    c_stage = _select_stage(cand, candidate_stage, candidate_source, "--candidate-stage")
    n, k = int(base["data"]["n_samples"]), int(base["data"]["n_classes"])
    b_arrays = _stage_arrays(baseline_predictions, b_stage["name"], n, k, baseline_source, notes)
    c_arrays = _stage_arrays(candidate_predictions, c_stage["name"], n, k, candidate_source, notes)
    paired = None
    if b_arrays is not None and c_arrays is not None:
        mismatch = np.flatnonzero(b_arrays[0] != c_arrays[0])
        if mismatch.size:
            raise InputError(f"y_true differs between {baseline_source} and {candidate_source} in {mismatch.size} "
                             f"of {n} samples (first at index {int(mismatch[0])}); the runs did not use the same data")
        paired = PairedPredictions(b_arrays[0], b_arrays[1], c_arrays[1])
    differences = latency_differences(base["run"], cand["run"])
    results = judge_gates(config, b_stage, c_stage, paired, baseline_predictions, candidate_predictions,
                          differences=differences, notes=notes, same_run=base["run"] == cand["run"])
    if differences and b_stage["latency"] and c_stage["latency"]:
        gated = config.force_latency and config.max_latency_ratio is not None
        notes.append("latency is not comparable between these runs (" + "; ".join(differences) + ")" + (
            ", gated anyway (force_latency)" if gated else ", so latency gates are skipped"))
    return Comparison(
        baseline=_side(base, b_stage, baseline_source, has_predictions=b_arrays is not None),
        candidate=_side(cand, c_stage, candidate_source, has_predictions=c_arrays is not None),
        data={key: base["data"].get(key) for key in ("source", "n_samples", "n_classes", "class_names", "sha256")},
        rows=_table_rows(b_stage, c_stage), latency_rows=_latency_rows(b_stage, c_stage),
        runs=_run_rows(base["run"], cand["run"]), paired=paired.summary() if paired else None, gates=results,
        latency_comparable=not differences, latency_differences=differences, alpha=float(config.alpha),
        notes=notes, elapsed_s=time.perf_counter() - started,
    )


def _side(report: dict[str, Any], stage: dict[str, Any], source: str, *, has_predictions: bool) -> dict[str, Any]:
    return {"source": source, "run": report["run"].get("name"), "stage": stage["name"], "kind": stage.get("kind"),
            "predictions": has_predictions}


def latency_differences(baseline_run: Mapping[str, Any], candidate_run: Mapping[str, Any]) -> list[str]:
    """What differs between two runs' hardware, threads and runtime versions (empty: latency is comparable)."""
    out = []
    for key in LATENCY_RUN_KEYS:
        a, b = baseline_run.get(key), candidate_run.get(key)
        if isinstance(a, list) and isinstance(b, list):
            a, b = sorted(map(str, a)), sorted(map(str, b))
        if a != b:
            out.append(f"{key} {_show(a)} vs {_show(b)}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return "unknown" if value is None else repr(value) if isinstance(value, str) else str(value)


def _check_same_data(base: dict[str, Any], cand: dict[str, Any], b_src: str, c_src: str) -> list[str]:
    bd, cd = base["data"], cand["data"]
    hint = "compare runs evaluated on the same data"
    for key in ("n_samples", "n_classes"):
        if bd[key] != cd[key]:
            raise InputError(f"reports differ in data {key}: {bd[key]} in {b_src} vs {cd[key]} in {c_src}", hint=hint)
    b_names, c_names = bd.get("class_names"), cd.get("class_names")
    if b_names is not None and c_names is not None and list(b_names) != list(c_names):
        first = next(i for i, (x, y) in enumerate(zip(b_names, c_names, strict=True)) if x != y)
        raise InputError(f"reports differ in class_names: class {first} is {b_names[first]!r} in {b_src} "
                         f"vs {c_names[first]!r} in {c_src}", hint=hint)
    b_sha, c_sha = bd.get("sha256"), cd.get("sha256")
    if b_sha and c_sha and b_sha != c_sha:
        raise InputError(f"reports differ in data sha256: {str(b_sha)[:12]}… in {b_src} vs {str(c_sha)[:12]}… in "
                         f"{c_src} (data source {bd.get('source')!r} vs {cd.get('source')!r})", hint=hint)
    notes = []
    if not (b_sha and c_sha):
        notes.append("data identity not verified: a report has no data sha256")
    return notes


def _select_stage(report: dict[str, Any], name: str | None, source: str, option: str) -> dict[str, Any]:
    stages = report["stages"]
    if not stages:
        raise InputError(f"{source} has no stages to compare")
    if name is None:
        return stages[-1]
    for stage in stages:
        if stage["name"] == name:
            return stage
    names = ", ".join(repr(s["name"]) for s in stages)
    raise InputError(f"{source} has no stage {name!r}", hint=f"{option} is one of {names}")


def _stage_arrays(predictions: Mapping[str, np.ndarray] | None, stage: str, n: int, k: int, source: str,
                  notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    if predictions is None:
        notes.append(f"{source} has no {PREDICTIONS_FILENAME}; metric gates use report numbers without a "
                     "significance test")
        return None
    key = f"proba::{stage}"
    if "y_true" not in predictions or key not in predictions:
        missing = "y_true" if "y_true" not in predictions else key
        notes.append(f"{source}: {PREDICTIONS_FILENAME} has no {missing!r}; metric gates use report numbers "
                     "without a significance test")
        return None
    y, proba = np.asarray(predictions["y_true"]), np.asarray(predictions[key])
    where = f"{source}: {PREDICTIONS_FILENAME}"
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise InputError(f"{where} y_true should be {n} integer labels, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise InputError(f"{where} y_true has labels outside [0, {k})")
    if proba.shape != (n, k) or proba.dtype.kind != "f":
        raise InputError(f"{where} {key!r} should be ({n}, {k}) probabilities, got shape {proba.shape}")
    bad = ~np.isfinite(proba)
    if bad.any():
        raise InputError(f"{where} {key!r} holds {int(bad.sum())} NaN or infinite values")
    return y.astype(np.int64), proba


# ------------------------------------------------------------------------------------------------- tables


def _table_rows(base: dict[str, Any], cand: dict[str, Any]) -> list[dict[str, Any]]:
    """The metric table: every declared ``compare`` metric either side has (see :mod:`modelpress.metric_schema`),
    then the optional measurements. A row's ``kind`` is the metric's unit (it decides how a change reads)."""
    rows = []
    for m in compared():
        if m.section == "knn":  # a row of the optional measurements below, keyed knn_<key>
            continue
        section, key, kind = m.section, m.key, m.unit
        b_val, c_val = (base.get(section) or {}).get(key), (cand.get(section) or {}).get(key)
        if section == "footprint" and key == "size_bytes":
            b_val = b_val if _is_number(b_val) else (base.get("artifact") or {}).get("size_bytes")
            c_val = c_val if _is_number(c_val) else (cand.get("artifact") or {}).get("size_bytes")
        if b_val is None and c_val is None:
            continue
        delta = c_val - b_val if _is_number(b_val) and _is_number(c_val) else None
        ratio = c_val / b_val if delta is not None and b_val not in (0, 0.0) and kind in ("bytes", "count") else None
        rows.append({"section": section, "key": key, "kind": kind, "baseline": b_val, "candidate": c_val,
                     "delta": delta, "ratio": ratio})
    for section, key, kind, b_val, c_val in _measurement_values(base, cand):
        if b_val is None and c_val is None:
            continue
        delta = c_val - b_val if _is_number(b_val) and _is_number(c_val) else None
        ratio = c_val / b_val if delta is not None and b_val not in (0, 0.0) and kind in ("bytes", "count") else None
        rows.append({"section": section, "key": key, "kind": kind, "baseline": b_val, "candidate": c_val,
                     "delta": delta, "ratio": ratio})
    return rows


def _measurement_values(base: dict[str, Any], cand: dict[str, Any]) -> list[tuple[str, str, str, Any, Any]]:
    """Rows of the optional sections (k-NN probe, robustness, memory, cost) either side has, matched by key:
    robustness by noise level, memory by backend and batch size."""

    def flat(stage: dict[str, Any]) -> dict[tuple[str, str], tuple[str, Any]]:
        out: dict[tuple[str, str], tuple[str, Any]] = {}
        knn = stage.get("knn") if isinstance(stage.get("knn"), dict) else {}
        for m in compared():
            if m.section == "knn" and m.key in knn:
                out[("knn", f"knn_{m.key}")] = (m.unit, knn[m.key])
        robust = stage.get("robustness") if isinstance(stage.get("robustness"), dict) else {}
        for row in robust.get("levels") if isinstance(robust.get("levels"), list) else []:
            if isinstance(row, dict) and _is_number(row.get("level")):
                for key in ("accuracy", "f1_macro"):
                    out[("robustness", f"{key}[noise={row['level']:g}]")] = ("fraction", row.get(key))
        memory = stage.get("memory") if isinstance(stage.get("memory"), dict) else {}
        if "weight_bytes" in memory:
            out[("memory", "weight_bytes")] = ("bytes", memory["weight_bytes"])
        for row in memory.get("rows") if isinstance(memory.get("rows"), list) else []:
            if isinstance(row, dict):
                where = f"[{row.get('backend')} b={row.get('batch_size')}]"
                for key in ("peak_rss_bytes", "peak_delta_bytes"):
                    out[("memory", key + where)] = ("bytes", row.get(key))
        cost = stage.get("cost") if isinstance(stage.get("cost"), dict) else {}
        for key, kind in (("train_wall_s", "value"), ("epochs", "count"), ("calibration_wall_s", "value"),
                          ("peak_rss_bytes", "bytes")):
            if cost.get(key) is not None:
                out[("cost", key if key != "peak_rss_bytes" else "peak_rss_bytes[training]")] = (kind, cost[key])
        return out

    b_rows, c_rows = flat(base), flat(cand)
    keys = [*b_rows, *(k for k in c_rows if k not in b_rows)]
    return [(section, key, (b_rows.get((section, key)) or c_rows[(section, key)])[0],
             b_rows.get((section, key), (None, None))[1], c_rows.get((section, key), (None, None))[1])
            for section, key in keys]


def _latency_rows(base: dict[str, Any], cand: dict[str, Any]) -> list[dict[str, Any]]:
    c_rows = {(r["backend"], r["batch_size"]): r for r in cand["latency"]}
    b_rows = {(r["backend"], r["batch_size"]): r for r in base["latency"]}
    out = []
    for key in [*b_rows, *(k for k in c_rows if k not in b_rows)]:
        b, c = b_rows.get(key, {}), c_rows.get(key, {})
        b_med, c_med = b.get("median_ms"), c.get("median_ms")
        out.append({"backend": key[0], "batch_size": key[1], "baseline_threads": b.get("threads"),
                    "candidate_threads": c.get("threads"), "baseline_median_ms": b_med, "candidate_median_ms": c_med,
                    "baseline_p99_ms": b.get("p99_ms"), "candidate_p99_ms": c.get("p99_ms"),
                    "ratio": c_med / b_med if _is_number(b_med) and _is_number(c_med) and b_med > 0 else None})
    return out


def _run_rows(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = ("name", "created", "git_sha", "modelpress_version", *LATENCY_RUN_KEYS, "python", "platform")
    return [{"key": k, "baseline": base.get(k), "candidate": cand.get(k), "same": base.get(k) == cand.get(k)}
            for k in keys if base.get(k) is not None or cand.get(k) is not None]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
