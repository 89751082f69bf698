"""The two analyses the quantize stage asks for by name (registered in
:data:`modelpress.runtime.analyses.ANALYSES` by this package's ``__init__``; the stage never imports diagnose/).

* ``explain: true`` — :func:`explain_quantized` explains the quantized model against the FP32 model it came from,
  on the run's evaluation data, puts the result in ``artifact.metadata["explain"]`` (the report's stage key
  ``"explain"``) with short notes, and, when the stage can rebuild the model, *measures* the first recommendation:
  it re-quantizes with the recommended nodes kept in FP32 and records the output fidelity before and after.
* ``sensitivity: layer_error`` — :func:`layer_error_rank` gives the accuracy-aware search its order of nodes to keep
  in FP32 from one pass over intermediate tensors (:func:`~.layer_error.sensitivity_ranking`), instead of one
  rebuild per node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..runtime.compare import compare_outputs, run_outputs
from .explain import ExplainConfig, explain
from .layer_error import onnx_layer_errors, sensitivity_ranking

#: Samples the layer-error ranking of the accuracy search uses (intermediate tensors of both models per batch).
RANK_SAMPLES = 256


def layer_error_rank(reference: Path, data: Dataset, *, threads: int) -> Callable[[Path], list[str]]:
    """``rank(quantized_path)`` → node names to keep in FP32, most harmful first (see the module docstring)."""
    subset = data.subset(slice(0, min(len(data), RANK_SAMPLES)))

    def rank(candidate: Path) -> list[str]:
        return sensitivity_ranking(onnx_layer_errors(reference, candidate, subset, threads=threads))

    return rank


def explain_quantized(result: ModelArtifact, reference: ModelArtifact, data: Dataset | None, *, threads: int,
                      notes: list[str], build: Callable[[list[str], Path], Path] | None = None,
                      base_exclude: list[str] | None = None, work_dir: Path | None = None) -> ModelArtifact:
    """``result`` with ``metadata["explain"]``; ``reference`` is the FP32 model (ONNX file or torch module).

    ``build(exclude, out)`` (the stage's own quantizer) lets the first exclusion recommendation be measured:
    ``recommendations[0]["measured"]`` then holds top-1 agreement and output SQNR before and after.
    """
    if data is None:
        notes.append("explain skipped: no evaluation data given")
        return result
    explanation = explain(result, reference, data, config=ExplainConfig(threads=threads),
                          context={"reference_ref": reference.source, "out_ref": "quantized-fixed"})
    rec = next((r for r in explanation["recommendations"] if r.get("nodes")), None)
    if rec is not None and build is not None and work_dir is not None and reference.format == "onnx":
        rec["measured"] = _measure(rec["nodes"], build, base_exclude or [], reference, result, data,
                                   threads=threads, work_dir=work_dir)
    speed = explanation["slowdown"]
    notes.append("explain: " + (speed["reason"] or "not slower than the FP32/FP16 baselines"))
    layers = explanation["layers"][:3]
    if layers:
        notes.append("explain: layers adding the most error: " + ", ".join(
            f"{lay['exclude_name']} ({lay['op_type']}, channel SQNR {lay['channel_sqnr_db']:.1f} dB)"
            for lay in layers))
    for r in explanation["recommendations"][:2]:
        measured = r.get("measured")
        tail = (f"; measured: top-1 agreement {measured['top1_agreement_before']:.3f} → "
                f"{measured['top1_agreement_after']:.3f}") if measured else ""
        notes.append(f"explain recommends: {r['summary']}{tail}")
    return result.evolve(metadata={**result.metadata, "explain": explanation})


def _measure(nodes: list[str], build: Callable[[list[str], Path], Path], base_exclude: list[str],
             reference: ModelArtifact, result: ModelArtifact, data: Dataset, *, threads: int,
             work_dir: Path) -> dict[str, Any]:
    subset = data.subset(slice(0, min(len(data), RANK_SAMPLES)))
    rebuilt = build(sorted(set(base_exclude) | set(nodes)), work_dir / "explain-recommended.onnx")
    try:
        ref = run_outputs(Path(reference.path), subset, threads=threads)
        before = run_outputs(Path(result.path), subset, threads=threads)
        after = run_outputs(rebuilt, subset, threads=threads)
    finally:
        rebuilt.unlink(missing_ok=True)
    out: dict[str, Any] = {"n_samples": len(subset), "excluded": nodes}
    for label, got in (("before", before), ("after", after)):
        check = compare_outputs(ref, got, n_classes=result.n_classes)
        out[f"top1_agreement_{label}"] = check.top1_agreement
        out[f"output_sqnr_db_{label}"] = check.sqnr_db
    return out
