"""k-NN probe: how well a model's embeddings still separate the classes, before and after compression.

For an embedding model (e.g. MiniLM sentence embeddings) there is no classification head whose accuracy could be
measured; the honest quality measure is a k-nearest-neighbour classifier on the embeddings (cosine metric,
scikit-learn's ``KNeighborsClassifier``), scored out-of-fold with a seeded ``StratifiedKFold``, so every sample is
classified by neighbours it was not among. Run it on the original and on the compressed model with the same data,
``k`` and folds: the difference is what compression cost the embedding space. The mean cosine similarity of each
sample's embedding to the original model's says how far the space itself moved.

Embeddings are:

* the model output, for a model whose output IS the embedding (the default, ``layer=None``);
* for a torch model, the output of a named submodule (``layer="0.3"``, ``"encoder"``, ``"pooler"``; the names of
  ``module.named_modules()``), captured with a forward hook, flattened per sample: e.g. the ReLU before the last
  Linear of ``zoo:mlp`` (``layer="4"`` for two hidden layers) is its penultimate representation; ``NAME:input``
  reads the module's input instead (``layer="head:input"`` is the mean-pooled sentence embedding of an ``hf:``
  encoder classifier, e.g. MiniLM);
* for an ONNX model, a graph output or any intermediate tensor by name (``layer="relu"``; the tensor is made an
  extra output of an in-memory copy of the graph; find names with Netron or ``onnx.load(...).graph.node``).

Several names, comma-separated, serve a pipeline whose stages change format: ``layer="2,relu"`` probes the torch
module ``2`` of ``zoo:mlp`` and, after export or ONNX quantization, the tensor ``relu`` its ReLU became (the first
name a model has is used).

A stage that cannot provide the named layer (e.g. the ONNX export of a torch model probed at a module name) gets
``accuracy: null`` and a ``reason``, like an undefined ROC-AUC, instead of failing the run.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import InputError
from ..runtime.sessions import set_torch_threads

__all__ = ["LayerUnavailable", "cosine_to_reference", "embeddings", "knn_probe", "knn_section"]


#: ``"head:input"``: the input of a submodule instead of its output (e.g. the pooled embedding a classifier head reads).
INPUT_SUFFIX = ":input"


class LayerUnavailable(Exception):
    """The artifact's format cannot expose the requested layer (recorded as a reason, not raised to the user)."""


def embeddings(artifact: ModelArtifact, data: Dataset, *, layer: str | None = None, threads: int = 1,
               batch_size: int = 256) -> np.ndarray:
    """``(n_samples, dim)`` float32 embeddings of ``data``: the model output, or the named layer (module docstring).

    Raises:
        InputError: no name in ``layer`` is a submodule of a torch model (the message lists some that are).
        LayerUnavailable: no name in ``layer`` is a tensor of an ONNX model, or the format has no layers to read.
    """
    return _embed(artifact, data, layer, threads=threads, batch_size=batch_size)[0]


def _embed(artifact: ModelArtifact, data: Dataset, layer: str | None, *, threads: int,
           batch_size: int) -> tuple[np.ndarray, str | None]:
    """The embeddings and the name they were read from (the one of ``layer``'s names that the model has)."""
    if layer is None:
        from ..runtime.sessions import make_runner
        from ..runtime.sessions import native_backend

        runner = make_runner(artifact, native_backend(artifact), threads=threads)
        return _stack(runner(batch) for batch, _ in data.batches(batch_size)), None
    if artifact.format == "torch":
        return _torch_layer(artifact, data, layer, threads=threads, batch_size=batch_size)
    if artifact.format == "onnx":
        return _onnx_output(artifact, data, layer, threads=threads, batch_size=batch_size)
    raise LayerUnavailable(f"layer {layer!r} cannot be read from a {artifact.format} artifact")


def _stack(chunks: Any) -> np.ndarray:
    out = [np.asarray(c, dtype=np.float32).reshape(len(c), -1) for c in chunks]
    return np.concatenate(out)


def _torch_layer(artifact: ModelArtifact, data: Dataset, layer: str, *, threads: int,
                 batch_size: int) -> tuple[np.ndarray, str]:
    import torch

    module = artifact.module.eval()
    named = dict(module.named_modules())
    found = next((c for c in _candidates(layer) if c.removesuffix(INPUT_SUFFIX) in named), None)
    if found is None:
        names = [n for n in named if n][:20]
        raise InputError(f"knn layer {layer!r} is not a submodule of {artifact.source}",
                         hint=f"layers: {', '.join(names)} (add {INPUT_SUFFIX} for a layer's input)")
    captured: list[np.ndarray] = []
    read_input = found.endswith(INPUT_SUFFIX)

    def hook(_mod: Any, inp: Any, out: Any) -> None:
        if read_input:
            out = inp[0]
        if hasattr(out, "last_hidden_state"):
            out = out.last_hidden_state
        if isinstance(out, (tuple, list)):
            out = out[0]
        captured.append(out.detach().float().reshape(out.shape[0], -1).cpu().numpy())

    set_torch_threads(threads)
    handle = named[found.removesuffix(INPUT_SUFFIX)].register_forward_hook(hook)
    names = [s.name for s in artifact.inputs]
    try:
        with torch.inference_mode():
            for batch, _ in data.batches(batch_size):
                if len(batch) == 1 and len(names) == 1:
                    arrays = [next(iter(batch.values()))]
                else:
                    arrays = [batch[n] for n in names]
                module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
    finally:
        handle.remove()
    if not captured:
        raise InputError(f"knn layer {found!r} of {artifact.source} never ran in the forward pass")
    return np.concatenate(captured), found


