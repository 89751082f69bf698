"""Inference backends: one callable per (artifact, backend, threads) that maps named numpy inputs to logits.

Backends register by name; the evaluator, the exporter's verification and the benchmarks all reach them through
:func:`make_runner`, so every number is measured through the same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..errors import InputError

RunnerFactory = Callable[[ModelArtifact, int], "Runner"]
BACKENDS: dict[str, RunnerFactory] = {}


def register_backend(name: str) -> Callable[[RunnerFactory], RunnerFactory]:
    def decorate(factory: RunnerFactory) -> RunnerFactory:
        BACKENDS[name] = factory
        return factory

    return decorate


@dataclass
class Runner:
    """``runner(batch)`` → logits (n, classes) as float32 numpy. ``input_names`` is the order the model takes."""

    backend: str
    threads: int
    input_names: tuple[str, ...]
    call: Callable[[dict[str, np.ndarray]], np.ndarray]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if len(batch) == 1 and len(self.input_names) == 1 and self.input_names[0] not in batch:
            batch = {self.input_names[0]: next(iter(batch.values()))}
        return self.call(batch)


def make_runner(artifact: ModelArtifact, backend: str, *, threads: int = 1) -> Runner:
    """Create a runner. ``threads`` is the intra-op thread count, set identically for every backend."""
    if threads < 1:
        raise InputError(f"threads must be ≥ 1, got {threads}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](artifact, threads)


def available_backends() -> list[str]:
    return list(BACKENDS)


def _first_output(out: Any) -> Any:
    if isinstance(out, dict):
        return out["logits"] if "logits" in out else next(iter(out.values()))
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


@register_backend("torch")
def _torch_runner(artifact: ModelArtifact, threads: int) -> Runner:
    import torch

    if artifact.format != "torch" or artifact.module is None:
        raise InputError(
            f"backend torch runs torch models; {artifact.source} is {artifact.format}",
            hint="use --backend onnxruntime for ONNX models",
        )
    torch.set_num_threads(threads)  # process-wide: the torch backend owns the intra-op pool while it runs
    module = artifact.module.eval()
    names = tuple(s.name for s in artifact.inputs)

    def call(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = _first_output(module(*[torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names]))
        return out.float().numpy()

    return Runner("torch", threads, names, call)


def ort_session_options(*, threads: int) -> Any:
    """The session settings every onnxruntime measurement shares: fixed intra-op threads, one inter-op thread,
    sequential execution, full graph optimisation, errors-only logging."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def ort_session(path: str, *, threads: int, providers: list[str] | None = None) -> Any:
    """An onnxruntime session with a fixed thread count and full graph optimisation."""
    import onnxruntime as ort

    opts = ort_session_options(threads=threads)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise InputError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None


@register_backend("onnxruntime")
def _ort_runner(artifact: ModelArtifact, threads: int) -> Runner:
    if artifact.format != "onnx" or artifact.path is None:
        raise InputError(
            f"backend onnxruntime runs ONNX models; {artifact.source} is {artifact.format}",
            hint="export it first (modelpress export MODEL --format onnx) or use --backend torch",
        )
    from ..onnx_utils import load_onnx

    load_onnx(artifact.path, with_data=False)  # external data checked before onnxruntime reads it
    session = ort_session(str(artifact.path), threads=threads)
    names = tuple(i.name for i in session.get_inputs())
    output = score_output([(o.name, o.type) for o in session.get_outputs()])
    wanted = {i.name: _ORT_DTYPES.get(i.type) for i in session.get_inputs()}

    def call(batch: dict[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in names if n not in batch]
        if missing:
            raise InputError(f"model {artifact.source} expects inputs {list(names)} (by name) but got {sorted(batch)}")
        return np.asarray(session.run([output], {n: _cast(batch[n], wanted[n]) for n in names})[0], dtype=np.float32)

    return Runner("onnxruntime", threads, names, call)


#: onnxruntime input types → numpy dtypes: same-kind arrays (float32 data for a double input, int32 ids for int64)
#: are cast, so a converted model (skl2onnx ``DoubleTensorType``) takes the data as it is.
_ORT_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64),
               "tensor(float16)": np.dtype(np.float16), "tensor(int64)": np.dtype(np.int64),
               "tensor(int32)": np.dtype(np.int32)}


def _cast(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    if dtype is None or array.dtype == dtype:
        return array
    same_kind = (array.dtype.kind == "f") == (dtype.kind == "f") and array.dtype.kind in "fiu"
    return array.astype(dtype) if same_kind else array


def score_output(outputs: list[tuple[str, str]]) -> str:
    """The output that holds the scores: the first float tensor (a converted classifier may put an integer
    ``label`` output first), else the first output. ``outputs`` are (name, onnxruntime type) pairs."""
    floats = [name for name, kind in outputs if kind in ("tensor(float)", "tensor(double)", "tensor(float16)")]
    return floats[0] if floats else outputs[0][0]


AVAILABILITY: dict[str, Callable[[], None]] = {}


def require_backend(name: str) -> None:
    """Raise BackendUnavailable (exit 3) when an explicitly requested backend cannot run on this machine."""
    check = AVAILABILITY.get(name)
    if check is not None:
        check()


def _require_tensorrt() -> None:
    from .tensorrt import require_tensorrt  # no tensorrt/cuda import until a TensorRT backend is asked for

    require_tensorrt("backend tensorrt")


AVAILABILITY["tensorrt"] = _require_tensorrt

#: Backends that time themselves (e.g. with CUDA events) and may return several latency rows per batch size:
#: ``hook(artifact, batch, *, batch_size, threads, latency) -> [(stats, samples_ms), ...]``.
LatencyHook = Callable[..., list[tuple[dict[str, Any], np.ndarray]]]
LATENCY_HOOKS: dict[str, LatencyHook] = {}


@register_backend("tensorrt")
def _tensorrt_runner(artifact: ModelArtifact, threads: int) -> Runner:
    from .tensorrt import make_tensorrt_runner

    return make_tensorrt_runner(artifact, threads)


def _tensorrt_latency(artifact: ModelArtifact, batch: dict[str, np.ndarray], **options: Any) -> list[Any]:
    from .tensorrt import tensorrt_latency

    return tensorrt_latency(artifact, batch, **options)


LATENCY_HOOKS["tensorrt"] = _tensorrt_latency
