"""Every reported quantity declared once: key, label, unit, direction, formatter, where it shows, gate.

Why: a metric's name used to be written in eleven places (metrics, render, html, the template, compare, compare_md,
TensorBoard, gates, stats, quantize, cli), each with its own label and formatting, so adding one meant editing all of
them and forgetting one went unnoticed. The Markdown and HTML reports, ``compare`` (its table and its drop gates), the
paired statistics, TensorBoard and quantize's accuracy target read :data:`METRICS` instead: adding a metric is one
``Metric(...)`` line here plus the code that computes it (``tests/reports/test_metric_everywhere.py`` proves it).

Adding a metric, worked example (the Brier score of a stage's probabilities)::

    # here, in the _declare(...) list: a summary column after ROC-AUC, lower is better, 3 significant digits
    Metric("brier_score", "metrics", "Brier score", "value", False, column=3),
    # and in runtime/metrics.py, the code that computes it: out["brier_score"] = ...

report.md then shows it as a summary column and in each stage's Metrics list, report.html as a column, ``compare``
as a row with its change, TensorBoard as ``metrics/brier_score``. A ``gate=`` needs the gate's field in
:class:`~modelpress.reports.gates.GateConfig`; ``paired_test="bootstrap"`` needs its weighted form in
:func:`~modelpress.reports.stats.weighted_metric`.

The number formatters live here too, on the lowest floor (no imports from modelpress but errors and the registry),
so that compress/, evaluate/ and reports/ can all read them; :mod:`modelpress.reports.fmt` re-exports them for the
renderers and adds only what is about text, not numbers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .registry import Registry

#: Units and how a value of that unit reads ("fraction" 0.9911 → "99.11%", "bytes" 102400 → "100 KiB").
UNITS = ("fraction", "ms", "bytes", "count", "ratio", "value", "cosine", "per_s", "s")
NONE = "—"  # what a missing or undefined value shows as in every rendered table

#: Sections whose TensorBoard tag prefix differs from the section name (kept: existing event files use "size/").
_TAG_PREFIX = {"footprint": "size"}


# --------------------------------------------------------------------------------------------------- numbers


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (bools excluded), else None.

    Reports may come from elsewhere, so nothing is assumed about types: a string, a bool or NaN is not a number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def significant(number: float, digits: int = 3) -> str:
    """``digits`` significant digits; plain notation from 1e-4 up, integers kept whole above 10**digits.

    0.5 → ``0.500``, 1234.5 → ``1235``, 3.05e-6 → ``3.05e-06``: trailing zeros are kept so a column of latencies
    reads at the same precision.
    """
    if number == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude < -4:
        return f"{number:.{digits - 1}e}"
    return f"{number:.{max(digits - 1 - magnitude, 0)}f}"


def binary_bytes(number: float) -> str:
    """Bytes in powers of 1024 with 3 significant digits: 102400 → ``100 KiB``, 512 → ``512 B``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while abs(number) >= 1024 and index < len(units) - 1:
        number /= 1024
        index += 1
    return f"{int(number)} B" if index == 0 else f"{significant(number)} {units[index]}"


def integer(number: float) -> str:
    """With thousands separators when whole (23722 → ``23,722``); a fraction keeps 3 significant digits."""
    return f"{int(number):,}" if float(number).is_integer() else significant(number)


def percent(number: float, decimals: int = 2) -> str:
    """A fraction as a percentage: 0.9911 → ``99.11%``."""
    return f"{number * 100:.{decimals}f}%"


_FORMATS: dict[str, Callable[[float], str]] = {
    "fraction": percent,
    "ms": lambda n: f"{significant(n)} ms",
    "bytes": binary_bytes,
    "count": integer,
    "ratio": lambda n: f"{significant(n)}×",
    "value": significant,
    # cosines near 1 differ in the third and fourth decimal (0.9856 misses a 0.99 target that 0.986 hides)
    "cosine": lambda n: f"{n:.4f}",
    "per_s": significant,
    "s": lambda n: f"{significant(n)} s",
}


def format_value(unit: str, value: Any, *, decimals: int = 2) -> str:
    """``value`` in ``unit`` as every table prints it; anything not a finite number shows as :data:`NONE`."""
    number = finite_number(value)
    if number is None:
        return NONE
    return percent(number, decimals) if unit == "fraction" else _FORMATS[unit](number)


