"""Run two models on the same batches and compare their outputs: one record, written once.

Before this module the comparison was written four times (ONNX export verification, TensorRT verification, the
quantize guard, the scikit-learn conversion check) and a second onnxruntime runner read the *first* graph output
where the evaluator reads the first *float* output (a converted classifier puts an integer ``label`` first). Every
caller now runs models through :func:`run_outputs` (the same :class:`~.sessions.Runner` the evaluator times) and
judges them with :func:`compare_outputs`, then applies its own rule (tolerances, a top-1 floor) to the record.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import InputError

#: SQNR of identical outputs (no noise) and the cap of any measured one, in dB: a finite number for JSON and plots.
SQNR_CAP_DB = 150.0


@dataclass(frozen=True)
class OutputComparison:
    """How closely ``candidate`` reproduces ``reference`` on the same inputs.

    Attributes:
        n_samples: rows compared.
        top1_agreement: fraction of rows with the same arg-max (of the class probabilities when ``n_classes`` was
            given, so a binary single-logit head is judged on its sigmoid, else of the raw flattened row).
        max_abs_diff, mean_abs_diff: of the raw outputs, in output units (non-finite candidate values count as 0).
        max_rel_diff: max of ``|d| / max(|reference|, 1e-12)``.
        max_excess: max of ``|d| − rtol·|reference|``: the outputs are within ``atol + rtol·|reference|``
            elementwise exactly when ``max_excess ≤ atol`` (see :meth:`within`).
        rtol: the relative tolerance ``max_excess`` was computed with.
        reference_max_abs: largest ``|reference|`` (tolerances relative to the output range use it).
        non_finite: inf/NaN values in the candidate's outputs.
        min_cosine, mean_cosine: cosine similarity per row (flattened), the fidelity of embeddings or regressions.
        sqnr_db: ``10·log10(Σ reference² / Σ d²)``, capped at :data:`SQNR_CAP_DB` (also when d is all zero).
        mean_kl: ``KL(p_reference ‖ p_candidate)`` in nats averaged over rows, when ``n_classes`` was given and
            both outputs are finite; else ``None``.
    """

    n_samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float
    max_excess: float
    rtol: float
    reference_max_abs: float
    non_finite: int
    min_cosine: float
    mean_cosine: float
    sqnr_db: float
    mean_kl: float | None

    def within(self, atol: float) -> bool:
        """All outputs finite and ``|d| ≤ atol + rtol·|reference|`` elementwise."""
        return self.non_finite == 0 and self.max_excess <= atol

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_outputs(reference: Any, candidate: Any, *, n_classes: int | None = None,
                    rtol: float = 0.0) -> OutputComparison:
    """Compare two models' outputs on the same rows (see :class:`OutputComparison`).

    Args:
        reference: ``(n, ...)`` outputs of the reference model.
        candidate: the candidate's outputs on the same rows, same shape.
        n_classes: the class count when the outputs are class scores (logits, probabilities, or one binary logit):
            top-1 and KL are then read from probabilities as :func:`~.metrics.fidelity` reads them.
        rtol: relative tolerance for ``max_excess``.

    Raises:
        InputError: shapes differ, no rows, or a non-finite reference.
    """
    from .metrics import KL_EPS, to_probabilities  # scikit-learn (~1 s to import) only when outputs are compared

    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise InputError(f"reference outputs have shape {ref.shape} but candidate outputs have shape {cand.shape}")
    if ref.ndim == 0 or len(ref) == 0:
        raise InputError(f"compared 0 samples (outputs of shape {ref.shape})")
    if not np.isfinite(ref).all():
        raise InputError(f"the reference outputs hold {int((~np.isfinite(ref)).sum())} inf/NaN values")
    bad = ~np.isfinite(cand)
    non_finite = int(bad.sum())
    got = np.where(bad, 0.0, cand)
    diff = np.abs(ref - got)
    rows_ref, rows_got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    cosine = (rows_ref * rows_got).sum(1) / np.maximum(
        np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_got, axis=1), 1e-12)
    noise = float(np.sum(diff ** 2))
    sqnr = SQNR_CAP_DB if noise == 0 else float(
        min(SQNR_CAP_DB, 10 * np.log10(max(float(np.sum(ref ** 2)), 1e-300) / noise)))
    top1 = float(np.mean(rows_ref.argmax(1) == rows_got.argmax(1))) if rows_ref.size else 1.0
    mean_kl = None
    width = ref.shape[1] if ref.ndim == 2 else 1
    if n_classes and ref.ndim <= 2 and width in (n_classes, 1) and (width == n_classes or n_classes == 2):
        p_ref, _ = to_probabilities(ref, n_classes=n_classes)
        top1_p = None
        if non_finite == 0:
            p_cand, _ = to_probabilities(got, n_classes=n_classes)
            log_ratio = np.log(np.clip(p_ref, KL_EPS, 1.0)) - np.log(np.clip(p_cand, KL_EPS, 1.0))
            mean_kl = max(0.0, float(np.sum(p_ref * log_ratio, axis=1).mean()))  # clipping can leave -1e-13
            top1_p = float(np.mean(p_ref.argmax(1) == p_cand.argmax(1)))
        if top1_p is not None:
            top1 = top1_p
    return OutputComparison(
        n_samples=int(len(ref)), top1_agreement=top1,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        max_rel_diff=float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if diff.size else 0.0,
        max_excess=float((diff - rtol * np.abs(ref)).max()) if diff.size else 0.0, rtol=float(rtol),
        reference_max_abs=float(np.abs(ref).max()) if ref.size else 0.0, non_finite=non_finite,
        min_cosine=float(cosine.min()), mean_cosine=float(cosine.mean()), sqnr_db=sqnr, mean_kl=mean_kl)


def compare_batches(pairs: Iterable[tuple[np.ndarray, np.ndarray]], *, n_classes: int | None = None,
                    rtol: float = 0.0) -> OutputComparison:
    """:func:`compare_outputs` over ``(reference, candidate)`` batches (e.g. the same rows at several batch sizes),
    judged as one set of rows. Callers check shapes per batch first, to name the batch size in their message."""
    pairs = list(pairs)
    if not pairs:
        raise InputError("compared 0 samples")
    return compare_outputs(np.concatenate([np.asarray(w, dtype=np.float64) for w, _ in pairs]),
                           np.concatenate([np.asarray(g, dtype=np.float64) for _, g in pairs]),
                           n_classes=n_classes, rtol=rtol)


def run_outputs(model: ModelArtifact | str | os.PathLike[str], data: Dataset, *, threads: int,
                backend: str | None = None, batch_size: int = 64) -> np.ndarray:
    """The model's score output for every sample of ``data``, in order, as float64 ``(n, -1)``.

    ``model`` is an artifact (run on ``backend``, default: its native one) or an ONNX file (onnxruntime). The
    output is the one the evaluator reads (:func:`~.sessions.score_output`: the first float output).
    """
    from .sessions import make_runner, native_backend, ort_runner

    if isinstance(model, ModelArtifact):
        runner = make_runner(model, backend or native_backend(model), threads=threads)
    else:
        runner = ort_runner(Path(model), threads=threads)
    outs = []
    for batch, _ in data.batches(batch_size):
        out = np.asarray(runner(batch), dtype=np.float64)
        outs.append(out.reshape(len(out), -1))
    if not outs:
        raise InputError(f"{data.source} has no samples to run")
    return np.concatenate(outs)
