"""Pareto front, ties and the best pick on synthetic points with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.search.pareto import (
    Estimate,
    dominates,
    median_interval,
    pareto_front,
    pick_best,
    ties,
    wilson_interval,
)


def test_front_of_accuracy_up_latency_down():
    # (accuracy, latency ms): b dominates d (better on both); c is fastest; a most accurate; e equals b
    points = {"a": [0.99, 3.0], "b": [0.97, 2.0], "c": [0.90, 1.0], "d": [0.96, 2.5], "e": [0.97, 2.0]}
    assert pareto_front(points, [True, False]) == ["a", "b", "c", "e"]
    assert dominates([0.97, 2.0], [0.96, 2.5], [True, False])
    assert not dominates([0.97, 2.0], [0.97, 2.0], [True, False])  # equal points do not dominate each other


def test_three_objectives_front():
    # minimize all three; p4 is dominated by p1 (worse on every axis); p2, p3 trade off
    points = {"p1": [1, 1, 5], "p2": [2, 0, 5], "p3": [0, 3, 4], "p4": [2, 2, 6]}
    assert pareto_front(points, [False, False, False]) == ["p1", "p2", "p3"]


def test_ties_need_overlap_on_every_objective():
    est = {
        "a": [Estimate(0.97, 0.95, 0.99), Estimate(2.0, 1.9, 2.1)],
        "b": [Estimate(0.96, 0.94, 0.98), Estimate(2.05, 1.95, 2.2)],  # overlaps a on both: tie
        "c": [Estimate(0.90, 0.88, 0.92), Estimate(1.0, 0.9, 1.1)],  # separated from both on both
    }
    assert ties(est, ["a", "b", "c"]) == {"a": ["b"], "b": ["a"], "c": []}


def test_pick_best_by_priority_with_statistical_ties():
    # priority 1: latency (min). a and b tie on latency (intervals overlap), c is clearly slower;
    # priority 2: accuracy (max): b is higher, so b wins although a's latency point value is lower.
    est = {
        "a": [Estimate(1.00, 0.95, 1.05), Estimate(0.95, 0.94, 0.96)],
        "b": [Estimate(1.02, 0.97, 1.07), Estimate(0.98, 0.97, 0.99)],
        "c": [Estimate(2.00, 1.90, 2.10), Estimate(0.99, 0.98, 1.00)],
    }
    assert pick_best(est, ["a", "b", "c"], [False, True]) == "b"
    separated = dict(est, b=[Estimate(1.20, 1.15, 1.25), Estimate(0.98, 0.97, 0.99)])
    assert pick_best(separated, ["a", "b", "c"], [False, True]) == "a"
    assert pick_best(est, [], [False, True]) is None


def test_wilson_interval_matches_the_formula():
    low, high = wilson_interval(0.9, 100)
    # hand computation: z=1.96, centre=(0.9+0.019208)/1.038415=0.88515, half=1.96*sqrt(0.0009+0.00000960)/1.038415
    assert low == pytest.approx(0.8256, abs=2e-4) and high == pytest.approx(0.9448, abs=2e-4)


def test_median_interval_order_statistics():
    samples = np.arange(1, 101, dtype=float)  # n=100: ranks 50 -/+ 9.8 -> 40th and 60th values (1-based)
    low, high = median_interval(samples[::-1])
    assert (low, high) == (40.0, 60.0)


def test_final_latency_interval_spans_the_round_medians():
    from modelpress.search.report import round_interval

    rng = np.random.default_rng(0)
    rounds = [rng.normal(1.0 + 0.1 * r, 0.01, 50) for r in range(5)]  # drift of 0.1 ms per round
    medians = [float(np.median(r)) for r in rounds]
    low, high = round_interval(medians, np.concatenate(rounds))
    assert low == pytest.approx(min(medians)) and high == pytest.approx(max(medians))  # ~1.0 .. ~1.4
    assert high - low > 0.35  # far wider than the pooled samples' own median interval
