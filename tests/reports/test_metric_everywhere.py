"""Adding a metric is one ``Metric(...)`` declaration: report.md, report.html, compare and TensorBoard show it.

The declaration is registered for the test only (``monkeypatch`` removes it after), and nothing else is changed:
if a renderer kept its own list of metrics, the new one would be missing there and this test would fail.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from modelpress.runtime.metrics import classification_metrics
from modelpress.evaluate.tensorboard import stage_scalars
from modelpress.metric_schema import METRICS, Metric
from modelpress.reports import compare_reports, new_report, render_comparison_markdown, render_markdown
from modelpress.reports.html import render_html

BRIER = Metric("brier_score", "metrics", "Brier score", "value", False, column=3)


@pytest.fixture
def brier(monkeypatch: pytest.MonkeyPatch) -> Metric:
    monkeypatch.setitem(METRICS._entries, BRIER.path, BRIER)
    return BRIER


def _report(brier_score: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    proba = rng.dirichlet(np.ones(3), size=60)
    data = {"source": "synthetic.npz", "split": "test", "n_samples": 60, "n_classes": 3,
            "class_names": ["a", "b", "c"], "sha256": "ab" * 32}
    report = new_report("run", data=data, threads=1)
    metrics = classification_metrics(y, proba, n_classes=3, class_names=data["class_names"])
    metrics["brier_score"] = brier_score
    report["stages"].append({
        "name": "01-model", "kind": "original", "params": {}, "notes": [],
        "artifact": {"path": "model.onnx", "format": "onnx", "sha256": "cd" * 32, "size_bytes": 1000},
        "metrics": metrics, "fidelity": None, "latency": [],
        "footprint": {"params": 100, "nonzero_params": 100, "sparsity": 0.0, "size_bytes": 1000, "macs": None},
        "gates": [],
    })
    return report


def _everywhere(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, str]:
    two = copy.deepcopy(base)
    two["stages"].append({**copy.deepcopy(cand["stages"][0]), "name": "02-quantized"})
    comparison = compare_reports(base, cand)
    return {
        "markdown": render_markdown(two),
        "html": render_html(two, with_plots=False),
        "compare": render_comparison_markdown(comparison),
        "compare_rows": " ".join(f"{r['section']}.{r['key']}" for r in comparison.rows),
        "tensorboard": " ".join(tag for tag, _ in stage_scalars(cand["stages"][0])),
    }


def test_a_declared_metric_shows_everywhere(brier: Metric):
    out = _everywhere(_report(0.2046), _report(0.1875))
    assert "| ROC-AUC | Brier score |" in out["markdown"]  # a summary column, after ROC-AUC (column 3)
    assert "| 0.205 |" in out["markdown"] and "- Brier score: 0.188" in out["markdown"]  # its formatter
    assert "<th>Brier score</th>" in out["html"] and "<td>0.188" in out["html"]
    assert "| Brier score | 0.205 | 0.188 | -0.0171 |" in out["compare"]  # label, values and signed change
    assert "metrics.brier_score" in out["compare_rows"]
    assert "metrics/brier_score" in out["tensorboard"].split()


def test_an_undeclared_key_shows_nowhere():
    """The other side of the proof: the same reports without the declaration do not show the value."""
    out = _everywhere(_report(0.2046), _report(0.1875))
    assert not any("Brier" in text or "brier" in text for text in out.values())