def format_delta(unit: str, baseline: Any, candidate: Any) -> str:
    """candidate − baseline as ``compare`` prints it.

    Points for fractions (``-3.11 pts``); for sizes and counts the absolute change with the ratio
    (``-60 (0.400×)``); a signed difference with 3 significant digits else.
    """
    a, b = finite_number(baseline), finite_number(candidate)
    if a is None or b is None:
        return NONE
    delta = b - a
    if unit == "fraction":
        return f"{delta * 100:+.2f} pts"
    if unit in ("bytes", "count") and a != 0:
        amount = binary_bytes(abs(delta)) if unit == "bytes" else integer(abs(delta))
        return f"{'+' if delta >= 0 else '-'}{amount} ({significant(b / a)}×)"
    return f"{'+' if delta >= 0 else ''}{significant(delta)}"


# --------------------------------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Metric:
    """One reported quantity.

    Attributes:
        key: its key in report.json, inside ``section`` (``metrics.accuracy``, ``fidelity.top1_agreement``).
        section: the stage block that holds it: ``metrics``, ``fidelity``, ``footprint``, ``latency`` (one value per
            latency row), ``knn``.
        label: how tables and plots name it.
        unit: one of :data:`UNITS`; decides the formatter and how a difference reads (points for fractions, a ratio
            for sizes and counts).
        higher_is_better: the direction of "better"; ``None`` where neither is (a parameter count, sparsity).
        gate: the name of the ``compare`` gate that limits it (``max_accuracy_drop``), or ``None``.
        paired_test: the paired test ``compare`` runs on per-sample predictions: ``"mcnemar"``, ``"bootstrap"`` or
            ``None`` (not testable per sample).
        target: whether quantize's accuracy-aware search may aim at it (a task metric computed per model output).
        decimals: decimals of a fraction's percentage (sparsity reads 50.0%, accuracy 99.11%).
        column: its position in the stage summary tables of report.md and report.html, or ``None`` (not a
            column). Latency columns go after the ``metrics`` section's columns.
        within: the key of the metric (same section) whose line in report.md's stage details shows this one in
            parentheses (``params: 25,000 (12,500 non-zero, sparsity 50.0%)``), or ``None`` (its own line).
        compare: a row of ``compare``'s metric table.
        tensorboard: a TensorBoard scalar (tag ``section/key``, per backend and batch size for latency).
    """

    key: str
    section: str
    label: str
    unit: str
    higher_is_better: bool | None
    gate: str | None = None
    paired_test: str | None = None
    target: bool = False
    decimals: int = 2
    column: int | None = None
    within: str | None = None
    compare: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.path}: unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.paired_test not in (None, "mcnemar", "bootstrap"):
            raise ValueError(f"metric {self.path}: paired_test {self.paired_test!r} is not mcnemar or bootstrap")

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def tag(self) -> str:
        """The TensorBoard tag (``metrics/accuracy``; latency tags add the backend and batch size in the middle)."""
        return f"{_TAG_PREFIX.get(self.section, self.section)}/{self.key}"

    @property
    def vs_first(self) -> bool:
        """Whether summary tables show its change against the first stage.

        Not for quantities without a direction (params, sparsity), nor for fidelity, which is already measured
        against a reference model.
        """
        return self.higher_is_better is not None and self.section != "fidelity"

    def format(self, value: Any) -> str:
        """The value as tables show it; anything not a finite number (None, NaN, a string, a bool) shows as —."""
        return format_value(self.unit, value, decimals=self.decimals)

    def format_delta(self, baseline: Any, candidate: Any) -> str:
        """candidate against baseline: see :func:`format_delta`."""
        return format_delta(self.unit, baseline, candidate)

    def better(self, baseline: float, candidate: float) -> bool | None:
        """Whether candidate is better than baseline (``None`` when the metric has no direction or they tie)."""
        if self.higher_is_better is None or baseline == candidate:
            return None
        return (candidate > baseline) == self.higher_is_better


METRICS: Registry[Metric] = Registry("metric", entry_points="modelpress.metrics")


def _declare(*metrics: Metric) -> None:
    for m in metrics:
        METRICS.add(m.path, m)


