"""Metric parity with scikit-learn, the undefined-ROC-AUC policy, bad-input messages and fidelity."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelpress.errors import InputError
from modelpress.runtime.metrics import classification_metrics, fidelity, to_probabilities

KEYS = {
    "accuracy", "balanced_accuracy", "precision_macro", "precision_weighted", "recall_macro", "recall_weighted",
    "f1_macro", "f1_weighted", "roc_auc", "roc_auc_reason", "roc_auc_rule", "per_class", "classes_present",
    "classes_absent", "confusion_matrix", "n_samples",
}


def _random_case(n: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y_true] += 1.0  # better than chance, so the metrics are not all near one value
    probs, _ = to_probabilities(logits, n_classes=n_classes)
    return y_true, probs


@pytest.mark.parametrize("n_classes", [2, 4], ids=["binary", "multiclass"])
def test_parity_with_sklearn(n_classes: int) -> None:
    y_true, probs = _random_case(300, n_classes)
    y_pred = probs.argmax(axis=1)
    labels = list(range(n_classes))
    got = classification_metrics(y_true, probs, n_classes=n_classes)

    assert set(got) == KEYS
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        for avg in ("macro", "weighted"):
            want = fn(y_true, y_pred, average=avg, labels=labels, zero_division=0)
            assert got[f"{name}_{avg}"] == pytest.approx(want), f"{name}_{avg}"
    if n_classes == 2:
        want_auc = skm.roc_auc_score(y_true, probs[:, 1])
    else:
        want_auc = skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
    assert got["roc_auc"] == pytest.approx(want_auc)
    assert got["roc_auc_reason"] is None
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    assert [c["index"] for c in got["per_class"]] == labels
    assert [c["name"] for c in got["per_class"]] == [str(i) for i in labels]
    assert np.allclose([c["precision"] for c in got["per_class"]], prec)
    assert np.allclose([c["recall"] for c in got["per_class"]], rec)
    assert np.allclose([c["f1"] for c in got["per_class"]], f1)
    assert [c["support"] for c in got["per_class"]] == support.tolist()
    assert got["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert got["n_samples"] == 300


def test_logits_give_the_same_metrics_as_their_softmax() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, size=50)
    logits = rng.normal(size=(50, 3)) * 4
    probs, note = to_probabilities(logits, n_classes=3)
    assert note == "softmax(logits)"
    assert classification_metrics(y_true, logits, n_classes=3) == classification_metrics(y_true, probs, n_classes=3)


def test_one_class_roc_auc_is_null_with_reason_and_other_metrics_present() -> None:
    y_true = np.zeros(6, dtype=int)
    probs = np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]] * 2)
    got = classification_metrics(y_true, probs, n_classes=2, class_names=["cat", "dog"])
    assert got["roc_auc"] is None
    assert got["roc_auc_reason"] == (
        "ROC-AUC is undefined: y_true holds only one class (0: 'cat'), so there are no negatives to rank against"
    )
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["confusion_matrix"] == [[4, 2], [0, 0]]
    assert [c["index"] for c in got["per_class"]] == [0]  # rows for present classes only
    assert (got["classes_present"], got["classes_absent"], got["roc_auc_rule"]) == (1, 1, None)


def test_absent_classes_leave_the_averages_and_roc_auc_over_the_present_ones() -> None:
    rng = np.random.default_rng(4)
    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 2])
    probs = rng.dirichlet(np.ones(5), size=8)
    probs[np.arange(8), y_true] += 0.3 * rng.random(8)
    probs /= probs.sum(axis=1, keepdims=True)
    got = classification_metrics(y_true, probs, n_classes=5)
    y_pred = probs.argmax(axis=1)
    want_auc = np.mean([skm.roc_auc_score(y_true == c, probs[:, c]) for c in (0, 1, 2)])
    assert got["roc_auc"] == pytest.approx(want_auc) and got["roc_auc_reason"] is None
    assert got["roc_auc_rule"] == "one-vs-rest macro over the 3 classes present in y_true (of 5 the model outputs)"
    want_recall = skm.recall_score(y_true, y_pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert got["recall_macro"] == pytest.approx(want_recall)
    assert [c["index"] for c in got["per_class"]] == [0, 1, 2]
    assert (got["classes_present"], got["classes_absent"]) == (3, 2)
    assert len(got["confusion_matrix"]) == 5


@pytest.mark.parametrize(
    ("y_true", "y_score", "n_classes", "match"),
    [
        pytest.param(np.zeros(100, int), np.full((80, 2), 0.5), 2, "^y_true has 100 rows but y_score has 80$",
                     id="length-mismatch"),
        pytest.param(np.array([0, 1, 12, -1, 12]), np.full((5, 10), 0.1), 10,
                     r"^y_true has 3 labels outside \[0, 10\): values -1, 12$", id="labels-out-of-range"),
        pytest.param(np.array([0, 1, 1]), np.array([[0.5, 0.5], [np.nan, 0.5], [np.inf, 0.0]]), 2,
                     r"^model outputs holds 2 NaN or infinite values \(first in row 1\)$", id="nan-scores"),
        pytest.param(np.array([], int), np.empty((0, 2)), 2, "^y_true is empty", id="empty"),
        pytest.param(np.array([0, 1, 1]), np.array([0, 1, 0]), 2,
                     r"^ROC-AUC needs scores \(probabilities or logits\), got hard labels$", id="hard-labels"),
        pytest.param(np.array([0, 1]), np.full((2, 3), 1 / 3), 10,
                     "^model outputs 3 scores per sample but the data has 10 classes$", id="wrong-width"),
        pytest.param(np.array([0.5, 1.0]), np.full((2, 2), 0.5), 2, "non-integer", id="float-labels"),
        pytest.param(np.array([0, 1]), np.full((2, 2), 0.5), 1, "n_classes must be an integer >= 2",
                     id="one-class-task"),
    ],
)
def test_bad_input_messages(y_true: np.ndarray, y_score: np.ndarray, n_classes: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        classification_metrics(y_true, y_score, n_classes=n_classes)


def test_class_names_of_wrong_length() -> None:
    with pytest.raises(InputError, match="^class_names has 1 entries but the data has 2 classes$"):
        classification_metrics([0, 1], [[0.6, 0.4], [0.3, 0.7]], n_classes=2, class_names=["a"])


def test_to_probabilities_modes() -> None:
    probs = np.array([[0.2, 0.8], [1.0, 0.0]])
    same, note = to_probabilities(probs, n_classes=2)
    assert note == "probabilities" and same is not None and np.array_equal(same, probs)

    big, note = to_probabilities(np.array([[1000.0, 0.0, -1000.0]]), n_classes=3)  # would overflow naively
    assert note == "softmax(logits)"
    assert np.allclose(big, [[1.0, 0.0, 0.0]]) and np.isfinite(big).all()

    for shape in [(3,), (3, 1)]:
        out, note = to_probabilities(np.array([0.0, 2.0, -2.0]).reshape(shape), n_classes=2)
        assert note == "sigmoid(logit)"
        sig = 1 / (1 + np.exp(-np.array([0.0, 2.0, -2.0])))
        assert np.allclose(out, np.column_stack([1 - sig, sig]))

    with pytest.raises(InputError, match="^model outputs 1 score per sample but the data has 10 classes$"):
        to_probabilities(np.zeros(4), n_classes=10)
    with pytest.raises(InputError, match="^model outputs are empty"):
        to_probabilities(np.empty((0, 3)), n_classes=3)


def test_fidelity_identity() -> None:
    logits = np.random.default_rng(2).normal(size=(40, 5))
    got = fidelity(logits, logits.copy(), n_classes=5)
    assert got == {"top1_agreement": 1.0, "max_abs_diff": 0.0, "mean_abs_diff": 0.0, "mean_kl": 0.0, "n_samples": 40}


def test_fidelity_known_perturbation() -> None:
    ref = np.zeros((4, 2))
    ref[:, 0] = 2.0  # logits [2, 0]: not a probability row, so softmax applies
    cand = ref.copy()
    cand[0] = [0.0, 2.0]  # row 0 flips its top-1 class; outputs move by 2.0 in two places
    got = fidelity(ref, cand, n_classes=2)
    assert got["top1_agreement"] == 0.75
    assert got["max_abs_diff"] == 2.0
    assert got["mean_abs_diff"] == pytest.approx(4 / 8)
    p = 1 / (1 + np.exp(-2.0))  # softmax([2, 0])[0]
    kl_row0 = p * np.log(p / (1 - p)) + (1 - p) * np.log((1 - p) / p)
    assert got["mean_kl"] == pytest.approx(kl_row0 / 4)
    assert got["n_samples"] == 4


def test_fidelity_shape_mismatch() -> None:
    with pytest.raises(InputError, match=r"^reference outputs have shape \(3, 2\) but candidate outputs have shape"):
        fidelity(np.zeros((3, 2)), np.zeros((4, 2)), n_classes=2)
