"""Classification metrics and output fidelity, as thin wrappers over scikit-learn.

Pure numpy / scikit-learn (no torch), so a report can be recomputed from ``predictions.npz`` alone.
The class count is the model's (``n_classes``: its output width), and the evaluation set may hold only some of the
classes (an ImageNet model judged on 128 images). Every averaged metric passes ``labels=`` the classes present in
``y_true``, so macro averages are over classes that have samples (an absent class would count as 0 and drag a
1000-class macro recall to nearly nothing); predictions of absent classes still count as errors. ``per_class`` has a
row per present class; ``classes_present`` / ``classes_absent`` count the rest. ROC-AUC is computed from scores,
never from hard labels, one-vs-rest over the present classes (its rule stated in ``roc_auc_rule``); where it is
undefined it is ``None`` plus a reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelpress.errors import InputError

#: Rows within this distance of summing to 1 (and non-negative) are taken as probabilities, not logits.
PROBABILITY_ATOL = 1e-4
#: Probabilities are clipped to at least this before taking logs in the KL divergence.
KL_EPS = 1e-12


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise InputError(
            f"{what} holds {int(bad.sum())} NaN or infinite values (first in row {int(rows[0])})"
        )


def _check_n_classes(n_classes: int) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(f"n_classes must be an integer >= 2, got {n_classes!r}")


def to_probabilities(scores: np.ndarray, *, n_classes: int) -> tuple[np.ndarray, str]:
    """Turn model outputs into class probabilities, saying how.

    Args:
        scores: ``(n, n_classes)`` logits or probabilities, or for a binary task ``(n,)`` / ``(n, 1)`` logits of
            the positive class (the usual single-output head with ``BCEWithLogitsLoss``).
        n_classes: Number of classes in the data; the output width must match it.

    Returns:
        ``(probs, note)``: ``probs`` is float64 ``(n, n_classes)``; ``note`` is ``"probabilities"`` (rows were
        already non-negative and summed to 1 within ``PROBABILITY_ATOL``, returned unchanged),
        ``"softmax(logits)"`` or ``"sigmoid(logit)"``, so a report can state what the numbers were computed from.

    Raises:
        InputError: empty or non-finite scores, or a width that does not match ``n_classes``.
    """
    _check_n_classes(n_classes)
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"model outputs must be numeric scores: {exc}") from None
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise InputError(f"model outputs are empty (shape {arr.shape})")
    if arr.ndim > 2:
        raise InputError(f"model outputs must have shape (n_samples, n_classes), got {arr.shape}")
    width = 1 if arr.ndim == 1 else arr.shape[1]
    if width == 1 and n_classes == 2:
        _check_finite(arr, "model outputs")
        pos = 1.0 / (1.0 + np.exp(-arr.reshape(-1)))
        return np.column_stack([1.0 - pos, pos]), "sigmoid(logit)"
    if width != n_classes:
        noun = "score" if width == 1 else "scores"
        raise InputError(f"model outputs {width} {noun} per sample but the data has {n_classes} classes")
    _check_finite(arr, "model outputs")
    if (arr >= 0).all() and np.all(np.abs(arr.sum(axis=1) - 1.0) <= PROBABILITY_ATOL):
        return arr, "probabilities"
    shifted = arr - arr.max(axis=1, keepdims=True)  # exp never overflows: the largest term is exp(0)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True), "softmax(logits)"


def log_probabilities(scores: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Log class probabilities, computed without rounding confident outputs to exactly 0 or 1.

    Softmax in float64 saturates: two logits margins of 37 and 1400 both become probability 1.0, a tie that lowers
    ROC-AUC although the model ranked them correctly. ``log_softmax`` keeps the order, so ROC-AUC is computed from
    these (monotone in the probabilities, so equal to scikit-learn's result wherever nothing saturates).
    """
    probs, note = to_probabilities(scores, n_classes=n_classes)
    arr = np.asarray(scores, dtype=np.float64)
    if note == "probabilities":  # a probability of exactly 0 (float32 underflow) ranks lowest, but stays finite
        return np.log(np.maximum(probs, np.finfo(np.float64).tiny))
    if note == "sigmoid(logit)":
        z = arr.reshape(-1)
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])
    shifted = arr - arr.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _as_labels(y_true: Any, n_classes: int) -> np.ndarray:
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise InputError(f"y_true must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError("y_true is empty (0 samples); metrics need at least one sample")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InputError("y_true must hold integer class indices, got non-integer values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"y_true must hold integer class indices, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        values = np.unique(arr[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise InputError(
            f"y_true has {int(bad.sum())} labels outside [0, {n_classes}): values {shown}"
        )
    return arr.astype(np.int64, copy=False)


