"""Judge any artifact on a dataset: metrics, fidelity to a reference, latency and footprint.

The evaluator never imports ``compress/``: it judges whatever it is given, on the backends that can run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import progress
from ..artifacts import ModelArtifact, check_inputs
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import InputError, ModelpressError
from ..runtime.emulate import host_mismatch_note
from ..runtime.footprint import footprint
from ..runtime.latency import LatencyConfig
from ..runtime.memory import measure_memory, memory_backends
from ..runtime.metrics import classification_metrics, fidelity, to_probabilities
from .robustness import TOKEN_MODES, check_levels
from ..runtime.sessions import BACKENDS, make_runner, native_backend, require_backend, runs_format
from ..runtime.timing import latency_batch, time_backend


@dataclass(frozen=True)
class EvalConfig(Checked):
    """What to measure. Latency uses the same ``threads`` on every backend."""

    section: ClassVar[str] = "evaluate"
    backends: tuple[str, ...] = option((), cli="--backend", help="Backend(s) to time; default: the model's own "
                                                                 "(torch or onnxruntime).")
    batch_sizes: tuple[int, ...] = option((1, 32), Interval(int, 1), cli="--batch-size",
                                          help="Latency batch size; repeat for several.")
    threads: int = option(1, Interval(int, 1, noun=False), help="Intra-op threads, the same for every backend.")
    latency: LatencyConfig = option(LatencyConfig(), cli=False, help="When latency measurement stops.")
    predict_batch_size: int = option(256, Interval(int, 1, noun=False), cli=False,
                                     help="Samples per call when computing the metrics.")
    measure_latency: bool = option(True, cli="--latency/--no-latency", help="Time the model (off: metrics and "
                                                                             "footprint only).")
    # More measurements (README "More measurements"), all off by default:
    memory: bool = option(False, help="Peak resident memory per backend and batch size, each in a fresh child "
                                      "process.")
    knn: int | None = option(None, Interval(int, 1), label="knn (k)",
                             help="k-NN probe on the embeddings with this k (cosine, stratified CV).")
    knn_layer: str | None = option(None, help="Embeddings from this torch submodule (NAME, or NAME:input for its "
                                              "input) or ONNX tensor; comma-separate alternatives. Default: the "
                                              "model output.")
    knn_folds: int = option(5, Interval(int, 2), help="Cross-validation folds of --knn.")
    noise: tuple[float, ...] = option((), cli=False, help="Robustness: noise levels (σ in units of the input's std; "
                                                          "token inputs: perturbation probability).")
    seed: int = option(0, Interval(int, 0), help="Seed of the k-NN folds and the noise.")
    token_noise: str = option("replace", Options(TOKEN_MODES), help="How token inputs are perturbed.")

    def check(self) -> None:
        for b in self.backends:
            if b not in BACKENDS:
                raise InputError(f"evaluate.backends: unknown backend {b!r}", hint=f"use one of {', '.join(BACKENDS)}")
        if not self.batch_sizes:
            raise InputError(f"evaluate.batch_sizes must be integers ≥ 1, got {list(self.batch_sizes)}")
        if self.knn_layer is not None and not str(self.knn_layer).strip():
            raise InputError("evaluate.knn_layer must be a layer name, got an empty string")
        object.__setattr__(self, "noise", check_levels(self.noise))


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
    class_names: tuple[str, ...] = ()  # one per model output (:func:`model_classes`); empty: not recorded

    def as_stage_fields(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "fidelity": self.fidelity, "latency": self.latency,
                "footprint": self.footprint, **self.extra}


def predict(artifact: ModelArtifact, data: Dataset, *, backend: str | None = None, threads: int = 1,
            batch_size: int = 256) -> np.ndarray:
    """Raw model outputs for every sample, in order, computed in bounded batches."""
    backend = backend or native_backend(artifact)
    first = next(data.batches(1))[0]
    check_inputs(artifact.inputs, first, model=artifact.source)
    check_labels(data, artifact.n_classes, artifact.source)
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


def check_labels(data: Dataset, n_classes: int, model: str) -> None:
    """A label the model cannot output is an input error (exit 2); classes absent from the data are fine."""
    top = int(data.y.max())
    if top >= n_classes:
        bad = int((data.y >= n_classes).sum())
        raise InputError(f"data {data.source} has {bad} of {len(data)} labels ≥ {n_classes} (up to {top}) but model "
                         f"{model} outputs {n_classes} classes (labels 0..{n_classes - 1})")


def model_classes(artifact: ModelArtifact, data: Dataset, logits: np.ndarray) -> tuple[str, ...]:
    """The class names of the model's outputs: the class count is the model's (its output width; one logit = two
    classes), names from the artifact's ``class_names``, else the data's where they cover those outputs, else
    indices. The data may hold any subset of the classes (an ImageNet model judged on a few hundred images)."""
    width = int(logits.shape[1]) if logits.ndim == 2 else 1
    n = 2 if width == 1 else width
    check_labels(data, n, artifact.source)
    if artifact.class_names and len(artifact.class_names) == n:
        return tuple(str(c) for c in artifact.class_names)
    names = [str(c) for c in data.class_names[:n]]
    return (*names, *(str(i) for i in range(len(names), n)))


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


def evaluate(artifact: ModelArtifact, data: Dataset, *, config: EvalConfig | None = None,
             reference_logits: np.ndarray | None = None, reference_name: str | None = None,
             reference_embeddings: np.ndarray | None = None) -> EvalResult:
    """Metrics on ``data``, fidelity vs ``reference_logits`` (outputs of the original model on the same data),
    latency per backend × batch size, and the footprint; with ``config`` asking for them, memory, the k-NN probe
    (cosine similarity to ``reference_embeddings``, the original's probe embeddings) and robustness to noise.

    An embedding model (``artifact.task == "embedding"``) is judged by :mod:`~modelpress.evaluate.retrieval`:
    retrieval recall@k / nDCG@10 against the pairs' labels as its metrics, cosine and ranking agreement with the
    reference's embeddings as its fidelity."""
    config = config or EvalConfig()
    data.require_labels("accuracy, F1 or ROC-AUC")  # unlabelled images carry a placeholder label: never scored
    for backend in config.backends:
        require_backend(backend)
    notes: list[str] = []
    main_backend = native_backend(artifact)
    logits = predict(artifact, data, backend=main_backend, threads=config.threads,
                     batch_size=config.predict_batch_size)
    if artifact.task == "embedding":  # outputs are embeddings: retrieval and cosine, not class scores
        from .retrieval import embedding_fidelity, embedding_metrics

        names: tuple[str, ...] = ()
        probs = np.zeros((len(logits), 0), dtype=np.float32)  # no class scores (reports and compare skip them)
        notes += [n for n in [host_mismatch_note(artifact, data, logits)] if n]
        metrics = embedding_metrics(data, logits)
        fid = None
        if reference_logits is not None:
            fid = {"reference": reference_name, **embedding_fidelity(reference_logits, logits, data)}
    else:
        names = model_classes(artifact, data, logits)
        probs, score_kind = to_probabilities(logits, n_classes=len(names))
        if score_kind != "softmax(logits)":
            notes.append(f"scores are {score_kind}")
        notes += [n for n in [host_mismatch_note(artifact, data, logits)] if n]  # INT8 built for other kernels
        metrics = classification_metrics(data.y, logits, n_classes=len(names), class_names=list(names))
        fid = None
        if reference_logits is not None:
            fid = fidelity(reference_logits, logits, n_classes=len(names))
            fid = {"reference": reference_name, **fid}
    latency: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    if config.measure_latency:
        for backend in config.backends or (main_backend,):
            if not runs_format(backend, artifact.format):
                notes.append(f"latency on {backend} skipped: it does not run {artifact.format} models")
                continue
            for bs in config.batch_sizes:
                hook = BACKENDS.get(backend).latency  # timed on the device (CUDA events): several rows
                rows = hook(artifact, latency_batch(data, int(bs)), batch_size=int(bs), threads=config.threads,
                            latency=config.latency) if hook else [
                    time_backend(artifact, data, backend=backend, batch_size=int(bs), threads=config.threads,
                                 latency=config.latency)]
                for stats, s in rows:
                    latency.append(stats)
                    samples[f"{stats['backend']}::b{bs}"] = s
    extra, emb = _optional_sections(artifact, data, config, notes, reference_embeddings, reference_name)
    return EvalResult(metrics, fid, latency, footprint(artifact), logits, probs, samples, notes, extra, emb, names)


def _optional_sections(artifact: ModelArtifact, data: Dataset, config: EvalConfig, notes: list[str],
             reference_embeddings: np.ndarray | None, reference_name: str | None
             ) -> tuple[dict[str, Any], np.ndarray | None]:
    """The optional sections (memory, knn, robustness) that ``config`` asks for."""
    extra: dict[str, Any] = {}
    emb = None
    if config.memory:
        wanted = config.backends or (native_backend(artifact),)
        for b in wanted:
            if b not in memory_backends():
                notes.append(f"memory on {b} not measured: its memory is on the GPU, not resident host memory")
        backends = [b for b in wanted if runs_format(b, artifact.format) and b in memory_backends()]
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
