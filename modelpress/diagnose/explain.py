"""``explain``: why a compressed model is slow or inaccurate, layer by layer, against its reference.

One call measures, on the same input batch and thread count:

0. for an INT8 ONNX candidate, the kernels that run first (:mod:`.hardware`): the real onnxruntime session's
   agreement with the reference and each layer's real-kernel SQNR beside the exact Q/DQ arithmetic — on a CPU
   without VNNI they differ where u8×s8 pairs saturate, and the layers are named — and, with ``config.target``,
   the outputs predicted on another CPU kind by emulating its integer arithmetic (result key ``"kernels"``);
1. where the time goes — per-operator profiles of the candidate and the reference (:mod:`.profile`), the Q/DQ
   pairs of the graph against the int8 kernels that really ran, and the layers that stayed FP32;
2. where the error comes from — each layer's output against the reference's, ranked by the noise it adds
   (:mod:`.layer_error`), with its share of the candidate's kernel time and its time in the FP32 profile;
3. baselines side by side — latency of the reference, an FP16 copy of it (ONNX) and the candidate, with the
   candidate's speed-up over each as a ratio of medians with a bootstrap 95 % CI;
4. a one-sentence reason for a slowdown, and a few recommendations with predicted effect, command and YAML
   (:mod:`.recommend`).

The result is a plain JSON-ready dict (``explain_version`` 1). The CLI stores it under the candidate stage's key
``"explain"`` in report.json; the quantize stage's ``explain: true`` writes it to ``explain.json`` in the stage
folder and to ``artifact.metadata["explain"]``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact, check_inputs
from ..data import Dataset
from ..errors import GateFailed, InputError
from ..runtime.latency import LatencyConfig, speedup_ratio
from .layer_error import check_comparable, layer_errors
from .profile import node_key, profile_artifact, qdq_analysis
from .recommend import recommend, slowdown

EXPLAIN_VERSION = 1


def _quick_latency() -> LatencyConfig:
    return LatencyConfig(warmup_min_calls=5, warmup_min_s=0.1, min_calls=50, min_s=0.5, max_s=20.0)


@dataclass(frozen=True)
class ExplainConfig:
    """What to measure. ``batch_size`` and ``threads`` are shared by every profile and latency row; ``samples``
    caps how many data samples the layer errors use; ``runs`` is the number of profiled calls per model."""

    threads: int = 1
    batch_size: int = 32
    samples: int = 128
    runs: int = 30
    warmup: int = 5
    fp16_baseline: bool = True
    max_layers: int = 100
    latency: LatencyConfig = field(default_factory=_quick_latency)
    target: str | None = None  # predict the outputs on this CPU kind by emulation (runtime.target.TARGETS)

    def __post_init__(self) -> None:
        if self.target is not None:
            from ..runtime.target import TARGETS

            if self.target not in TARGETS:
                raise InputError(f"unknown target {self.target!r}", hint=f"use one of {', '.join(TARGETS)}")
        for key, low in (("threads", 1), ("batch_size", 1), ("samples", 1), ("runs", 1), ("warmup", 0),
                         ("max_layers", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"explain.{key} must be an integer ≥ {low}, got {value!r}")


def explain(candidate: ModelArtifact, reference: ModelArtifact, data: Dataset, *, config: ExplainConfig | None = None,
            context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Explain ``candidate`` against ``reference`` on ``data`` (see the module docstring).

    Args:
        candidate: The compressed model (ONNX or torch).
        reference: The model it was made from (usually FP32), same inputs and classes.
        data: Samples for the layer errors (the first ``config.samples``) and the profiled batch.
        config: Measurement settings.
        context: References used to write commands: ``reference_ref``, ``data_ref``, ``out_ref``.

    Raises:
        InputError: the models take different inputs or output different class counts, or the data does not fit.
    """
    config = config or ExplainConfig()
    check_comparable(candidate, reference)
    first = next(data.batches(1))[0]
    for artifact in (reference, candidate):
        batch = first
        if len(artifact.inputs) == 1 and len(first) == 1:  # one input maps by position: check its shape too
            batch = {artifact.inputs[0].name: next(iter(first.values()))}
        check_inputs(artifact.inputs, batch, model=artifact.source)
        if data.n_classes > artifact.n_classes:
            raise InputError(f"data {data.source} has {data.n_classes} classes but model {artifact.source} outputs "
                             f"{artifact.n_classes}")
    notes: list[str] = []
    context = dict(context or {})
    quant = candidate.metadata.get("quantization") if isinstance(candidate.metadata.get("quantization"), dict) \
        else None
    context.setdefault("quantization", quant)
    with tempfile.TemporaryDirectory(prefix="modelpress-explain-") as tmp_name:
        tmp = Path(tmp_name)
        graph_ref = _graph_reference(candidate, reference, data, tmp, notes, threads=config.threads)
        errors, subset = None, data
        if graph_ref.format == candidate.format:
            subset = data.subset(slice(0, min(len(data), config.samples)))
            errors = layer_errors(candidate, graph_ref, subset, batch_size=config.batch_size, threads=config.threads)
        else:
            notes.append(f"per-layer errors skipped: the candidate is {candidate.format} and the reference "
                         f"{reference.format}; layers are matched within one format")
        batch = latency_batch(data, config.batch_size)
        cand_prof = profile_artifact(candidate, batch, threads=config.threads, runs=config.runs, warmup=config.warmup)
        ref_prof = profile_artifact(graph_ref, batch, threads=config.threads, runs=config.runs, warmup=config.warmup)
        graph = None
        if candidate.format == "onnx":
            from ..onnx_utils import load_onnx

            model = load_onnx(Path(candidate.path))
            graph = {**qdq_analysis(model, cand_prof), **_weights_info(model)}
            context.setdefault("mode", _mode_of(graph))
            if context["mode"] in ("dynamic", "static"):
                from ..runtime.target import DYNAMIC_OPS, STATIC_OPS

                context.setdefault("default_op_types", list(DYNAMIC_OPS if context["mode"] == "dynamic"
                                                            else STATIC_OPS))
        kernels = None
        if errors is not None and candidate.format == "onnx" and context.get("mode") in ("dynamic", "static"):
            from ..runtime.target import TARGETS
            from .hardware import kernel_effects

            kernels = kernel_effects(candidate.path, graph_ref.path, subset, errors, batch_size=config.batch_size,
                                     threads=config.threads,
                                     target=TARGETS[config.target] if config.target else None)
            _merge_real(errors["layers"], kernels)
        elif config.target:
            notes.append(f"no prediction for {config.target}: emulation covers INT8 ONNX candidates")
        layers = _attach_times((errors or {}).get("layers", []), cand_prof, ref_prof)
        if graph is not None:
            graph["float_layers"] = [{"node": lay["node"], "op_type": lay["op_type"],
                                      "candidate_ms": lay.get("candidate_ms")} for lay in layers
                                     if lay["precision"] == "fp32"]
        baselines = [("reference", f"the reference ({reference.format})", reference)]
        if graph_ref is not reference:
            baselines.append(("reference-onnx", "the reference exported to ONNX", graph_ref))
        if config.fp16_baseline:
            fp16 = _fp16_copy(graph_ref, tmp, notes)
            if fp16 is not None:
                baselines.append(("reference-fp16", "the FP16 copy of the reference", fp16))
        latency = _latency(baselines, candidate, data, config)
    if errors is not None:
        errors["layers"] = layers
    speed = slowdown(latency, cand_prof, ref_prof, graph, layers)
    recs = recommend(errors, speed, graph, context)  # from every layer; the result keeps the worst max_layers
    if kernels is not None:
        from .hardware import saturation_recommendation

        fix = saturation_recommendation(kernels, context)
        recs = [fix, *recs] if fix else recs
    return {
        "explain_version": EXPLAIN_VERSION,
        "candidate": {"source": candidate.source, "format": candidate.format},
        "reference": {"source": reference.source, "format": reference.format},
        "data": {"source": data.source, "n_samples": errors["n_samples"] if errors else None},
        "threads": config.threads, "batch_size": config.batch_size,
        "latency": latency,
        "slowdown": speed,
        "profile": {"candidate": _trim(cand_prof), "reference": _trim(ref_prof)},
        "graph": graph,
        "kernels": kernels,
        "errors": {k: v for k, v in (errors or {}).items() if k != "layers"} or None,
        "layers": layers[: config.max_layers],
        "recommendations": recs,
        "notes": notes,
    }


