"""Judge any artifact on a dataset: metrics, fidelity to a reference, latency and footprint.

The evaluator never imports ``compress/``: it judges whatever it is given, on the backends that can run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import progress
from ..runtime.emulate import host_mismatch_note
from ..artifacts import ModelArtifact, check_inputs
from ..data import Dataset
from ..errors import InputError, ModelpressError
from ..runtime.sessions import BACKENDS, LATENCY_HOOKS, make_runner, require_backend
from ..runtime.footprint import footprint
from ..runtime.latency import LatencyConfig, measure_cold_start, measure_latency
from ..runtime.memory import MEMORY_BACKENDS, measure_memory
from ..runtime.metrics import classification_metrics, fidelity, to_probabilities

NATIVE_BACKEND = {"torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
BACKEND_FORMATS = {"torch": ("torch",), "onnxruntime": ("onnx",), "tensorrt": ("tensorrt",)}


@dataclass(frozen=True)
class EvalConfig:
    """What to measure. Latency uses the same ``threads`` on every backend."""

    backends: tuple[str, ...] = ()  # empty: the artifact's native backend only
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    predict_batch_size: int = 256
    measure_latency: bool = True
    # More measurements (README "More measurements"), all off by default:
    memory: bool = False  # peak RSS per backend × batch size, each in a child process (evaluate/memory.py)
    knn: int | None = None  # k of the k-NN probe on embeddings (evaluate/knn.py); None: off
    knn_layer: str | None = None  # torch submodule name or ONNX output name; None: the model output
    knn_folds: int = 5
    noise: tuple[float, ...] = ()  # robustness levels: σ (float inputs) / probability (tokens); empty: off
    seed: int = 0  # seeds the k-NN folds and the noise draws
    token_noise: str = "replace"  # or "dropout"

    def __post_init__(self) -> None:
        for b in self.backends:
            if b not in BACKENDS:
                raise InputError(f"evaluate.backends: unknown backend {b!r}", hint=f"use one of {', '.join(BACKENDS)}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise InputError(f"evaluate.batch_sizes must be integers ≥ 1, got {list(self.batch_sizes)}")
        if self.threads < 1:
            raise InputError(f"evaluate.threads must be ≥ 1, got {self.threads}")
        if self.predict_batch_size < 1:
            raise InputError(f"evaluate.predict_batch_size must be ≥ 1, got {self.predict_batch_size}")
        _check_breadth(self)


def _check_breadth(config: EvalConfig) -> None:
    from .robustness import TOKEN_MODES, check_levels

    k = config.knn
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(f"evaluate.knn (k) must be an integer ≥ 1, got {k!r}")
    if isinstance(config.knn_folds, bool) or not isinstance(config.knn_folds, int) or config.knn_folds < 2:
        raise InputError(f"evaluate.knn_folds must be an integer ≥ 2, got {config.knn_folds!r}")
    if config.knn_layer is not None and not str(config.knn_layer).strip():
        raise InputError("evaluate.knn_layer must be a layer name, got an empty string")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise InputError(f"evaluate.seed must be an integer ≥ 0, got {config.seed!r}")
    object.__setattr__(config, "noise", check_levels(config.noise))
    if config.token_noise not in TOKEN_MODES:
        raise InputError(f"evaluate.token_noise must be one of {', '.join(TOKEN_MODES)}, got {config.token_noise!r}")


#: Optional stage sections filled by the measurements above (absent from a report when off).
EXTRA_SECTIONS = ("memory", "knn", "robustness")


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    fidelity: dict[str, Any] | None
    latency: list[dict[str, Any]]
    footprint: dict[str, Any]
    logits: np.ndarray
    probabilities: np.ndarray
    latency_samples: dict[str, np.ndarray]
    notes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # the EXTRA_SECTIONS that were measured
    embeddings: np.ndarray | None = None  # of the k-NN probe: the reference for later stages' cosine similarity

    def as_stage_fields(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "fidelity": self.fidelity, "latency": self.latency,
                "footprint": self.footprint, **self.extra}


def native_backend(artifact: ModelArtifact) -> str:
    return NATIVE_BACKEND[artifact.format]


def predict(artifact: ModelArtifact, data: Dataset, *, backend: str | None = None, threads: int = 1,
            batch_size: int = 256) -> np.ndarray:
    """Raw model outputs for every sample, in order, computed in bounded batches."""
    backend = backend or native_backend(artifact)
    first = next(data.batches(1))[0]
    check_inputs(artifact.inputs, first, model=artifact.source)
    if data.n_classes > artifact.n_classes:
        raise InputError(
            f"data {data.source} has {data.n_classes} classes but model {artifact.source} outputs {artifact.n_classes}"
        )
    runner = make_runner(artifact, backend, threads=threads)
    outputs = []
    with progress.bar(len(data), f"predict {backend}", unit="sample") as bar:
        for batch, _ in data.batches(batch_size):
            out = _run_checked(runner, batch, artifact.source)
            outputs.append(out.reshape(len(out), -1))
            bar.update(len(out))
    logits = np.concatenate(outputs)
    if len(logits) != len(data):
        raise InputError(f"model {artifact.source} returned {len(logits)} rows for {len(data)} samples")
    return logits


def _run_checked(runner: Any, batch: dict[str, np.ndarray], source: str) -> np.ndarray:
    """Run one batch; a model that crashes on the data is an input problem (exit 2), said in one line."""
    try:
        return runner(batch)
    except ModelpressError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{tuple(v.shape)} {v.dtype}" for v in batch.values())
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"model {source} failed on a batch of input {shapes}: {type(exc).__name__}: {first}") from None


def _latency_batch(data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
    """The first ``batch_size`` samples, tiled when the dataset is smaller (latency needs a full batch)."""
    reps = -(-batch_size // len(data))
    return {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch_size]) for k, v in data.inputs.items()}


def evaluate(artifact: ModelArtifact, data: Dataset, *, config: EvalConfig | None = None,
             reference_logits: np.ndarray | None = None, reference_name: str | None = None,
             reference_embeddings: np.ndarray | None = None) -> EvalResult:
    """Metrics on ``data``, fidelity vs ``reference_logits`` (outputs of the original model on the same data),
    latency per backend × batch size, and the footprint; with ``config`` asking for them, memory, the k-NN probe
    (cosine similarity to ``reference_embeddings``, the original's probe embeddings) and robustness to noise."""
    config = config or EvalConfig()
    for backend in config.backends:
        require_backend(backend)
    notes: list[str] = []
    main_backend = native_backend(artifact)
    logits = predict(artifact, data, backend=main_backend, threads=config.threads,
                     batch_size=config.predict_batch_size)
    probs, score_kind = to_probabilities(logits, n_classes=artifact.n_classes)
    if score_kind != "softmax(logits)":
        notes.append(f"scores are {score_kind}")
    notes += [n for n in [host_mismatch_note(artifact, data, logits)] if n]  # INT8 built for other kernels
    metrics = classification_metrics(data.y, logits, n_classes=artifact.n_classes,
                                     class_names=list(artifact.class_names or data.class_names))
    fid = None
    if reference_logits is not None:
        fid = fidelity(reference_logits, logits, n_classes=artifact.n_classes)
        fid = {"reference": reference_name, **fid}
    latency: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    if config.measure_latency:
        for backend in config.backends or (main_backend,):
            if artifact.format not in BACKEND_FORMATS.get(backend, ()):
                notes.append(f"latency on {backend} skipped: it does not run {artifact.format} models")
                continue
            for bs in config.batch_sizes:
                hook = LATENCY_HOOKS.get(backend)  # backends timed on the device (CUDA events) give several rows
                rows = hook(artifact, _latency_batch(data, int(bs)), batch_size=int(bs), threads=config.threads,
                            latency=config.latency) if hook else [
                    time_backend(artifact, data, backend=backend, batch_size=int(bs), threads=config.threads,
                                 latency=config.latency)]
                for stats, s in rows:
                    latency.append(stats)
                    samples[f"{stats['backend']}::b{bs}"] = s
    extra, emb = _breadth(artifact, data, config, notes, reference_embeddings, reference_name)
    return EvalResult(metrics, fid, latency, footprint(artifact), logits, probs, samples, notes, extra, emb)


def _breadth(artifact: ModelArtifact, data: Dataset, config: EvalConfig, notes: list[str],
             reference_embeddings: np.ndarray | None, reference_name: str | None
             ) -> tuple[dict[str, Any], np.ndarray | None]:
    """The optional sections (memory, knn, robustness) that ``config`` asks for."""
    extra: dict[str, Any] = {}
    emb = None
    if config.memory:
        wanted = config.backends or (native_backend(artifact),)
        for b in wanted:
            if b not in MEMORY_BACKENDS:
                notes.append(f"memory on {b} not measured: its memory is on the GPU, not resident host memory")
        backends = [b for b in wanted if artifact.format in BACKEND_FORMATS.get(b, ()) and b in MEMORY_BACKENDS]
        if backends:
            extra["memory"] = measure_memory(artifact, data, backends=backends, batch_sizes=config.batch_sizes,
                                             threads=config.threads)
    if config.knn is not None:
        from .knn import knn_section

        extra["knn"], emb = knn_section(artifact, data, k=config.knn, layer=config.knn_layer,
                                        folds=config.knn_folds, seed=config.seed, threads=config.threads,
                                        batch_size=config.predict_batch_size, reference=reference_embeddings,
                                        reference_name=reference_name)
    if config.noise:
        from .robustness import robustness

        extra["robustness"] = robustness(artifact, data, levels=config.noise, seed=config.seed,
                                         token_mode=config.token_noise, threads=config.threads,
                                         batch_size=config.predict_batch_size)
    return extra, emb


def time_backend(artifact: ModelArtifact, data: Dataset, *, backend: str, batch_size: int, threads: int,
                 latency: LatencyConfig) -> tuple[dict[str, Any], np.ndarray]:
    """Cold start (runner creation + first call) then warm latency of ``runner(batch)``."""
    batch = _latency_batch(data, batch_size)

    def make() -> Any:
        runner = make_runner(artifact, backend, threads=threads)
        return lambda: runner(batch)

    cold_ms, fn = measure_cold_start(make)
    with progress.bar(None, f"latency {backend} b{batch_size}", unit="call") as bar:
        return measure_latency(fn, config=latency, batch_size=batch_size, threads=threads, backend=backend,
                               cold_start_ms=cold_ms, progress=bar)
