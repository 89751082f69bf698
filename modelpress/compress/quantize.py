"""Quantize stage: INT8 dynamic / static and FP16, with an accuracy-aware FP32 fallback.

``mode`` dynamic (weights int8, activations quantized per batch at run time), static (QDQ int8 with calibrated
activation ranges: minmax / entropy / percentile) or fp16. ``engine`` onnxruntime (default; a torch input is exported
to ONNX first and the export verified) or torch (``torch.ao`` dynamic, re-applied at load). The defaults are the ones
measured fastest and most accurate on this CPU (see :mod:`.quantize_onnx` and the README "Quantization"): U8S8,
per-channel weights, no ConvInteger, residual Add written as Sum.

With ``accuracy_tolerance`` the stage keeps the most sensitive nodes in FP32 until the metric on the evaluation data
is within the relative tolerance of the FP32 model (:mod:`.quantize_accuracy`), or fails with exit code 1.
Everything it decided (mode, calibrator, op counts, excluded nodes and why) goes to ``artifact.metadata
["quantization"]`` and, as short lines, to the report's stage notes.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ModelArtifact, check_inputs
from ..data import Dataset
from ..errors import GateFailed, InputError
from . import quantize_onnx as qo
from .quantize_accuracy import accuracy_search
from .quantize_torch import TRANSFORM, run_torch_dynamic
from .registry import StageConfig, StageContext, register_stage

MODES = ("dynamic", "static", "fp16")
ENGINES = ("onnxruntime", "torch")
CALIBRATORS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
OPTIMIZE = ("auto", "transformer", "none")
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass(frozen=True)
class QuantizeConfig(StageConfig):
    """Quantization settings; every field is validated here, with the allowed values in the message."""

    kind: ClassVar[str] = "quantize"
    references: ClassVar[dict[str, str]] = {"calibration": "data"}
    mode: str = "dynamic"
    engine: str = "onnxruntime"
    calibration: str | None = None  # a data reference; default: the run's calibration data (train split)
    calibrate: str = "minmax"
    percentile: float = 99.999
    calibration_samples: int = 128
    calibration_batch_size: int = 16
    per_channel: bool = True
    weight_type: str = "int8"
    activation_type: str = "uint8"
    symmetric_activations: bool = False
    reduce_range: bool = False
    quant_format: str = "qdq"
    op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    activation_matmuls: bool = False
    min_reduction: int = 0  # keep Conv/MatMul/Gemm with fewer multiply-adds per output in FP32 (0: off)
    optimize: str = "auto"
    preprocess: bool = True
    residual_sum: bool = True
    keep_io_fp32: bool = True
    fp16_overflow: str = "error"  # or keep_fp32: run the layers around overflowing tensors in FP32
    accuracy_tolerance: float | None = None
    accuracy_metric: str = "accuracy"
    accuracy_samples: int = 1000
    max_excluded: int = 8
    check_samples: int = 64
    exporter: str = "auto"
    torch_engine: str = "x86"
    explain: bool = False  # modelpress.diagnose: explain the result against the FP32 model (metadata["explain"])
    sensitivity: str = "leave_one_out"  # accuracy search order: one build per node, or layer_error (one pass)

    def __post_init__(self) -> None:
        for key in ("op_types", "exclude_nodes"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            object.__setattr__(self, key, tuple(str(v).strip() for v in value or ()))
        choices = {"mode": MODES, "engine": ENGINES, "calibrate": CALIBRATORS, "quant_format": FORMATS,
                   "optimize": OPTIMIZE, "accuracy_metric": METRICS, "exporter": EXPORTERS,
                   "weight_type": ("int8", "uint8"), "activation_type": ("uint8", "int8"),
                   "fp16_overflow": ("error", "keep_fp32"), "sensitivity": ("leave_one_out", "layer_error")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"quantize.{key} = {getattr(self, key)!r} is not allowed; use one of {allowed}")
        if self.engine == "torch" and self.mode != "dynamic":
            raise InputError(f"quantize.engine torch supports mode dynamic only, got mode {self.mode!r}",
                             hint="use --engine onnxruntime for static and fp16")
        if self.activation_type == "int8" and self.weight_type == "uint8":
            raise InputError("quantize: int8 activations with uint8 weights is not supported by onnxruntime",
                             hint="use activation_type uint8 (fast on x86) or weight_type int8")
        if not 50.0 < float(self.percentile) < 100.0:
            raise InputError(f"quantize.percentile must be in (50, 100), got {self.percentile}")
        for key, low in (("calibration_samples", 1), ("calibration_batch_size", 1), ("accuracy_samples", 1),
                         ("max_excluded", 1), ("check_samples", 1), ("min_reduction", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"quantize.{key} must be an integer ≥ {low}, got {value!r}")
        tol = self.accuracy_tolerance
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1):
            raise InputError(f"quantize.accuracy_tolerance must be in [0, 1) (relative drop), got {tol!r}")


def default_op_types(config: QuantizeConfig) -> tuple[str, ...]:
    if config.op_types:
        return config.op_types
    return {"dynamic": qo.DYNAMIC_OPS, "static": qo.STATIC_OPS, "fp16": qo.COMPUTE_OPS}[config.mode]


@register_stage(QuantizeConfig)
def run_quantize(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext) -> ModelArtifact:
    if config.engine == "torch":
        result = run_torch_dynamic(artifact, engine=config.torch_engine, notes=ctx.notes)
        return _explain_hook(result, artifact, config, ctx) if config.explain else result
    if artifact.format not in ("torch", "onnx"):
        raise InputError(f"cannot quantize a {artifact.format} artifact", hint="quantize the ONNX model instead")
    if any(t.get("name") == TRANSFORM for t in artifact.transforms):
        raise InputError(f"{artifact.source} is already torch-quantized; quantize its float original")
    if (artifact.metadata.get("quantization") or {}).get("engine") == "onnxruntime":
        raise InputError(f"{artifact.source} is already quantized ({artifact.metadata['quantization']['mode']})",
                         hint="quantize the FP32 model")
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.work_dir, prefix=".quantize-", suffix=".tmp") as tmp_name:
        return _quantize_onnx(artifact, config, ctx, Path(tmp_name))


def _quantize_onnx(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext, tmp: Path) -> ModelArtifact:
    notes = ctx.notes
    meta: dict[str, Any] = {"mode": config.mode, "engine": "onnxruntime", "per_channel": config.per_channel}
    fp32 = _fp32_onnx(artifact, config, ctx, tmp, meta)
    calibration = _calibration_data(artifact, config, ctx) if config.mode == "static" else None
    if config.mode != "static" and config.calibration:
        notes.append(f"--calibration ignored: mode {config.mode} needs no calibration")
    prepared = _prepare(fp32, config, tmp, notes, meta, _attention_shape(artifact))
    model = qo.load(prepared)
    op_types = default_op_types(config)
    qo.check_names(model, config.exclude_nodes, "exclude_nodes")
    everything = qo.candidates(model, qo.COMPUTE_OPS)
    chosen = qo.candidates(model, op_types)
    small = _small_reductions(model, chosen, config) if config.mode != "fp16" else {}
    user = [n for n in config.exclude_nodes if n in chosen or n in everything]
    overflow = _fp16_overflow(prepared, config, ctx, user, meta) if config.mode == "fp16" else []
    base_exclude = sorted(set(user) | set(small) | set(overflow))
    skipped_types = Counter(op for name, op in everything.items() if name not in chosen)
    for op, count in sorted(skipped_types.items()):
        notes.append(f"not quantized in {config.mode} mode: {op} ×{count} ({_why_not(op, config)})")
    if small:
        notes.append(f"kept FP32 (reduction < {config.min_reduction} multiply-adds per output, where int8 kernels "
                     f"are slower): " + ", ".join(f"{n} ({k})" for n, k in sorted(small.items())))
    build = _builder(prepared, config, op_types, calibration, tmp, notes, meta)
    search_meta = None
    if config.accuracy_tolerance is not None:
        result_path, accuracy_excluded, search_meta = accuracy_search(
            fp32, build, model, chosen, base_exclude, artifact=artifact, config=config, ctx=ctx, tmp=tmp)
    else:
        result_path, accuracy_excluded = build(base_exclude, tmp / "quantized.onnx"), []
    final_model = qo.load(result_path)
    counts = qo.op_counts(final_model, everything)
    if config.mode != "fp16" and not counts["quantized"]:
        raise InputError(f"quantize --mode {config.mode} changed nothing in {artifact.source}: no node of types "
                         f"{list(op_types)} could be quantized",
                         hint="check --op-types, or use --mode static for convolutional models")
    decided = set(base_exclude) | set(accuracy_excluded) | {n for n in everything if n not in chosen}
    unhandled = Counter(everything[n] for n in counts["float_nodes"] if n not in decided)
    if unhandled and config.mode != "fp16":
        notes.append(f"onnxruntime's {config.mode} quantizer left these in FP32 (no int8 support for them): "
                     + ", ".join(f"{k} ×{v}" for k, v in sorted(unhandled.items())))
    final = ctx.work_dir / "model.onnx"
    os.replace(result_path, final)
    check = _check_outputs(fp32, final, artifact, config, ctx)
    before, after = qo.file_size(fp32), qo.file_size(final)
    meta.update(
        op_types=list(op_types), quantized_op_counts=counts["quantized"], float_op_counts=counts["float"],
        kernels=counts["kernels"], quantized_nodes=counts["quantized_nodes"],
        excluded_nodes={"user": sorted(user), "small_reduction": sorted(small), "fp16_overflow": overflow,
                        "accuracy": accuracy_excluded},
        unhandled_ops=dict(unhandled), size_bytes_before=before, size_bytes_after=after, size_ratio=after / before,
        check=check, accuracy_search=search_meta,
    )
    notes.append(_summary(meta))
    result = artifact.evolve(format="onnx", module=None, path=final, metadata={**artifact.metadata,
                                                                                "quantization": meta})
    if config.explain:
        reference = artifact.evolve(format="onnx", module=None, path=fp32)
        return _explain_hook(result, reference, config, ctx, build=build, tmp=tmp,
                             base_exclude=[*base_exclude, *accuracy_excluded])
    return result


# ---- diagnostics hook (modelpress.diagnose): explain: true, sensitivity: layer_error ----------------------------
def _explain_hook(result: ModelArtifact, reference: ModelArtifact, config: QuantizeConfig, ctx: StageContext, *,
                  build: Any = None, base_exclude: list[str] | None = None, tmp: Path | None = None) -> ModelArtifact:
    from ..diagnose.hooks import explain_quantized

    return explain_quantized(result, reference, ctx.eval or ctx.calibration or ctx.train, threads=ctx.threads,
                             notes=ctx.notes, build=build, base_exclude=base_exclude, work_dir=tmp)


# ---- steps -------------------------------------------------------------------------------------------------------
def _fp32_onnx(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext, tmp: Path,
               meta: dict[str, Any]) -> Path:
    """The FP32 ONNX model to quantize: the artifact's own file, or a verified export of the torch module."""
    if artifact.format == "onnx":
        from ..onnx_utils import load_onnx

        load_onnx(artifact.path, with_data=False)  # external data checked before anything reads it
        return Path(artifact.path)
    from .export import ExportConfig, export_onnx, verify_onnx

    exporter = config.exporter
    if exporter == "auto":
        is_hf = str((artifact.builder or {}).get("ref", "")).startswith("hf:")
        exporter = "torchscript" if is_hf else "dynamo"  # MiniLM: torchscript graphs ran 12 % (FP32) faster here
    export_config = ExportConfig(exporter=exporter, verify_samples=16)
    with qo.quiet():  # the exporter logs warnings about optional packages (torchvision) on every call
        exported = export_onnx(artifact, tmp / "fp32.onnx", config=export_config)
    data = ctx.eval or ctx.calibration or ctx.train
    if data is not None:
        report = verify_onnx(artifact, exported, data, config=export_config, threads=ctx.threads)
        meta["export_verification"] = report
        if not report["passed"]:
            raise GateFailed(f"ONNX export before quantization differs from torch: max abs diff "
                             f"{report['max_abs_diff']:.3g} on {report['n_samples']} samples",
                             hint="export it yourself (modelpress export) and quantize the ONNX artifact")
    else:
        ctx.notes.append("the ONNX export was not verified against torch (no data given)")
    meta["exporter"] = exporter
    return Path(exported.path)