def _onnx_output(artifact: ModelArtifact, data: Dataset, layer: str, *, threads: int,
                 batch_size: int) -> tuple[np.ndarray, str]:
    """A graph output, or an intermediate tensor made a graph output in an in-memory copy of the model."""
    from ..onnx_utils import load_onnx
    from ..runtime.sessions import ort_session

    model = load_onnx(artifact.path, with_data=False)
    outputs = [o.name for o in model.graph.output]
    produced = {out for node in model.graph.node for out in node.output if out}
    name = next((c for c in _candidates(layer) if c in outputs or c in produced), None)
    if name is None:
        raise LayerUnavailable(f"the ONNX model has no output or tensor {layer!r} (its outputs: {', '.join(outputs)})")
    if name in outputs:
        session = ort_session(str(artifact.path), threads=threads)
    else:
        import onnx

        model = load_onnx(artifact.path, with_data=True)
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
        model.graph.output.append(inferred.get(name) or onnx.helper.make_empty_tensor_value_info(name))
        with tempfile.TemporaryDirectory(prefix="modelpress-knn-") as scratch:
            probe = Path(scratch) / "probe.onnx"
            probe.write_bytes(model.SerializeToString())
            session = ort_session(str(probe), threads=threads)  # reads the file now; the copy may then go
    names = [i.name for i in session.get_inputs()]
    chunks = []
    for batch, _ in data.batches(batch_size):
        feed = {names[0]: next(iter(batch.values()))} if len(batch) == 1 and len(names) == 1 else {
            n: batch[n] for n in names}
        chunks.append(session.run([name], feed)[0])
    return _stack(chunks), name


def _candidates(layer: str) -> list[str]:
    """``"2,relu"`` → ``["2", "relu"]``: the first name the model has is used (torch module, then ONNX tensor)."""
    return [c.strip() for c in layer.split(",") if c.strip()]


def knn_probe(features: np.ndarray, y: np.ndarray, *, k: int, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Out-of-fold k-NN accuracy (cosine metric) of ``features`` for labels ``y``.

    Args:
        features: ``(n_samples, dim)`` embeddings.
        y: ``(n_samples,)`` integer labels.
        k: Neighbours; 1 ≤ k < n_samples, and at most the size of the smallest training fold.
        folds: ``StratifiedKFold`` splits (shuffled with ``seed``), 2 ≤ folds ≤ the largest class count.
        seed: Shuffle seed of the folds.

    Returns:
        ``{"k", "folds", "seed", "metric": "cosine", "n_samples", "dim", "accuracy", "fold_accuracies"}``;
        ``accuracy`` is over all out-of-fold predictions (sklearn ``cross_val_predict``).

    Raises:
        InputError: k or folds out of range for this data, or features and labels of different lengths.
    """
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(y)
    n = len(x)
    if len(y) != n:
        raise InputError(f"knn: {n} embeddings but {len(y)} labels")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"knn k must be an integer ≥ 1, got {k!r}")
    if k >= n:
        raise InputError(f"knn k = {k} must be below the number of samples ({n})")
    counts = np.bincount(y) if n else np.array([0])
    if not 2 <= folds <= counts.max():
        raise InputError(f"knn folds must be in [2, {int(counts.max())}] (the largest class count), got {folds}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise InputError(f"knn: embeddings hold {int(bad.sum())} NaN or infinite values "
                         f"(first in row {int(np.flatnonzero(bad.any(axis=1))[0])})")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(x, y))
    smallest = min(len(train) for train, _ in splits)
    if k > smallest:
        raise InputError(f"knn k = {k} exceeds the smallest training fold ({smallest} of {n} samples with "
                         f"{folds} folds)", hint="lower knn k or knn folds")
    predictions = np.empty(n, dtype=y.dtype)
    fold_accuracies = []
    for train, test in splits:
        model = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x[train], y[train])
        predictions[test] = model.predict(x[test])
        fold_accuracies.append(float(accuracy_score(y[test], predictions[test])))
    return {"k": int(k), "folds": int(folds), "seed": int(seed), "metric": "cosine", "n_samples": n,
            "dim": int(x.shape[1]), "accuracy": float(accuracy_score(y, predictions)),
            "fold_accuracies": fold_accuracies}


def cosine_to_reference(features: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Row-wise cosine similarity of ``features`` to ``reference`` (same samples): mean and minimum.

    A dimension mismatch (e.g. a distilled student of another width) gives ``null`` values and a reason.
    """
    a = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    b = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if a.shape != b.shape:
        return {"reference_cosine_mean": None, "reference_cosine_min": None,
                "reference_cosine_reason": f"embedding shapes differ: {a.shape} vs the reference's {b.shape}"}
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    return {"reference_cosine_mean": float(cos.mean()), "reference_cosine_min": float(cos.min())}


def knn_section(artifact: ModelArtifact, data: Dataset, *, k: int, layer: str | None, folds: int, seed: int,
                threads: int, batch_size: int, reference: np.ndarray | None = None,
                reference_name: str | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """The report's ``knn`` section for one stage, and the embeddings (the reference for later stages)."""
    base = {"k": int(k), "folds": int(folds), "seed": int(seed), "metric": "cosine", "layer": layer}
    try:
        features, used = _embed(artifact, data, layer, threads=threads, batch_size=batch_size)
    except LayerUnavailable as exc:
        return {**base, "accuracy": None, "reason": str(exc)}, None
    section = {**base, **knn_probe(features, data.y, k=k, folds=folds, seed=seed), "layer": used}
    if reference is not None:
        section["reference"] = reference_name
        section.update(cosine_to_reference(features, reference))
    return section, features
