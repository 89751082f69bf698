"""TensorRT runner: run a serialized engine on a CUDA GPU and time it with CUDA events.

Memory and streams go through cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` in
cuda-python < 12.6) rather than torch: the torch wheel modelpress installs is CPU-only. Every ``tensorrt`` and
``cuda`` import happens inside a function, so this module imports on any machine.

The logic that does not need a GPU — buffer sizing, batch chunking and padding, dtype casts, the latency loop — works
on two small interfaces (:class:`EngineIO` for an engine + execution context, :class:`CudaApi` for memory, streams
and events), so tests drive it with numpy fakes. Latency is reported as two rows per batch size: ``tensorrt``
(CUDA events around ``execute_async_v3`` only: what the GPU spends) and ``tensorrt+copy`` (events around
host→device copy, execute and device→host copy from pinned buffers: what a caller holding host arrays waits).

None of this has run on a GPU yet: it is written against the TensorRT 10 and cuda-python 12 APIs and exercised only
through the fakes of tests/tensorrt (tests/tensorrt/test_trt_gpu.py holds the real checks, skipped without a GPU).
"""

from __future__ import annotations

import ctypes
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..artifacts import ModelArtifact
from ..errors import BackendUnavailable, InputError, ModelpressError
from .latency import LatencyConfig, summarize_samples

INSTALL_HINT = ("pip install 'modelpress[tensorrt]' (TensorRT 10 + cuda-python) on a machine with an NVIDIA GPU "
                "and driver")
COMPUTE_BACKEND = "tensorrt"
COPY_BACKEND = "tensorrt+copy"


# ---- availability ------------------------------------------------------------------------------------------------
def cudart_module() -> Any:
    """cuda-python's runtime module (``cudart``), whichever layout the installed version has."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6

        return runtime
    except ImportError:
        from cuda import cudart  # type: ignore[attr-defined,no-redef]  # older cuda-python

        return cudart


def tensorrt_missing() -> str | None:
    """What this machine lacks to run TensorRT (``None`` when nothing): the package, cuda-python or a GPU."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    except Exception as exc:  # a broken install (missing libnvinfer, wrong CUDA) raises OSError and friends
        return f"the tensorrt package does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    try:
        cudart = cudart_module()
    except ImportError:
        return "cuda-python is not installed"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the runtime library itself may be missing
        return f"the CUDA runtime does not load ({type(exc).__name__})"
    if int(err) != 0:
        return f"no CUDA GPU is usable (cudaGetDeviceCount: {_error_name(cudart, err)})"
    if count < 1:
        return "no CUDA GPU was found"
    return None


def require_tensorrt(what: str = "backend tensorrt", *,
                     needs: str = "the TensorRT Python package and a CUDA GPU") -> None:
    """Raise BackendUnavailable (exit 3) naming what is missing and how to install it.

    Args:
        what: What asked for TensorRT, the start of the message ("export --format tensorrt").
        needs: What it needs, in words.
    """
    missing = tensorrt_missing()
    if missing is not None:
        raise BackendUnavailable(f"{what} needs {needs}, but {missing}", hint=INSTALL_HINT)


def _error_name(cudart: Any, err: Any) -> str:
    try:
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
    except Exception:
        text = ""
    name = getattr(err, "name", str(err))
    return f"{name}: {text}" if text else name


# ---- the two interfaces ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    """One engine I/O tensor. Inputs carry the (min, opt, max) shapes of optimization profile 0."""

    name: str
    is_input: bool
    dtype: np.dtype
    min_shape: tuple[int, ...] = ()
    opt_shape: tuple[int, ...] = ()
    max_shape: tuple[int, ...] = ()


class EngineIO(Protocol):
    """An engine plus one execution context, reduced to what running it needs."""

    tensors: tuple[TensorInfo, ...]

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None: ...

    def output_shape(self, name: str) -> tuple[int, ...]: ...

    def set_address(self, name: str, ptr: int) -> None: ...

    def execute(self, stream: Any) -> None: ...


class CudaApi(Protocol):
    """Device memory, pinned host memory, streams and events. Pointers are ints; sizes are bytes."""

    def malloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def host_empty(self, nbytes: int) -> np.ndarray: ...

    def host_free(self, array: np.ndarray) -> None: ...

    def h2d(self, dst: int, src: np.ndarray, stream: Any) -> None: ...

    def d2h(self, dst: np.ndarray, src: int, stream: Any) -> None: ...

    def stream_create(self) -> Any: ...

    def stream_sync(self, stream: Any) -> None: ...

    def stream_destroy(self, stream: Any) -> None: ...

    def event_create(self) -> Any: ...

    def event_record(self, event: Any, stream: Any) -> None: ...

    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    def event_destroy(self, event: Any) -> None: ...


