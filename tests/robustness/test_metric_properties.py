"""Property-based parity: our metrics equal scikit-learn's on random labels and scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from modelpress.errors import InputError
from modelpress.runtime.metrics import classification_metrics, to_probabilities


@st.composite
def labelled_scores(draw):
    n_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(scale=draw(st.sampled_from([0.1, 1.0, 10.0])), size=(n, n_classes))
    return y, logits, n_classes


@settings(max_examples=50, deadline=None)
@given(labelled_scores())
def test_parity_with_sklearn(case):
    y, logits, k = case
    probs, _ = to_probabilities(logits, n_classes=k)
    m = classification_metrics(y, probs, n_classes=k)
    pred = probs.argmax(1)
    labels = [int(c) for c in np.unique(y)]  # averages over the classes present (runtime/metrics.py docstring)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, labels=labels, average=avg, zero_division=0))
        assert m[f"precision_{avg}"] == pytest.approx(
            skm.precision_score(y, pred, labels=labels, average=avg, zero_division=0))
        assert m[f"recall_{avg}"] == pytest.approx(
            skm.recall_score(y, pred, labels=labels, average=avg, zero_division=0))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=list(range(k))).tolist()
    if len(labels) < 2:
        assert m["roc_auc"] is None and m["roc_auc_reason"]
    elif k == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    elif len(labels) == k:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", labels=labels))
    else:  # one-vs-rest over the present classes
        assert m["roc_auc"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in labels]))


@settings(max_examples=40, deadline=None)
@given(labelled_scores(), st.floats(0.01, 1000))
def test_auc_invariant_to_logit_scale_in_binary(case, scale):
    """ROC-AUC uses the ranking of scores: scaling logits must not change it (softmax is monotone here)."""
    y, logits, _ = case
    logits = logits[:, :2]
    y = y % 2
    if len(np.unique(y)) < 2:
        return
    a = classification_metrics(y, logits, n_classes=2)["roc_auc"]
    b = classification_metrics(y, logits * scale, n_classes=2)["roc_auc"]
    assert a == pytest.approx(b, abs=1e-12)  # ranked by log-odds: no saturation ties however confident


def test_scores_not_summing_to_one_are_treated_as_logits():
    """Unnormalised scores go through softmax, which keeps the per-row order, so AUC stays right; the note says so."""
    y = np.array([0, 1, 1, 0, 1])
    raw = np.array([[2.0, 1.0], [0.1, 3.0], [0.5, 0.9], [4.0, 4.5], [0.0, 2.0]])
    probs, note = to_probabilities(raw, n_classes=2)
    assert note == "softmax(logits)"
    margin = raw[:, 1] - raw[:, 0]
    assert classification_metrics(y, probs, n_classes=2)["roc_auc"] == pytest.approx(skm.roc_auc_score(y, margin))


def test_nan_scores_are_reported_not_crashed():
    with pytest.raises(InputError, match="NaN or infinite"):
        to_probabilities(np.array([[0.1, np.nan]]), n_classes=2)
