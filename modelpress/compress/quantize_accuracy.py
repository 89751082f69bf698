"""Accuracy-aware quantization: keep the most sensitive nodes in floating point until a tolerance holds.

1. Quantize everything; score it on the evaluation data (accuracy or macro F1, via scikit-learn) against the FP32
   model's score. Within the relative tolerance: done.
2. Sensitivity: for each quantized node, quantize everything *but* that node and measure how far the outputs move
   back towards FP32 (mean KL divergence of the class probabilities, a smooth signal even where accuracy does not
   change) and the metric it reaches. One build per node; static mode reuses one calibration (cached ranges).
   With ``sensitivity: layer_error`` the order comes instead from one pass over the intermediate tensors of the
   all-quantized model (:mod:`modelpress.diagnose.layer_error`, the ranking ``modelpress explain`` shows), which
   also catches nodes that only matter together (a QDQ tensor quantized for its producer and its consumer).
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
from ..runtime.compare import run_outputs
from ..runtime.metrics import classification_metrics, fidelity

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

    def search(self, candidates: dict[str, str], base_exclude: list[str], *,
               rank: Callable[[Path], list[str]] | None = None) -> SearchResult:
        """Greedy search; ``rank(all_quantized_path)`` (modelpress.diagnose layer errors) replaces the per-node
        leave-one-out builds with one ordered list of nodes."""
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
        if rank is not None:
            order = [n for n in rank(full.path) if n in candidates]
            sensitivity = [{"node": n, "op_type": candidates[n], "kl_gain": None, "metric_alone": None,
                            "rank": i + 1} for i, n in enumerate(order)]
        else:
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


def accuracy_search(fp32: Path, build: Build, model: Any, chosen: dict[str, str], base_exclude: list[str], *,
                    artifact: Any, config: Any, ctx: Any, tmp: Path) -> tuple[Path, list[str], dict[str, Any]]:
    """Run :class:`AccuracySearch` for the quantize stage: data from ``ctx.eval``, notes into ``ctx.notes``.

    Returns the chosen model's path, the nodes kept in FP32 for accuracy, and the search record for metadata.
    """
    from onnx import numpy_helper

    from ..artifacts import check_inputs
    from . import quantize_onnx as qo

    data = ctx.require("eval", stage="quantize --accuracy-tolerance")
    check_inputs(artifact.inputs, next(data.batches(1))[0], model=artifact.source)
    if len(data) > config.accuracy_samples:
        rng = np.random.default_rng(ctx.seed)
        data = data.subset(np.sort(rng.choice(len(data), config.accuracy_samples, replace=False)))
    inits = {i.name: i for i in model.graph.initializer}
    weight_bytes = {}
    for node in model.graph.node:
        if node.name in chosen:
            weight = qo.weight_input(node)
            weight_bytes[node.name] = int(numpy_helper.to_array(inits[weight]).nbytes) if weight in inits else 0

    def run(path: Path) -> np.ndarray:
        return run_outputs(path, data, threads=ctx.threads)

    search = AccuracySearch(build=build, run=run, data=data, n_classes=artifact.n_classes,
                            reference_logits=run(fp32), tolerance=float(config.accuracy_tolerance or 0.0),
                            metric=config.accuracy_metric, max_excluded=config.max_excluded, work_dir=tmp,
                            weight_bytes=weight_bytes)
    candidates = {n: op for n, op in chosen.items() if n not in base_exclude}
    rank = None
    if getattr(config, "sensitivity", "leave_one_out") == "layer_error":  # diagnostics: one pass over tensors
        from ..runtime.analyses import ANALYSES, LAYER_ERROR_RANK  # filled by modelpress.diagnose

        rank = ANALYSES.get(LAYER_ERROR_RANK)(fp32, data, threads=ctx.threads)
    result = search.search(candidates, base_exclude, rank=rank)
    s = result.summary
    ctx.notes.append(
        f"accuracy-aware: {s['metric']} {s['final_metric']:.4f} vs FP32 {s['reference_metric']:.4f} "
        f"(relative drop {s['final_relative_drop']:.4f} ≤ {s['tolerance']:g}) on {s['n_samples']} samples of "
        f"{data.source}; all-quantized was {s['all_quantized_metric']:.4f}; {s['builds']} builds")
    for step in result.steps:
        why = (f"KL gain {step['kl_gain']:.3g}" if step.get("kl_gain") is not None
               else f"ranked {step['rank']} by layer error")  # sensitivity: layer_error (modelpress.diagnose)
        ctx.notes.append(
            f"kept FP32 for accuracy: {step['node']} ({step['op_type']}, {step['float_weight_bytes']} float weight "
            f"bytes): {why}, {s['metric']} after {step['metric_after']:.4f}")
    return result.path, result.excluded, {**s, "steps": result.steps}
