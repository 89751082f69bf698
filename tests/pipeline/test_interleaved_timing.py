"""Interleaved timing (runtime/interleaved.py) with a fake clock: the order rotates per round, every sample is the
duration the fake model took, and the CIs are over rounds (one slow round widens them; single calls do not count
as independent). Expected values are computed by hand from the durations, not by the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.errors import InputError
from modelpress.runtime.interleaved import (
    Contestant,
    calls_per_round,
    rotation,
    rounds_median_ci,
    rounds_ratio,
    run_rounds,
    time_interleaved,
)
from modelpress.runtime.latency import LatencyConfig, speedup_ratio


class FakeClock:
    """``timer()`` reads ``now``; a fake model advances it by its duration and logs its name."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, durations_s):
        """A call whose k-th duration is ``durations_s(k)`` seconds (k counts this model's calls from 0)."""
        count = [0]

        def fn() -> None:
            self.now += durations_s(count[0])
            self.log.append(name)
            count[0] += 1

        return fn


def test_rotation_starts_each_round_one_model_later() -> None:
    assert [rotation(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_rounds_run_blocks_in_rotated_order_and_time_each_call() -> None:
    clock = FakeClock()
    fns = [clock.model("a", lambda k: 0.001), clock.model("b", lambda k: 0.002 * (k + 1)),
           clock.model("c", lambda k: 0.005)]
    samples, orders = run_rounds(fns, [2, 1, 1], rounds=3, timer=clock)
    assert orders == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert clock.log == ["a", "a", "b", "c",  # round 0: a's block of 2, then b, c
                         "b", "c", "a", "a",  # round 1 starts with b
                         "c", "a", "a", "b"]  # round 2 starts with c
    np.testing.assert_allclose(samples[0], np.full((3, 2), 1.0))
    np.testing.assert_allclose(samples[1], [[2.0], [4.0], [6.0]])  # b's k-th call takes 2·(k+1) ms
    np.testing.assert_allclose(samples[2], np.full((3, 1), 5.0))


def test_blocks_are_sized_from_the_warmup_and_the_config() -> None:
    clock = FakeClock()
    fn = clock.model("m", lambda k: 0.002)  # 2 ms a call
    config = LatencyConfig(warmup_min_calls=3, warmup_min_s=0.0, min_calls=10, min_s=0.1, rounds=5)
    # warm-up 3 calls; per round: max(ceil(10 / 5), ceil(0.1 s / 5 / 2 ms)) = max(2, 10) = 10 calls
    assert calls_per_round(fn, config=config, rounds=5, timer=clock) == (3, 10)
    capped = LatencyConfig(warmup_min_calls=1, warmup_min_s=0.0, min_calls=10, min_s=1.0, max_s=1.0, rounds=5,
                           max_calls=20)
    # 1 s / 5 rounds / 2 ms = 100 calls wanted, but max_calls 20 / 5 rounds = 4 at most
    assert calls_per_round(fn, config=capped, rounds=5, timer=clock) == (1, 4)


def test_time_interleaved_medians_and_ci_over_rounds() -> None:
    clock = FakeClock()
    ref = clock.model("ref", lambda k: 0.004)
    cand = clock.model("cand", lambda k: 0.001)
    config = LatencyConfig(warmup_min_calls=1, warmup_min_s=0.0, min_calls=8, min_s=0.0, rounds=4)
    (ref_stats, ref_s), (cand_stats, cand_s) = time_interleaved(
        [Contestant("ref", ref, "onnxruntime", 1, 1), Contestant("cand", cand, "onnxruntime", 1, 1)],
        config=config, timer=clock)
    assert ref_s.shape == cand_s.shape == (4, 2)  # 8 calls over 4 rounds
    assert ref_stats["median_ms"] == pytest.approx(4.0) and cand_stats["median_ms"] == pytest.approx(1.0)
    assert cand_stats["timing"] == "interleaved" and cand_stats["rounds"] == 4 and cand_stats["n"] == 8
    assert cand_stats["median_ci_ms"] == pytest.approx([1.0, 1.0])  # no round differs: no spread
    speed = rounds_ratio(ref_s, cand_s)
    assert speed["ratio"] == pytest.approx(4.0) and speed["ci_low"] == pytest.approx(4.0)
    assert speed["ci_high"] == pytest.approx(4.0) and speed["rounds"] == 4


def test_one_slow_round_widens_the_speedup_ci() -> None:
    reference = np.full((5, 4), 2.0)
    steady = np.full((5, 4), 1.0)
    slow_round = steady.copy()
    slow_round[2] = 3.0  # the candidate's third round ran on a busy machine
    calm = rounds_ratio(reference, steady)
    assert (calm["ratio"], calm["ci_low"], calm["ci_high"]) == pytest.approx((2.0, 2.0, 2.0))
    loaded = rounds_ratio(reference, slow_round)
    assert loaded["ratio"] == pytest.approx(2.0)  # 4 of 20 calls slow: the median is still 1 ms
    # resamples that draw the slow round 3+ times of 5 (probability 5.8 % > 2.5 %) have median 3 ms: ratio 2/3
    assert loaded["ci_low"] == pytest.approx(2 / 3)
    assert loaded["ci_high"] == pytest.approx(2.0)
    low, high = rounds_median_ci(slow_round)
    assert (low, high) == pytest.approx((1.0, 3.0))


def test_rounds_ratio_refuses_unpaired_rounds() -> None:
    with pytest.raises(InputError, match="reference has 3 rounds but candidate has 2"):
        rounds_ratio(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(InputError, match="not finite positive"):
        rounds_ratio(np.ones((2, 2)), np.zeros((2, 2)))


def test_per_call_speedup_ci_is_a_block_bootstrap() -> None:
    """The same 200 calls: a contiguous slow stretch (a loaded minute) gives a wider CI than the same values in
    random order, because consecutive calls are resampled together, not as independent draws."""
    base = np.full(200, 2.0)
    stretch = np.r_[np.full(140, 1.0), np.full(60, 1.6)]
    shuffled = np.random.default_rng(1).permutation(stretch)
    wide, narrow = speedup_ratio(base, stretch), speedup_ratio(base, shuffled)
    assert wide["ratio"] == narrow["ratio"] == pytest.approx(2.0)
    assert wide["ci_low"] < 1.5 and narrow["ci_low"] == pytest.approx(2.0)