def _roc_auc(
    y_true: np.ndarray, log_probs: np.ndarray, n_classes: int, names: list[str]
) -> tuple[float | None, str | None, str | None]:
    """``(value, reason it is undefined, rule it was computed by)``."""
    from sklearn import metrics as skm  # lazily: scikit-learn takes ~1 s to import, and `modelpress --help` needs none

    present = np.unique(y_true)
    if len(present) < 2:
        only = int(present[0])
        return None, (
            f"ROC-AUC is undefined: y_true holds only one class ({only}: {names[only]!r}), "
            "so there are no negatives to rank against"
        ), None
    if n_classes == 2:
        # log-odds of the positive class: the same ranking as p[:, 1], without float saturation ties
        return float(skm.roc_auc_score(y_true, log_probs[:, 1] - log_probs[:, 0])), None, "binary"
    # One-vs-rest macro over the classes present, each class's binary AUC ranked by its log-probability (same order
    # as probabilities, no saturation ties): with every class present, exactly scikit-learn's multi_class="ovr".
    per_class = [skm.roc_auc_score((y_true == c).astype(int), log_probs[:, c]) for c in present]
    rule = (f"one-vs-rest macro over the {len(present)} classes present in y_true"
            + (f" (of {n_classes} the model outputs)" if len(present) < n_classes else ""))
    return float(np.mean(per_class)), None, rule


