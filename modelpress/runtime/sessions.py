"""Inference sessions: one runner per (artifact, backend, threads) that maps named numpy inputs to logits.

A backend is declared once, as a :class:`Backend` in :data:`BACKENDS` (name, the artifact formats it runs, whether
its memory is resident host memory, its availability check, its runner and, for backends that time themselves, a
latency hook). The evaluator, the verifications of export/TensorRT/quantize, the CLI's ``--backend`` choice and the
benchmarks all reach backends through this registry and :func:`make_runner`, so every number is measured through
the same code path; third-party backends come through the ``modelpress.backends`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..errors import InputError
from ..registry import Registry
from .runner import Runner

RunnerFactory = Callable[[ModelArtifact, int], Runner]
#: Backends that time themselves (e.g. with CUDA events) and may return several latency rows per batch size:
#: ``hook(artifact, batch, *, batch_size, threads, latency) -> [(stats, samples_ms), ...]``.
LatencyHook = Callable[..., list[tuple[dict[str, Any], np.ndarray]]]


@dataclass(frozen=True)
class Backend:
    """One inference backend, declared once.

    Attributes:
        name: what ``--backend`` and ``evaluate.backends`` take.
        formats: artifact formats it runs; the first backend registered for a format is that format's native one.
        runner: ``runner(artifact, threads) -> Runner``.
        measures_memory: its working memory is resident host memory (peak RSS of a child process means something).
        check_available: raises BackendUnavailable (exit 3) when it cannot run on this machine; ``None``: always.
        latency: a self-timing hook (see :data:`LatencyHook`), or ``None`` to time ``runner(batch)`` on the host.
    """

    name: str
    formats: tuple[str, ...]
    runner: RunnerFactory
    measures_memory: bool = False
    check_available: Callable[[], None] | None = None
    latency: LatencyHook | None = None


BACKENDS: Registry[Backend] = Registry("backend", entry_points="modelpress.backends")


def backend_names() -> tuple[str, ...]:
    """Registered backend names, in registration order (the CLI's ``--backend`` choice)."""
    return BACKENDS.names()


def native_backend(artifact: ModelArtifact) -> str:
    """The backend that runs ``artifact`` as it is: the first registered for its format."""
    for name, backend in BACKENDS.items():
        if artifact.format in backend.formats:
            return name
    raise InputError(f"no backend runs {artifact.format} models", hint=f"backends: {', '.join(backend_names())}")


def runs_format(backend: str, fmt: str) -> bool:
    """Whether ``backend`` is registered and runs artifacts of format ``fmt`` (no error for an unknown name)."""
    found = BACKENDS.find(backend)
    return found is not None and fmt in found.formats


def make_runner(artifact: ModelArtifact, backend: str, *, threads: int = 1) -> Runner:
    """Create a runner. ``threads`` is the intra-op thread count, set identically for every backend."""
    if threads < 1:
        raise InputError(f"threads must be ≥ 1, got {threads}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    return BACKENDS.get(backend).runner(artifact, threads)


def _first_output(out: Any) -> Any:
    if isinstance(out, dict):
        return out["logits"] if "logits" in out else next(iter(out.values()))
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _torch_runner(artifact: ModelArtifact, threads: int) -> Runner:
    import torch

    if artifact.format != "torch" or artifact.module is None:
        raise InputError(
            f"backend torch runs torch models; {artifact.source} is {artifact.format}",
            hint="use --backend onnxruntime for ONNX models",
        )
    set_torch_threads(threads)
    module = artifact.module.eval()
    names = tuple(s.name for s in artifact.inputs)

    def call(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = _first_output(module(*[torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names]))
        return out.float().numpy()

    return Runner("torch", threads, names, call)


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op thread count: process-wide, so the torch code that runs next owns the pool."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


#: ``ort_session_options(optimization=...)`` → onnxruntime's graph optimization levels.
ORT_OPTIMIZATION = ("all", "extended", "basic", "disabled")


def ort_session_options(*, threads: int, optimization: str = "all") -> Any:
    """The session settings every onnxruntime session of modelpress shares: fixed intra-op threads, one inter-op
    thread, sequential execution, errors-only logging, and full graph optimisation unless ``optimization`` says
    otherwise (the per-layer error pass disables it so every tensor keeps its name; the emulator stops at
    ``extended``, the level that fuses Q/DQ into integer kernels)."""
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    levels = {"all": level.ORT_ENABLE_ALL, "extended": level.ORT_ENABLE_EXTENDED, "basic": level.ORT_ENABLE_BASIC,
              "disabled": level.ORT_DISABLE_ALL}
    if optimization not in levels:
        raise InputError(f"onnxruntime optimization must be one of {', '.join(ORT_OPTIMIZATION)}, got {optimization!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[optimization]
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


def _ort_runner(artifact: ModelArtifact, threads: int) -> Runner:
    if artifact.format != "onnx" or artifact.path is None:
        raise InputError(
            f"backend onnxruntime runs ONNX models; {artifact.source} is {artifact.format}",
            hint="export it first (modelpress export MODEL --format onnx) or use --backend torch",
        )
    return ort_runner(artifact.path, threads=threads, source=artifact.source)


def ort_runner(path: str | Path, *, threads: int, source: str | None = None) -> Runner:
    """The onnxruntime :class:`Runner` of an ONNX file: its score output (:func:`score_output`), inputs by name
    (a single input by position), same-kind inputs cast to the declared type."""
    from ..onnx_utils import load_onnx

    load_onnx(path, with_data=False)  # external data checked before onnxruntime reads it
    session = ort_session(str(path), threads=threads)
    names = tuple(i.name for i in session.get_inputs())
    output = score_output([(o.name, o.type) for o in session.get_outputs()])
    wanted = {i.name: _ORT_DTYPES.get(i.type) for i in session.get_inputs()}
    fixed = _fixed_batch(session.get_inputs())
    source = source or str(path)

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run([output], {n: _cast(batch[n], wanted[n]) for n in names})[0], dtype=np.float32)

    def call(batch: dict[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in names if n not in batch]
        if missing:
            raise InputError(f"model {source} expects inputs {list(names)} (by name) but got {sorted(batch)}")
        n = len(next(iter(batch.values())))
        if fixed is None or n == fixed:
            return run(batch)
        # A fixed-batch model (export --static-batch) runs a larger batch as consecutive slices of its own size.
        if n % fixed:
            raise InputError(f"model {source} has a fixed batch of {fixed} but got a batch of {n}",
                             hint=f"use batch sizes that are multiples of {fixed}, or export with --dynamic-batch")
        return np.concatenate([run({k: v[i:i + fixed] for k, v in batch.items()}) for i in range(0, n, fixed)])

    return Runner("onnxruntime", threads, names, call)


#: onnxruntime input types → numpy dtypes: same-kind arrays (float32 data for a double input, int32 ids for int64)
#: are cast, so a converted model (skl2onnx ``DoubleTensorType``) takes the data as it is.
_ORT_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64),
               "tensor(float16)": np.dtype(np.float16), "tensor(int64)": np.dtype(np.int64),
               "tensor(int32)": np.dtype(np.int32)}


def _fixed_batch(inputs: Any) -> int | None:
    """The batch size every input fixes in its first dimension, or ``None`` when the batch axis is dynamic."""
    firsts = {i.shape[0] if i.shape else None for i in inputs}
    only = firsts.pop() if len(firsts) == 1 else None
    return only if isinstance(only, int) and only > 0 else None


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


def require_backend(name: str) -> None:
    """Raise BackendUnavailable (exit 3) when an explicitly requested backend cannot run on this machine
    (InputError, exit 2, for an unknown name)."""
    check = BACKENDS.get(name).check_available
    if check is not None:
        check()


def _require_tensorrt() -> None:
    from .tensorrt import require_tensorrt  # no tensorrt/cuda import until a TensorRT backend is asked for

    require_tensorrt("backend tensorrt")


def _tensorrt_runner(artifact: ModelArtifact, threads: int) -> Runner:
    from .tensorrt import make_tensorrt_runner

    return make_tensorrt_runner(artifact, threads)


def _tensorrt_latency(artifact: ModelArtifact, batch: dict[str, np.ndarray], **options: Any) -> list[Any]:
    from .tensorrt import tensorrt_latency

    return tensorrt_latency(artifact, batch, **options)


def register_builtins(registry: Registry[Backend]) -> None:
    """modelpress's own backends. TensorRT's memory is on the GPU, not resident host memory."""
    registry.add("torch", Backend("torch", ("torch",), _torch_runner, measures_memory=True))
    registry.add("onnxruntime", Backend("onnxruntime", ("onnx",), _ort_runner, measures_memory=True))
    registry.add("tensorrt", Backend("tensorrt", ("tensorrt",), _tensorrt_runner,
                                     check_available=_require_tensorrt, latency=_tensorrt_latency))


register_builtins(BACKENDS)
