"""Quantize stage: INT8 dynamic / static, weight-only INT4 and FP16, with an accuracy-aware FP32 fallback.

``mode`` dynamic (weights int8, activations quantized per batch at run time), static (QDQ int8 with calibrated
activation ranges: minmax / entropy / percentile), fp16, or int4 (weight-only, block-wise 4-bit MatMul weights:
:mod:`.quantize_int4`). ``engine`` onnxruntime (default; a torch input is exported to ONNX first and the export
verified) or torch (``torch.ao`` dynamic, re-applied at load).

**SmoothQuant** (``smooth_quant``: alpha, 0 = off): activation outlier channels of each quantized constant-weight
MatMul moved into its weight rows on the FP32 graph, before quantizing (:func:`.equalize.smooth_activations`),
with ranges measured on the calibration data, in dynamic mode too. Default from the target's table: on in dynamic
mode for graphs with LayerNormalization (the measurement is in :mod:`.quantize_targets`).

**Target.** An INT8 model is built for a CPU kind (``target``: ``auto`` = the host, or one of
:data:`modelpress.runtime.target.TARGETS`), because x86 CPUs without VNNI add u8×s8 products in pairs into int16
with saturation and collapse a model that is fine on a VNNI CPU. Every default that depends on it (activation and
weight types, ``reduce_range``, per-channel, op sets, the residual Sum rewrite) comes from one table,
:mod:`.quantize_targets`; a field the user sets wins. The target goes into ``metadata["quantization"]["target"]``.

**Guard** (on by default). After quantizing, the quantized model runs with the host's real onnxruntime kernels
against the FP32 model on all the evaluation data; top-1 agreement below ``min_agreement`` (or, with
``accuracy_tolerance``, a larger metric drop) raises :class:`GateFailed` (exit 1) with a diagnosis, so a collapsed
model is never written. When the host's kernels differ from the target's, the record says what was measured.

With ``accuracy_tolerance`` the stage keeps the most sensitive nodes in FP32 until the metric on the evaluation data
is within the relative tolerance of the FP32 model (:mod:`.quantize_accuracy`), or fails with exit code 1.
Everything it decided (mode, calibrator, op counts, excluded nodes and why) goes to ``artifact.metadata
["quantization"]`` and, as short lines, to the report's stage notes.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ModelArtifact, check_inputs
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import GateFailed, InputError
from ..runtime.target import TARGET_NAMES, Target, detect_host, resolve_target
from . import quantize_onnx as qo
from .equalize import correct_biases, smooth_activations
from .quantize_accuracy import accuracy_search, relative_drop
from .quantize_int4 import ALGORITHMS as INT4_ALGORITHMS
from .quantize_int4 import check_settings as check_int4
from .quantize_int4 import quantize_int4
from .quantize_targets import TargetDefaults, defaults_for, saturation_fix
from .quantize_torch import TRANSFORM, run_torch_dynamic
from .registry import StageConfig, StageContext, register_stage

MODES = ("dynamic", "static", "fp16", "int4")
ENGINES = ("onnxruntime", "torch")
CALIBRATORS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
OPTIMIZE = ("auto", "transformer", "none")
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
EXPORTERS = ("auto", "dynamo", "torchscript")


_COUNT = Interval(int, 1)
INT4_OPS = ("MatMul",)  # weight-only INT4: constant-weight MatMuls (Gemm is rewritten as MatMul + Add first)
_TARGET_DEFAULT = " [default: the target's]"


@dataclass(frozen=True)
class QuantizeConfig(Checked, StageConfig):
    """Quantization settings; every field is validated here, with the allowed values in the message."""

    kind: ClassVar[str] = "quantize"
    references: ClassVar[dict[str, str]] = {"calibration": "data"}
    mode: str = option("dynamic", Options(MODES),
                       help="dynamic: int8 weights, activations quantized per batch; static: int8 with calibrated "
                            "ranges (QDQ); fp16: half-precision weights and compute; int4: weight-only "
                            "block-wise 4-bit MatMul weights (onnxruntime MatMulNBits), activations float.")
    engine: str = option("onnxruntime", Options(ENGINES),
                         help="torch: torch.ao dynamic int8 of Linear/LSTM/GRU (mode dynamic only).")
    calibration: str | None = option(None, help="Calibration data for static mode, smooth_quant (dynamic mode too) "
                                                "and int4 gptq (default: --data's train split).")
    calibrate: str = option("minmax", Options(CALIBRATORS),
                            help="How static mode turns calibration activations into ranges.")
    percentile: float = option(99.999, Interval(float, 50, 100, closed="neither", noun=False),
                               help="--calibrate percentile: the percentile of |activation| kept.")
    calibration_samples: int = option(128, _COUNT, help="Calibration samples (static mode, smooth_quant, gptq).")
    calibration_batch_size: int = option(16, _COUNT, help="Calibration samples per onnxruntime call.")
    target: str = option("auto", Options(TARGET_NAMES),
                         help="CPU kind the INT8 model is built for (auto: this host); sets the defaults below.")
    # None: from the target's defaults (this applies to the next four, too); see quantize_targets
    per_channel: bool | None = option(None, cli="--per-channel/--per-tensor",
                                      help="Weight scales per output channel" + _TARGET_DEFAULT + ".")
    weight_type: str | None = option(None, Options(("int8", "uint8")),
                                     help="int8 (U8S8) or uint8 (U8U8: exact without VNNI, but slow)"
                                          + _TARGET_DEFAULT + ".")
    activation_type: str | None = option(None, Options(("uint8", "int8")),
                                         help="Static mode activations (uint8 = U8S8, the fast path on x86)"
                                              + _TARGET_DEFAULT + ".")
    symmetric_activations: bool = option(False, help="Static mode: symmetric activation ranges.")
    reduce_range: bool | None = option(None, help="7-bit weights: no saturation on CPUs without VNNI"
                                                  + _TARGET_DEFAULT + ", on for x86-avx2/avx512.")
    bias_correction: bool | None = option(None, help="Static mode: subtract from each Conv's bias the mean output "
                                                     "shift its weight rounding causes, measured on the calibration "
                                                     "data" + _TARGET_DEFAULT + ".")
    smooth_quant: float | None = option(None, Interval(float, 0, 1, noun=False),
                                        help="SmoothQuant alpha: before quantizing, divide each constant-weight "
                                             "MatMul's input channels by s = max|x|^alpha / max|w|^(1-alpha) (a "
                                             "float Mul) and multiply the weight's rows by s, ranges measured on the "
                                             "calibration data (--calibration, else --data; dynamic mode too); 0: "
                                             "off" + _TARGET_DEFAULT + ": 0.7 in dynamic mode on graphs with "
                                             "LayerNormalization, else off.")
    int4_block_size: int = option(32, Interval(int, 16, 256),
                                  help="int4 mode: weights per block along K that share one scale (16, 32, 64, "
                                       "128 or 256; smaller: closer to FP32, a little larger).")
    int4_symmetric: bool = option(False, cli="--int4-symmetric/--int4-asymmetric",
                                  help="int4 mode: symmetric blocks (no zero point) or asymmetric (a 4-bit zero "
                                       "point per block).")
    int4_algorithm: str = option("rtn", Options(INT4_ALGORITHMS),
                                 help="int4 mode: rtn (round to nearest), hqq (half-quadratic, data-free, "
                                      "asymmetric) or gptq (error compensation on --calibration / --data).")
    int4_accuracy_level: int = option(4, Interval(int, 0, 4),
                                      help="int4 mode: MatMulNBits compute type of the activations (1: fp32, 4: "
                                           "int8 blocks; 0: the kernel's default).")
    quant_format: str = option("qdq", Options(FORMATS), cli="--format", help="Q/DQ nodes or QOperator ops.")
    op_types: tuple[str, ...] = option((), help="Op types to quantize, comma-separated or repeated (default: per "
                                                "mode).")
    exclude_nodes: tuple[str, ...] = option((), help="Node names to keep in float, comma-separated or repeated.")
    activation_matmuls: bool = option(False, help="Static mode: also quantize MatMuls of two activations "
                                                  "(attention), not only those with a constant weight.")
    min_reduction: int = option(0, Interval(int, 0),
                                help="Keep Conv/MatMul/Gemm with fewer multiply-adds per output in FP32 (0: quantize "
                                     "all).")
    optimize: str = option("auto", Options(OPTIMIZE),
                           help="Graph optimisation before quantizing; transformer = onnxruntime's BERT fusions.")
    preprocess: bool = option(True, help="onnxruntime's quantization pre-processing (shape inference, "
                                         "optimisation) before int8.")
    residual_sum: bool | None = option(None, help="Turn residual Adds that feed a LayerNormalization into Sum"
                                                  + _TARGET_DEFAULT + ".")
    keep_io_fp32: bool = option(True, cli="--keep-io-fp32/--fp16-io", help="fp16 mode: keep inputs/outputs FP32.")
    fp16_overflow: str = option("error", Options(("error", "keep_fp32")),
                                help="fp16 mode, when activations on --data exceed 65504: fail, or run those layers "
                                     "in FP32.")
    accuracy_tolerance: float | None = option(None, Interval(float, 0, 1, closed="left", noun=False),
                                              help="Keep the most sensitive nodes in float until the relative metric "
                                                   "drop on --data is ≤ F (exit 1 if no configuration reaches it).")
    accuracy_metric: str = option("accuracy", Options(METRICS), help="Metric of --accuracy-tolerance.")
    accuracy_samples: int = option(1000, _COUNT, help="Samples the accuracy search scores on.")
    max_excluded: int = option(8, _COUNT, help="Most nodes the accuracy search may keep in float.")
    check_samples: int = option(64, _COUNT, help="fp16 mode: samples scanned for activations above float16's range.")
    guard: bool = option(True, help="Refuse (exit 1, nothing written) a model whose outputs collapse against FP32 on "
                                    "--data.")
    min_agreement: float = option(0.98, Interval(float, 0, 1, noun=False),
                                  help="Guard floor: top-1 agreement with FP32 on all of --data's test split.")
    exporter: str = option("auto", Options(EXPORTERS), help="torch.onnx exporter for torch models.")
    torch_engine: str = option("x86", help="torch.ao quantized engine of --engine torch.")
    explain: bool = option(False, help="Explain the result against the FP32 model (metadata explain).")
    sensitivity: str = option("leave_one_out", Options(("leave_one_out", "layer_error")),
                              help="Accuracy search order: one build per node, or layer_error (one pass).")

    def field_message(self, key: str, constraint: Any, value: Any) -> str | None:
        if key == "target":
            return f"unknown target {value!r}; use one of {', '.join(TARGET_NAMES)}"
        if isinstance(constraint, Options):
            shown = tuple(v for v in constraint.values if v is not None)
            return f"quantize.{key} = {value!r} is not allowed; use one of {shown}"
        return None

    def check(self) -> None:
        for key in ("op_types", "exclude_nodes"):  # "Conv,MatMul" (YAML or one --op-types) or repeated values
            value = getattr(self, key)
            items = [value] if isinstance(value, str) else list(value or ())
            object.__setattr__(self, key, tuple(part.strip() for item in items for part in str(item).split(",")
                                                if part.strip()))
        if self.engine == "torch" and self.mode != "dynamic":
            raise InputError(f"quantize.engine torch supports mode dynamic only, got mode {self.mode!r}",
                             hint="use --engine onnxruntime for static and fp16")
        if self.mode == "int4":
            check_int4(self.int4_block_size, self.int4_symmetric, self.int4_algorithm)
        if self.activation_type == "int8" and self.weight_type == "uint8":
            raise InputError("quantize: int8 activations with uint8 weights is not supported by onnxruntime",
                             hint="use activation_type uint8 (fast on x86) or weight_type int8")


#: Fields whose ``None`` means "take it from the target's row of :data:`.quantize_targets.DEFAULTS`".
TARGET_FIELDS = ("activation_type", "weight_type", "reduce_range", "per_channel", "residual_sum",
                 "bias_correction", "smooth_quant")


def resolve_defaults(config: QuantizeConfig, target: Target | None = None) -> tuple[QuantizeConfig, list[str]]:
    """``config`` with every unset target-dependent field filled from ``target``'s defaults (the host's when
    None), and the names of the fields so filled. The result is validated again (``replace`` runs
    ``__post_init__``), so a filled default can never make an invalid combination pass unseen."""
    target = target or resolve_target(config.target)
    row = defaults_for(target)
    filled = [k for k in TARGET_FIELDS if getattr(config, k) is None]
    effective = replace(config, **{k: getattr(row, k) for k in filled})
    if not config.op_types:
        filled.append("op_types")
    return effective, filled


def default_op_types(config: QuantizeConfig, row: TargetDefaults | None = None) -> tuple[str, ...]:
    if config.op_types:
        return config.op_types
    row = row or defaults_for(resolve_target(config.target))
    return {"dynamic": row.dynamic_ops, "static": row.static_ops, "fp16": qo.COMPUTE_OPS,
            "int4": INT4_OPS}[config.mode]


@register_stage(QuantizeConfig)
def run_quantize(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext) -> ModelArtifact:
    if config.engine == "torch":
        result = run_torch_dynamic(artifact, engine=config.torch_engine, notes=ctx.notes)
        target, host = resolve_target(config.target), detect_host()
        record = {**result.metadata["quantization"], "target": target_record(config, target, host, []),
                  "check": _torch_guard(artifact, result, config, ctx, target, host)}
        result = result.evolve(metadata={**result.metadata, "quantization": record})
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


def target_record(config: QuantizeConfig, target: Target, host: Target, filled: list[str]) -> dict[str, Any]:
    """What ``manifest.json`` says about the CPU the model was built for and the one it was built on."""
    return {"name": target.name, "requested": config.target, "description": target.description,
            "u8s8_accumulation": target.u8s8_accumulation, "host": host.name,
            "host_kernels_match": target.kernels_match(host), "defaults_from_target": filled}


def _quantize_onnx(artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext, tmp: Path) -> ModelArtifact:
    notes = ctx.notes
    target, host = resolve_target(config.target), detect_host()
    config, filled = resolve_defaults(config, target)
    meta: dict[str, Any] = {"mode": config.mode, "engine": "onnxruntime", "per_channel": config.per_channel,
                            "target": target_record(config, target, host, filled)}
    if config.mode in ("dynamic", "static"):
        notes.append(f"target {target.name}" + (" (the host)" if config.target == "auto" else f" (host {host.name})")
                     + f": {defaults_for(target).why}; reduce_range {config.reduce_range}, "
                     f"{config.activation_type}/{config.weight_type}")
    fp32 = _fp32_onnx(artifact, config, ctx, tmp, meta)
    smoothing = _smoothing_wanted(config, "smooth_quant" in filled, fp32, artifact, ctx, meta)
    gptq = config.mode == "int4" and config.int4_algorithm == "gptq"
    calibration = _calibration_data(artifact, config, ctx) if config.mode == "static" or smoothing or gptq else None
    if config.mode != "static" and config.calibration and not smoothing and not gptq:
        notes.append(f"--calibration ignored: mode {config.mode} needs no calibration")
    prepared = _prepare(fp32, config, tmp, notes, meta, _attention_shape(artifact))
    model = qo.load(prepared)
    op_types = default_op_types(config, defaults_for(target))
    qo.check_names(model, config.exclude_nodes, "exclude_nodes")
    everything = qo.candidates(model, qo.COMPUTE_OPS)
    chosen = qo.candidates(model, op_types)
    small = _small_reductions(model, chosen, config) if config.mode != "fp16" else {}
    user = [n for n in config.exclude_nodes if n in chosen or n in everything]
    overflow = _fp16_overflow(prepared, config, ctx, user, meta) if config.mode == "fp16" else []
    base_exclude = sorted(set(user) | set(small) | set(overflow))
    skipped_types = Counter(op for name, op in everything.items() if name not in chosen)
    if smoothing:
        assert calibration is not None
        prepared = _smoothed(prepared, config, calibration, chosen, base_exclude, tmp, notes, meta)
    if config.mode == "static" and config.bias_correction and "Conv" in op_types:
        assert calibration is not None
        prepared = _bias_corrected(prepared, config, calibration, base_exclude, tmp, notes, meta)
    for op, count in sorted(skipped_types.items()):
        notes.append(f"not quantized in {config.mode} mode: {op} ×{count} ({_why_not(op, config)})")
    if small:
        notes.append(f"kept FP32 (reduction < {config.min_reduction} multiply-adds per output, where int8 kernels "
                     f"are slower): " + ", ".join(f"{n} ({k})" for n, k in sorted(small.items())))
    build = _builder(prepared, config, op_types, calibration, tmp, notes, meta, threads=ctx.threads)
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
        notes.append(f"onnxruntime's {config.mode} quantizer left these in FP32 (no kernel for them): "
                     + ", ".join(f"{k} ×{v}" for k, v in sorted(unhandled.items())))
    check = _guard(fp32, result_path, artifact, config, ctx, target, host)
    final = ctx.work_dir / "model.onnx"
    os.replace(result_path, final)
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
    from ..runtime.analyses import ANALYSES, EXPLAIN_QUANTIZED  # filled by modelpress.diagnose

    return ANALYSES.get(EXPLAIN_QUANTIZED)(result, reference, ctx.eval or ctx.calibration or ctx.train, threads=ctx.threads,
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
    if config.mode in ("dynamic", "int4"):
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


def _smoothing_wanted(config: QuantizeConfig, from_table: bool, fp32: Path, artifact: ModelArtifact,
                      ctx: StageContext, meta: dict[str, Any]) -> bool:
    """Whether SmoothQuant runs. Set by the user (alpha > 0): yes, in dynamic and static mode, and calibration
    data is required. From the target's table: only in dynamic mode, on a graph with LayerNormalization (a
    transformer: the measurement behind the default, :mod:`.quantize_targets`), and when calibration data is
    there; otherwise skipped and the reason recorded in ``metadata["quantization"]["smooth_quant"]``."""
    alpha = config.smooth_quant or 0.0
    if config.mode in ("fp16", "int4") or alpha <= 0:
        if config.mode in ("fp16", "int4") and alpha > 0 and not from_table:
            ctx.notes.append(f"smooth_quant ignored: {config.mode} mode does not quantize activations")
        meta["smooth_quant"] = {"alpha": None, "from_target": from_table}
        return False
    has_data = bool(config.calibration) or (ctx.calibration or ctx.train) is not None
    if not from_table:
        if not has_data:
            raise InputError("quantize.smooth_quant needs calibration data (the activation ranges are measured)",
                             hint="pass --calibration DATA or --data DATA, or --smooth-quant 0")
        return True
    why = None
    if config.mode != "dynamic":
        why = "the target's default applies to dynamic mode only (measured there)"
    elif not _has_layer_norm(fp32):
        why = "no LayerNormalization in the graph (the default is for transformers)"
    elif not has_data:
        why = "no calibration data (pass --data or --calibration to measure activation ranges)"
        ctx.notes.append(f"SmoothQuant (alpha {alpha:g}, the target's default) skipped: {why}")
    if why:
        meta["smooth_quant"] = {"alpha": None, "from_target": True, "skipped": why}
        return False
    return True


def _has_layer_norm(path: Path) -> bool:
    from ..onnx_utils import load_onnx

    model = load_onnx(path, with_data=False)
    return any(n.op_type in ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                             "EmbedLayerNormalization") for n in model.graph.node)


def _smoothed(prepared: Path, config: QuantizeConfig, calibration: Dataset, chosen: dict[str, str],
              exclude: list[str], tmp: Path, notes: list[str], meta: dict[str, Any]) -> Path:
    """``prepared`` with SmoothQuant (:func:`.equalize.smooth_activations`) on every constant-weight MatMul that
    will be quantized, ranges measured on ``calibration``. Exact in FP32 (a float ``Mul`` by ``1/s`` before each
    MatMul, its weight rows times ``s``); what it buys is measured in :mod:`.quantize_targets`."""
    alpha = float(config.smooth_quant or 0.0)
    model = qo.load(prepared)
    nodes = tuple(n for n, op in chosen.items() if op == "MatMul" and n not in exclude)
    n = smooth_activations(model, qo.feeds(model, calibration, batch_size=config.calibration_batch_size),
                           nodes=nodes, alpha=alpha) if nodes else 0
    meta["smooth_quant"] = {"alpha": alpha, "from_target": "smooth_quant" in meta["target"]["defaults_from_target"],
                            "matmuls": n, "samples": len(calibration), "calibration": calibration.source}
    notes.append(f"SmoothQuant alpha {alpha:g}: {n} MatMul inputs smoothed into their weights "
                 f"({len(calibration)} calibration samples)")
    return qo.save(model, tmp / "smoothed.onnx") if n else prepared


def _bias_corrected(prepared: Path, config: QuantizeConfig, calibration: Dataset, exclude: list[str], tmp: Path,
                    notes: list[str], meta: dict[str, Any]) -> Path:
    """``prepared`` with each quantized Conv's bias corrected for the rounding of its int8 weights (Nagel et al.
    2019; :func:`.equalize.correct_biases`), measured on the calibration data; the measurement behind the default
    is in :mod:`.quantize_targets`."""
    if config.weight_type != "int8":
        notes.append("bias correction skipped: it models symmetric int8 weights, not --weight-type uint8")
        return prepared
    model = qo.load(prepared)
    reader = qo.CalibrationReader(calibration, qo.graph_input_names(model), config.calibration_batch_size)
    n = correct_biases(model, iter(reader.get_next, None), per_channel=bool(config.per_channel),
                       reduce_range=bool(config.reduce_range), exclude=tuple(exclude))
    meta["bias_correction"] = {"convs": n, "samples": len(calibration)}
    notes.append(f"bias correction: {n} Conv biases corrected for their weights' rounding "
                 f"({len(calibration)} calibration samples)")
    return qo.save(model, tmp / "bias-corrected.onnx") if n else prepared


def _why_not(op: str, config: QuantizeConfig) -> str:
    if config.op_types:
        return "not in --op-types"
    if config.mode == "int4":
        return "int4 mode converts MatMuls with a constant weight only (MatMulNBits)"
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
             tmp: Path, notes: list[str], meta: dict[str, Any], threads: int = 1) -> Any:
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
    elif config.mode == "int4":
        gptq = config.int4_algorithm == "gptq"
        reader = (qo._reader_class()(calibration, qo.graph_input_names(qo.load(prepared)),
                                     config.calibration_batch_size) if gptq and calibration is not None else None)
        meta.update(calibrator=None, quant_format="MatMulNBits", activation_type="float", weight_type="int4",
                    bits=4, block_size=config.int4_block_size, symmetric=config.int4_symmetric,
                    algorithm=config.int4_algorithm, accuracy_level=config.int4_accuracy_level,
                    per_channel=None, reduce_range=None,
                    calibration=({"source": calibration.source, "n_samples": len(calibration)}
                                 if gptq and calibration is not None else None))
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
        elif config.mode == "int4":
            quantize_int4(prepared, out, block_size=config.int4_block_size, symmetric=config.int4_symmetric,
                          algorithm=config.int4_algorithm, accuracy_level=config.int4_accuracy_level,
                          exclude=exclude, calibration_reader=reader, threads=threads)
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
        what = {"static": "static quantization", "int4": "int4 gptq"}.get(config.mode, "smooth_quant")
        raise InputError(f"{what} needs calibration data",
                         hint="pass --calibration DATA (or --data DATA, whose train split is used)")
    check_inputs(artifact.inputs, next(data.batches(1))[0], model=artifact.source)
    n = min(len(data), config.calibration_samples)
    if n < len(data):
        rng = np.random.default_rng(ctx.seed)
        data = data.subset(np.sort(rng.choice(len(data), n, replace=False)))
    return data


def can_saturate(config: QuantizeConfig) -> bool:
    """Whether a u8×s8 pair of this model can exceed int16 on a saturating target: 8-bit int8 weights only
    (7-bit weights, in [-64, 64]: 2 × 255 × 64 = 32640 < 32767; U8U8 and FP16 run other, exact kernels)."""
    return config.mode in ("dynamic", "static") and config.weight_type == "int8" and not config.reduce_range


def _guard(fp32: Path, quantized: Path, artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext,
           target: Target, host: Target) -> dict[str, Any] | None:
    """Measure the quantized model against FP32 on all the evaluation data (batched) and refuse a collapse.

    The quantized side runs with the host's real onnxruntime kernels. When they compute other integers than the
    target's (a saturating target with 8-bit weights on an exact host, or the reverse) the target's outputs are
    predicted with :func:`modelpress.runtime.emulate.emulate_outputs` and the guard judges those; when that is not
    possible the record says the guard measured the host's kernels only. Inf/NaN outputs are always an error.
    """
    data = ctx.eval or ctx.calibration or ctx.train
    if data is None:
        ctx.notes.append("quantized outputs were not checked (no data given): the guard needs --data")
        return None
    from ..runtime.compare import run_outputs

    reference = run_outputs(fp32, data, threads=ctx.threads)
    got = run_outputs(quantized, data, threads=ctx.threads)
    bad = ~np.isfinite(got)
    if bad.any():
        rows = int(bad.reshape(len(got), -1).any(axis=1).sum())
        what = "FP16 overflow" if config.mode == "fp16" else "non-finite outputs"
        raise GateFailed(f"{what}: the {config.mode} model output {int(bad.sum())} inf/NaN values in {rows} of "
                         f"{len(got)} samples (FP32 had {int((~np.isfinite(reference)).sum())})",
                         hint="keep the overflowing layers in FP32 with --exclude-nodes, or use --mode dynamic")
    record: dict[str, Any] = {"n_samples": len(data), "non_finite": 0, "kernels": f"onnxruntime on {host.name}",
                              "guard": config.guard, "min_agreement": config.min_agreement}
    judged, judged_on = got, host.name
    if not target.kernels_match(host) and can_saturate(config):
        emulated = _emulate(quantized, data, target, ctx)
        if emulated is not None:
            judged, judged_on = emulated, f"{target.name} (emulated)"
            record["kernels"] += f"; judged on {target.name}'s integer arithmetic, emulated"
        else:
            record["kernels"] += f" only: {target.name}'s kernels were neither run nor emulated"
            ctx.notes.append(f"guard measured the host's kernels ({host.name}) only; on {target.name} this model's "
                             "8-bit weights may give other outputs")
    elif not target.kernels_match(host):
        record["kernels"] += f" (computes the same integers as {target.name}: no u8×s8 pair can saturate)"
    return _verdict(record, reference, got, judged, judged_on, data, artifact, config, ctx, target, host)


def _verdict(record: dict[str, Any], reference: np.ndarray, got: np.ndarray, judged: np.ndarray, judged_on: str,
             data: Dataset, artifact: ModelArtifact, config: QuantizeConfig, ctx: StageContext, target: Target,
             host: Target) -> dict[str, Any]:
    """Fill ``record`` with fidelity and metric of ``judged`` against ``reference``; refuse a collapse."""
    from ..runtime.compare import compare_outputs
    from ..runtime.metrics import classification_metrics

    n_classes = artifact.n_classes
    width = reference.shape[1] if reference.ndim == 2 else 1
    if artifact.task != "embedding" and n_classes and reference.shape == got.shape and width in (n_classes, 1):
        for name, values in (("", got), ("judged_", judged)):
            check = compare_outputs(reference, values, n_classes=n_classes).as_dict()
            record.update({f"{name}{k}": check[k] for k in ("top1_agreement", "max_abs_diff", "mean_abs_diff",
                                                             "mean_kl") if not name or k == "top1_agreement"})
        if data.y is not None:
            metric = config.accuracy_metric
            ref_score = float(classification_metrics(data.y, reference, n_classes=n_classes)[metric])
            score = float(classification_metrics(data.y, judged, n_classes=n_classes)[metric])
            record.update(metric=metric, fp32_metric=ref_score, metric_value=score,
                          relative_drop=relative_drop(ref_score, score))
    else:  # not a classifier's logits (embeddings, regression): cosine per sample is the fidelity
        check = compare_outputs(reference.reshape(len(reference), -1), judged.reshape(len(judged), -1))
        record.update(min_cosine=check.min_cosine, mean_cosine=check.mean_cosine,
                      max_abs_diff=float(np.abs(reference - got).max()))
    record["judged_on"] = judged_on
    failures = []
    agreement = record.get("judged_top1_agreement")
    if agreement is not None and agreement < config.min_agreement:
        failures.append(f"top-1 agreement with FP32 {agreement:.4f} < {config.min_agreement:g}")
    if artifact.task == "embedding" and record["min_cosine"] < config.min_agreement:  # embeddings: worst cosine
        failures.append(f"min cosine to FP32 embeddings {record['min_cosine']:.4f} < {config.min_agreement:g}")
    tol = config.accuracy_tolerance
    if tol is not None and record.get("relative_drop") is not None and record["relative_drop"] > tol + 1e-12:
        failures.append(f"{record['metric']} {record['metric_value']:.4f} vs FP32 {record['fp32_metric']:.4f} "
                        f"(relative drop {record['relative_drop']:.4f} > {tol:g})")
    record["passed"] = not failures
    if not failures:
        return record
    kind = "weight-only INT4" if config.mode == "int4" else f"{config.mode} INT8"
    where = (f"on {len(data)} samples of {data.source}, {kind} for {target.name}, measured on "
             f"{judged_on}")
    if not config.guard:
        ctx.notes.append(f"guard off (--no-guard): {'; '.join(failures)} {where}")
        return record
    if config.engine == "torch" and target.saturates:
        hint = (f"torch.ao's int8 weights are 8-bit and {target.name} adds u8×s8 products in pairs into int16 "
                "with saturation: use --engine onnxruntime (7-bit weights by default for this target)")
    elif target.saturates and can_saturate(config):
        hint = saturation_fix(target)
    elif host.saturates and not target.kernels_match(host) and config.weight_type == "int8":
        hint = (f"this host ({host.name}) saturates u8×s8 pairs and {target.name} does not; check on a "
                f"{target.name} CPU, or build for this host with --target auto")
    elif config.mode == "int4":
        hint = ("keep the most sensitive MatMuls in float (--accuracy-tolerance), use smaller blocks "
                "(--int4-block-size 32) or --int4-algorithm hqq/gptq; --no-guard writes it anyway")
    elif config.mode == "static":
        hint = ("keep the most sensitive layers in FP32 (--accuracy-tolerance), try --calibrate entropy or "
                "percentile, or --mode dynamic; --no-guard writes it anyway")
    else:
        hint = ("keep the most sensitive layers in FP32 (--accuracy-tolerance), or lower --min-agreement for a "
                "model whose top classes are near ties; --no-guard writes it anyway")
    raise GateFailed(f"quantized model refused: {'; '.join(failures)} {where}", hint=hint)


def _torch_guard(artifact: ModelArtifact, result: ModelArtifact, config: QuantizeConfig, ctx: StageContext,
                 target: Target, host: Target) -> dict[str, Any] | None:
    """The guard for ``--engine torch``: torch.ao's int8 kernels (fbgemm/x86; on CPUs without VNNI they add u8×s8
    pairs in int16 too, PyTorch issue 103646) against the float module, on this host only (no emulation)."""
    from ..runtime.compare import run_outputs

    data = ctx.eval or ctx.calibration or ctx.train
    if data is None:
        ctx.notes.append("quantized outputs were not checked (no data given): the guard needs --data")
        return None
    reference = run_outputs(artifact, data, threads=1, batch_size=256)
    got = run_outputs(result, data, threads=1, batch_size=256)
    record: dict[str, Any] = {"n_samples": len(data), "non_finite": int((~np.isfinite(got)).sum()),
                              "kernels": f"torch {config.torch_engine} on {host.name}" + (
                                  "" if target.kernels_match(host) else f" only, not {target.name}'s"),
                              "guard": config.guard, "min_agreement": config.min_agreement}
    return _verdict(record, reference, got, got, host.name, data, artifact, config, ctx, target, host)


def _emulate(quantized: Path, data: Dataset, target: Target, ctx: StageContext) -> np.ndarray | None:
    """The quantized model's first output on ``data`` as ``target``'s integer kernels compute it, or None (noted)
    when the emulator cannot run this graph."""
    try:
        from ..runtime.emulate import emulate_outputs
    except ImportError:
        return None
    model = qo.load(quantized)
    try:
        out, _ = emulate_outputs(model, target, qo.feeds(model, data, batch_size=64))
    except (InputError, NotImplementedError, KeyError, ValueError) as exc:
        ctx.notes.append(f"emulating {target.name}'s kernels failed on this graph ({type(exc).__name__}: {exc})")
        return None
    return np.asarray(out, dtype=np.float64).reshape(len(data), -1)


def _summary(meta: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} ×{v}" for k, v in meta["quantized_op_counts"].items()) or "none"
    kept = sum(len(v) for v in meta["excluded_nodes"].values())
    how = meta["mode"] + (f" ({meta['calibrator']}, {meta['quant_format']})" if meta.get("calibrator") else "")
    check = meta.get("check") or {}
    tail = (f"; top-1 agreement {check['top1_agreement']:.4f}, max |Δlogit| {check['max_abs_diff']:.3g} on "
            f"{check['n_samples']} samples ({check['kernels']})") if "top1_agreement" in check else ""
    channel = f", per-channel {meta['per_channel']}" if meta["mode"] in ("dynamic", "static") else ""
    if meta["mode"] == "int4":
        channel = (f", {meta['algorithm']}, block {meta['block_size']}, "
                   f"{'symmetric' if meta['symmetric'] else 'asymmetric'}, accuracy_level {meta['accuracy_level']}")
    target = meta["target"]["name"] if meta["mode"] != "fp16" else "any"
    return (f"quantized {how}{channel} for {target}: {counts}; {kept} node(s) kept FP32 by choice; "
            f"size {meta['size_bytes_before'] / 1e6:.2f} MB → {meta['size_bytes_after'] / 1e6:.2f} MB "
            f"(×{meta['size_ratio']:.3f}){tail}")