def classification_metrics(
    y_true: Any,
    y_score: Any,
    *,
    n_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro and weighted), ROC-AUC, per-class scores and the confusion matrix.

    Args:
        y_true: ``(n,)`` integer class indices in ``[0, n_classes)``.
        y_score: ``(n, n_classes)`` probabilities or logits. Pass logits where you have them: ROC-AUC is ranked
            by log-probabilities, and logits keep the ranking of very confident outputs that probabilities lose.
        n_classes: The model's class count (its output width); labels must be below it.
        class_names: Optional names, one per class, used in ``per_class`` and in ROC-AUC reasons.

    Returns:
        A dict with exactly the keys ``accuracy, balanced_accuracy, precision_macro, precision_weighted,
        recall_macro, recall_weighted, f1_macro, f1_weighted, roc_auc, roc_auc_reason, roc_auc_rule, per_class,
        classes_present, classes_absent, confusion_matrix, n_samples``. Averages are over the classes present
        (module docstring); ``per_class`` has one row per present class; the confusion matrix covers all
        ``n_classes``. ``roc_auc`` is ``None`` with a one-sentence ``roc_auc_reason`` when y_true holds one class
        only (the stated policy), else the reason is ``None`` and ``roc_auc_rule`` says how it was averaged.

    Raises:
        InputError: empty input, mismatched lengths, labels out of range, non-finite scores, hard labels
            given as scores, or ``class_names`` of the wrong length.
    """
    from sklearn import metrics as skm
    _check_n_classes(n_classes)
    score_arr = np.asarray(y_score)
    if score_arr.ndim == 1 and (
        score_arr.dtype.kind in "iub"
        or (score_arr.dtype.kind == "f" and score_arr.size and np.array_equal(score_arr, np.round(score_arr)))
    ):
        raise InputError("ROC-AUC needs scores (probabilities or logits), got hard labels")
    if score_arr.ndim != 2:
        raise InputError(f"y_score must have shape (n_samples, {n_classes}), got {score_arr.shape}")
    labels_arr = _as_labels(y_true, n_classes)
    if len(labels_arr) != len(score_arr):
        raise InputError(f"y_true has {len(labels_arr)} rows but y_score has {len(score_arr)}")
    probs, _ = to_probabilities(score_arr, n_classes=n_classes)
    if class_names is None:
        names = [str(i) for i in range(n_classes)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != n_classes:
            raise InputError(f"class_names has {len(names)} entries but the data has {n_classes} classes")

    y_pred = probs.argmax(axis=1)
    labels = [int(c) for c in np.unique(labels_arr)]  # the classes present (module docstring)
    common = {"labels": labels, "zero_division": 0}
    with warnings.catch_warnings():
        # balanced_accuracy warns when y_pred has classes y_true lacks; it averages over y_true's classes by design.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(skm.balanced_accuracy_score(y_true=labels_arr, y_pred=y_pred))
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(labels_arr, y_pred)),
        "balanced_accuracy": balanced,
    }
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        for average in ("macro", "weighted"):
            out[f"{name}_{average}"] = float(fn(labels_arr, y_pred, average=average, **common))
    out["roc_auc"], out["roc_auc_reason"], out["roc_auc_rule"] = _roc_auc(
        labels_arr, log_probabilities(score_arr, n_classes=n_classes), n_classes, names
    )
    prec, rec, f1, support = skm.precision_recall_fscore_support(labels_arr, y_pred, average=None, **common)
    out["per_class"] = [
        {"index": c, "name": names[c], "precision": float(prec[i]), "recall": float(rec[i]),
         "f1": float(f1[i]), "support": int(support[i])}
        for i, c in enumerate(labels)
    ]
    out["classes_present"], out["classes_absent"] = len(labels), n_classes - len(labels)
    out["confusion_matrix"] = skm.confusion_matrix(labels_arr, y_pred, labels=list(range(n_classes))).tolist()
    out["n_samples"] = int(len(labels_arr))
    return out


def fidelity(reference_logits: Any, logits: Any, *, n_classes: int) -> dict[str, float | int]:
    """How closely a compressed model reproduces the reference model's outputs on the same inputs.

    Args:
        reference_logits: Outputs of the reference (original) model, ``(n, n_classes)`` or binary ``(n,)``.
        logits: Outputs of the candidate model on the same samples, same shape.
        n_classes: Number of classes, as for :func:`to_probabilities`.

    Returns:
        ``top1_agreement`` (fraction of samples with the same predicted class), ``max_abs_diff`` and
        ``mean_abs_diff`` (of the raw outputs, in output units), ``mean_kl`` (KL(p_ref || p_cand) in nats,
        averaged over samples; probabilities clipped at ``KL_EPS`` so a zero never gives ``inf``) and
        ``n_samples``.

    Raises:
        InputError: shapes differ, or either output is empty or non-finite.
    """
    ref = np.asarray(reference_logits, dtype=np.float64)
    cand = np.asarray(logits, dtype=np.float64)
    if ref.shape != cand.shape:
        raise InputError(
            f"reference outputs have shape {ref.shape} but candidate outputs have shape {cand.shape}"
        )
    p_ref, _ = to_probabilities(ref, n_classes=n_classes)
    p_cand, _ = to_probabilities(cand, n_classes=n_classes)
    diff = np.abs(ref - cand)
    log_ratio = np.log(np.clip(p_ref, KL_EPS, 1.0)) - np.log(np.clip(p_cand, KL_EPS, 1.0))
    kl = np.sum(p_ref * log_ratio, axis=1)
    return {
        "top1_agreement": float(np.mean(p_ref.argmax(axis=1) == p_cand.argmax(axis=1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "mean_kl": max(0.0, float(kl.mean())),  # clipping can leave -1e-13 where the true value is 0
        "n_samples": int(len(ref)),
    }
