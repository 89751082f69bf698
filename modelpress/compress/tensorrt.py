"""TensorRT export: build a serialized engine from the verified ONNX model, then verify the engine against it.

Flow (``export: {format: tensorrt}`` or ``modelpress export MODEL --format tensorrt``): torch → ONNX (exported and
verified against torch by :mod:`.export`) → TensorRT engine → outputs compared with onnxruntime (float ONNX) on
real samples, with a tolerance per precision; over tolerance is a failed gate (exit 1).

INT8 is explicit by default (``trt_int8: qdq``): a model that already has Q/DQ nodes is built as it is; a float
model is first quantized to a Q/DQ ONNX model with onnxruntime's ``quantize_static`` (symmetric int8, per-channel
weights, Conv/MatMul/Gemm inputs) on our calibration samples, written as ``model.qdq.onnx``, and built as a strongly
typed network, where the Q/DQ nodes fix every precision and no INT8 builder flag is set. This is the path NVIDIA
keeps: the implicit calibrator API (``IInt8EntropyCalibrator2`` with the INT8 flag) is deprecated since TensorRT 10.1
and removed in 11; it stays reachable as ``trt_int8: calibrator`` on TensorRT 10 only.

Everything decided before TensorRT is touched is a pure function here — optimization-profile shapes from the
input specs, the build plan (flags, int8 mode, strong typing) from precision / TensorRT version / Q/DQ content, the
Q/DQ quantization, the output comparison, the calibration batching, the metadata record — so it is tested without
a GPU. TensorRT and CUDA are imported inside functions only. None of this has run on a GPU yet: the tests use a
stand-in ``tensorrt`` module (tests/tensorrt), and tests/tensorrt/test_trt_gpu.py waits for a machine with one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..artifacts import InputSpec, ModelArtifact
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import GateFailed, InputError
from ..runtime.tensorrt import CudaApi
from ..io import sha256_file, write_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from .registry import StageContext

#: The export stage's config (an :class:`~modelpress.compress.export.ExportConfig`: its ``verify`` settings and,
#: read through it, the :class:`TensorRTConfig` fields). Not imported: export.py imports this module.
ExportConfig = Any


# ---- the TensorRT config -----------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "fp16", "int8")
TRT_INT8 = ("qdq", "calibrator")  # explicit Q/DQ (default) | TensorRT 10's deprecated implicit calibrator
_POSITIVE = Interval(int, 0, closed="neither")


@dataclass(frozen=True)
class TensorRTConfig(Checked):
    """How ``export: {format: tensorrt}`` builds and checks an engine: precision, optimization profile, builder.

    Its keys sit in the ``export`` stage beside the ONNX ones (YAML ``export: {format: tensorrt, precision: fp16}``,
    CLI ``modelpress export --format tensorrt --precision fp16``); :class:`~modelpress.compress.export.ExportConfig`
    holds one as its ``tensorrt`` field and refuses any of them for ``format: onnx``.
    """

    section: ClassVar[str] = "export"
    precision: str = option("fp32", Options(PRECISIONS),
                            help="TensorRT precision; int8: a Q/DQ model as it is, a float model quantized to Q/DQ "
                                 "on --data's train split.")
    trt_int8: str = option("qdq", Options(TRT_INT8),
                           help="int8 from explicit Q/DQ, or TensorRT 10's IInt8EntropyCalibrator2 (deprecated).")
    min_batch: int = option(1, _POSITIVE, help="TensorRT profile: smallest batch.")
    opt_batch: int = option(32, _POSITIVE, help="TensorRT profile: batch the kernels are tuned for.")
    max_batch: int = option(256, _POSITIVE, help="TensorRT profile: largest batch.")
    min_seq_len: int = option(1, _POSITIVE, help="TensorRT profile range of dynamic non-batch axes (text inputs).")
    opt_seq_len: int = option(128, _POSITIVE, help="TensorRT profile: sequence length the kernels are tuned for.")
    max_seq_len: int = option(512, _POSITIVE, help="TensorRT profile: longest sequence.")
    workspace_mb: int = option(1024, Interval(int, 0, closed="neither", unit="MiB"),
                               help="TensorRT builder workspace limit (MiB).")
    timing_cache: str | None = option(None, help="TensorRT timing cache file: reused when it matches, then updated.")
    calibration_batch_size: int = option(32, _POSITIVE, cli=False, help="Samples per TensorRT calibration batch.")
    calibration_batches: int = option(16, _POSITIVE, cli=False, help="TensorRT calibration batches.")
    trt_atol: float | None = option(None, Interval(float, 0, noun=False),
                                    help="Engine vs onnxruntime abs tolerance (default by precision: fp32 1e-3, "
                                         "fp16 1e-2, int8 0.25 × max |logit|).")
    trt_rtol: float | None = option(None, Interval(float, 0, noun=False),
                                    help="Engine vs onnxruntime rel tolerance.")
    trt_min_top1: float | None = option(None, Interval(float, 0, 1, noun=False),
                                        help="Minimum top-1 agreement with onnxruntime (default: int8 0.99).")

    def check(self) -> None:
        for axis in ("batch", "seq_len"):
            lo, opt, hi = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
            if not lo <= opt <= hi:
                raise InputError(f"export: min_{axis} ≤ opt_{axis} ≤ max_{axis} must hold, got {lo}, {opt}, {hi}")
        if self.timing_cache is not None and (not isinstance(self.timing_cache, str) or not self.timing_cache):
            raise InputError(f"export.timing_cache must be a file path, got {self.timing_cache!r}")


# ---- tolerances and output comparison ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """Engine vs onnxruntime: every |got − want| ≤ atol + rtol·|want|, and top-1 agreement ≥ ``min_top1``.

    ``atol_of_range`` adds that fraction of the largest |reference logit| to ``atol``: int8 errors scale with the
    activations' range, so a fixed absolute bound would be either meaningless or impossible.
    """

    atol: float
    rtol: float
    min_top1: float | None = None
    atol_of_range: float = 0.0


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "int8": Tolerance(atol=0.0, rtol=0.0, min_top1=0.99, atol_of_range=0.25),
}


def tolerance_for(config: ExportConfig) -> Tolerance:
    """The precision's default tolerance with the config's ``trt_atol`` / ``trt_rtol`` / ``trt_min_top1`` applied."""
    base = DEFAULT_TOLERANCES[config.precision]
    return Tolerance(
        atol=base.atol if config.trt_atol is None else float(config.trt_atol),
        rtol=base.rtol if config.trt_rtol is None else float(config.trt_rtol),
        min_top1=base.min_top1 if config.trt_min_top1 is None else float(config.trt_min_top1),
        atol_of_range=base.atol_of_range if config.trt_atol is None else 0.0,
    )


def compare_outputs(pairs: Iterable[tuple[np.ndarray, np.ndarray]], tolerance: Tolerance) -> dict[str, Any]:
    """Judge ``(reference, candidate)`` logit pairs; the dict has the keys of an export verification record.

    The numbers are :func:`modelpress.runtime.compare.compare_batches`'s (inf/NaN outputs counted and read as 0);
    the rule is TensorRT's: ``|d| ≤ atol + atol_of_range·max|ref| + rtol·|ref|`` elementwise, all finite, and
    top-1 agreement ≥ ``min_top1`` when set.
    """
    from ..runtime.compare import compare_batches

    pairs = [(np.asarray(want, dtype=np.float64), np.asarray(got, dtype=np.float64)) for want, got in pairs]
    for want, got in pairs:
        if want.shape != got.shape:
            raise GateFailed(f"TensorRT output shape {got.shape} differs from onnxruntime {want.shape}")
    if sum(len(want) for want, _ in pairs) == 0:
        raise InputError("TensorRT verification compared 0 samples")
    check = compare_batches(pairs, rtol=tolerance.rtol)
    atol = tolerance.atol + tolerance.atol_of_range * check.reference_max_abs
    top1 = check.top1_agreement
    passed = check.within(atol) and (tolerance.min_top1 is None or top1 >= tolerance.min_top1)
    return {"passed": bool(passed), "max_abs_diff": check.max_abs_diff, "max_rel_diff": check.max_rel_diff,
            "top1_agreement": top1, "non_finite": check.non_finite, "n_samples": check.n_samples, "atol": atol,
            "rtol": tolerance.rtol, "min_top1": tolerance.min_top1, "reference": "onnxruntime"}


# ---- optimization profiles ---------------------------------------------------------------------------------------
Range = tuple[int, int, int]


def check_range(name: str, values: Range) -> Range:
    """(min, opt, max) as ints with 1 ≤ min ≤ opt ≤ max, else InputError naming the three values."""
    lo, opt, hi = (int(v) for v in values)
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"export: min_{name} ≤ opt_{name} ≤ max_{name} must hold with min ≥ 1, "
                         f"got {lo}, {opt}, {hi}")
    return lo, opt, hi


def profile_shapes(inputs: Sequence[InputSpec], *, batch: Range, seq: Range) -> dict[str, dict[str, list[int]]]:
    """Optimization-profile shapes per input: ``{name: {"min": [...], "opt": [...], "max": [...]}}``.

    A fixed dimension stays fixed; a dynamic (``None``) axis 0 takes the ``batch`` range; any other dynamic axis
    (the sequence axis of text inputs) takes the ``seq`` range.
    """
    batch, seq = check_range("batch", batch), check_range("seq_len", seq)
    out: dict[str, dict[str, list[int]]] = {}
    for spec in inputs:
        dims = [(d, d, d) if d is not None else (batch if axis == 0 else seq) for axis, d in enumerate(spec.shape)]
        if any(d is not None and d < 1 for d in spec.shape):
            raise InputError(f"input {spec.name!r} has a non-positive fixed dimension in {spec.shape}")
        out[spec.name] = {key: [int(d[i]) for d in dims] for i, key in enumerate(("min", "opt", "max"))}
    return out


def network_inputs(shapes: Sequence[tuple[str, Sequence[int], str]]) -> tuple[InputSpec, ...]:
    """InputSpecs from TensorRT network inputs, where ``-1`` marks a dynamic dimension."""
    return tuple(InputSpec(name, tuple(None if int(d) < 0 else int(d) for d in shape), dtype)
                 for name, shape, dtype in shapes)


# ---- build plan ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """Builder flags to set / clear, how int8 is obtained, and whether the network is strongly typed.

    ``quantize``: the float ONNX model must first be quantized to Q/DQ (:func:`quantize_qdq`) before it is built.
    """

    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    int8_mode: str | None = None  # "qdq" (explicit) | "calibrated" (implicit, deprecated calibrator) | None
    strongly_typed: bool = False
    quantize: bool = False


def qdq_info(model: Any) -> dict[str, Any]:
    """Count QuantizeLinear/DequantizeLinear nodes and list what TensorRT cannot take (uint8 or non-zero points)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes, problems = 0, []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        nodes += 1
        if len(node.input) >= 3 and node.input[2] in inits:
            zero = numpy_helper.to_array(inits[node.input[2]])
            label = node.name or (node.output[0] if node.output else node.op_type)
            if zero.dtype == np.uint8:
                problems.append(f"{label}: uint8 zero point")
            elif np.any(zero != 0):
                problems.append(f"{label}: non-zero zero point")
    return {"nodes": nodes, "problems": problems}


