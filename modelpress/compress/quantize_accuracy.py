"""Accuracy-aware quantization: keep the most sensitive nodes in floating point until a tolerance holds.

1. Quantize everything; score it on the evaluation data (accuracy or macro F1, via scikit-learn) against the FP32
   model's score. Within the relative tolerance: done.
2. Sensitivity: for each quantized node, quantize everything *but* that node and measure how far the outputs move
   back towards FP32 (mean KL divergence of the class probabilities, a smooth signal even where accuracy does not
   change) and the metric it reaches. One build per node; static mode reuses one calibration (cached ranges).
3. Greedy: keep nodes in FP32 in order of sensitivity, re-scoring after each, until the tolerance holds or
   ``max_excluded`` nodes are kept; if it never holds, :class:`GateFailed` says the best that was reached.

Every step is recorded (node, op type, KL gain alone, metric after, weight bytes kept in float) so the report says
what each excluded node cost and gained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..data import Dataset
from ..errors import GateFailed
from ..evaluate.metrics import classification_metrics, fidelity

Build = Callable[[list[str], Path], Path]


@dataclass
class Scored:
    path: Path
    metric: float
    mean_kl: float
    top1_agreement: float


@dataclass
class SearchResult:
    path: Path
    excluded: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def relative_drop(reference: float, value: float) -> float:
    """(reference − value) / reference; an absolute drop when the reference is 0."""
    return (reference - value) / reference if reference > 0 else reference - value


class AccuracySearch:
    """Greedy FP32 fallback by measured per-node sensitivity (see the module docstring)."""

    def __init__(self, *, build: Build, run: Callable[[Path], np.ndarray], data: Dataset, n_classes: int,
                 reference_logits: np.ndarray, tolerance: float, metric: str, max_excluded: int,
                 work_dir: Path, weight_bytes: dict[str, int]) -> None:
        self.build = build
        self.run = run
        self.data = data
        self.n_classes = n_classes
        self.reference_logits = reference_logits
        self.tolerance = tolerance
        self.metric_name = metric
        self.max_excluded = max_excluded
        self.work_dir = work_dir
        self.weight_bytes = weight_bytes
        self.reference_metric = self._metric(reference_logits)
        self._n = 0

    def _metric(self, logits: np.ndarray) -> float:
        scores = classification_metrics(self.data.y, logits, n_classes=self.n_classes)
        return float(scores[self.metric_name])

    def score(self, exclude: list[str]) -> Scored:
        self._n += 1
        path = self.build(list(exclude), self.work_dir / f"search-{self._n}.onnx")
        logits = self.run(path)
        fid = fidelity(self.reference_logits, logits, n_classes=self.n_classes)
        return Scored(path, self._metric(logits), float(fid["mean_kl"]), float(fid["top1_agreement"]))

    def ok(self, scored: Scored) -> bool:
        return relative_drop(self.reference_metric, scored.metric) <= self.tolerance + 1e-12

    def search(self, candidates: dict[str, str], base_exclude: list[str]) -> SearchResult:
        full = self.score(base_exclude)
        summary: dict[str, Any] = {
            "metric": self.metric_name, "tolerance": self.tolerance, "reference_metric": self.reference_metric,
            "all_quantized_metric": full.metric, "all_quantized_mean_kl": full.mean_kl,
            "all_quantized_relative_drop": relative_drop(self.reference_metric, full.metric),
            "n_samples": len(self.data), "n_candidates": len(candidates),
        }
        if self.ok(full):
            summary.update(final_metric=full.metric, final_relative_drop=summary["all_quantized_relative_drop"],
                           builds=self._n, met=True)
            return SearchResult(full.path, [], [], summary)
        sensitivity = []
        with progress.bar(len(candidates), "sensitivity", unit="node") as bar:
            for name, op in candidates.items():
                alone = self.score([*base_exclude, name])
                sensitivity.append({"node": name, "op_type": op, "kl_gain": full.mean_kl - alone.mean_kl,
                                    "metric_alone": alone.metric})
                alone.path.unlink(missing_ok=True)
                bar.update(1)
        sensitivity.sort(key=lambda s: (-s["kl_gain"], -s["metric_alone"], s["node"]))
        excluded: list[str] = []
        steps: list[dict[str, Any]] = []
        best = full
        for entry in sensitivity[: self.max_excluded]:
            excluded.append(entry["node"])
            current = self.score([*base_exclude, *excluded])
            steps.append({**entry, "metric_after": current.metric, "mean_kl_after": current.mean_kl,
                          "relative_drop_after": relative_drop(self.reference_metric, current.metric),
                          "float_weight_bytes": int(self.weight_bytes.get(entry["node"], 0))})
            if best.path != current.path and best.path != full.path:
                best.path.unlink(missing_ok=True)
            best = current
            if self.ok(current):
                break
        summary.update(final_metric=best.metric, final_relative_drop=relative_drop(self.reference_metric, best.metric),
                       builds=self._n, met=self.ok(best), sensitivity=sensitivity[: max(10, self.max_excluded)])
        if not self.ok(best):
            raise GateFailed(
                f"no quantization meets accuracy tolerance {self.tolerance:g}: best {self.metric_name} "
                f"{best.metric:.4f} vs FP32 {self.reference_metric:.4f} (relative drop "
                f"{summary['final_relative_drop']:.4f}) with {len(excluded)} of {len(candidates)} nodes kept in "
                f"FP32 on {len(self.data)} samples",
                hint="raise --accuracy-tolerance or max_excluded, use --per-channel, or another --mode",
            )
        return SearchResult(best.path, excluded, steps, summary)