def _attention_shape(artifact: ModelArtifact) -> tuple[int, int]:
    """(num_heads, hidden_size) from an hf: model's config.json; (0, 0) = let the optimizer detect them."""
    ref = str((artifact.builder or {}).get("ref", ""))
    if not ref.startswith("hf:"):
        return 0, 0
    import json

    from ..hf import resolve_model_dir

    try:
        config = json.loads((resolve_model_dir(ref[3:]) / "config.json").read_text(encoding="utf-8"))
    except (InputError, OSError, ValueError):
        return 0, 0
    return int(config.get("num_attention_heads", 0) or 0), int(config.get("hidden_size", 0) or 0)


def _prepare(fp32: Path, config: QuantizeConfig, tmp: Path, notes: list[str], meta: dict[str, Any],
             attention: tuple[int, int]) -> Path:
    path = fp32
    optimize = "none" if config.optimize == "auto" else config.optimize
    if optimize == "transformer":
        path = qo.optimize_transformer(path, tmp / "optimized.onnx", notes, num_heads=attention[0],
                                       hidden_size=attention[1])
    if config.preprocess and config.mode != "fp16":
        path = qo.preprocess(path, tmp / "preprocessed.onnx", notes)
    meta.update(optimize=optimize, preprocess=config.preprocess and config.mode != "fp16")
    if config.mode == "dynamic":
        model = qo.load(path)
        rewritten = qo.gemm_to_matmul(model)
        if rewritten:
            path = qo.save(model, tmp / "gemm-as-matmul.onnx")
        meta["gemm_rewritten"] = rewritten
    return path


