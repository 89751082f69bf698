"""Export stage: torch → ONNX with dynamic axes, checked by ``onnx.checker`` and verified against torch.

``onnx.checker`` is necessary, not sufficient: the stage runs torch and onnxruntime on real samples (several batch
sizes, so the dynamic batch axis is exercised) and fails with exit 1 when outputs differ beyond tolerance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import BackendUnavailable, GateFailed, InputError
from .registry import StageConfig, StageContext, register_stage

EXPORTERS = ("dynamo", "torchscript")
PRECISIONS = ("fp32", "fp16", "int8")
TRT_INT8 = ("qdq", "calibrator")  # explicit Q/DQ (default) | TensorRT 10's deprecated implicit calibrator
_TRT_INTS = ("min_batch", "opt_batch", "max_batch", "min_seq_len", "opt_seq_len", "max_seq_len", "workspace_mb",
             "calibration_batch_size", "calibration_batches")
_TRT_FIELDS = (*_TRT_INTS, "precision", "trt_int8", "timing_cache", "trt_atol", "trt_rtol", "trt_min_top1")


@dataclass(frozen=True)
class ExportConfig(StageConfig):
    """``format`` onnx (or tensorrt, GPU only); ``atol``/``rtol`` bound |onnx − torch| elementwise on logits."""

    kind: ClassVar[str] = "export"
    references: ClassVar[dict[str, str]] = {"timing_cache": "path"}
    format: str = "onnx"
    opset: int = 18
    dynamic_batch: bool = True
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-4
    verify_samples: int = 64
    exporter: str = "dynamo"
    optional: bool = False
    # TensorRT only (format: tensorrt); see modelpress.compress.tensorrt
    precision: str = "fp32"
    trt_int8: str = "qdq"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256
    min_seq_len: int = 1
    opt_seq_len: int = 128
    max_seq_len: int = 512
    workspace_mb: int = 1024
    timing_cache: str | None = None
    calibration_batch_size: int = 32
    calibration_batches: int = 16
    trt_atol: float | None = None
    trt_rtol: float | None = None
    trt_min_top1: float | None = None

    def __post_init__(self) -> None:
        if self.format not in ("onnx", "tensorrt"):
            raise InputError(f"export.format must be onnx or tensorrt, got {self.format!r}")
        if not 13 <= int(self.opset) <= 23:
            raise InputError(f"export.opset must be in [13, 23], got {self.opset}")
        if self.exporter not in EXPORTERS:
            raise InputError(f"export.exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if not (self.atol >= 0 and self.rtol >= 0):
            raise InputError(f"export.atol and rtol must be ≥ 0, got {self.atol}, {self.rtol}")
        if self.verify_samples < 1:
            raise InputError(f"export.verify_samples must be ≥ 1, got {self.verify_samples}")
        self._validate_tensorrt()

    def _validate_tensorrt(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"export.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.trt_int8 not in TRT_INT8:
            raise InputError(f"export.trt_int8 must be one of {', '.join(TRT_INT8)}, got {self.trt_int8!r}")
        for name in _TRT_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                unit = " (MiB)" if name == "workspace_mb" else ""
                raise InputError(f"export.{name} must be an integer > 0{unit}, got {value!r}")
        for axis in ("batch", "seq_len"):
            lo, opt, hi = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
            if not lo <= opt <= hi:
                raise InputError(f"export: min_{axis} ≤ opt_{axis} ≤ max_{axis} must hold, got {lo}, {opt}, {hi}")
        if self.timing_cache is not None and (not isinstance(self.timing_cache, str) or not self.timing_cache):
            raise InputError(f"export.timing_cache must be a file path, got {self.timing_cache!r}")
        for name, top in (("trt_atol", math.inf), ("trt_rtol", math.inf), ("trt_min_top1", 1.0)):
            value = getattr(self, name)
            ok = value is None or (not isinstance(value, bool) and isinstance(value, (int, float))
                                   and 0 <= value <= top)
            if not ok:
                allowed = "in [0, 1]" if top == 1.0 else "≥ 0"
                raise InputError(f"export.{name} must be {allowed}, got {value!r}")
        if self.format != "tensorrt":
            for f in dataclasses.fields(self):
                if f.name in _TRT_FIELDS and getattr(self, f.name) != f.default:
                    raise InputError(f"export.{f.name} applies to format tensorrt only (format is {self.format})",
                                     hint="set format: tensorrt (--format tensorrt) or drop the key")


@register_stage(ExportConfig)
def run_export(artifact: ModelArtifact, config: ExportConfig, ctx: StageContext) -> ModelArtifact:
    if config.format == "tensorrt":
        from .tensorrt import export_tensorrt  # imports nothing from TensorRT until it runs

        try:
            return export_tensorrt(artifact, config, ctx)
        except BackendUnavailable as exc:
            if not config.optional:
                raise
            ctx.notes.append(f"skipped: {exc.format_message()}")
            return artifact.evolve()  # unchanged, but a copy: run_stage appends to its history
    return onnx_for_export(artifact, config, ctx)


def onnx_for_export(artifact: ModelArtifact, config: ExportConfig, ctx: StageContext) -> ModelArtifact:
    """The ONNX model of ``artifact`` (exported into ``ctx.work_dir`` and verified against torch when it is torch)."""
    if artifact.format == "onnx":
        ctx.notes.append("input is already ONNX: export kept it as it is")
        onnx_artifact = artifact
    elif artifact.format != "torch":
        raise InputError(f"cannot export a {artifact.format} artifact to ONNX")
    else:
        onnx_artifact = export_onnx(artifact, ctx.work_dir / "model.onnx", config=config)
    if config.verify and artifact.format == "torch":
        data = ctx.eval or ctx.calibration or ctx.train
        if data is None:
            raise InputError("export --verify needs sample data", hint="pass --data (or --no-verify)")
        report = verify_onnx(artifact, onnx_artifact, data, config=config, threads=ctx.threads)
        onnx_artifact.metadata["verification"] = report
        if not report["passed"]:
            raise GateFailed(
                f"ONNX outputs differ from torch: max abs diff {report['max_abs_diff']:.3g} > tolerance "
                f"(atol {config.atol:g}, rtol {config.rtol:g}) on {report['n_samples']} samples",
                hint="check for unsupported ops, or raise --atol if the difference is expected",
            )
    return onnx_artifact


def _dynamic_dims(artifact: ModelArtifact, dynamic_batch: bool) -> dict[str, list[int]]:
    dims: dict[str, list[int]] = {}
    for spec in artifact.inputs:
        axes = [i for i, d in enumerate(spec.shape) if d is None and (i > 0 or dynamic_batch)]
        dims[spec.name] = axes
    return dims


STATIC_BATCH = 1  # --static-batch fixes the batch axis here: one request at a time, the usual fixed-shape server


def _example_inputs(artifact: ModelArtifact, batch: int = 2) -> tuple[Any, ...]:
    import torch

    tensors = []
    for spec in artifact.inputs:
        shape = [batch if i == 0 else (d or 8) for i, d in enumerate(spec.shape)]
        dtype = getattr(torch, spec.dtype)
        tensors.append(torch.ones(shape, dtype=dtype) if not dtype.is_floating_point else torch.randn(shape))
    return tuple(tensors)


@contextlib.contextmanager
def _quiet_torch_onnx_logs() -> Any:
    """The dynamo exporter logs a warning per missing torchvision op; they say nothing about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(artifact: ModelArtifact, path: Path, *, config: ExportConfig) -> ModelArtifact:
    """Write ``path`` atomically (export to a temp name in the same folder, check, then rename)."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    module = artifact.module.eval()
    names = [s.name for s in artifact.inputs]
    dyn = _dynamic_dims(artifact, config.dynamic_batch)
    kwargs: dict[str, Any] = {"input_names": names, "output_names": ["logits"], "opset_version": int(config.opset)}
    if config.exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1)
        seq = torch.export.Dim("seq", min=1)
        kwargs["dynamic_shapes"] = tuple({a: (batch if a == 0 else seq) for a in dyn[n]} or None for n in names)
        kwargs["dynamo"] = True
        kwargs["external_data"] = False
    else:
        axes = {n: {a: ("batch" if a == 0 else f"dim{a}") for a in dyn[n]} for n in names}
        axes["logits"] = {0: "batch"} if config.dynamic_batch else {}
        kwargs["dynamic_axes"] = axes
        kwargs["dynamo"] = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_torch_onnx_logs():
            warnings.simplefilter("ignore")
            example = _example_inputs(artifact, 2 if config.dynamic_batch else STATIC_BATCH)
            torch.onnx.export(module, example, str(tmp), **kwargs)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
        os.replace(tmp, path)
    except (InputError, GateFailed):
        raise
    except Exception as exc:
        raise InputError(
            f"ONNX export of {artifact.source} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint=f"try exporter: {'torchscript' if config.exporter == 'dynamo' else 'dynamo'}",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            (tmp.parent / (tmp.name + ".data")).unlink()
    return artifact.evolve(format="onnx", module=None, path=path,
                           metadata={**artifact.metadata, "opset": int(config.opset), "exporter": config.exporter})


def verify_onnx(reference: ModelArtifact, candidate: ModelArtifact, data: Dataset, *, config: ExportConfig,
                threads: int = 1) -> dict[str, Any]:
    """Compare torch and onnxruntime outputs at batch sizes 1, an odd size and the full sample."""
    from ..runtime.sessions import make_runner

    n = min(len(data), config.verify_samples)
    sample = data.subset(slice(0, n))
    torch_run = make_runner(reference, "torch", threads=threads)
    ort_run = make_runner(candidate, "onnxruntime", threads=threads)
    max_abs = max_rel = 0.0
    agree = total = 0
    passed = True
    # a static batch axis is fixed at the exported example's size: only that size is valid input
    sizes = sorted({1, min(n, 7), n}) if config.dynamic_batch else [STATIC_BATCH]
    for size in sizes:
        for batch, _ in sample.batches(size):
            want, got = torch_run(batch), ort_run(batch)
            if want.shape != got.shape:
                raise GateFailed(f"ONNX output shape {got.shape} differs from torch {want.shape} at batch {size}")
            diff = np.abs(want - got)
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / np.maximum(np.abs(want), 1e-12)).max()))
            passed &= bool(np.all(diff <= config.atol + config.rtol * np.abs(want)))
            agree += int((want.argmax(1) == got.argmax(1)).sum())
            total += len(want)
    return {"passed": passed, "max_abs_diff": max_abs, "max_rel_diff": max_rel, "top1_agreement": agree / total,
            "n_samples": n, "batch_sizes": sizes, "atol": config.atol, "rtol": config.rtol}
