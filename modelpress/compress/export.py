"""Export stage: torch → ONNX with dynamic axes, checked by ``onnx.checker`` and verified against torch.

``onnx.checker`` is necessary, not sufficient: the stage runs torch and onnxruntime on real samples (several batch
sizes, so the dynamic batch axis is exercised) and fails with exit 1 when outputs differ beyond tolerance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..artifacts import ModelArtifact
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import BackendUnavailable, GateFailed, InputError
from .registry import StageConfig, StageContext, register_stage
from .tensorrt import TensorRTConfig

EXPORTERS = ("dynamo", "torchscript")
_TRT_FIELDS = tuple(f.name for f in dataclasses.fields(TensorRTConfig))


@dataclass(frozen=True)
class ExportConfig(Checked, StageConfig):
    """``format`` onnx (or tensorrt, GPU only); ``atol``/``rtol`` bound |onnx − torch| elementwise on logits.

    The TensorRT settings are a :class:`~modelpress.compress.tensorrt.TensorRTConfig` in ``tensorrt``; their keys
    stay flat, where users write them: ``ExportConfig(format="tensorrt", precision="fp16")``, YAML
    ``export: {format: tensorrt, precision: fp16}``, ``--precision fp16``, ``config.precision`` and
    :meth:`params` (so report.json and the stage cache keys are what they were).
    """

    kind: ClassVar[str] = "export"
    references: ClassVar[dict[str, str]] = {"timing_cache": "path"}
    format: str = option("onnx", Options(("onnx", "tensorrt"), text="onnx or tensorrt"), help="onnx, or tensorrt "
                         "(a TensorRT engine built from the verified ONNX model; NVIDIA GPU only).")
    opset: int = option(18, Interval(int, 13, 23, noun=False), help="ONNX opset.")
    dynamic_batch: bool = option(True, cli="--dynamic-batch/--static-batch", help="Dynamic batch axis.")
    verify: bool = option(True, help="Compare onnxruntime outputs with torch on real samples; exit 1 over tolerance.")
    atol: float = option(1e-4, Interval(float, 0, noun=False), help="Absolute tolerance of |onnx − torch|.")
    rtol: float = option(1e-4, Interval(float, 0, noun=False), help="Relative tolerance of |onnx − torch|.")
    verify_samples: int = option(64, Interval(int, 1, noun=False), cli=False, help="Samples verified.")
    exporter: str = option("dynamo", Options(EXPORTERS), help="torch.onnx exporter.")
    optional: bool = option(False, cli=False, help="Skip the stage (with a note) when TensorRT is unavailable.")
    tensorrt: TensorRTConfig = option(TensorRTConfig(), flatten=True, help="TensorRT settings (format tensorrt).")

    def check(self) -> None:
        if self.format != "tensorrt" and self.tensorrt != TensorRTConfig():
            for f in dataclasses.fields(TensorRTConfig):
                if getattr(self.tensorrt, f.name) != f.default:
                    raise InputError(f"export.{f.name} applies to format tensorrt only (format is {self.format})",
                                     hint="set format: tensorrt (--format tensorrt) or drop the key")

    def __getattr__(self, name: str) -> Any:
        """``config.precision``: the TensorRT keys read as before, from ``config.tensorrt``."""
        if name in _TRT_FIELDS and "tensorrt" in self.__dict__:
            return getattr(self.__dict__["tensorrt"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def params(self) -> dict[str, Any]:
        params = dataclasses.asdict(self)
        return {**params, **params.pop("tensorrt")}

    @classmethod
    def from_params(cls, params: dict[str, Any], *, where: str = "") -> StageConfig:
        params = dict(params)
        if isinstance(params.get("tensorrt"), dict):  # a record written nested
            params.update(params.pop("tensorrt"))
        flat = {k: params.pop(k) for k in _TRT_FIELDS if k in params}
        config = super().from_params(params, where=where)
        return dataclasses.replace(config, **flat) if flat else config


def _accept_flat_tensorrt_keys(init: Any) -> Any:
    """Wrap the generated ``__init__`` so that the TensorRT keys may be given flat (see :class:`ExportConfig`)."""

    @functools.wraps(init)
    def __init__(self: ExportConfig, *args: Any, tensorrt: TensorRTConfig | None = None, **kwargs: Any) -> None:
        flat = {k: kwargs.pop(k) for k in _TRT_FIELDS if k in kwargs}
        base = tensorrt if tensorrt is not None else TensorRTConfig()
        init(self, *args, tensorrt=dataclasses.replace(base, **flat) if flat else base, **kwargs)

    return __init__


ExportConfig.__init__ = _accept_flat_tensorrt_keys(ExportConfig.__init__)  # type: ignore[method-assign]


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
    from ..runtime.compare import compare_batches
    from ..runtime.sessions import make_runner

    n = min(len(data), config.verify_samples)
    sample = data.subset(slice(0, n))
    torch_run = make_runner(reference, "torch", threads=threads)
    ort_run = make_runner(candidate, "onnxruntime", threads=threads)
    # a static batch axis is fixed at the exported example's size: only that size is valid input
    sizes = sorted({1, min(n, 7), n}) if config.dynamic_batch else [STATIC_BATCH]
    pairs = []
    for size in sizes:
        for batch, _ in sample.batches(size):
            want, got = torch_run(batch), ort_run(batch)
            if want.shape != got.shape:
                raise GateFailed(f"ONNX output shape {got.shape} differs from torch {want.shape} at batch {size}")
            pairs.append((want, got))
    check = compare_batches(pairs, rtol=config.rtol)
    return {"passed": check.within(config.atol), "max_abs_diff": check.max_abs_diff,
            "max_rel_diff": check.max_rel_diff, "top1_agreement": check.top1_agreement, "n_samples": n,
            "batch_sizes": sizes, "atol": config.atol, "rtol": config.rtol}
