"""Memory of inference: peak resident set size per backend × batch size, and the model's own weight bytes.

Each (backend, batch size) row is measured in a fresh CHILD process (``python -m modelpress.runtime.memory``) that
imports the runtime, reads the batch, then loads the saved artifact folder and creates the runner, so nothing the
parent allocated earlier (other models, datasets, torch's caches) pollutes the figure. In the child:

1. ``import_rss_bytes``: resident memory after imports and reading the batch (``VmRSS``);
2. ``baseline_rss_bytes``: after loading the model and creating the runner (the post-load baseline);
   ``load_delta_bytes`` = 2 − 1, what the loaded model and its runtime session occupy;
3. the peak counter is reset (``/proc/self/clear_refs`` ← ``5``, Linux ≥ 4.0), then the batch runs ``repeat``
   times; ``peak_rss_bytes`` = ``VmHWM``, the absolute peak while inferring, and ``peak_delta_bytes`` =
   ``peak_rss_bytes`` − ``baseline_rss_bytes``, the working memory inference needs on top of the loaded model.

Where the counter cannot be reset (older kernels, no ``/proc``) the peak is the process high-water mark since start
(``ru_maxrss`` off Linux), which may include a loading transient; the row says so with ``hwm_reset: false``.

``weight_bytes`` counts the bytes of the parameters and buffers (torch, packed int8 weights included) or of the
initializers and constants (ONNX), without loading external data: what the weights alone take, at their dtype.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import MANIFEST, ModelArtifact
from ..data import Dataset
from ..errors import BackendUnavailable, InputError, ModelpressError

__all__ = ["measure_memory", "memory_backends", "process_peak_rss_bytes", "weight_bytes"]



def memory_backends() -> tuple[str, ...]:
    """Backends whose working memory is resident host memory (:attr:`~.sessions.Backend.measures_memory`;
    TensorRT's lives on the GPU, which RSS does not see)."""
    from .sessions import BACKENDS

    return tuple(name for name, backend in BACKENDS.items() if backend.measures_memory)


CHILD_TIMEOUT_S = 600
METHOD = ("one child process per row; VmHWM reset after the model is loaded (/proc/self/clear_refs), "
          "so the peak covers inference only")


# ---- weights -----------------------------------------------------------------------------------------------
def weight_bytes(artifact: ModelArtifact) -> int | None:
    """Bytes of the model's weights at their stored dtype (``None`` for formats it cannot read, e.g. engines)."""
    if artifact.format == "torch" and artifact.module is not None:
        return _torch_bytes(artifact.module.state_dict())
    if artifact.format == "onnx" and artifact.path is not None:
        from ..onnx_utils import load_onnx

        return _onnx_bytes(load_onnx(artifact.path, with_data=False))
    return None


def _torch_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, dict):
        return sum(_torch_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):  # packed params of quantized Linear: (int8 weight, float bias)
        return sum(_torch_bytes(v) for v in value)
    return 0