def build_plan(precision: str, *, trt_major: int, qdq_nodes: int, has_calibration: bool,
               int8: str = "qdq") -> BuildPlan:
    """Decide flags, int8 mode and strong typing; InputError with the way out when the combination cannot be built.

    ``int8`` is ``"qdq"`` (explicit quantization, the default) or ``"calibrator"`` (TensorRT 10's deprecated
    implicit INT8). A Q/DQ network is always built strongly typed: its Q/DQ nodes decide every precision, and
    TensorRT refuses precision builder flags on such a network.
    """
    if qdq_nodes and precision != "int8":
        raise InputError(f"the ONNX model has {qdq_nodes} Q/DQ nodes (it is already quantized); "
                         f"precision {precision} cannot build it", hint="use --precision int8")
    no_tf32 = ("TF32",) if precision == "fp32" else ()  # TF32 would break the fp32 tolerance on Ampere+
    if precision == "int8" and int8 == "calibrator":
        if qdq_nodes:
            raise InputError(f"the ONNX model has {qdq_nodes} Q/DQ nodes (it is already quantized); "
                             "the calibrator applies to a float model", hint="drop --trt-int8 calibrator")
        if trt_major >= 11:
            raise InputError(f"TensorRT {trt_major} removed the INT8 calibrator (deprecated since 10.1)",
                             hint="use --trt-int8 qdq (the default), or install TensorRT 10")
        if not has_calibration:
            raise InputError("the INT8 calibrator needs calibration data",
                             hint="pass --data (its train split calibrates) or set data.calibration")
        return BuildPlan(set_flags=("INT8",), int8_mode="calibrated")
    if precision == "int8":
        if not qdq_nodes and not has_calibration:
            raise InputError("precision int8 on a model without Q/DQ nodes needs calibration data to quantize it",
                             hint="pass --data (its train split calibrates) or set data.calibration")
        return BuildPlan(int8_mode="qdq", strongly_typed=True, quantize=not qdq_nodes)
    if trt_major >= 11:
        if precision == "fp16":
            raise InputError(f"TensorRT {trt_major} removed the FP16 builder flag (strongly typed networks only)",
                             hint="install TensorRT 10 (pip install 'modelpress[tensorrt]') or use --precision fp32")
        return BuildPlan(clear_flags=no_tf32, strongly_typed=True)
    if precision == "fp32":
        return BuildPlan(clear_flags=no_tf32)
    return BuildPlan(set_flags=("FP16",))


