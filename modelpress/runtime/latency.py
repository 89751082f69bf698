"""Latency measurement: warm-up, a tight timing loop, robust summary statistics and speed-up ratios.

Follows onnxruntime_perf_test / torch.utils.benchmark practice: warm up until both a call count and a duration are
reached, then time each call on its own until both minimums are met (or a cap is hit). Every sample is kept, so the
summary can be recomputed (``summarize_samples``) and two runs compared with a block bootstrap (``speedup_ratio``);
models timed side by side in interleaved rounds are compared over rounds (:mod:`.interleaved`).
Cold start (creating a session plus its first call) is measured separately because it is a different cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelpress.config import Checked, Interval, option
from modelpress.errors import InputError

#: A run is flagged ``unstable`` when its interquartile range exceeds this fraction of the median.
UNSTABLE_IQR_RATIO = 0.10
#: Progress is reported every this many timed calls (reporting every call would cost time inside the loop).
_PROGRESS_EVERY = 256
#: Bootstrap resamples are drawn in blocks of at most this many elements, bounding memory (~32 MB of float64).
_BOOT_BLOCK_ELEMENTS = 4_000_000


class Progress(Protocol):
    """Anything with ``update(n)``: a tqdm bar, a rich task wrapper, or a test double."""

    def update(self, n: int) -> object: ...


@dataclass(frozen=True)
class LatencyConfig(Checked):
    """When to stop warming up and measuring. Times in seconds, counts in calls.

    Warm-up ends once ``warmup_min_calls`` calls AND ``warmup_min_s`` seconds are reached. Measurement ends once
    ``min_calls`` AND ``min_s`` are reached, or as soon as ``max_calls`` or ``max_s`` is hit (a slow model must
    not run for hours). The defaults are the quick profile; :meth:`precise` is for numbers you will publish.
    """

    warmup_min_calls: int = option(10, Interval(int, 0), help="Warm-up calls, at least.")
    warmup_min_s: float = option(0.2, Interval(float, 0), help="Warm-up seconds, at least.")
    min_calls: int = option(100, Interval(int, 1), help="Measured calls, at least.")
    min_s: float = option(1.0, Interval(float, 0), help="Measured seconds, at least.")
    max_calls: int = option(100_000, Interval(int, 1), help="Stop measuring after this many calls.")
    max_s: float = option(60.0, Interval(float, 0, closed="neither"), help="Stop measuring after this many seconds.")
    rounds: int = option(5, Interval(int, 2), help="A pipeline times every stage (and the reference) again at the "
                                                   "end, interleaved in this many rounds (runtime/interleaved.py); "
                                                   "the calls above are split over the rounds.")
    interleaved: bool = option(True, help="Re-time all stages interleaved at the end of a pipeline run (off: each "
                                          "stage keeps the latency measured when it was evaluated, and no speed-up "
                                          "is shown).")

    def field_message(self, key: str, constraint: Any, value: Any) -> str:
        if constraint.type is int:
            allowed = f"an integer >= {int(constraint.low)}"
        else:
            allowed = f"a finite number {'>' if constraint.closed == 'neither' else '>='} 0 (seconds)"
        return f"latency {key} = {value!r} is out of range; allowed: {allowed}"

    def check(self) -> None:
        if self.max_calls < self.min_calls:
            raise InputError(
                f"latency max_calls = {self.max_calls} is out of range; allowed: >= min_calls ({self.min_calls})"
            )
        if self.max_s < self.min_s:
            raise InputError(f"latency max_s = {self.max_s} is out of range; allowed: >= min_s ({self.min_s})")

    @classmethod
    def quick(cls) -> LatencyConfig:
        """At least 100 calls and 1 s after a 10-call / 0.2 s warm-up: enough for a median, seconds per model."""
        return cls()

    @classmethod
    def precise(cls) -> LatencyConfig:
        """At least 1000 calls and 10 s, so p99 rests on ten or more samples and slow drifts average out."""
        return cls(min_calls=1000, min_s=10.0, max_s=120.0)


def nearest_rank_percentile(samples: Any, q: float) -> float:
    """The ``ceil(q/100 * n)``-th smallest sample (1-based): a percentile that is always an observed value.

    Nearest rank never interpolates, so p99 of a run is a latency that actually happened, and it matches what
    onnxruntime_perf_test reports.

    Args:
        samples: 1-D values (any unit; the result has the same unit).
        q: Percentile in ``(0, 100]``.
    """
    arr = np.asarray(samples, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError("cannot take a percentile of 0 samples")
    if not (isinstance(q, (int, float)) and 0 < q <= 100):
        raise InputError(f"percentile q = {q!r} is out of range; allowed: 0 < q <= 100")
    return _rank(np.sort(arr), q)


def _rank(sorted_arr: np.ndarray, q: float) -> float:
    # round() first: 95/100*100 is 95.00000000000001 in floating point and must not become rank 96.
    k = max(1, math.ceil(round(q * sorted_arr.size / 100.0, 9)))
    return float(sorted_arr[k - 1])


def summarize_samples(
    samples_ms: Any,
    *,
    batch_size: int,
    threads: int,
    backend: str,
    warmup: int,
    cold_start_ms: float | None = None,
) -> dict[str, Any]:
    """Summary statistics of per-call latencies, with the keys of a report's ``latency`` entry.

    ``median_ms`` is the usual midpoint (mean of the two middle values for even n); tail percentiles and the
    quartiles behind ``iqr_ms`` use nearest rank. ``std_ms`` is the sample standard deviation (ddof=1).
    ``throughput_per_s`` is samples (not batches) per second at the median latency, ``None`` if the median is 0.

    Args:
        samples_ms: Per-call latencies in milliseconds, one per timed call.
        batch_size: Samples per call, for throughput.
        threads: Intra-op threads used, recorded so runs are only compared like for like.
        backend: Backend name, recorded as is.
        warmup: Number of warm-up calls made before the timed ones.
        cold_start_ms: Creation + first call in milliseconds, if it was measured.
    """
    arr = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError("no latency samples to summarize (0 calls were timed)")
    if not np.isfinite(arr).all():
        raise InputError(f"latency samples hold {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    s = np.sort(arr)
    median = float(np.median(s))
    iqr = _rank(s, 75) - _rank(s, 25)
    return {
        "backend": backend,
        "batch_size": int(batch_size),
        "threads": int(threads),
        "n": int(s.size),
        "warmup": int(warmup),
        "median_ms": median,
        "mean_ms": float(s.mean()),
        "std_ms": float(s.std(ddof=1)) if s.size > 1 else 0.0,
        "iqr_ms": iqr,
        "p90_ms": _rank(s, 90),
        "p95_ms": _rank(s, 95),
        "p99_ms": _rank(s, 99),
        "min_ms": float(s[0]),
        "max_ms": float(s[-1]),
        "throughput_per_s": batch_size / (median / 1e3) if median > 0 else None,
        "cold_start_ms": None if cold_start_ms is None else float(cold_start_ms),
        "unstable": bool(iqr > UNSTABLE_IQR_RATIO * median) if median > 0 else bool(iqr > 0),
    }


def measure_latency(
    fn: Callable[[], object],
    *,
    config: LatencyConfig,
    timer: Callable[[], float] = time.perf_counter,
    batch_size: int,
    threads: int,
    backend: str,
    cold_start_ms: float | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Warm up, then time ``fn()`` call by call until ``config`` says stop.

    Each call is timed on its own (``timer()`` right before and right after), so the samples carry the spread
    that a single total would hide. The loop avoids allocations and attribute lookups so that its own overhead
    stays well under 2 % of a ~50 µs call; stop conditions reuse the "after" reading, costing no extra timer call.

    Args:
        fn: The call to time, with inputs already bound (e.g. ``lambda: session.run(None, feed)``).
        config: Warm-up and stopping rules.
        timer: Monotonic clock in seconds; injectable so tests can drive the loop with known times.
        batch_size: Samples per call, for throughput.
        threads: Intra-op threads the backend was set to; recorded in the stats.
        backend: Backend name; recorded in the stats.
        cold_start_ms: From :func:`measure_cold_start`, passed through to the stats.
        progress: Optional object with ``update(n)``, advanced by the number of timed calls.

    Returns:
        ``(stats, samples_ms)``: stats as :func:`summarize_samples` returns them, and every per-call latency in
        milliseconds (float64, in call order) for storage and later comparison.
    """
    for key, value in (("batch_size", batch_size), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{key} = {value!r} is out of range; allowed: an integer >= 1")

    warmup = 0
    start = timer()
    while True:
        if warmup >= config.warmup_min_calls and timer() - start >= config.warmup_min_s:
            break
        fn()
        warmup += 1

    min_calls, max_calls = config.min_calls, config.max_calls
    buf = [0.0] * max_calls
    i = 0
    reported = 0
    next_report = _PROGRESS_EVERY if progress is not None else max_calls + 1
    t0 = timer()
    min_deadline = t0 + config.min_s
    max_deadline = t0 + config.max_s
    while True:
        fn()
        t1 = timer()
        buf[i] = t1 - t0
        i += 1
        if t1 >= max_deadline or i >= max_calls or (i >= min_calls and t1 >= min_deadline):
            break
        if i >= next_report:
            progress.update(i - reported)  # type: ignore[union-attr]
            reported = i
            next_report = i + _PROGRESS_EVERY
        t0 = timer()
    if progress is not None and i > reported:
        progress.update(i - reported)

    samples_ms = np.array(buf[:i], dtype=np.float64) * 1e3
    stats = summarize_samples(
        samples_ms, batch_size=batch_size, threads=threads, backend=backend, warmup=warmup,
        cold_start_ms=cold_start_ms,
    )
    return stats, samples_ms


def measure_cold_start(
    make: Callable[[], Callable[[], object]],
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[float, Callable[[], object]]:
    """Time creating a callable plus its first call, the latency a fresh process or session pays once.

    Args:
        make: Builds the call to time (e.g. creates an onnxruntime session and binds inputs).
        timer: Monotonic clock in seconds.

    Returns:
        ``(cold_start_ms, fn)``: milliseconds from before ``make()`` to after the first ``fn()``, and ``fn`` for
        the warm measurement that follows (so the session is not built twice).
    """
    t0 = timer()
    fn = make()
    fn()
    t1 = timer()
    return (t1 - t0) * 1e3, fn


#: :func:`speedup_ratio` resamples each run in this many contiguous blocks of calls (a circular block bootstrap).
SPEEDUP_BLOCKS = 10


def _bootstrap_medians(samples: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of circular-block-bootstrap resamples: ``ceil(n / L)`` blocks of ``L = ceil(n / SPEEDUP_BLOCKS)``
    consecutive calls, each starting anywhere (wrapping around), so a stretch of slow calls stays together."""
    n = samples.size
    length = -(-n // SPEEDUP_BLOCKS)
    blocks = -(-n // length)
    out = np.empty(n_boot, dtype=np.float64)
    offsets = np.arange(length)
    rows = max(1, _BOOT_BLOCK_ELEMENTS // (blocks * length))
    for lo in range(0, n_boot, rows):
        hi = min(n_boot, lo + rows)
        starts = rng.integers(0, n, size=(hi - lo, blocks))
        idx = (starts[:, :, None] + offsets) % n
        out[lo:hi] = np.median(samples[idx.reshape(hi - lo, -1)], axis=1)
    return out


def speedup_ratio(
    baseline_samples_ms: Any,
    candidate_samples_ms: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Speed-up as the ratio of median latencies (baseline / candidate) with a percentile-bootstrap 95 % CI.

    Medians, not means: one descheduled call should not move the headline. The two sample sets come from
    separate runs, so each is resampled independently; a CI that contains 1.0 means no demonstrated speed-up.
    Consecutive calls are not independent (a busy neighbour or a clock change slows a whole stretch), so each set
    is resampled in blocks of consecutive calls (:data:`SPEEDUP_BLOCKS` blocks, circular block bootstrap), in call
    order as stored: a loaded stretch widens the interval instead of being averaged away as independent noise.
    Models timed in the same interleaved rounds use :func:`~.interleaved.rounds_ratio` instead.

    Args:
        baseline_samples_ms: Per-call latencies of the baseline, milliseconds.
        candidate_samples_ms: Per-call latencies of the candidate, milliseconds.
        n_boot: Bootstrap resamples (>= 100).
        seed: Seed for the resampling, so a report is reproducible.

    Returns:
        ``{"ratio", "ci_low", "ci_high"}``; ratio > 1 means the candidate is faster.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise InputError(f"n_boot = {n_boot!r} is out of range; allowed: an integer >= 100")
    arrays = []
    for name, samples in (("baseline", baseline_samples_ms), ("candidate", candidate_samples_ms)):
        arr = np.asarray(samples, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            raise InputError(f"{name} has 0 latency samples; a speed-up needs at least one")
        if not np.isfinite(arr).all() or (arr <= 0).any():
            bad = int((~np.isfinite(arr) | (arr <= 0)).sum())
            raise InputError(f"{name} has {bad} latency samples that are not finite positive milliseconds")
        arrays.append(arr)
    base, cand = arrays
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(base, n_boot, rng) / _bootstrap_medians(cand, n_boot, rng)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"ratio": float(np.median(base) / np.median(cand)), "ci_low": float(low), "ci_high": float(high)}