def _onnx_bytes(model: Any) -> int:
    from onnx import helper

    def tensor_bytes(t: Any) -> int:
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            return 0
        return int(np.prod(t.dims, dtype=np.int64)) * itemsize if t.data_type != 8 else 0  # 8: strings

    total = sum(tensor_bytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(tensor_bytes(a.t) for a in node.attribute if a.name == "value")
    return total


# ---- this process ------------------------------------------------------------------------------------------
def process_peak_rss_bytes() -> int | None:
    """The process's peak resident memory so far (``ru_maxrss``, in bytes), or ``None`` where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS reports bytes, Linux KiB


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _current_rss() -> int | None:
    return _status_bytes("VmRSS")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int | None:
    return _status_bytes("VmHWM") or process_peak_rss_bytes()


# ---- the parent: one child per row -------------------------------------------------------------------------
def measure_memory(artifact: ModelArtifact, data: Dataset, *, backends: Sequence[str], batch_sizes: Sequence[int],
                   threads: int, repeat: int = 3, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Peak RSS of inference per backend × batch size (each in a fresh child process) and the weight bytes.

    Args:
        artifact: The model; a saved folder is used as it is, an unsaved one is saved to a temporary folder.
        data: Samples for the batches (the first ``batch_size`` samples, tiled when there are fewer).
        backends: Backends to measure; only those in :func:`memory_backends` (others are refused).
        batch_sizes: Batch sizes, each a row.
        threads: Intra-op threads in the child, as for latency.
        repeat: Calls of the batch after the peak counter is reset (allocator caches reach their steady state).
        timeout_s: Per child.

    Returns:
        ``{"weight_bytes", "method", "rows": [{backend, batch_size, threads, repeat, import_rss_bytes,
        baseline_rss_bytes, load_delta_bytes, peak_rss_bytes, peak_delta_bytes, hwm_reset}]}``.

    Raises:
        InputError: an unknown backend, a model that cannot be saved, or the child's own input error.
        ModelpressError: the child crashed (e.g. killed for memory) or ran over ``timeout_s``.
    """
    for backend in backends:
        if backend not in memory_backends():
            raise InputError(f"memory is measured on {', '.join(memory_backends())}, not {backend!r}",
                             hint="GPU memory is not resident host memory")
    if repeat < 1:
        raise InputError(f"memory repeat must be ≥ 1, got {repeat}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelpress-memory-") as scratch:
        ref = _saved_reference(artifact, Path(scratch))
        for bs in batch_sizes:
            batch_path = Path(scratch) / f"batch-{int(bs)}.npz"
            reps = -(-int(bs) // len(data))
            np.savez(batch_path, **{k: np.ascontiguousarray(np.concatenate([v[: int(bs)]] * reps)[: int(bs)])
                                    for k, v in data.inputs.items()})
            for backend in backends:
                row = _run_child(ref, backend, batch_path, threads=threads, repeat=repeat, timeout_s=timeout_s,
                                 code=str((artifact.builder or {}).get("ref", "")))
                rows.append({"backend": backend, "batch_size": int(bs), "threads": threads, "repeat": repeat, **row})
    return {"weight_bytes": weight_bytes(artifact), "method": METHOD, "rows": rows}


def _saved_reference(artifact: ModelArtifact, scratch: Path) -> str:
    """An artifact folder the child can load: the artifact's own, or a copy saved under ``scratch``."""
    path = Path(artifact.path) if artifact.path is not None else None
    if path is not None:
        folder = path if path.is_dir() else path.parent
        if (folder / MANIFEST).is_file() and (artifact.format == "torch" or path.name in ("model.onnx",
                                                                                          "model.engine")):
            return str(folder)
    if artifact.format == "torch" and artifact.builder is None:
        raise InputError(f"cannot measure the memory of {artifact.source}: modelpress cannot save this module",
                         hint="load it from zoo:NAME or pkg.module:factory, or turn memory off")
    artifact.save(scratch / "model")
    return str(scratch / "model")


def _run_child(ref: str, backend: str, batch: Path, *, threads: int, repeat: int, timeout_s: float,
               code: str = "") -> dict[str, Any]:
    """Measure in a child. ``code``: the builder this process already ran for the artifact; the child may rebuild
    the saved folder with it (a new process starts with no trusted code, SECURITY.md)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, MODELPRESS_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "modelpress.runtime.memory", "--model", ref, "--backend", backend,
               "--batch", str(batch), "--threads", str(threads), "--repeat", str(repeat)]
    from ..sources import code_ref

    if code_ref(code):
        command += ["--model-code", code]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelpressError(f"memory probe {backend} b{batch.stem.split('-')[-1]} ran over {timeout_s:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "error" in result or not result:
        message = result.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        code = result.get("exit_code")
        cls = {2: InputError, 3: BackendUnavailable}.get(code, ModelpressError)
        raise cls(f"memory probe {backend} (exit {done.returncode}): {message}")
    return result


# ---- the child ---------------------------------------------------------------------------------------------
def _child(model: str, backend: str, batch_path: str, threads: int, repeat: int) -> dict[str, Any]:
    import importlib

    importlib.import_module("torch" if backend == "torch" else "onnxruntime")
    from ..sources import load_model
    from .sessions import make_runner

    with np.load(batch_path, allow_pickle=False) as npz:
        batch = {k: np.ascontiguousarray(npz[k]) for k in npz.files}
    before = _current_rss()
    runner = make_runner(load_model(model), backend, threads=threads)
    baseline = _current_rss()
    reset = _reset_peak()
    for _ in range(repeat):
        runner(batch)
    peak = _peak_rss()
    return {
        "import_rss_bytes": before,
        "baseline_rss_bytes": baseline,
        "load_delta_bytes": baseline - before if baseline is not None and before is not None else None,
        "peak_rss_bytes": peak,
        "peak_delta_bytes": max(0, peak - baseline) if peak is not None and baseline is not None else None,
        "hwm_reset": reset,
    }


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of the child: one JSON line on stdout (the row, or ``{"error", "exit_code"}``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m modelpress.runtime.memory")
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", required=True, choices=memory_backends())
    parser.add_argument("--batch", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model-code", action="append", default=[])
    args = parser.parse_args(list(argv))
    from ..sources import trusted_code

    try:
        with trusted_code(args.model_code):
            row = _child(args.model, args.backend, args.batch, args.threads, args.repeat)
    except ModelpressError as exc:
        print(json.dumps({"error": exc.format_message(), "exit_code": exc.exit_code}))
        return exc.exit_code
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
