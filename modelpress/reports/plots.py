"""Plots for the HTML report, drawn with matplotlib's Agg renderer and returned as base64 PNG.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot): no global backend switch, no figure
registry to leak, safe to call from any thread. A PNG carries no markup, so names from a report (stage, class) cannot
inject anything into the page. Every function returns ``None`` when there is nothing meaningful to draw.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..metric_schema import finite_number as _number, metric

__all__ = ["confusion_png", "pareto_png", "pareto_points", "roc_png", "size_png"]

_DPI = 100
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _encode(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _short(name: Any, limit: int = 28) -> str:
    text = " ".join(str(name).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pareto_points(stages: Sequence[Mapping[str, Any]]) -> tuple[int | None, list[dict[str, Any]]]:
    """(batch size, points) for the accuracy-vs-latency plot: one point per stage × backend at the smallest batch
    size every measured stage shares (else the smallest measured); ``pareto`` marks points no other point beats on
    both accuracy (higher) and median latency (lower)."""
    per_stage = [{r.get("batch_size") for r in s.get("latency") or [] if _number(r.get("median_ms"))} for s in stages]
    measured = [b for b in per_stage if b]
    if not measured:
        return None, []
    common = set.intersection(*measured)
    batch = min(common) if common else min(set.union(*measured))
    points = []
    for stage in stages:
        accuracy = _number((stage.get("metrics") or {}).get("accuracy"))
        for row in stage.get("latency") or []:
            median = _number(row.get("median_ms"))
            if row.get("batch_size") == batch and median and median > 0 and accuracy is not None:
                points.append({"stage": str(stage.get("name")), "backend": str(row.get("backend")),
                               "latency_ms": median, "accuracy": accuracy})
    for p in points:
        p["pareto"] = not any(
            q is not p and q["latency_ms"] <= p["latency_ms"] and q["accuracy"] >= p["accuracy"]
            and (q["latency_ms"] < p["latency_ms"] or q["accuracy"] > p["accuracy"]) for q in points)
    return batch, points


def pareto_png(stages: Sequence[Mapping[str, Any]]) -> str | None:
    """Accuracy against median latency (log scale), the Pareto front drawn as a step line."""
    batch, points = pareto_points(stages)
    if not points:
        return None
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    backends = sorted({p["backend"] for p in points})
    for i, backend in enumerate(backends):
        mine = [p for p in points if p["backend"] == backend]
        ax.scatter([p["latency_ms"] for p in mine], [p["accuracy"] * 100 for p in mine], s=48, zorder=3,
                   color=_COLORS[i % len(_COLORS)], label=backend,
                   edgecolors=["black" if p["pareto"] else "none" for p in mine])
    for p in points:
        ax.annotate(_short(p["stage"]), (p["latency_ms"], p["accuracy"] * 100), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency_ms"])
    if len(front) > 1:
        ax.step([p["latency_ms"] for p in front], [p["accuracy"] * 100 for p in front], where="post",
                color="#555555", linestyle="--", linewidth=1, label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel(f"{metric('latency.median_ms').label} at batch size {batch} (ms, log scale)")
    ax.set_ylabel(f"{metric('metrics.accuracy').label} (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _encode(fig)


def size_png(stages: Sequence[Mapping[str, Any]]) -> str | None:
    """Horizontal bars: artifact size per stage."""
    rows = [(str(s.get("name")), _number((s.get("footprint") or {}).get("size_bytes"))) for s in stages]
    rows = [(n, v) for n, v in rows if v is not None]
    if not rows:
        return None
    scale, unit = (1024.0**2, "MiB") if max(v for _, v in rows) >= 1024**2 else (1024.0, "KiB")
    fig = _figure(7.0, 0.45 * len(rows) + 1.2)
    ax = fig.add_subplot()
    values = [v / scale for _, v in rows]
    positions = np.arange(len(rows))
    ax.barh(positions, values, color=[_COLORS[i % len(_COLORS)] for i in range(len(rows))])
    ax.set_yticks(positions, [_short(n) for n, _ in rows], fontsize=8)
    ax.invert_yaxis()
    for y, v in zip(positions, values, strict=True):
        ax.annotate(f"{v:,.1f}", (v, y), textcoords="offset points", xytext=(3, -3), fontsize=8)
    ax.set_xlabel(f"artifact size ({unit})")
    ax.set_title("Size")
    ax.set_xlim(0, max(values) * 1.18 or 1)
    return _encode(fig)


def roc_png(y_true: np.ndarray, probabilities: Mapping[str, np.ndarray]) -> str | None:
    """ROC curves per stage: the positive class for binary data, the micro-average (one-vs-rest) otherwise."""
    from sklearn.metrics import auc, roc_curve

    y = np.asarray(y_true).astype(np.int64).ravel()
    curves = []
    for name, proba in probabilities.items():
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim != 2 or len(p) != len(y) or p.shape[1] < 2 or not np.isfinite(p).all() or y.max() >= p.shape[1]:
            continue
        if p.shape[1] == 2:
            truth, score, kind = (y == 1).astype(int), p[:, 1], "positive class"
        else:
            truth, score, kind = np.eye(p.shape[1], dtype=int)[y].ravel(), p.ravel(), "micro-average"
        if truth.min() == truth.max():
            continue  # one class only: no ROC curve exists
        fpr, tpr, _ = roc_curve(truth, score)
        curves.append((name, fpr, tpr, auc(fpr, tpr), kind))
    if not curves:
        return None
    fig = _figure(5.6, 4.6)
    ax = fig.add_subplot()
    for i, (name, fpr, tpr, area, _) in enumerate(curves):
        ax.plot(fpr, tpr, color=_COLORS[i % len(_COLORS)], linewidth=1.4, label=f"{_short(name)} (AUC {area:.4f})")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC ({curves[0][4]})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _encode(fig)


def confusion_png(matrix: Any, class_names: Sequence[Any] | None, title: str) -> str | None:
    """Confusion matrix (rows: true class, columns: predicted), counts written in cells up to 20 classes."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0 or not np.isfinite(m).all():
        return None
    n = m.shape[0]
    names = [str(i) for i in range(n)]
    if class_names and len(class_names) == n:
        names = [_short(c, 12) for c in class_names]
    side = min(7.0, 2.4 + 0.35 * n)
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90 if n > 8 else 0, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= 20:
        threshold = m.max() / 2 if m.max() > 0 else 1
        for (i, j), value in np.ndenumerate(m):
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_short(title, 48))
    return _encode(fig)
