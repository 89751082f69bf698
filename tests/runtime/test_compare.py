"""The one output comparison (runtime/compare.py) on hand-made outputs, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelpress.errors import InputError
from modelpress.runtime.compare import SQNR_CAP_DB, compare_batches, compare_outputs


def test_record_on_hand_made_logits():
    ref = np.array([[2.0, 0.0], [0.0, 1.0]])
    cand = np.array([[1.5, 0.0], [1.0, 0.0]])  # rows not summing to 1: logits, not probabilities
    c = compare_outputs(ref, cand, n_classes=2)
    # diffs: 0.5, 0, 1, 1 → max 1, mean 2.5/4; row 0 agrees (class 0), row 1 does not (1 vs 0)
    assert (c.n_samples, c.top1_agreement, c.max_abs_diff, c.mean_abs_diff) == (2, 0.5, 1.0, 0.625)
    # relative: 0.5/2, 0/1e-12 → 0, 1/1e-12 → 1e12 (the zero reference entry), 1/1
    assert c.max_rel_diff == pytest.approx(1e12)
    # cosine: row 0 (2,0)·(1,0) = 2 / (2·1) = 1; row 1 (0,1)·(1,0) = 0
    assert (c.min_cosine, c.mean_cosine) == (0.0, 0.5)
    # SQNR: Σref² = 4 + 1 = 5, Σd² = 0.25 + 1 + 1 = 2.25 → 10·log10(5/2.25)
    assert c.sqnr_db == pytest.approx(10 * math.log10(5 / 2.25))
    # KL(p_ref ‖ p_cand) by hand with softmax probabilities
    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for r, g in zip(ref.tolist(), cand.tolist()):
        p, q = softmax(r), softmax(g)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert c.mean_kl == pytest.approx(kl / 2, rel=1e-12)
    assert c.as_dict()["top1_agreement"] == 0.5


def test_tolerance_rule_is_elementwise_atol_plus_rtol_times_reference():
    ref = np.array([[10.0, 1.0]])
    cand = np.array([[10.5, 1.0]])
    c = compare_outputs(ref, cand, rtol=0.01)
    assert c.max_excess == pytest.approx(0.5 - 0.1)  # |d| − rtol·|ref| at the first element
    assert c.within(0.41) and not c.within(0.39)
    assert c.reference_max_abs == 10.0 and c.mean_kl is None


def test_binary_single_logit_is_judged_on_its_sigmoid():
    ref = np.array([[3.0], [-2.0], [0.5]])
    cand = np.array([[2.0], [0.1], [0.4]])
    # sigmoid > 0.5 ⇔ logit > 0: classes 1, 0, 1 vs 1, 1, 1 → 2 of 3 agree (a raw arg-max of one column: always 1.0)
    assert compare_outputs(ref, cand, n_classes=2).top1_agreement == pytest.approx(2 / 3)
    assert compare_outputs(ref, cand).top1_agreement == 1.0


def test_identical_outputs_and_non_finite_candidates():
    ref = np.array([[1.0, -1.0], [0.5, 0.25]])
    same = compare_outputs(ref, ref.copy(), n_classes=2)
    assert (same.max_abs_diff, same.sqnr_db, same.mean_kl, same.top1_agreement) == (0.0, SQNR_CAP_DB, 0.0, 1.0)
    bad = compare_outputs(ref, np.array([[np.inf, -1.0], [np.nan, 0.25]]), n_classes=2)
    # inf/NaN count, are read as 0 for the differences, and fail any tolerance
    assert bad.non_finite == 2 and bad.max_abs_diff == 1.0 and bad.mean_kl is None and not bad.within(1e9)


def test_batches_are_judged_as_one_set_of_rows():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    cand = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.5]])
    whole = compare_outputs(ref, cand)
    split = compare_batches([(ref[:1], cand[:1]), (ref[1:], cand[1:])])
    assert split == whole and split.n_samples == 3 and split.top1_agreement == pytest.approx(2 / 3)


def test_bad_inputs_are_input_errors_with_the_shapes():
    with pytest.raises(InputError, match=r"shape \(2, 3\) but candidate outputs have shape \(2, 2\)"):
        compare_outputs(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="compared 0 samples"):
        compare_outputs(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(InputError, match="reference outputs hold 1 inf/NaN"):
        compare_outputs(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