class CudaRuntime:
    """:class:`CudaApi` on cuda-python's runtime bindings; every call's error code is checked."""

    def __init__(self) -> None:
        self.rt = cudart_module()

    def _call(self, name: str, *args: Any) -> Any:
        out = getattr(self.rt, name)(*args)
        err, rest = out[0], out[1:]
        if int(err) != 0:
            raise ModelpressError(f"CUDA call {name} failed: {_error_name(self.rt, err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(1, int(nbytes))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def host_empty(self, nbytes: int) -> np.ndarray:
        size = max(1, int(nbytes))
        ptr = int(self._call("cudaMallocHost", size))
        return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(ptr))[:nbytes]

    def host_free(self, array: np.ndarray) -> None:
        self._call("cudaFreeHost", array.ctypes.data)  # the view starts at the pinned allocation

    def h2d(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def d2h(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreate")

    def stream_sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def event_create(self) -> Any:
        return self._call("cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._call("cudaEventSynchronize", end)
        return float(self._call("cudaEventElapsedTime", start, end))

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)

    def device_info(self, device: int = 0) -> dict[str, Any]:
        """Name, compute capability ("8.6") and memory of ``device``, for artifact metadata."""
        prop = self._call("cudaGetDeviceProperties", device)
        name = prop.name
        name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        return {"name": name.strip(), "compute_capability": f"{prop.major}.{prop.minor}",
                "total_memory_bytes": int(prop.totalGlobalMem)}


class TrtEngineIO:
    """:class:`EngineIO` over a deserialized ``ICudaEngine`` (TensorRT 10 name-based API, profile 0)."""

    def __init__(self, engine: Any, trt: Any, keep: Sequence[Any] = ()) -> None:
        self.engine, self.trt = engine, trt
        self._keep = tuple(keep)  # the runtime and logger must outlive the engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ModelpressError("TensorRT could not create an execution context (out of GPU memory?)")
        tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shapes: tuple[tuple[int, ...], ...] = ((), (), ())
            if is_input:
                shapes = tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
            tensors.append(TensorInfo(name, is_input, dtype, *shapes))
        self.tensors = tuple(tensors)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, tuple(int(d) for d in shape)):
            raise InputError(f"TensorRT refused input {name!r} of shape {tuple(shape)}")

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(name))

    def set_address(self, name: str, ptr: int) -> None:
        self.context.set_tensor_address(name, int(ptr))

    def execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream_handle=stream):
            raise ModelpressError("TensorRT execute_async_v3 failed")