def latency_batch(data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
    """The first ``batch_size`` samples, tiled when the data is smaller (as the evaluator times a batch)."""
    reps = -(-batch_size // len(data))
    return {k: np.ascontiguousarray(np.concatenate([v[:batch_size]] * reps)[:batch_size])  # v[:n]: lazy images
            for k, v in data.inputs.items()}                                                 # decode one batch


def _graph_reference(candidate: ModelArtifact, reference: ModelArtifact, data: Dataset, tmp: Path,
                     notes: list[str], *, threads: int) -> ModelArtifact:
    """The reference in the candidate's format: a torch reference of an ONNX candidate is exported (with the
    exporter the quantize stage used, so tensor names match) and the export verified against torch.

    Raises:
        GateFailed: the export's outputs differ from torch beyond the exporter's tolerance (exit 1).
    """
    if not (candidate.format == "onnx" and reference.format == "torch"):
        return reference
    from ..runtime.onnx_export import export_torch_onnx, verify_torch_onnx
    from ..runtime.onnx_graph import quiet

    exporter = str((candidate.metadata.get("quantization") or {}).get("exporter") or "dynamo")
    with quiet():  # the exporter logs warnings about optional packages (torchvision) on every call
        exported = export_torch_onnx(reference, tmp / "reference.onnx", opset=18, exporter=exporter,
                                     dynamic_batch=True)
    # the export stage's defaults (opset 18, dynamic batch, atol = rtol = 1e-4) on 16 samples
    check = verify_torch_onnx(reference, exported, data, samples=16, dynamic_batch=True, atol=1e-4, rtol=1e-4,
                              threads=threads)
    if not check["passed"]:
        raise GateFailed(f"the ONNX export of the reference differs from torch: max abs diff "
                         f"{check['max_abs_diff']:.3g} on {check['n_samples']} samples",
                         hint="export the reference yourself (modelpress export) and pass the ONNX file")
    notes.append(f"the torch reference was exported to ONNX ({exporter}) to match the candidate's tensors")
    return exported


def _fp16_copy(reference: ModelArtifact, tmp: Path, notes: list[str]) -> ModelArtifact | None:
    if reference.format != "onnx":
        notes.append("no FP16 baseline: it is made from an ONNX reference")
        return None
    from ..runtime.onnx_graph import convert_fp16

    try:
        path = convert_fp16(Path(reference.path), tmp / "reference-fp16.onnx", keep_io_fp32=True, exclude=[])
    except Exception as exc:  # the converter raises plain Exceptions on graphs it cannot handle
        notes.append(f"no FP16 baseline: float16 conversion failed ({type(exc).__name__}: {str(exc)[:120]})")
        return None
    return reference.evolve(path=path, source=f"{reference.source} (fp16)")


def _latency(baselines: list[tuple[str, str, ModelArtifact]], candidate: ModelArtifact, data: Dataset,
             config: ExplainConfig) -> list[dict[str, Any]]:
    """One latency row per model, same batch and threads; baselines carry the candidate's speed-up over them."""
    from ..runtime.sessions import native_backend
    from ..runtime.timing import time_backend

    rows, samples = [], {}
    for name, label, artifact in [*baselines, ("candidate", "the candidate", candidate)]:
        stats, s = time_backend(artifact, data, backend=native_backend(artifact), batch_size=config.batch_size,
                                threads=config.threads, latency=config.latency)
        samples[name] = s
        rows.append({"name": name, "label": label, "backend": stats["backend"], "batch_size": config.batch_size,
                     "threads": config.threads, **{k: stats[k] for k in ("median_ms", "p90_ms", "iqr_ms", "n",
                                                                         "unstable", "cold_start_ms")}})
    cand_median = rows[-1]["median_ms"]
    for row in rows[:-1]:
        row["speedup"] = speedup_ratio(samples[row["name"]], samples["candidate"])
        row["candidate_median_ms"] = cand_median
    return rows


def _attach_times(layers: list[dict[str, Any]], cand: dict[str, Any], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """Each layer's ms per call in the candidate's profile (and share of its kernel time) and in the reference's,
    matched by :func:`~.profile.node_key` of its node name, or by its output tensor (NCHWc kernels carry that)."""
    def by_key(profile: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in profile.get("by_node") or []:
            out[node_key(row["node"])] = out.get(node_key(row["node"]), 0.0) + row["ms"]
        return out

    cand_ms, ref_ms = by_key(cand), by_key(ref)
    total = cand.get("kernel_ms") or 0.0
    out = []
    for layer in layers:
        keys = [node_key(layer["node"]), node_key(layer["exclude_name"]), layer["tensor"]]
        c = next((cand_ms[k] for k in keys if k in cand_ms), None)
        r = next((ref_ms[k] for k in keys if k in ref_ms), None)
        out.append({**layer, "candidate_ms": c, "reference_ms": r,
                    "time_share": c / total if c is not None and total > 0 else None})
    return out


def _merge_real(layers: list[dict[str, Any]], kernels: dict[str, Any]) -> None:
    """Each layer's real-kernel SQNR, added noise and saturated pair share beside its Q/DQ numbers."""
    for layer in layers:
        real = (kernels.get("layers") or {}).get(layer["node"]) or {}
        layer["real_sqnr_db"] = real.get("real_sqnr_db")
        layer["real_noise_added"] = real.get("real_noise_added")
        layer["saturated_pairs"] = real.get("saturated_pairs")


def _weights_info(model: Any) -> dict[str, Any]:
    """Whether int8 weights have one scale per tensor (``X_quantized`` with a one-element ``X_scale``)."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    scales = []
    for name, init in inits.items():
        if init.data_type in (TensorProto.INT8, TensorProto.UINT8) and name.endswith("_quantized"):
            scale = inits.get(name[: -len("_quantized")] + "_scale")
            if scale is not None and len(scale.dims) <= 1:
                scales.append(int(np.prod(scale.dims)) if scale.dims else 1)
    fp16 = sum(1 for i in inits.values() if i.data_type == TensorProto.FLOAT16)
    return {"int8_weights": len(scales), "per_tensor_weights": bool(scales) and all(s == 1 for s in scales),
            "fp16_initializers": fp16}


def _mode_of(graph: dict[str, Any]) -> str | None:
    if graph.get("dynamic_quantize_nodes"):
        return "dynamic"
    if graph.get("qdq_pairs") or any(op.startswith("QLinear") for op in graph.get("int8_nodes_in_graph", {})):
        return "static"
    if graph.get("fp16_initializers"):
        return "fp16"
    return None


def _trim(profile: dict[str, Any], top: int = 30) -> dict[str, Any]:
    return {**profile, "by_node": profile["by_node"][:top], "by_op_type": profile["by_op_type"][:top]}
