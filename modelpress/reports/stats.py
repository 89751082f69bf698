"""Paired statistics behind ``compare``'s gates: exact McNemar, paired bootstrap, binomial and latency-ratio tests.

Two runs of one model never give identical numbers: a different seed, thread schedule or library version moves a
few predictions and every latency. A gate that compares two bare numbers therefore flaps. Every test here is
*paired* where the data allow it (both models scored the same samples, in the same order, so the per-sample
differences carry the signal and the shared difficulty of the samples cancels out), and every bootstrap is seeded so
a comparison is reproducible.

Pure numpy + scipy; scipy.stats is imported lazily because it costs a noticeable fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.latency import speedup_ratio
from ..metric_schema import section

__all__ = [
    "BOOTSTRAP_METRICS",
    "binomial_below",
    "latency_ratio",
    "mcnemar_exact",
    "paired_bootstrap",
    "weighted_metric",
]

#: Metrics :func:`paired_bootstrap` can resample: the declared task metrics with a paired test (fractions in
#: [0, 1], higher is better). Declaring another one needs its weighted form in :func:`weighted_metric`.
BOOTSTRAP_METRICS = tuple(m.key for m in section("metrics") if m.paired_test)
#: Bootstrap weight matrices are built in blocks of at most this many elements (~32 MB of float64).
_BLOCK_ELEMENTS = 4_000_000


def mcnemar_exact(correct_baseline: Any, correct_candidate: Any) -> dict[str, Any]:
    """Exact McNemar test of two classifiers scored on the same samples.

    Only discordant samples (one model right, the other wrong) carry information about which model is better; under
    the null hypothesis of equal accuracy each discordant sample is a fair coin, so the p-value is a two-sided exact
    binomial test of ``baseline_only`` successes in ``baseline_only + candidate_only`` trials at 0.5
    (``scipy.stats.binomtest``). Exact rather than chi-squared because CI comparisons often have few discordant pairs.

    Args:
        correct_baseline: ``(n,)`` booleans, True where the baseline predicted the right class.
        correct_candidate: ``(n,)`` booleans for the candidate, on the same samples in the same order.

    Returns:
        ``n, both_correct, baseline_only, candidate_only, both_wrong`` (counts) and ``p_value`` (two-sided; 1.0 when
        there is no discordant sample).

    Raises:
        InputError: the arrays are empty, not 1-D, or of different lengths.
    """
    base = _bool_vector(correct_baseline, "correct_baseline")
    cand = _bool_vector(correct_candidate, "correct_candidate")
    if base.size != cand.size:
        raise InputError(f"McNemar needs paired samples: baseline has {base.size} but candidate has {cand.size}")
    baseline_only = int(np.count_nonzero(base & ~cand))
    candidate_only = int(np.count_nonzero(~base & cand))
    discordant = baseline_only + candidate_only
    if discordant == 0:
        p_value = 1.0
    else:
        from scipy.stats import binomtest

        p_value = float(binomtest(baseline_only, discordant, 0.5).pvalue)
    return {
        "n": int(base.size),
        "both_correct": int(np.count_nonzero(base & cand)),
        "baseline_only": baseline_only,
        "candidate_only": candidate_only,
        "both_wrong": int(np.count_nonzero(~base & ~cand)),
        "p_value": min(1.0, p_value),
    }


def binomial_below(successes: int, n: int, threshold: float) -> float:
    """One-sided exact binomial p-value that the true rate is below ``threshold`` (e.g. top-1 agreement).

    Small values mean ``successes / n`` is significantly below ``threshold``; a rate at or above it gives a large
    p-value. Used by the minimum-fidelity gate so that a floor of 0.99 does not fail on 1 disagreement in 90.
    """
    if n < 1 or not 0 <= successes <= n:
        raise InputError(f"binomial test needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"binomial threshold {threshold!r} is out of range; allowed: 0 to 1")
    if threshold == 0.0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(successes), int(n), float(threshold), alternative="less").pvalue)


def weighted_metric(metric: str, y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray,
                    classes: Any = None) -> np.ndarray:
    """A metric for each row of sample weights, vectorised (a bootstrap resample is a row of counts).

    Resampling with replacement is the same as weighting each original sample by how often it was drawn, so one
    matrix product (accuracy, F1) or one sorted cumulative sum per class (ROC-AUC) scores thousands of resamples.
    Macro F1 and ROC-AUC average over ``classes`` (default: the classes present in ``y_true``), as the report's
    metrics do (:mod:`modelpress.runtime.metrics`): a class the evaluation data lacks never enters an average
    (its F1 would count as 0, its ROC-AUC is undefined). With all weights 1 the result equals scikit-learn's
    ``accuracy_score``, ``f1_score(average="macro", labels=present, zero_division=0)`` and ``roc_auc_score``
    (binary, or one-vs-rest macro over the present classes) on the same data.

    Args:
        metric: One of :data:`BOOTSTRAP_METRICS`.
        y_true: ``(n,)`` integer class indices in ``[0, k)``.
        proba: ``(n, k)`` class probabilities (or any scores that rank like them).
        weights: ``(b, n)`` non-negative sample weights.
        classes: the classes averaged over; keep them fixed across resamples (a present class that a resample
            happens to miss then counts, as it would with more data).

    Returns:
        ``(b,)`` float64 values; NaN for ROC-AUC where a resample has no positive or no negative for some class.
    """
    n_classes = proba.shape[1]
    present = np.unique(y_true) if classes is None else np.asarray(classes, dtype=np.int64)
    if metric == "accuracy":
        correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
        return weights @ correct / weights.sum(axis=1)
    if metric == "f1_macro":
        eye = np.eye(n_classes)[:, present]
        true_hot, pred_hot = eye[y_true], eye[proba.argmax(axis=1)]
        tp = weights @ (true_hot * pred_hot)
        denom = weights @ true_hot + weights @ pred_hot
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)
        return f1.mean(axis=1)
    if metric == "roc_auc":
        if present.size < 2:
            return np.full(weights.shape[0], np.nan)
        per_class = [_weighted_auc(y_true == k, proba[:, k], weights)
                     for k in ([1] if n_classes == 2 else present)]
        return np.mean(per_class, axis=0)
    raise InputError(f"unknown bootstrap metric {metric!r}; allowed: {', '.join(BOOTSTRAP_METRICS)}")


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per weight row; tied scores count one half, as in ``roc_auc_score``."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, is_pos = scores[order], positive[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    if starts.size == scores.size:  # no ties: each positive beats the negative weight sorted below it
        neg_below = np.cumsum(w * ~is_pos, axis=1)[:, is_pos]
        w_pos = w[:, is_pos]
        numerator = np.sum(w_pos * neg_below, axis=1)
        pos_total = w_pos.sum(axis=1)
        neg_total = w.sum(axis=1) - pos_total
    else:  # sum each tie group; members of one group count half against each other
        pos = np.add.reduceat(w * is_pos, starts, axis=1)
        neg = np.add.reduceat(w, starts, axis=1) - pos
        numerator = np.sum(pos * (np.cumsum(neg, axis=1) - 0.5 * neg), axis=1)
        pos_total, neg_total = pos.sum(axis=1), neg.sum(axis=1)
    denominator = pos_total * neg_total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _weight_blocks(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    rows = max(1, _BLOCK_ELEMENTS // n)
    for lo in range(0, n_boot, rows):
        count = min(n_boot, lo + rows) - lo
        draws = rng.integers(0, n, size=(count, n)) + (np.arange(count) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=count * n).reshape(count, n).astype(np.float64)


def paired_bootstrap(
    metric: str,
    y_true: Any,
    proba_baseline: Any,
    proba_candidate: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Paired percentile bootstrap of ``metric(baseline) - metric(candidate)`` (the drop; positive = worse).

    Samples are resampled *jointly*: each resample scores both models on the same drawn samples, so the interval
    reflects how much the two models differ on the same inputs, not the much larger spread of each metric alone.

    Args:
        metric: ``accuracy``, ``f1_macro`` or ``roc_auc``.
        y_true: ``(n,)`` class indices.
        proba_baseline: ``(n, k)`` baseline probabilities.
        proba_candidate: ``(n, k)`` candidate probabilities on the same samples.
        n_boot: Resamples (>= 100).
        seed: Seed of the resampling, so a comparison is reproducible.
        alpha: The interval is the two-sided ``1 - alpha`` percentile interval.

    Returns:
        ``baseline``, ``candidate`` (point estimates on the full data), ``drop`` (their difference), ``ci_low``,
        ``ci_high`` (of the drop), ``p_value`` (two-sided bootstrap p-value of "no difference"), ``n_boot`` and
        ``n_valid`` (resamples where the metric was defined for both models; ROC-AUC needs every class present).
        A drop is significant at ``alpha`` when ``ci_low > 0``.

    Raises:
        InputError: bad shapes, an unknown metric, or a metric undefined on the full data (ROC-AUC when ``y_true``
            holds one class). Classes absent from ``y_true`` are left out of the macro averages, not an error.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise InputError(f"n_boot = {n_boot!r} is out of range; allowed: an integer >= 100")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha = {alpha!r} is out of range; allowed: 0 < alpha < 1")
    y = np.asarray(y_true).astype(np.int64, copy=False)
    pb = np.asarray(proba_baseline, dtype=np.float64)
    pc = np.asarray(proba_candidate, dtype=np.float64)
    if y.ndim != 1 or pb.ndim != 2 or pb.shape != pc.shape or pb.shape[0] != y.size or y.size == 0:
        raise InputError(
            f"paired bootstrap needs y_true (n,) and two (n, k) arrays; got {y.shape}, {pb.shape} and {pc.shape}"
        )
    ones = np.ones((1, y.size))
    present = np.unique(y)  # averages over the classes present in the data, in every resample alike
    base_value = float(weighted_metric(metric, y, pb, ones, present)[0])
    cand_value = float(weighted_metric(metric, y, pc, ones, present)[0])
    if not (np.isfinite(base_value) and np.isfinite(cand_value)):
        why = (f"y_true holds only one class ({int(present[0])}), so there are no negatives to rank against"
               if present.size < 2 else "a class has no positive or no negative")
        raise InputError(f"{metric} is undefined on these {y.size} samples: {why}")
    rng = np.random.default_rng(seed)
    blocks = _weight_blocks(y.size, n_boot, rng)
    drops = np.concatenate([weighted_metric(metric, y, pb, w, present) - weighted_metric(metric, y, pc, w, present)
                            for w in blocks])
    drops = drops[np.isfinite(drops)]
    if drops.size < max(10, n_boot // 2):
        raise InputError(
            f"{metric} is undefined in {n_boot - drops.size} of {n_boot} bootstrap resamples "
            "(a rare class drops out); use more evaluation samples"
        )
    low, high = np.percentile(drops, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # (k + 1) / (B + 1): a bootstrap p-value is never exactly 0; its resolution is 1 / (n_boot + 1).
    tail = min(int(np.count_nonzero(drops <= 0)), int(np.count_nonzero(drops >= 0)))
    p_value = min(1.0, 2.0 * (tail + 1) / (drops.size + 1))
    return {
        "metric": metric,
        "baseline": base_value,
        "candidate": cand_value,
        "drop": base_value - cand_value,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": p_value,
        "n_boot": int(n_boot),
        "n_valid": int(drops.size),
    }


def latency_ratio(baseline_samples_ms: Any, candidate_samples_ms: Any, *, n_boot: int = 2000,
                  seed: int = 0) -> dict[str, float]:
    """Slow-down of the candidate: ratio of median latencies (candidate / baseline) with a bootstrap 95 % CI.

    The inverse of :func:`~modelpress.runtime.latency.speedup_ratio` (same resampling, arguments swapped), so a
    value of 1.3 reads "30 % slower". The two runs are independent, so each sample set is resampled on its own, in
    blocks of consecutive calls (a block bootstrap: calls in one stretch share the machine's load). Two stages of
    one pipeline run were timed in the same interleaved rounds; their speed-up (``speedup`` of a latency row,
    :func:`~modelpress.runtime.interleaved.rounds_ratio`) is the better evidence and the gates use it.

    Returns:
        ``{"ratio", "ci_low", "ci_high"}``.
    """
    return speedup_ratio(candidate_samples_ms, baseline_samples_ms, n_boot=n_boot, seed=seed)


def _bool_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr.astype(bool)
