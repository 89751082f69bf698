"""Every reported quantity declared once: key, label, unit, direction, formatter, whether it can be a gate.

Why: a metric's name used to be written in eleven places (metrics, render, html, the template, compare, compare_md,
TensorBoard, gates, stats, quantize, cli), each with its own label and formatting, so adding one meant editing all of
them and forgetting one went unnoticed. Renderers, ``compare``, the gates, TensorBoard and quantize's accuracy target
read :data:`METRICS` instead. It sits on the lowest floor (no imports from modelpress but errors and the registry) so
that compress/, evaluate/ and reports/ can all read it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from .registry import Registry

#: Units and how a value of that unit reads ("fraction" 0.9911 → "99.11%").
UNITS = ("fraction", "ms", "bytes", "count", "ratio", "value", "per_s", "s")
NONE = "—"


@dataclass(frozen=True)
class Metric:
    """One reported quantity.

    Attributes:
        key: its key in report.json, inside ``section`` (``metrics.accuracy``, ``fidelity.top1_agreement``).
        section: the stage block that holds it: ``metrics``, ``fidelity``, ``footprint``, ``latency``, ``knn``.
        label: how tables and plots name it.
        unit: one of :data:`UNITS`; decides the formatter and how a difference reads (points for fractions, a ratio
            for times and sizes).
        higher_is_better: the direction of "better"; ``None`` where neither is (a parameter count).
        gate: the name of the ``compare`` gate that limits it (``max_accuracy_drop``), or ``None``.
        paired_test: the paired test ``compare`` runs on per-sample predictions: ``"mcnemar"``, ``"bootstrap"`` or
            ``None`` (not testable per sample).
        target: whether quantize's accuracy-aware search may aim at it (a task metric computed per model output).
    """

    key: str
    section: str
    label: str
    unit: str
    higher_is_better: bool | None
    gate: str | None = None
    paired_test: str | None = None
    target: bool = False

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    def format(self, value: Any) -> str:
        """The value as tables show it; anything not a finite number (None, NaN, a string, a bool) shows as —."""
        number = _finite(value)
        if number is None:
            return NONE
        return _FORMATS[self.unit](number)

    def format_delta(self, baseline: Any, candidate: Any) -> str:
        """candidate against baseline: points for fractions, a ratio for times/sizes, a signed difference else."""
        a, b = _finite(baseline), _finite(candidate)
        if a is None or b is None:
            return NONE
        if self.unit == "fraction":
            return f"{(b - a) * 100:+.2f} pts"
        if self.unit in ("ms", "bytes", "s") and a > 0:
            return f"{b / a:.2f}×"
        return f"{b - a:+.4g}"

    def better(self, baseline: float, candidate: float) -> bool | None:
        """Whether candidate is better than baseline (``None`` when the metric has no direction or they tie)."""
        if self.higher_is_better is None or baseline == candidate:
            return None
        return (candidate > baseline) == self.higher_is_better


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


_FORMATS = {
    "fraction": lambda n: f"{n * 100:.2f}%",
    "ms": lambda n: f"{n:.3f} ms" if n < 100 else f"{n:.1f} ms",
    "bytes": _bytes,
    "count": lambda n: f"{int(n):,}",
    "ratio": lambda n: f"{n:.2f}×",
    "value": lambda n: f"{n:.4g}",
    "per_s": lambda n: f"{n:,.1f}/s",
    "s": lambda n: f"{n:.1f} s",
}

METRICS: Registry[Metric] = Registry("metric", entry_points="modelpress.metrics")


def _declare(*metrics: Metric) -> None:
    for metric in metrics:
        METRICS.add(metric.path, metric)


_declare(
    Metric("accuracy", "metrics", "accuracy", "fraction", True, gate="max_accuracy_drop", paired_test="mcnemar",
           target=True),
    Metric("balanced_accuracy", "metrics", "balanced accuracy", "fraction", True, target=True),
    Metric("precision_macro", "metrics", "precision macro", "fraction", True),
    Metric("precision_weighted", "metrics", "precision weighted", "fraction", True),
    Metric("recall_macro", "metrics", "recall macro", "fraction", True),
    Metric("recall_weighted", "metrics", "recall weighted", "fraction", True),
    Metric("f1_macro", "metrics", "F1 macro", "fraction", True, gate="max_f1_drop", paired_test="bootstrap",
           target=True),
    Metric("f1_weighted", "metrics", "F1 weighted", "fraction", True, target=True),
    Metric("roc_auc", "metrics", "ROC-AUC", "fraction", True, gate="max_auc_drop", paired_test="bootstrap"),
    Metric("top1_agreement", "fidelity", "top-1 agreement", "fraction", True, gate="min_fidelity"),
    Metric("max_abs_diff", "fidelity", "max abs diff", "value", False),
    Metric("mean_abs_diff", "fidelity", "mean abs diff", "value", False),
    Metric("mean_kl", "fidelity", "mean KL", "value", False),
    Metric("size_bytes", "footprint", "size", "bytes", False, gate="max_size_bytes"),
    Metric("params", "footprint", "params", "count", None),
    Metric("nonzero_params", "footprint", "non-zero params", "count", False),
    Metric("sparsity", "footprint", "sparsity", "fraction", None),
    Metric("macs", "footprint", "MACs", "count", False),
    Metric("median_ms", "latency", "median latency", "ms", False, gate="max_latency_ratio"),
    Metric("p99_ms", "latency", "p99 latency", "ms", False),
    Metric("throughput_per_s", "latency", "throughput", "per_s", True),
    Metric("accuracy", "knn", "k-NN accuracy", "fraction", True),
    Metric("reference_cosine_mean", "knn", "cosine to reference (mean)", "value", True),
    Metric("reference_cosine_min", "knn", "cosine to reference (min)", "value", True),
)


def metric(path: str) -> Metric:
    """The declaration at ``section.key`` (``"metrics.accuracy"``); unknown → InputError with the closest path."""
    return METRICS.get(path)


def section(name: str) -> tuple[Metric, ...]:
    """The declarations of one stage block, in declaration order (the order tables show them)."""
    return tuple(m for _, m in METRICS.items() if m.section == name)


def gateable() -> dict[str, Metric]:
    """Gate name → the metric it limits."""
    return {m.gate: m for _, m in METRICS.items() if m.gate}


def targets() -> tuple[Metric, ...]:
    """Task metrics quantize's accuracy-aware search may aim at."""
    return tuple(m for _, m in METRICS.items() if m.target)
