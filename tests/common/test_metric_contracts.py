"""Every declared metric through the same contract, parametrized over :data:`~modelpress.metric_schema.METRICS`.

Each metric, given a value in the stage block its declaration names, shows in report.md (label and value as its
formatter writes it) and, when declared ``compare=True``, in ``compare``'s table with both values; a missing or NaN
value shows as "—"; and a metric with a gate has a direction, and its gate fails a candidate that is worse by a wide
margin and passes one that is better — so the direction and the gate cannot disagree.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from modelpress.metric_schema import METRICS, NONE, Metric
from modelpress.reports import GateConfig, compare_reports, new_report, render_comparison_markdown, render_markdown

PATHS = sorted(METRICS.names())

#: A plausible value per unit, and how a worse / better one is made from it for a metric's direction.
VALUES = {"fraction": 0.625, "ms": 1.25, "bytes": 40_960, "count": 12_345, "ratio": 1.5, "value": 0.375,
          "cosine": 0.9375, "per_s": 800.0, "s": 2.5}
#: Gate thresholds the contract uses: wide enough that "far worse" fails and "better" passes.
THRESHOLDS = {"max_accuracy_drop": 1.0, "max_f1_drop": 1.0, "max_auc_drop": 1.0, "min_fidelity": 0.5,
              "max_size_bytes": 60_000, "max_latency_ratio": 1.1}


def _shifted(m: Metric, value: float, *, worse: bool) -> float:
    up = (not worse) if m.higher_is_better else worse
    if m.unit == "fraction":
        return value + 0.3 if up else value - 0.3
    return value * 2 if up else value / 2


def _latency_row(median_ms: float, **values: float) -> dict[str, Any]:
    row = {"backend": "onnxruntime", "batch_size": 1, "threads": 1, "n": 200, "warmup": 10, "median_ms": median_ms,
           "mean_ms": median_ms, "std_ms": 0.01, "iqr_ms": 0.01, "p90_ms": median_ms * 1.2,
           "p95_ms": median_ms * 1.3, "p99_ms": median_ms * 1.5, "min_ms": median_ms * 0.9, "max_ms": median_ms * 2,
           "throughput_per_s": 1000 / median_ms, "cold_start_ms": 10.0, "unstable": False}
    row.update(values)
    return row


def _stage(name: str, m: Metric | None = None, value: Any = None) -> dict[str, Any]:
    """A complete stage entry; ``m`` (when given) holds ``value``, in its section."""
    metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5, "precision_macro": 0.5, "precision_weighted": 0.5,
               "recall_macro": 0.5, "recall_weighted": 0.5, "f1_macro": 0.5, "f1_weighted": 0.5, "roc_auc": 0.5,
               "per_class": [], "confusion_matrix": [[3, 3], [3, 3]]}
    stage: dict[str, Any] = {
        "name": name, "kind": "original", "params": {}, "notes": [],
        "artifact": {"path": "model.onnx", "format": "onnx", "sha256": "cd" * 32, "size_bytes": 20_480},
        "metrics": metrics, "fidelity": {"reference": "ref", "top1_agreement": 0.5, "max_abs_diff": 0.5,
                                         "mean_abs_diff": 0.5, "mean_kl": 0.5},
        "latency": [_latency_row(2.0)],
        "footprint": {"params": 1000, "nonzero_params": 1000, "sparsity": 0.5, "size_bytes": 20_480, "macs": 1000},
        "gates": [],
    }
    if m is None:
        return stage
    if m.section == "latency":
        stage["latency"] = [{**_latency_row(2.0), m.key: value}]
    else:
        stage.setdefault(m.section, {})
        stage[m.section] = {**(stage[m.section] or {}), m.key: value}
    if m.path == "footprint.size_bytes":
        stage["artifact"]["size_bytes"] = value
    return stage


def _report(*stages: dict[str, Any]) -> dict[str, Any]:
    data = {"source": "synthetic.npz", "split": "test", "n_samples": 12, "n_classes": 2, "class_names": ["a", "b"],
            "sha256": "ab" * 32}
    report = new_report("run", data=data, threads=1)
    report["stages"].extend(copy.deepcopy(stages))
    return report


#: Where report.md does not yet format a declared metric with its declaration, and what differs (strict xfail: the
#: fix removes the entry).
MARKDOWN_DRIFT: dict[str, str] = {}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=MARKDOWN_DRIFT[p]))
                                  if p in MARKDOWN_DRIFT else p for p in PATHS])
def test_a_metric_renders_in_report_md_with_its_formatter(path):
    """report.md shows the value as the declaration formats it, and a different value changes the page.

    Labels are not matched whole: report.md groups some (``precision macro / weighted``, ``params: 1,000 (900
    non-zero, ...)``, the latency table's ``p99`` column).
    """
    m = METRICS.get(path)
    value, other = VALUES[m.unit], _shifted(m, VALUES[m.unit], worse=True)
    pages = {v: render_markdown(_report(_stage("00-original", m, v), _stage("01-candidate", m, v)))
             for v in (value, other)}
    assert m.format(value) in pages[value], f"{path}: {m.format(value)!r} is not in report.md"
    assert m.format(other) in pages[other] and m.format(other) not in pages[value], path
    assert m.label.split(" ")[0].split("-")[0].lower() in pages[value].lower(), f"{path}: {m.label!r} not named"


#: Where compare's table does not yet read a declaration whole, and what differs; strict: fixing it fails the xfail,
#: so the entry is removed with the fix.
COMPARE_DRIFT: dict[str, str] = {}


def _compared_params():
    return [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=COMPARE_DRIFT[p])) if p in COMPARE_DRIFT
            else p for p in PATHS if METRICS.get(p).compare]


@pytest.mark.parametrize("path", _compared_params())
def test_a_compared_metric_is_a_row_of_compare_with_both_values(path):
    m = METRICS.get(path)
    base, cand = VALUES[m.unit], _shifted(m, VALUES[m.unit], worse=True)
    comparison = compare_reports(_report(_stage("s", m, base)), _report(_stage("s", m, cand)))
    keys = {(row["section"], row["key"]) for row in comparison.rows}
    assert (m.section, m.key) in keys or (m.section, f"{m.section}_{m.key}") in keys, keys
    line = next((ln for ln in render_comparison_markdown(comparison).splitlines() if ln.startswith(f"| {m.label} |")),
                None)
    assert line is not None, f"{path}: no row labelled {m.label!r} in compare's table"
    assert m.format(base) in line and m.format(cand) in line and m.format_delta(base, cand) in line, line


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("missing", [None, math.nan], ids=["None", "NaN"])
def test_a_missing_or_nan_value_shows_as_a_dash(path, missing):
    m = METRICS.get(path)
    assert m.format(missing) == NONE and m.format_delta(missing, 1.0) == NONE
    if m.section in ("metrics", "fidelity", "footprint", "knn") and not math.isnan(missing or 0):
        markdown = render_markdown(_report(_stage("00-original", m, missing)))
        assert "nan" not in markdown.lower().replace("nan_", "") and "None" not in markdown, path


GATED = [p for p in PATHS if METRICS.get(p).gate]


@pytest.mark.parametrize("path", GATED)
def test_a_gate_fails_a_far_worse_candidate_and_passes_a_better_one(path):
    m = METRICS.get(path)
    assert m.higher_is_better is not None, f"{path} has gate {m.gate} but no direction"
    assert m.gate in {f.name for f in dataclasses.fields(GateConfig)}, m.gate
    assert m.gate in THRESHOLDS, f"add a threshold for gate {m.gate} to THRESHOLDS"
    base = VALUES[m.unit]
    outcome = {}
    for label, worse in (("worse", True), ("better", False)):
        cand = _shifted(m, base, worse=worse)
        comparison = compare_reports(_report(_stage("s", m, base)), _report(_stage("s", m, cand)),
                                     gates={m.gate: THRESHOLDS[m.gate]})
        results = [g for g in comparison.gates if g.name.split("[")[0] == m.gate]  # latency: per backend, batch
        assert results, f"gate {m.gate} was not judged"
        outcome[label] = results[0].passed
    assert outcome == {"worse": False, "better": True}, (path, outcome)


def test_every_direction_is_stated_where_a_change_is_judged():
    """A metric with a gate, a quantize target or a paired test must say which way is better."""
    for path in PATHS:
        m = METRICS.get(path)
        if m.gate or m.target or m.paired_test:
            assert m.higher_is_better is not None, path
    assert np.all([METRICS.get(p).format(VALUES[METRICS.get(p).unit]) != NONE for p in PATHS])