_declare(
    Metric("accuracy", "metrics", "accuracy", "fraction", True, gate="max_accuracy_drop", paired_test="mcnemar",
           target=True, column=1),
    Metric("balanced_accuracy", "metrics", "balanced accuracy", "fraction", True, target=True),
    Metric("precision_macro", "metrics", "precision macro", "fraction", True),
    Metric("precision_weighted", "metrics", "precision weighted", "fraction", True, tensorboard=False),
    Metric("recall_macro", "metrics", "recall macro", "fraction", True),
    Metric("recall_weighted", "metrics", "recall weighted", "fraction", True, tensorboard=False),
    Metric("f1_macro", "metrics", "F1 macro", "fraction", True, gate="max_f1_drop", paired_test="bootstrap",
           target=True, column=2),
    Metric("f1_weighted", "metrics", "F1 weighted", "fraction", True, target=True),
    Metric("roc_auc", "metrics", "ROC-AUC", "fraction", True, gate="max_auc_drop", paired_test="bootstrap",
           column=3),
    Metric("top1_agreement", "fidelity", "top-1 agreement", "fraction", True, gate="min_fidelity", column=7),
    Metric("max_abs_diff", "fidelity", "max abs diff", "value", False, column=8),
    Metric("mean_abs_diff", "fidelity", "mean abs diff", "value", False, compare=False, tensorboard=False),
    Metric("mean_kl", "fidelity", "mean KL", "value", False),
    Metric("size_bytes", "footprint", "size", "bytes", False, gate="max_size_bytes", column=4),
    Metric("params", "footprint", "params", "count", None, column=5),
    Metric("nonzero_params", "footprint", "non-zero params", "count", False, within="params"),
    Metric("sparsity", "footprint", "sparsity", "fraction", None, decimals=1, column=6, within="params"),
    Metric("macs", "footprint", "MACs", "count", False),
    Metric("median_ms", "latency", "median latency", "ms", False, gate="max_latency_ratio", compare=False),
    Metric("p99_ms", "latency", "p99 latency", "ms", False, compare=False),
    Metric("throughput_per_s", "latency", "throughput", "per_s", True, compare=False),
    # embedding models (evaluate/retrieval.py): retrieval against the pairs' labels, fidelity to the reference's
    # embeddings and ranking
    Metric("recall_at_1", "metrics", "recall@1", "fraction", True),
    Metric("recall_at_10", "metrics", "recall@10", "fraction", True),
    Metric("ndcg_at_10", "metrics", "nDCG@10", "fraction", True),
    Metric("cosine_mean", "fidelity", "cosine mean", "cosine", True),
    Metric("cosine_min", "fidelity", "cosine min", "cosine", True),
    Metric("ranking_recall_at_10", "fidelity", "ranking recall@10", "fraction", True),
    Metric("ranking_ndcg_at_10", "fidelity", "ranking nDCG@10", "fraction", True),
    Metric("accuracy", "knn", "k-NN accuracy", "fraction", True),
    Metric("reference_cosine_mean", "knn", "cosine to reference (mean)", "cosine", True),
    Metric("reference_cosine_min", "knn", "cosine to reference (min)", "cosine", True, compare=False),
)


def metric(path: str) -> Metric:
    """The declaration at ``section.key`` (``"metrics.accuracy"``); unknown → InputError with the closest path."""
    return METRICS.get(path)


def find(section_name: str, key: str) -> Metric | None:
    """The declaration of ``key`` in ``section_name``, or ``None`` (a renderer then falls back to the raw key)."""
    return METRICS.find(f"{section_name}.{key}")


def section(name: str) -> tuple[Metric, ...]:
    """The declarations of one stage block, in declaration order (the order tables show them)."""
    return tuple(m for _, m in METRICS.items() if m.section == name)


def columns() -> tuple[Metric, ...]:
    """The stage summary table's metric columns, by :attr:`Metric.column`."""
    return tuple(sorted((m for _, m in METRICS.items() if m.column is not None), key=lambda m: m.column or 0))


def compared() -> tuple[Metric, ...]:
    """``compare``'s metric table rows, in declaration order."""
    return tuple(m for _, m in METRICS.items() if m.compare)


def scalars() -> tuple[Metric, ...]:
    """What TensorBoard logs, in declaration order."""
    return tuple(m for _, m in METRICS.items() if m.tensorboard)


def gateable() -> dict[str, Metric]:
    """Gate name → the metric it limits."""
    return {m.gate: m for _, m in METRICS.items() if m.gate}


def targets() -> tuple[Metric, ...]:
    """Task metrics quantize's accuracy-aware search may aim at."""
    return tuple(m for _, m in METRICS.items() if m.target)