# ---- a session: buffers sized for the profile's largest shapes ----------------------------------------------------
class TensorRTSession:
    """Runs batches of any size through an engine: chunked to the profile's max batch, padded to its min batch."""

    def __init__(self, engine: EngineIO, cuda: CudaApi, *, source: str = "engine") -> None:
        self.engine, self.cuda, self.source = engine, cuda, source
        self.inputs = tuple(t for t in engine.tensors if t.is_input)
        self.outputs = tuple(t for t in engine.tensors if not t.is_input)
        if not self.inputs or not self.outputs:
            raise InputError(f"TensorRT engine {source} has {len(self.inputs)} inputs and {len(self.outputs)} outputs")
        self.output = next((t for t in self.outputs if t.name == "logits"), self.outputs[0])
        self.min_batch = max(t.min_shape[0] for t in self.inputs)
        self.max_batch = min(t.max_shape[0] for t in self.inputs)
        self.stream = cuda.stream_create()
        self.device: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, _release, cuda, self.device, self.stream)
        for t in self.inputs:
            engine.set_input_shape(t.name, t.max_shape)
            self.device[t.name] = cuda.malloc(_nbytes(t.max_shape, t.dtype))
        for t in self.outputs:
            shape = engine.output_shape(t.name)
            if any(d < 0 for d in shape):
                raise InputError(f"TensorRT engine {source}: output {t.name!r} has a data-dependent shape {shape}")
            self.device[t.name] = cuda.malloc(_nbytes(shape, t.dtype))
        for name, ptr in self.device.items():
            engine.set_address(name, ptr)

    def close(self) -> None:
        """Free device memory and the stream now (otherwise when the session is garbage-collected)."""
        self._finalizer()

    def _arrays(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self.inputs) == 1 and len(batch) == 1 and self.inputs[0].name not in batch:
            batch = {self.inputs[0].name: next(iter(batch.values()))}
        missing = [t.name for t in self.inputs if t.name not in batch]
        if missing:
            raise InputError(f"TensorRT engine {self.source} expects inputs {[t.name for t in self.inputs]} "
                             f"but the data has {sorted(batch)}")
        out = {}
        for t in self.inputs:
            arr = np.asarray(batch[t.name])
            check_shape(t, arr.shape, source=self.source, batch_axis=False)
            out[t.name] = np.ascontiguousarray(arr, dtype=t.dtype)
        sizes = {len(a) for a in out.values()}
        if len(sizes) != 1:
            raise InputError(f"TensorRT engine {self.source}: inputs have different sample counts {sorted(sizes)}")
        return out

    def _set_shapes(self, arrays: dict[str, np.ndarray]) -> tuple[int, ...]:
        for t in self.inputs:
            self.engine.set_input_shape(t.name, arrays[t.name].shape)
        return self.engine.output_shape(self.output.name)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for every sample of ``batch`` (host arrays in, host array out; the stream is synchronized)."""
        arrays = self._arrays(batch)
        n = len(next(iter(arrays.values())))
        parts = []
        for lo in range(0, n, self.max_batch):
            chunk = {k: v[lo:lo + self.max_batch] for k, v in arrays.items()}
            parts.append(self._run_chunk(chunk))
        if not parts:
            return np.zeros((0, *self.engine.output_shape(self.output.name)[1:]), dtype=np.float32)
        return np.concatenate(parts)

    def _run_chunk(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        m = len(next(iter(chunk.values())))
        if m < self.min_batch:  # samples are independent: repeat the last one, drop its outputs afterwards
            chunk = {k: np.ascontiguousarray(np.concatenate([v, np.repeat(v[-1:], self.min_batch - m, 0)]))
                     for k, v in chunk.items()}
        out_shape = self._set_shapes(chunk)
        for name, arr in chunk.items():
            self.cuda.h2d(self.device[name], arr, self.stream)
        self.engine.execute(self.stream)
        host = np.empty(out_shape, dtype=self.output.dtype)
        self.cuda.d2h(host, self.device[self.output.name], self.stream)
        self.cuda.stream_sync(self.stream)
        return host[:m].astype(np.float32, copy=False)

    def bind(self, batch: dict[str, np.ndarray]) -> BoundBatch:
        """Fix shapes and pinned host buffers for repeated timed calls on one batch."""
        arrays = self._arrays(batch)
        n = len(next(iter(arrays.values())))
        if not self.min_batch <= n <= self.max_batch:
            raise InputError(f"latency batch size {n} is outside the engine's batch range "
                             f"[{self.min_batch}, {self.max_batch}]", hint="rebuild with --min-batch/--max-batch")
        return BoundBatch(self, arrays)


class BoundBatch:
    """One batch staged in pinned host memory, with shapes set, ready for :meth:`device_ms` calls."""

    def __init__(self, session: TensorRTSession, arrays: dict[str, np.ndarray]) -> None:
        self.session = session
        cuda = session.cuda
        self.out_shape = session._set_shapes(arrays)
        self.host_in: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            buf = cuda.host_empty(arr.nbytes)
            buf[:] = arr.reshape(-1).view(np.uint8)
            self.host_in[name] = buf
            cuda.h2d(session.device[name], buf, session.stream)
        self.host_out = cuda.host_empty(_nbytes(self.out_shape, session.output.dtype))
        self.start, self.end = cuda.event_create(), cuda.event_create()
        cuda.stream_sync(session.stream)

    def device_ms(self, copies: bool) -> float:
        """One synchronized call; milliseconds between CUDA events (around execute, or copy+execute+copy)."""
        s, cuda = self.session, self.session.cuda
        cuda.event_record(self.start, s.stream)
        if copies:
            for name, buf in self.host_in.items():
                cuda.h2d(s.device[name], buf, s.stream)
        s.engine.execute(s.stream)
        if copies:
            cuda.d2h(self.host_out, s.device[s.output.name], s.stream)
        cuda.event_record(self.end, s.stream)
        return cuda.event_elapsed_ms(self.start, self.end)

    def output(self) -> np.ndarray:
        """The logits last copied into the pinned output buffer (after a ``device_ms(copies=True)`` call)."""
        return self.host_out.view(self.session.output.dtype).reshape(self.out_shape).astype(np.float32)

    def close(self) -> None:
        cuda = self.session.cuda
        for buf in (*self.host_in.values(), self.host_out):
            cuda.host_free(buf)
        cuda.event_destroy(self.start)
        cuda.event_destroy(self.end)
        self.host_in = {}


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(math.prod(int(d) for d in shape)) * np.dtype(dtype).itemsize


def _release(cuda: CudaApi, device: dict[str, int], stream: Any) -> None:
    for ptr in device.values():
        try:
            cuda.free(ptr)
        except ModelpressError:
            pass  # freeing at interpreter exit may find the context already gone
    device.clear()
    try:
        cuda.stream_destroy(stream)
    except ModelpressError:
        pass


def check_shape(info: TensorInfo, shape: Sequence[int], *, source: str, batch_axis: bool = True) -> None:
    """InputError unless ``shape`` fits the profile range of ``info`` on every axis (the batch axis optionally)."""
    if len(shape) != len(info.max_shape):
        raise InputError(f"TensorRT engine {source} expects input {info.name!r} of rank {len(info.max_shape)}, "
                         f"got shape {tuple(shape)}")
    for axis, (have, lo, hi) in enumerate(zip(shape, info.min_shape, info.max_shape)):
        if axis == 0 and not batch_axis:
            continue
        if not lo <= have <= hi:
            what = "batch size" if axis == 0 else f"dim {axis}"
            hint = "rebuild with a wider --min/--max-seq-len" if axis > 0 else "rebuild with --min/--max-batch"
            raise InputError(f"input {info.name!r} {what} = {have} is outside the engine's profile [{lo}, {hi}]",
                             hint=hint if lo != hi else None)


# ---- latency ----------------------------------------------------------------------------------------------------
def measure_device_latency(call_ms: Callable[[], float], *, config: LatencyConfig, batch_size: int, threads: int,
                           backend: str, includes_copies: bool, cold_start_ms: float | None = None,
                           timer: Callable[[], float] = time.perf_counter) -> tuple[dict[str, Any], np.ndarray]:
    """Warm up, then collect ``call_ms()`` (device milliseconds per synchronized call) until ``config`` says stop.

    The stop rules are those of :func:`~modelpress.runtime.latency.measure_latency` (call counts and host seconds),
    but each sample is what the call returns — a CUDA-event interval — not host time, so Python overhead and
    launch latency are not counted.

    Returns:
        ``(stats, samples_ms)`` with the summary keys of a report latency row plus ``clock`` and
        ``includes_copies``.
    """
    warmup = 0
    start = timer()
    while warmup < config.warmup_min_calls or timer() - start < config.warmup_min_s:
        call_ms()
        warmup += 1
    samples: list[float] = []
    t0 = timer()
    while True:
        samples.append(float(call_ms()))
        n, elapsed = len(samples), timer() - t0
        if elapsed >= config.max_s or n >= config.max_calls or (n >= config.min_calls and elapsed >= config.min_s):
            break
    arr = np.asarray(samples, dtype=np.float64)
    stats = summarize_samples(arr, batch_size=batch_size, threads=threads, backend=backend, warmup=warmup,
                              cold_start_ms=cold_start_ms)
    stats["clock"] = "cuda_events"
    stats["includes_copies"] = includes_copies
    return stats, arr


def time_session(make_session: Callable[[], TensorRTSession], batch: dict[str, np.ndarray], *, batch_size: int,
                 threads: int, latency: LatencyConfig,
                 timer: Callable[[], float] = time.perf_counter) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Cold start (engine load + context + first call, host clock), then the two CUDA-event latency rows."""
    t0 = timer()
    session = make_session()
    session.run(batch)
    cold_ms = (timer() - t0) * 1e3
    bound = session.bind(batch)
    try:
        rows = []
        for backend, copies in ((COMPUTE_BACKEND, False), (COPY_BACKEND, True)):
            rows.append(measure_device_latency(
                lambda copies=copies: bound.device_ms(copies), config=latency, batch_size=batch_size,
                threads=threads, backend=backend, includes_copies=copies, cold_start_ms=cold_ms, timer=timer))
        return rows
    finally:
        bound.close()
        session.close()