def _fp16_overflow(prepared: Path, config: QuantizeConfig, ctx: StageContext, user: list[str],
                   meta: dict[str, Any]) -> list[str]:
    """Nodes to keep in FP32 because a tensor they produce or read exceeds float16's range (or an error)."""
    data = ctx.eval or ctx.calibration or ctx.train
    if data is None:
        ctx.notes.append("fp16 range not checked (no data given): overflow would show only on a real fp16 device")
        return []
    data = data.subset(slice(0, min(len(data), config.check_samples)))
    found = qo.fp16_overflows(prepared, data, threads=ctx.threads)
    meta["fp16_overflow"] = [{k: f[k] for k in ("tensor", "max_abs", "producer")} for f in found[:20]]
    needed = sorted({n for f in found for n in (f["producer"], *f["consumers"]) if n} - set(user))
    if not needed:
        return []
    top = found[0]
    if config.fp16_overflow == "error":
        raise GateFailed(
            f"FP16 overflow: {len(found)} intermediate tensor(s) exceed 65504 on {len(data)} samples (largest "
            f"{top['max_abs']:.3g}, {top['tensor']!r} from node {top['producer']!r}); in float16 they become inf",
            hint=f"keep them in FP32 with --exclude-nodes {','.join(needed[:8])}{',…' if len(needed) > 8 else ''} "
                 "(or --fp16-overflow keep-fp32), or use an int8 mode")
    ctx.notes.append(f"fp16: kept {len(needed)} node(s) in FP32 around {len(found)} tensor(s) above 65504 "
                     f"(largest {top['max_abs']:.3g} from {top['producer']}): {', '.join(needed[:8])}")
    return needed


