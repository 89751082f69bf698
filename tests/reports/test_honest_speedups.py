"""Speed-ups in report.md compare like with like; gates read them; bootstraps ignore absent classes; a 1000-class
confusion matrix stays small. Expected values come from scikit-learn or are worked out by hand."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from modelpress.errors import InputError
from modelpress.pipeline.record import cap_confusion
from modelpress.reports.compare import compare_reports
from modelpress.reports.markdown import render_markdown
from modelpress.reports.stats import paired_bootstrap, weighted_metric


def _row(backend: str, batch: int, median: float, **extra: Any) -> dict[str, Any]:
    return {"backend": backend, "batch_size": batch, "threads": 1, "n": 20, "warmup": 2, "median_ms": median,
            "mean_ms": median, "std_ms": 0.0, "iqr_ms": 0.0, "p90_ms": median, "p95_ms": median, "p99_ms": median,
            "min_ms": median, "max_ms": median, "throughput_per_s": batch * 1000 / median, "cold_start_ms": 1.0,
            "unstable": False, **extra}


def _stage(name: str, fmt: str, latency: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "kind": "original" if name == "00-original" else "export", "params": {}, "notes": [],
            "artifact": {"path": f"stages/{name}/m", "format": fmt, "size_bytes": 1000},
            "metrics": {"accuracy": 0.9}, "fidelity": None, "latency": latency,
            "footprint": {"size_bytes": 1000}, "gates": []}


def _report() -> dict[str, Any]:
    """A torch original timed on torch and (exported for the comparison) on onnxruntime; an ONNX stage 2.5× faster
    than the exported original, and 8× faster than the torch row (a cross-backend ratio that must never show)."""
    original = _stage("00-original", "torch", [
        _row("torch", 1, 4.0, speedup=None, speedup_reason="this is the reference"),
        _row("onnxruntime", 1, 1.25, speedup=None, speedup_reason="this is the reference",
             timed_as="the reference exported to ONNX (opset 18, dynamo exporter) for this comparison")])
    onnx = _stage("01-export", "onnx", [_row("onnxruntime", 1, 0.5, speedup={
        "reference": "00-original", "ratio": 2.5, "ci_low": 2.0, "ci_high": 3.2, "rounds": 5,
        "method": "bootstrap over interleaved rounds"})])
    plain = _stage("02-other", "onnx", [_row("onnxruntime", 32, 3.0, speedup=None,
                                            speedup_reason="the reference was not timed on onnxruntime")])
    return {"schema_version": 1, "run": {"name": "r", "created": "2026-01-01T00:00:00+00:00", "cpu": "C",
                                         "cpu_flags": [], "threads": 1, "torch": "t", "onnxruntime": "o"},
            "data": {"source": "d", "n_samples": 10, "n_classes": 2}, "stages": [original, onnx, plain]}


def test_markdown_shows_only_the_rows_own_like_for_like_speedup() -> None:
    md = render_markdown(_report())
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    export_line = next(line for line in summary.splitlines() if "01-export" in line)
    assert "0.500 / 0.500 ms (2.50× faster [2.00, 3.20])" in export_line  # vs the ONNX copy: 1.25 / 0.5
    assert "8.0" not in export_line and "× faster |" not in export_line  # 4.0 / 0.5: a cross-backend ratio
    original_line = next(line for line in summary.splitlines() if "00-original" in line)
    assert "1.25 / 1.25 ms †" in original_line and "faster" not in original_line
    assert "- † 00-original onnxruntime b=1: the reference exported to ONNX (opset 18, dynamo exporter)" in summary
    assert ("- no speed-up for 02-other onnxruntime b=32: the reference was not timed on onnxruntime"
            in summary)
    assert "faster" not in next(line for line in summary.splitlines() if "02-other" in line)


def test_slower_speedup_reads_as_slower_with_inverted_ci() -> None:
    report = _report()
    report["stages"][1]["latency"][0]["speedup"].update(ratio=0.5, ci_low=0.4, ci_high=0.8)
    assert "(2.00× slower [1.25, 2.50])" in render_markdown(report)


def test_latency_gate_in_one_run_reads_the_rounds_speedup() -> None:
    report = _report()
    result = compare_reports(report, report, gates={"max_latency_ratio": 0.5}, baseline_stage="00-original",
                             candidate_stage="01-export")
    (gate,) = result.gates
    assert gate.name == "max_latency_ratio[onnxruntime b=1]" and gate.test == "bootstrap-rounds-median-ratio"
    # candidate / baseline = 1 / 2.5 = 0.4, CI [1 / 3.2, 1 / 2.0] = [0.3125, 0.5]: lower bound not above 0.5
    assert gate.value == pytest.approx(0.4) and (gate.ci_low, gate.ci_high) == pytest.approx((0.3125, 0.5))
    assert gate.status == "passed"
    strict = compare_reports(report, report, gates={"max_latency_ratio": 0.3}, baseline_stage="00-original",
                             candidate_stage="01-export")
    assert strict.gates[0].status == "failed"  # 0.3125 > 0.3


def test_latency_gate_across_runs_does_not_use_another_runs_speedup() -> None:
    base, cand = _report(), copy.deepcopy(_report())
    cand["run"]["created"] = "2026-01-02T00:00:00+00:00"  # another run (same machine)
    result = compare_reports(base, cand, gates={"max_latency_ratio": 0.5}, baseline_stage="00-original",
                             candidate_stage="01-export")
    (gate,) = result.gates
    assert gate.test is None and gate.value == pytest.approx(0.4)  # bare medians 0.5 / 1.25, said so
    assert "no per-call samples" in gate.message


# ---- classes absent from the evaluation data -------------------------------------------------------------------
def _four_class_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=120)  # the model has 4 outputs; class 3 never occurs in the data
    logits = rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_bootstrap_metrics_average_over_present_classes_like_sklearn() -> None:
    y, proba = _four_class_scores()
    ones = np.ones((1, y.size))
    want_f1 = f1_score(y, proba.argmax(axis=1), labels=[0, 1, 2], average="macro", zero_division=0)
    assert weighted_metric("f1_macro", y, proba, ones)[0] == pytest.approx(want_f1)
    want_auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in (0, 1, 2)])
    assert weighted_metric("roc_auc", y, proba, ones)[0] == pytest.approx(want_auc)
    # the absent class would have counted as F1 0 over 4 classes, and made every ROC-AUC resample undefined
    assert want_f1 > 1.2 * f1_score(y, proba.argmax(axis=1), labels=[0, 1, 2, 3], average="macro", zero_division=0)
    boot = paired_bootstrap("roc_auc", y, proba, proba[:, [1, 0, 2, 3]], n_boot=200)
    assert boot["baseline"] == pytest.approx(want_auc) and boot["n_valid"] == 200


def test_one_class_roc_auc_bootstrap_says_why() -> None:
    y = np.zeros(10, dtype=int)
    proba = np.full((10, 3), 1 / 3)
    assert np.isnan(weighted_metric("roc_auc", y, proba, np.ones((1, 10)))[0])
    with pytest.raises(InputError, match=r"roc_auc is undefined on these 10 samples: y_true holds only one class"):
        paired_bootstrap("roc_auc", y, proba, proba, n_boot=100)


# ---- confusion matrix cap ---------------------------------------------------------------------------------------
def test_thousand_class_confusion_matrix_keeps_the_classes_that_occur() -> None:
    matrix = np.zeros((1000, 1000), dtype=int)
    matrix[5, 5], matrix[5, 7], matrix[900, 900], matrix[7, 5] = 10, 2, 4, 1
    out = cap_confusion({"accuracy": 0.9, "confusion_matrix": matrix.tolist()})
    assert out["confusion_classes"] == [5, 7, 900]
    assert out["confusion_matrix"] == [[10, 2, 0], [1, 0, 0], [0, 0, 4]]
    assert "3 of 1000 classes" in out["confusion_note"] and "997 classes are all zero" in out["confusion_note"]
    small = {"confusion_matrix": [[1, 0], [0, 1]]}
    assert cap_confusion(small) == small


def test_confusion_matrix_with_many_occurring_classes_keeps_top_pairs() -> None:
    k = 200
    matrix = np.diag(np.full(k, 3))
    matrix[0, 1], matrix[2, 3], matrix[4, 5] = 9, 5, 5
    out = cap_confusion({"confusion_matrix": matrix.tolist()}, top_pairs=2)
    assert out["confusion_matrix"] is None
    assert out["confusion_pairs"] == [[0, 1, 9], [2, 3, 5]]  # most frequent first; ties by true class
    assert "the 2 most frequent of 3 distinct confusions" in out["confusion_note"]
    assert len(str(out)) < 1000