# ---- engines from artifacts ---------------------------------------------------------------------------------------
def check_engine_compatible(metadata: dict[str, Any], *, trt_version: str, compute_capability: str,
                            source: str) -> None:
    """InputError when an engine was built by another TensorRT version or for another GPU architecture.

    TensorRT engines are tied to both; deserializing a foreign one fails with a cryptic log line, so the manifest's
    record is checked first and the message says how to rebuild.
    """
    built = metadata.get("tensorrt") or {}
    want_v, want_cc = built.get("version"), built.get("compute_capability")
    hint = "rebuild the engine on this machine: modelpress export MODEL --format tensorrt"
    if want_v and want_v != trt_version:
        raise InputError(f"engine {source} was built with TensorRT {want_v}; this machine has {trt_version}", hint=hint)
    if want_cc and want_cc != compute_capability:
        raise InputError(f"engine {source} was built for compute capability {want_cc}; this GPU is "
                         f"{compute_capability}", hint=hint)


_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """The process's one TensorRT logger: it keeps warnings and errors in ``.messages`` instead of printing them.

    One instance for every builder and runtime, because TensorRT treats the logger as a process-wide singleton.
    Callers note ``len(logger.messages)`` (or ``logger.errors``) before a call and read what was added after it.
    """
    global _LOGGER
    if _LOGGER is None:
        class Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []
                self.errors = 0  # a running count, so a caller can tell whether a call logged an error

            def log(self, severity: Any, msg: str) -> None:
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    self.messages.append(" ".join(str(msg).split()))
                    del self.messages[:-200]  # bounded: only the latest lines are ever reported
                if int(severity) <= int(trt.ILogger.Severity.ERROR):
                    self.errors += 1

        _LOGGER = Logger()
    return _LOGGER