def _why_not(op: str, config: QuantizeConfig) -> str:
    if config.op_types:
        return "not in --op-types"
    if config.mode == "dynamic" and op == "Conv":
        return "ConvInteger has no fast CPU kernel; use --mode static for convolutions"
    return f"onnxruntime's {config.mode} quantizer has no int8 kernel for it"


def _small_reductions(model: Any, chosen: dict[str, str], config: QuantizeConfig) -> dict[str, str]:
    small = {}
    for node in model.graph.node:
        if node.name in chosen:
            k = qo.reduction_size(model, node)
            if k is not None and k < config.min_reduction:
                small[node.name] = f"{node.op_type}, {k}"
    return small


def _builder(prepared: Path, config: QuantizeConfig, op_types: tuple[str, ...], calibration: Dataset | None,
             tmp: Path, notes: list[str], meta: dict[str, Any]) -> Any:
    """``build(exclude, out) -> path``: one quantization of ``prepared`` with ``exclude`` kept in float."""
    if config.mode == "static":
        assert calibration is not None
        reader = qo._reader_class()(calibration, qo.graph_input_names(qo.load(prepared)),
                                    config.calibration_batch_size)
        meta.update(calibrator=config.calibrate, quant_format=config.quant_format,
                    activation_type=config.activation_type, weight_type=config.weight_type,
                    symmetric_activations=config.symmetric_activations, reduce_range=config.reduce_range,
                    calibration={"source": calibration.source, "n_samples": len(calibration)})
        if config.calibrate == "percentile":
            meta["percentile"] = config.percentile
    elif config.mode == "dynamic":
        meta.update(calibrator=None, quant_format="dynamic", activation_type="uint8 (per batch)",
                    weight_type=config.weight_type, reduce_range=config.reduce_range)
    else:
        fp16 = qo.out_of_fp16_range(qo.load(prepared))
        meta.update(calibrator=None, quant_format="float16", keep_io_fp32=config.keep_io_fp32, fp16_weights=fp16)
        if fp16["clamped"] or fp16["flushed"]:
            notes.append(f"fp16: {fp16['clamped']} weight values above 65504 were clamped and {fp16['flushed']} "
                         "tiny ones flushed to zero")

    def build(exclude: list[str], out: Path) -> Path:
        if config.mode == "dynamic":
            qo.quantize_dynamic(prepared, out, op_types=op_types, per_channel=config.per_channel,
                                reduce_range=config.reduce_range, weight_type=config.weight_type, exclude=exclude)
        elif config.mode == "static":
            qo.quantize_static(prepared, out, reader=reader, cache=tmp / "calibration.json", op_types=op_types,
                               per_channel=config.per_channel, reduce_range=config.reduce_range,
                               weight_type=config.weight_type, activation_type=config.activation_type,
                               symmetric_activations=config.symmetric_activations, quant_format=config.quant_format,
                               calibrate=config.calibrate, percentile=config.percentile,
                               activation_matmuls=config.activation_matmuls, exclude=exclude)
        else:
            qo.convert_fp16(prepared, out, keep_io_fp32=config.keep_io_fp32, exclude=exclude)
        if config.residual_sum:
            model = qo.load(out)
            meta["residual_sum"] = qo.residual_sum(model)
            if meta["residual_sum"]:
                qo.save(model, out)
        return out

    return build


