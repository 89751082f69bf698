"""Latency loop, statistics and speed-up CI, driven by synthetic clocks (no assertions on real time)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from modelpress.errors import InputError
from modelpress.runtime.latency import (
    LatencyConfig,
    measure_cold_start,
    measure_latency,
    nearest_rank_percentile,
    speedup_ratio,
    summarize_samples,
)

STAT_KEYS = {
    "backend", "batch_size", "threads", "n", "warmup", "median_ms", "mean_ms", "std_ms", "iqr_ms", "p90_ms",
    "p95_ms", "p99_ms", "min_ms", "max_ms", "throughput_per_s", "cold_start_ms", "unstable",
}


def synthetic_timer(durations_s: Iterable[float], *, warmup_readings: int = 2) -> Callable[[], float]:
    """A clock for measure_latency: ``warmup_readings`` zeros for the warm-up, then back-to-back calls.

    The measurement loop reads the clock right before and right after each call; here the "before" of call k+1
    equals the "after" of call k, so elapsed time is exactly the sum of the durations so far.
    """
    times: list[float] = [0.0] * warmup_readings
    now = 0.0
    for d in durations_s:
        times += [now, now + d]
        now += d
    return iter(times).__next__


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def run(durations_s: Iterable[float], **config: float) -> tuple[dict, np.ndarray, Counter]:
    fn = Counter()
    cfg = LatencyConfig(**{"warmup_min_calls": 3, "warmup_min_s": 0.0, "min_s": 0.0, **config})
    stats, samples = measure_latency(
        fn, config=cfg, timer=synthetic_timer(durations_s), batch_size=32, threads=4, backend="torch"
    )
    return stats, samples, fn


def test_warmup_count_n_and_nearest_rank_statistics() -> None:
    durations = [k / 1024 for k in range(10, 0, -1)]  # 10..1 "ms"-ish units, exact in binary
    stats, samples, fn = run(durations, min_calls=10, max_calls=10)
    assert set(stats) == STAT_KEYS
    assert stats["warmup"] == 3 and stats["n"] == 10 and fn.calls == 13
    assert np.allclose(samples, np.array(durations) * 1e3)
    unit = 1e3 / 1024
    assert stats["median_ms"] == pytest.approx(5.5 * unit)
    assert stats["p90_ms"] == pytest.approx(9 * unit)  # ceil(0.9 * 10) = 9th smallest
    assert stats["p95_ms"] == pytest.approx(10 * unit)  # ceil(9.5) = 10th
    assert stats["p99_ms"] == pytest.approx(10 * unit)
    assert stats["iqr_ms"] == pytest.approx((8 - 3) * unit)  # p75 = 8th, p25 = ceil(2.5) = 3rd
    assert stats["min_ms"] == pytest.approx(unit) and stats["max_ms"] == pytest.approx(10 * unit)
    assert stats["mean_ms"] == pytest.approx(5.5 * unit)
    assert stats["std_ms"] == pytest.approx(np.std(np.arange(1, 11), ddof=1) * unit)
    assert stats["unstable"] is True
    assert (stats["backend"], stats["batch_size"], stats["threads"], stats["cold_start_ms"]) == ("torch", 32, 4, None)


def test_warmup_runs_until_both_minimums() -> None:
    fn = Counter()
    # Warm-up readings: start 0.0, then one per call once 2 calls are done: 0.1, 0.2, 0.3 (>= 0.25 s) -> 4 calls.
    times = [0.0, 0.1, 0.2, 0.3] + [1.0, 1.5]
    cfg = LatencyConfig(warmup_min_calls=2, warmup_min_s=0.25, min_calls=1, min_s=0.0, max_calls=1)
    stats, samples = measure_latency(fn, config=cfg, timer=iter(times).__next__, batch_size=1, threads=1,
                                     backend="x")
    assert stats["warmup"] == 4 and stats["n"] == 1 and fn.calls == 5
    assert samples.tolist() == [500.0]


@pytest.mark.parametrize(
    ("config", "want_n"),
    [
        pytest.param({"min_calls": 2, "min_s": 1.0}, 4, id="min_s-after-min_calls"),
        pytest.param({"min_calls": 6, "min_s": 1.0}, 6, id="min_calls-after-min_s"),
        pytest.param({"min_calls": 50, "min_s": 1.0, "max_s": 2.0}, 8, id="max_s-cap"),
        pytest.param({"min_calls": 3, "min_s": 1.0, "max_calls": 3, "max_s": 100.0}, 3, id="max_calls-cap"),
    ],
)
def test_stopping_rules(config: dict, want_n: int) -> None:
    stats, samples, _ = run(itertools.repeat(0.25, 100), **config)
    assert stats["n"] == want_n and samples.size == want_n


def test_stable_run_and_throughput() -> None:
    stats, _, _ = run([0.002] * 20, min_calls=20)
    assert stats["median_ms"] == pytest.approx(2.0)
    assert stats["throughput_per_s"] == pytest.approx(32 / 0.002)
    assert stats["unstable"] is False and stats["iqr_ms"] == pytest.approx(0.0)


def test_unstable_flag_threshold() -> None:
    base = dict(batch_size=1, threads=1, backend="torch", warmup=0)
    # n = 4: p25 is the 1st smallest, p75 the 3rd; median 10.
    assert summarize_samples([9.5, 10.0, 10.0, 10.4], **base)["unstable"] is False  # IQR 0.5 = 5 %
    assert summarize_samples([9.0, 10.0, 10.0, 11.5], **base)["unstable"] is False  # IQR 1.0 = 10 %: not > 10 %
    assert summarize_samples([8.0, 9.5, 10.5, 12.0], **base)["unstable"] is True  # IQR 10.5 - 8 = 2.5


def test_progress_gets_every_timed_call() -> None:
    class Bar:
        total = 0

        def update(self, n: int) -> None:
            self.total += n

    bar = Bar()
    cfg = LatencyConfig(warmup_min_calls=0, warmup_min_s=0.0, min_calls=600, min_s=0.0, max_calls=600)
    stats, _ = measure_latency(lambda: None, config=cfg, timer=synthetic_timer([1e-3] * 600),
                               batch_size=1, threads=1, backend="torch", progress=bar)
    assert stats["warmup"] == 0 and bar.total == stats["n"] == 600


def test_cold_start() -> None:
    made = Counter()
    ms, fn = measure_cold_start(lambda: made, timer=iter([1.0, 1.125]).__next__)
    assert ms == pytest.approx(125.0) and fn is made and made.calls == 1
    stats, _, _ = run([0.001] * 5, min_calls=5)
    stats2, _ = measure_latency(Counter(), config=LatencyConfig(min_calls=1, min_s=0.0, warmup_min_calls=0,
                                                                 warmup_min_s=0.0, max_calls=1),
                                timer=synthetic_timer([0.001]), batch_size=1, threads=1,
                                backend="torch", cold_start_ms=ms)
    assert stats["cold_start_ms"] is None and stats2["cold_start_ms"] == pytest.approx(125.0)


def test_nearest_rank_percentile() -> None:
    data = [15, 20, 35, 40, 50]  # the textbook nearest-rank example
    assert [nearest_rank_percentile(data, q) for q in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    hundred = np.arange(1, 101)
    assert nearest_rank_percentile(hundred, 95) == 95  # 0.95 * 100 must not round up to rank 96
    assert nearest_rank_percentile(np.arange(1, 1001), 99.9) == 999
    for bad in (0, -1, 100.5):
        with pytest.raises(InputError, match=r"percentile q = .* allowed: 0 < q <= 100"):
            nearest_rank_percentile(data, bad)
    with pytest.raises(InputError, match="0 samples"):
        nearest_rank_percentile([], 50)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"min_calls": 0}, r"min_calls = 0 is out of range; allowed: an integer >= 1", id="min_calls"),
        pytest.param({"warmup_min_calls": -1}, r"warmup_min_calls = -1 .* >= 0", id="warmup_min_calls"),
        pytest.param({"min_calls": 2.5}, r"min_calls = 2.5", id="float-count"),
        pytest.param({"warmup_min_s": -0.1}, r"warmup_min_s = -0.1 .* >= 0 \(seconds\)", id="negative-seconds"),
        pytest.param({"max_s": float("nan")}, r"max_s = nan .* > 0", id="nan-seconds"),
        pytest.param({"max_s": 0}, r"max_s = 0 is out of range; allowed: a finite number > 0", id="zero-max_s"),
        pytest.param({"max_calls": 50}, r"max_calls = 50 .* >= min_calls \(100\)", id="max_calls<min_calls"),
        pytest.param({"max_s": 0.5}, r"max_s = 0.5 .* >= min_s \(1.0\)", id="max_s<min_s"),
        pytest.param({"min_calls": True}, r"min_calls = True", id="bool"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        LatencyConfig(**kwargs)


def test_config_profiles() -> None:
    quick, precise = LatencyConfig.quick(), LatencyConfig.precise()
    assert (quick.warmup_min_calls, quick.warmup_min_s, quick.min_calls, quick.min_s) == (10, 0.2, 100, 1.0)
    assert precise.min_calls >= 1000 and precise.min_s >= 10.0 and precise.max_s >= precise.min_s


def test_measure_latency_rejects_bad_batch_size() -> None:
    with pytest.raises(InputError, match="batch_size = 0 is out of range"):
        measure_latency(lambda: None, config=LatencyConfig(), batch_size=0, threads=1, backend="torch")


def test_speedup_ratio_known_two_x() -> None:
    rng = np.random.default_rng(0)
    baseline = 2.0 * rng.uniform(0.9, 1.1, size=400)
    candidate = rng.uniform(0.9, 1.1, size=300)
    got = speedup_ratio(baseline, candidate)
    assert set(got) == {"ratio", "ci_low", "ci_high"}
    assert got["ratio"] == pytest.approx(np.median(baseline) / np.median(candidate))
    assert got["ci_low"] < 2.0 < got["ci_high"]
    assert got["ci_low"] <= got["ratio"] <= got["ci_high"]
    assert got["ci_high"] - got["ci_low"] < 0.2
    assert speedup_ratio(baseline, candidate) == got  # seeded: reproducible


def test_speedup_ratio_bad_input() -> None:
    with pytest.raises(InputError, match="candidate has 0 latency samples"):
        speedup_ratio([1.0], [])
    with pytest.raises(InputError, match="baseline has 1 latency samples that are not finite positive"):
        speedup_ratio([1.0, float("nan")], [1.0])
    with pytest.raises(InputError, match="n_boot = 10 is out of range"):
        speedup_ratio([1.0], [1.0], n_boot=10)
