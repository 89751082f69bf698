"""The statistics behind compare's gates: McNemar, weighted metrics, paired bootstrap, binomial, latency ratio."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelpress.errors import InputError
from modelpress.reports.stats import (
    binomial_below,
    latency_ratio,
    mcnemar_exact,
    paired_bootstrap,
    weighted_metric,
)


def _sklearn(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    k = proba.shape[1]
    if metric == "accuracy":
        return skm.accuracy_score(y, proba.argmax(1))
    if metric == "f1_macro":
        return skm.f1_score(y, proba.argmax(1), average="macro", labels=list(range(k)), zero_division=0)
    if k == 2:
        return skm.roc_auc_score(y, proba[:, 1])
    return skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(k)))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct-scores", "tied-scores"])
@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "roc_auc"])
def test_weighted_metric_matches_sklearn_on_resamples(metric: str, n_classes: int, ties: bool) -> None:
    rng = np.random.default_rng(n_classes)
    y = np.r_[np.arange(n_classes), rng.integers(0, n_classes, size=300)]
    proba = rng.dirichlet(np.ones(n_classes), size=y.size)
    if ties:  # rounding makes tied scores, which AUC counts as one half
        proba = np.round(proba, 2) + 1e-3
    proba /= proba.sum(axis=1, keepdims=True)
    assert weighted_metric(metric, y, proba, np.ones((1, y.size)))[0] == pytest.approx(_sklearn(metric, y, proba))
    for _ in range(3):
        draw = rng.integers(0, y.size, size=y.size)
        if len(np.unique(y[draw])) < n_classes:
            continue
        counts = np.bincount(draw, minlength=y.size)[None].astype(float)
        got = weighted_metric(metric, y, proba, counts)[0]
        assert got == pytest.approx(_sklearn(metric, y[draw], proba[draw]), abs=1e-12)


def test_weighted_auc_is_nan_when_a_class_is_missing() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    weights = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    out = weighted_metric("roc_auc", y, proba, weights)
    assert np.isnan(out[0]) and out[1] == 1.0


def test_mcnemar_exact_counts_and_p_value() -> None:
    base = np.array([True] * 10 + [False] * 5 + [True] * 85)
    cand = np.array([False] * 10 + [False] * 5 + [True] * 85)
    out = mcnemar_exact(base, cand)
    assert out == {"n": 100, "both_correct": 85, "baseline_only": 10, "candidate_only": 0, "both_wrong": 5,
                   "p_value": pytest.approx(2 * 0.5**10)}
    assert mcnemar_exact(base, base)["p_value"] == 1.0
    # 6 vs 4 discordant: clearly not significant
    assert mcnemar_exact([1] * 6 + [0] * 4, [0] * 6 + [1] * 4)["p_value"] == pytest.approx(0.753906, abs=1e-6)


def test_mcnemar_rejects_unpaired() -> None:
    with pytest.raises(InputError, match="baseline has 3 but candidate has 2"):
        mcnemar_exact([True, False, True], [True, True])


def test_paired_bootstrap_identical_models_has_zero_drop() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=200)
    proba = rng.dirichlet(np.ones(3), size=200)
    out = paired_bootstrap("roc_auc", y, proba, proba, n_boot=200)
    assert out["drop"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0 and out["p_value"] == 1.0
    assert out["n_valid"] == 200


def test_paired_bootstrap_is_reproducible_and_detects_a_real_drop() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=1000)
    good = np.column_stack([1 - y, y]) * 0.6 + rng.random((1000, 2)) * 0.4
    bad = np.column_stack([1 - y, y]) * 0.2 + rng.random((1000, 2)) * 0.8
    first = paired_bootstrap("roc_auc", y, good, bad, n_boot=300, seed=3)
    assert first == paired_bootstrap("roc_auc", y, good, bad, n_boot=300, seed=3)
    assert first["drop"] > 0.1 and first["ci_low"] > 0.05 and first["p_value"] < 0.01


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_boot": 10}, "n_boot = 10 is out of range"),
    ({"alpha": 1.5}, "alpha = 1.5 is out of range"),
])
def test_paired_bootstrap_rejects_bad_settings(kwargs: dict, message: str) -> None:
    y = np.array([0, 1])
    proba = np.array([[0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(InputError, match=message):
        paired_bootstrap("accuracy", y, proba, proba, **kwargs)


def test_paired_bootstrap_undefined_auc() -> None:
    y = np.zeros(20, dtype=int)
    proba = np.full((20, 2), 0.5)
    with pytest.raises(InputError, match="roc_auc is undefined on these 20 samples"):
        paired_bootstrap("roc_auc", y, proba, proba, n_boot=100)


def test_binomial_below() -> None:
    assert binomial_below(990, 1000, 0.99) > 0.4  # at the floor: no evidence of being below
    assert binomial_below(950, 1000, 0.99) < 1e-6
    assert binomial_below(89, 90, 0.99) > 0.05  # one disagreement in 90 is not evidence against 0.99
    with pytest.raises(InputError, match="0 <= successes <= n"):
        binomial_below(5, 4, 0.5)


def test_latency_ratio_is_slowdown_with_ci() -> None:
    rng = np.random.default_rng(4)
    base = rng.lognormal(np.log(2.0), 0.05, size=400)
    cand = rng.lognormal(np.log(2.6), 0.05, size=400)
    out = latency_ratio(base, cand, n_boot=500)
    assert out["ratio"] == pytest.approx(1.3, rel=0.03)
    assert out["ci_low"] < out["ratio"] < out["ci_high"] and out["ci_low"] > 1.2