def load_engine(path: Path, metadata: dict[str, Any], *, cuda: CudaRuntime) -> TrtEngineIO:
    """Check the manifest record and the file hash, then deserialize ``path``."""
    import tensorrt as trt

    from ..io import sha256_file

    info = cuda.device_info()
    check_engine_compatible(metadata, trt_version=trt.__version__, compute_capability=info["compute_capability"],
                            source=str(path))
    if not path.is_file():
        raise InputError(f"engine {path} is missing")
    want = (metadata.get("tensorrt") or {}).get("engine_sha256")
    if want and sha256_file(path) != want:
        raise InputError(f"engine {path} is truncated or corrupt (sha256 differs from its manifest)")
    logger = trt_logger(trt)
    seen = len(logger.messages)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        new = logger.messages[seen:]
        detail = new[-1][:200] if new else "no detail"
        raise InputError(f"TensorRT {trt.__version__} cannot load engine {path} ({detail})",
                         hint="rebuild it on this machine with modelpress export --format tensorrt")
    return TrtEngineIO(engine, trt, keep=(runtime, logger))


def open_session(artifact: ModelArtifact) -> TensorRTSession:
    """A session on ``artifact``'s engine; InputError for anything but a saved TensorRT artifact."""
    if artifact.format != "tensorrt" or artifact.path is None:
        raise InputError(f"backend tensorrt runs TensorRT engines; {artifact.source} is {artifact.format}",
                         hint="build one: modelpress export MODEL --format tensorrt -o DIR")
    require_tensorrt()
    cuda = CudaRuntime()
    return TensorRTSession(load_engine(Path(artifact.path), artifact.metadata, cuda=cuda), cuda,
                           source=str(artifact.path))


def make_tensorrt_runner(artifact: ModelArtifact, threads: int) -> Any:
    """The :class:`~modelpress.runtime.runner.Runner` for backend ``tensorrt`` (host arrays in and out)."""
    from .runner import Runner

    session = open_session(artifact)
    return Runner(COMPUTE_BACKEND, threads, tuple(t.name for t in session.inputs), session.run)


def tensorrt_latency(artifact: ModelArtifact, batch: dict[str, np.ndarray], *, batch_size: int, threads: int,
                     latency: LatencyConfig) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Latency rows ``tensorrt`` and ``tensorrt+copy`` for one batch size (``threads`` is recorded, not used)."""
    return time_session(lambda: open_session(artifact), batch, batch_size=batch_size, threads=threads,
                        latency=latency)