# ---- explicit quantization (Q/DQ) ----------------------------------------------------------------------------------
#: Ops whose inputs get Q/DQ pairs. TensorRT's explicit-quantization guidance quantizes the inputs of the
#: compute-heavy layers and lets it fuse the rest; quantizing Add/Softmax/etc. only adds reformat layers.
QDQ_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def calibration_batches(feeder: CalibrationFeeder) -> list[dict[str, np.ndarray]]:
    """The feeder's batches on the host: both int8 paths calibrate on the same seeded samples."""
    return [{n: np.ascontiguousarray(a[feeder.batch_indices(i)], dtype=feeder.dtypes.get(n, np.float32))
             for n, a in feeder.inputs.items()} for i in range(feeder.n_batches)]


def quantize_qdq(src: Path, dst: Path, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write ``dst``: ``src`` with symmetric int8 Q/DQ pairs (zero points 0) that TensorRT builds explicitly.

    Activations: int8, symmetric, ranges from min/max over ``batches`` (the "max" calibration of NVIDIA's TensorRT
    Model Optimizer INT8 recipe); weights: int8, symmetric, per output channel. Runs on the CPU with onnxruntime.
    Returns the record stored as ``metadata["tensorrt"]["qdq"]``.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    from ..onnx_utils import load_onnx

    if not batches:
        raise InputError("Q/DQ quantization for TensorRT got 0 calibration batches")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs "consider pre-processing" through the root logger
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_static(
                str(src), str(dst), calibration_data_reader=Reader(), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QDQ_OP_TYPES), per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    info = qdq_info(load_onnx(dst, with_data=False))
    if info["problems"]:  # onnxruntime's options above should rule this out; never hand TensorRT such a model
        raise InputError(f"Q/DQ quantization of {src} produced {len(info['problems'])} nodes TensorRT cannot build "
                         f"(first: {info['problems'][0]})")
    n = sum(len(next(iter(b.values()))) for b in batches)
    return {"source": "modelpress", "file": dst.name, "nodes": info["nodes"], "op_types": list(QDQ_OP_TYPES),
            "calibration": {"algorithm": "minmax", "batches": len(batches), "samples": n},
            "activations": "int8 symmetric", "weights": "int8 symmetric per-channel"}


# ---- calibration ---------------------------------------------------------------------------------------------------
@dataclass
class CalibrationFeeder:
    """Fixed-size calibration batches copied to device memory on request (the calibrator's ``get_batch``).

    Samples are a seeded permutation of the calibration set, cut into ``n_batches`` full batches (a partial last
    batch is dropped: the calibration profile has one fixed shape). Device buffers are allocated on first use and
    reused; TensorRT reads them before asking for the next batch.
    """

    inputs: dict[str, np.ndarray]
    names: Sequence[str]
    dtypes: dict[str, Any]
    batch_size: int
    max_batches: int
    cuda: CudaApi
    seed: int = 0
    index: int = 0
    device: dict[str, int] = field(default_factory=dict)
    stream: Any = None
    cache: bytes | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        arrays = dict(self.inputs)
        if len(self.names) == 1 and len(arrays) == 1 and self.names[0] not in arrays:
            arrays = {self.names[0]: next(iter(arrays.values()))}  # one unnamed input maps by position
        missing = [n for n in self.names if n not in arrays]
        if missing:
            raise InputError(f"calibration data has inputs {sorted(arrays)} but the model needs {list(self.names)}")
        self.inputs = {n: arrays[n] for n in self.names}
        n = len(next(iter(self.inputs.values())))
        if n == 0:
            raise InputError("calibration data is empty (0 samples)")
        if self.batch_size < 1 or self.max_batches < 1:
            raise InputError(f"calibration batch size and batch count must be ≥ 1, got {self.batch_size}, "
                             f"{self.max_batches}")
        self.batch_size = min(int(self.batch_size), n)
        self.n_batches = min(int(self.max_batches), n // self.batch_size)
        self.order = np.random.default_rng(self.seed).permutation(n)[: self.n_batches * self.batch_size]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The one shape each input has during calibration (the calibration profile)."""
        return {n: (self.batch_size, *a.shape[1:]) for n, a in self.inputs.items()}

    def batch_indices(self, i: int) -> np.ndarray:
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers of the next batch, in the order of ``names``; ``None`` when all batches were given."""
        if self.index >= self.n_batches:
            return None
        unknown = [n for n in names if n not in self.inputs]
        if unknown:
            raise InputError(f"TensorRT asked for calibration inputs {unknown}; the data has {list(self.inputs)}")
        if self.stream is None:
            self.stream = self.cuda.stream_create()
        idx = self.batch_indices(self.index)
        staged = []  # keep host arrays alive until the copies finished
        for name in names:
            host = np.ascontiguousarray(self.inputs[name][idx], dtype=self.dtypes.get(name, np.float32))
            if name not in self.device:
                self.device[name] = self.cuda.malloc(host.nbytes)
            self.cuda.h2d(self.device[name], host, self.stream)
            staged.append(host)
        self.cuda.stream_sync(self.stream)
        self.index += 1
        return [self.device[n] for n in names]

    def close(self) -> None:
        for ptr in self.device.values():
            self.cuda.free(ptr)
        self.device.clear()
        if self.stream is not None:
            self.cuda.stream_destroy(self.stream)
            self.stream = None

    def describe(self) -> dict[str, Any]:
        return {"algorithm": "entropy2", "batch_size": self.batch_size, "batches": self.index,
                "samples": self.index * self.batch_size}


def make_entropy_calibrator(trt: Any, feeder: CalibrationFeeder) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``feeder``. Errors inside callbacks are kept on the feeder, because an
    exception raised into TensorRT's C++ caller would be lost; the build re-raises them."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return feeder.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                return feeder.get_batch(names)
            except BaseException as exc:
                feeder.error = exc
                return None

        def read_calibration_cache(self) -> None:
            return None  # always calibrate on this run's data

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.cache = bytes(cache)

    return EntropyCalibrator()


# ---- metadata ----------------------------------------------------------------------------------------------------
def engine_metadata(*, trt_version: str, device: dict[str, Any], precision: str, plan: BuildPlan,
                    profiles: dict[str, dict[str, list[int]]], workspace_mb: int, timing_cache: dict[str, Any],
                    calibration: dict[str, Any] | None, build_s: float, engine_sha256: str,
                    qdq: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metadata["tensorrt"]`` record: JSON types only, enough to tell where and how the engine runs."""
    return {
        "version": str(trt_version),
        "gpu": str(device.get("name")),
        "compute_capability": str(device.get("compute_capability")),
        "precision": precision,
        "int8_mode": plan.int8_mode,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.set_flags),
        "profiles": {k: {s: list(v[s]) for s in ("min", "opt", "max")} for k, v in profiles.items()},
        "workspace_mb": int(workspace_mb),
        "timing_cache": dict(timing_cache),
        "calibration": dict(calibration) if calibration else None,
        "qdq": dict(qdq) if qdq else None,
        "build_s": round(float(build_s), 3),
        "engine_sha256": engine_sha256,
    }


# ---- building -------------------------------------------------------------------------------------------------------
@dataclass
class EngineBuild:
    engine: bytes
    timing_cache: bytes
    plan: BuildPlan
    profiles: dict[str, dict[str, list[int]]]
    calibration: dict[str, Any] | None
    calibration_cache: bytes | None
    timing_cache_info: dict[str, Any]
    build_s: float
    notes: list[str]


def _first(messages: list[str], default: str) -> str:
    return " ".join((messages[0] if messages else default).split())[:240]


def plan_for(onnx_path: Path, *, config: ExportConfig, trt_major: int, calibration: Dataset | None) -> BuildPlan:
    """The build plan of ``onnx_path``: its Q/DQ content checked, then :func:`build_plan`."""
    qdq = qdq_info_of(onnx_path)
    if qdq["problems"]:
        raise InputError(f"{onnx_path} has {len(qdq['problems'])} Q/DQ nodes TensorRT cannot build "
                         f"(first: {qdq['problems'][0]}); it needs symmetric int8",
                         hint="re-quantize with symmetric int8 activations: modelpress quantize --mode static "
                              "--activation-type int8 --symmetric-activations")
    return build_plan(config.precision, trt_major=trt_major, qdq_nodes=qdq["nodes"],
                      has_calibration=calibration is not None and len(calibration) > 0, int8=config.trt_int8)


def qdq_info_of(path: Path) -> dict[str, Any]:
    from ..onnx_utils import load_onnx

    return qdq_info(load_onnx(path, with_data=False))


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_engine(onnx_path: Path, *, plan: BuildPlan, config: ExportConfig, calibration: Dataset | None, seed: int,
                 cuda: CudaApi) -> EngineBuild:
    """Parse ``onnx_path`` (already Q/DQ when ``plan`` says int8 "qdq") and build a serialized engine (TensorRT 10
    API); nothing is written here."""
    import tensorrt as trt

    from ..runtime.tensorrt import trt_logger

    if plan.quantize:
        raise ValueError("build_engine needs the Q/DQ model; quantize_qdq first")
    logger = trt_logger(trt)
    seen = len(logger.messages)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if plan.strongly_typed and strongly_typed is not None:  # TensorRT 11 has no flag: every network is strongly typed
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise InputError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {_first(errors, 'unknown error')}",
                         hint="check the ONNX opset and ops against TensorRT's ONNX operator support")
    specs = network_inputs([(t.name, tuple(t.shape), np.dtype(trt.nptype(t.dtype)).name)
                            for t in (network.get_input(i) for i in range(network.num_inputs))])
    profiles = profile_shapes(specs, batch=(config.min_batch, config.opt_batch, config.max_batch),
                              seq=(config.min_seq_len, config.opt_seq_len, config.max_seq_len))
    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mb) << 20)
    for name in plan.set_flags:
        bconf.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            bconf.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, p in profiles.items():
        profile.set_shape(name, p["min"], p["opt"], p["max"])
    bconf.add_optimization_profile(profile)
    notes: list[str] = []
    feeder = None
    if plan.int8_mode == "calibrated":
        if calibration is None:
            raise InputError("the INT8 calibrator needs calibration data")
        feeder = CalibrationFeeder(calibration.inputs, [s.name for s in specs],
                                   {s.name: np.dtype(s.dtype) for s in specs}, config.calibration_batch_size,
                                   config.calibration_batches, cuda, seed=seed)
        notes.append("INT8 calibrated with IInt8EntropyCalibrator2 (deprecated since TensorRT 10.1, removed in 11); "
                     "--trt-int8 qdq (the default) quantizes explicitly")
        calib_profile = builder.create_optimization_profile()
        for name, shape in feeder.shapes.items():
            calib_profile.set_shape(name, shape, shape, shape)
        bconf.set_calibration_profile(calib_profile)
        bconf.int8_calibrator = make_entropy_calibrator(trt, feeder)
    cache_info = _attach_timing_cache(bconf, config.timing_cache, notes, logger)
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, bconf)
    finally:
        if feeder is not None:
            feeder.close()
    build_s = time.perf_counter() - t0
    if feeder is not None and feeder.error is not None:
        raise feeder.error
    if serialized is None:
        raise InputError(f"TensorRT could not build an engine from {onnx_path}: "
                         f"{_first(logger.messages[seen:], 'no detail logged')}",
                         hint="a larger --workspace-mb or a different --precision may help")
    return EngineBuild(engine=bytes(serialized), timing_cache=bytes(bconf.get_timing_cache().serialize()), plan=plan,
                       profiles=profiles, calibration=feeder.describe() if feeder else None,
                       calibration_cache=feeder.cache if feeder else None, timing_cache_info=cache_info,
                       build_s=build_s, notes=notes)


def _attach_timing_cache(bconf: Any, path: str | None, notes: list[str], logger: Any) -> dict[str, Any]:
    """Reuse the timing cache at ``path`` when it loads and matches this GPU / TensorRT; else start a fresh one.

    The cache only speeds up builds, so a file that does not load is a note, not an error. "Loads" means no
    exception, no null cache, ``set_timing_cache`` true and no error logged meanwhile.
    """
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    reused = False
    if data:
        errors = logger.errors
        try:
            cache = bconf.create_timing_cache(data)
            reused = cache is not None and bool(bconf.set_timing_cache(cache, ignore_mismatch=False))
        except Exception:  # TensorRT raises its own error types for a cache it cannot read
            reused = False
        reused = reused and logger.errors == errors
        if not reused:
            notes.append(f"timing cache {path} was not usable (another GPU or TensorRT version, or corrupt); "
                         "built with a fresh one")
    if not reused:
        bconf.set_timing_cache(bconf.create_timing_cache(b""), ignore_mismatch=False)
    return {"path": path, "reused": reused, "bytes_in": len(data)}


# ---- the stage body ------------------------------------------------------------------------------------------------
def verify_samples(config: ExportConfig, n: int) -> int:
    """int8's top-1 rule needs a few hundred samples to resolve 0.99; the elementwise checks need fewer."""
    want = max(config.verify_samples, 500) if config.precision == "int8" else config.verify_samples
    return min(n, want)


def verify_engine(onnx_artifact: ModelArtifact, engine_artifact: ModelArtifact, data: Dataset, *,
                  config: ExportConfig, threads: int = 1) -> dict[str, Any]:
    """Engine vs onnxruntime at batch 1, an odd size and the whole sample (chunked to the profile's max batch)."""
    from ..runtime.sessions import make_runner
    from ..runtime.tensorrt import open_session

    n = verify_samples(config, len(data))
    sample = data.subset(slice(0, n))
    reference = make_runner(onnx_artifact, "onnxruntime", threads=threads)
    session = open_session(engine_artifact)
    sizes = sorted({1, min(n, 7), n})
    try:
        pairs = [(reference(batch), session.run(batch)) for size in sizes for batch, _ in sample.batches(size)]
    finally:
        session.close()
    report = compare_outputs(pairs, tolerance_for(config))
    report.update(n_samples=n, batch_sizes=sizes, precision=config.precision)
    return report


def gate_message(report: dict[str, Any], precision: str) -> str:
    """One line: which bound failed, with the numbers."""
    parts = [f"max abs diff {report['max_abs_diff']:.3g} (bound {report['atol']:.3g} + {report['rtol']:g}·|ref|)"]
    if report.get("min_top1") is not None:
        parts.append(f"top-1 agreement {report['top1_agreement']:.4f} (need ≥ {report['min_top1']:g})")
    if report.get("non_finite"):
        parts.append(f"{report['non_finite']} NaN/inf outputs")
    return (f"TensorRT {precision} outputs differ from onnxruntime on {report['n_samples']} samples: "
            + ", ".join(parts))


def export_tensorrt(artifact: ModelArtifact, config: ExportConfig, ctx: StageContext, *,
                    to_onnx: Callable[[ModelArtifact, ExportConfig, StageContext], ModelArtifact]) -> ModelArtifact:
    """The ``format: tensorrt`` branch of the export stage: verified ONNX → engine → verified engine.

    Side effects: writes ``model.onnx`` (for a torch input), ``model.engine``, for int8 from a float model
    ``model.qdq.onnx`` (or, with the deprecated calibrator, ``calibration.cache``) into ``ctx.work_dir``; rewrites
    ``config.timing_cache`` when one is named. ``to_onnx`` is the export stage's verified ONNX step (passed in:
    this module does not import export.py, which imports it).
    """
    from ..runtime.tensorrt import CudaRuntime, require_tensorrt

    require_tensorrt("export --format tensorrt", needs="TensorRT and a CUDA GPU")
    import tensorrt as trt

    if artifact.format == "tensorrt":
        raise InputError(f"{artifact.source} is already a TensorRT engine",
                         hint="export from the torch model or its ONNX artifact")
    data = ctx.eval or ctx.calibration or ctx.train
    if config.verify and data is None:
        raise InputError("export --verify needs sample data", hint="pass --data (or --no-verify)")
    onnx_artifact = to_onnx(artifact, config, ctx)
    calibration = ctx.calibration or ctx.train
    source = Path(onnx_artifact.path)
    plan = plan_for(source, config=config, trt_major=trt_major(trt), calibration=calibration)
    cuda = CudaRuntime()
    qdq = None
    if plan.quantize:
        if calibration is None:  # build_plan refuses this; kept for type checkers
            raise InputError("precision int8 on a model without Q/DQ nodes needs calibration data to quantize it")
        specs = onnx_artifact.inputs
        feeder = CalibrationFeeder(calibration.inputs, [i.name for i in specs],
                                   {i.name: np.dtype(i.dtype) for i in specs}, config.calibration_batch_size,
                                   config.calibration_batches, cuda, seed=ctx.seed)
        source = ctx.work_dir / "model.qdq.onnx"
        qdq = quantize_qdq(Path(onnx_artifact.path), source, calibration_batches(feeder))
        plan = dataclasses.replace(plan, quantize=False)
    elif plan.int8_mode == "qdq":
        qdq = {"source": "model", "nodes": qdq_info_of(source)["nodes"]}
    build = build_engine(source, plan=plan, config=config, calibration=calibration, seed=ctx.seed, cuda=cuda)
    engine_path = ctx.work_dir / "model.engine"
    write_bytes(engine_path, build.engine)
    if build.calibration_cache:
        write_bytes(ctx.work_dir / "calibration.cache", build.calibration_cache)
    if config.timing_cache:
        write_bytes(Path(config.timing_cache), build.timing_cache)
    metadata = dict(onnx_artifact.metadata)
    if "verification" in metadata:
        metadata["onnx_verification"] = metadata.pop("verification")
    metadata["tensorrt"] = engine_metadata(
        trt_version=trt.__version__, device=cuda.device_info(), precision=config.precision, plan=build.plan,
        profiles=build.profiles, workspace_mb=config.workspace_mb, timing_cache=build.timing_cache_info,
        calibration=build.calibration, build_s=build.build_s, engine_sha256=sha256_file(engine_path), qdq=qdq)
    engine_artifact = onnx_artifact.evolve(format="tensorrt", module=None, path=engine_path, metadata=metadata)
    ctx.notes.extend(build.notes)
    if config.verify and data is not None:
        report = verify_engine(onnx_artifact, engine_artifact, data, config=config, threads=ctx.threads)
        engine_artifact.metadata["verification"] = report
        if not report["passed"]:
            raise GateFailed(gate_message(report, config.precision),
                             hint="raise --trt-atol/--trt-rtol/--trt-min-top1 if the difference is expected")
    return engine_artifact


__all__ = [
    "DEFAULT_TOLERANCES", "BuildPlan", "CalibrationFeeder", "EngineBuild", "Tolerance", "build_engine", "build_plan",
    "check_range", "compare_outputs", "engine_metadata", "export_tensorrt", "gate_message", "make_entropy_calibrator",
    "network_inputs", "plan_for", "profile_shapes", "qdq_info", "quantize_qdq", "tolerance_for", "verify_engine",
    "verify_samples",
]
