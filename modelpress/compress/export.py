"""Export stage: torch → ONNX with dynamic axes, checked by ``onnx.checker`` and verified against torch.

``onnx.checker`` is necessary, not sufficient: the stage runs torch and onnxruntime on real samples (several batch
sizes, so the dynamic batch axis is exercised) and fails with exit 1 when outputs differ beyond tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..artifacts import ModelArtifact
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import BackendUnavailable, GateFailed, InputError
from ..runtime.onnx_export import EXPORTERS, export_torch_onnx, verify_torch_onnx
from .registry import StageConfig, StageContext, register_stage
from .tensorrt import TensorRTConfig

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
        tensorrt = params.pop("tensorrt")
        return {**params, **tensorrt}

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
            return export_tensorrt(artifact, config, ctx, to_onnx=onnx_for_export)
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


def export_onnx(artifact: ModelArtifact, path: Path, *, config: ExportConfig) -> ModelArtifact:
    """Write ``path`` atomically with the config's opset, exporter and batch axis (see
    :func:`~modelpress.runtime.onnx_export.export_torch_onnx`)."""
    return export_torch_onnx(artifact, path, opset=int(config.opset), exporter=config.exporter,
                             dynamic_batch=config.dynamic_batch)


def verify_onnx(reference: ModelArtifact, candidate: ModelArtifact, data: Dataset, *, config: ExportConfig,
                threads: int = 1) -> dict[str, Any]:
    """Compare torch and onnxruntime outputs at batch sizes 1, an odd size and the full sample."""
    return verify_torch_onnx(reference, candidate, data, samples=config.verify_samples,
                             dynamic_batch=config.dynamic_batch, atol=config.atol, rtol=config.rtol, threads=threads)