def _calibration_data(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext) -> Dataset:
    if config.calibration:
        from ..data import load_data
        from ..hf import use_tokenizer

        ref = str((artifact.builder or {}).get("ref", ""))
        max_length = (ctx.eval.meta.get("max_length") if ctx.eval is not None else None)
        with use_tokenizer(ref if ref.startswith("hf:") else None, max_length=max_length):  # type: ignore[arg-type]
            data = load_data(config.calibration, split="train")
    else:
        data = ctx.calibration or ctx.train
    if data is None:
        raise InputError("static quantization needs calibration data",
                         hint="pass --calibration DATA (or --data DATA, whose train split is used)")
    check_inputs(artifact.inputs, next(data.batches(1))[0], model=artifact.source)
    n = min(len(data), config.calibration_samples)
    if n < len(data):
        rng = np.random.default_rng(ctx.seed)
        data = data.subset(np.sort(rng.choice(len(data), n, replace=False)))
    return data


def _check_outputs(fp32: Path, final: Path, artifact: ModelArtifact, config: QuantizeConfig,
                   ctx: StageContext) -> dict[str, Any] | None:
    """Run both models on a few samples: inf/NaN (FP16 overflow) is an error; fidelity numbers go to metadata."""
    from ..evaluate.metrics import fidelity

    data = ctx.eval or ctx.calibration or ctx.train
    if data is None:
        ctx.notes.append("quantized outputs were not checked (no data given)")
        return None
    data = data.subset(slice(0, min(len(data), config.check_samples)))
    reference = qo.run_outputs(fp32, data, threads=ctx.threads)
    got = qo.run_outputs(final, data, threads=ctx.threads)
    bad = ~np.isfinite(got)
    if bad.any():
        rows = int(bad.reshape(len(got), -1).any(axis=1).sum())
        what = "FP16 overflow" if config.mode == "fp16" else "non-finite outputs"
        raise GateFailed(f"{what}: the {config.mode} model output {int(bad.sum())} inf/NaN values in {rows} of "
                         f"{len(got)} samples (FP32 had {int((~np.isfinite(reference)).sum())})",
                         hint="keep the overflowing layers in FP32 with --exclude-nodes, or use --mode dynamic")
    fid = fidelity(reference, got, n_classes=artifact.n_classes) if reference.shape == got.shape else {}
    return {"n_samples": len(data), "non_finite": 0, **{k: fid[k] for k in ("top1_agreement", "max_abs_diff",
                                                                              "mean_abs_diff", "mean_kl") if k in fid}}


def _summary(meta: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} ×{v}" for k, v in meta["quantized_op_counts"].items()) or "none"
    kept = sum(len(v) for v in meta["excluded_nodes"].values())
    how = meta["mode"] + (f" ({meta['calibrator']}, {meta['quant_format']})" if meta.get("calibrator") else "")
    check = meta.get("check") or {}
    tail = (f"; top-1 agreement {check['top1_agreement']:.4f}, max |Δlogit| {check['max_abs_diff']:.3g} on "
            f"{check['n_samples']} samples") if "top1_agreement" in check else ""
    channel = f", per-channel {meta['per_channel']}" if meta["mode"] != "fp16" else ""
    return (f"quantized {how}{channel}: {counts}; {kept} node(s) kept FP32 by choice; "
            f"size {meta['size_bytes_before'] / 1e6:.2f} MB → {meta['size_bytes_after'] / 1e6:.2f} MB "
            f"(×{meta['size_ratio']:.3f}){tail}")
