"""Time several models side by side: interleaved rounds in one process, medians and speed-ups with CIs over rounds.

Why: timing model A for a second and then model B for a second compares two moments of the machine as much as two
models (another job starts, the CPU clocks down, a cache goes cold). Here every model runs a block of calls in each
round, the order rotated from round to round (round r starts with model ``r mod n``), all with the same threads, so
drift hits every model alike. A round is the unit of repetition: the per-call samples inside one block share the
machine's state and are not independent, so the confidence intervals resample *rounds* (all calls of a drawn round,
for every model at once), not single calls. One slow round then widens the interval, as it should.

The stop rules are :class:`~.latency.LatencyConfig`'s, split over the rounds: each model is warmed up as
:func:`~.latency.measure_latency` warms up, then runs ``ceil(min_calls / rounds)`` calls per round, more when that
is under ``min_s / rounds`` seconds, never more than ``max_calls / rounds`` or ``max_s / rounds`` seconds' worth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .latency import LatencyConfig, summarize_samples

__all__ = ["Contestant", "calls_per_round", "rotation", "rounds_median_ci", "rounds_ratio", "run_rounds",
           "time_interleaved"]

#: How the per-model CI and the speed-up's CI are computed (stored next to them in a report).
ROUNDS_METHOD = "bootstrap over interleaved rounds"
#: Bootstrap resamples are drawn in blocks of at most this many elements (~32 MB of float64).
_BOOT_BLOCK_ELEMENTS = 4_000_000


@dataclass
class Contestant:
    """One model to time: ``fn()`` runs one batch (inputs already bound)."""

    name: str
    fn: Callable[[], object]
    backend: str
    batch_size: int
    threads: int
    cold_start_ms: float | None = None


def rotation(n: int, round_index: int) -> list[int]:
    """The order of round ``round_index`` for ``n`` models: starts at model ``round_index mod n``, wraps around."""
    return [(round_index + j) % n for j in range(n)]


def run_rounds(fns: Sequence[Callable[[], object]], counts: Sequence[int], *, rounds: int,
               timer: Callable[[], float] = time.perf_counter) -> tuple[list[np.ndarray], list[list[int]]]:
    """Run ``rounds`` rounds; in each, every ``fns[i]`` runs ``counts[i]`` calls in a row, in :func:`rotation` order.

    Each call is timed on its own (``timer()`` right before and right after).

    Returns:
        ``(samples, orders)``: ``samples[i]`` is a ``(rounds, counts[i])`` array of milliseconds, ``orders[r]`` the
        model order of round ``r``.
    """
    if rounds < 1:
        raise InputError(f"rounds = {rounds!r} is out of range; allowed: an integer >= 1")
    if len(fns) != len(counts) or any(int(c) < 1 for c in counts):
        raise InputError(f"every model needs at least one call per round, got {list(counts)}")
    out = [np.empty((rounds, int(c)), dtype=np.float64) for c in counts]
    orders = []
    for r in range(rounds):
        order = rotation(len(fns), r)
        orders.append(order)
        for i in order:
            fn, row = fns[i], out[i][r]
            for c in range(row.size):
                t0 = timer()
                fn()
                row[c] = timer() - t0
    return [s * 1e3 for s in out], orders


def calls_per_round(fn: Callable[[], object], *, config: LatencyConfig, rounds: int,
                    timer: Callable[[], float] = time.perf_counter) -> tuple[int, int]:
    """Warm ``fn`` up as :func:`~.latency.measure_latency` does and size its block: ``(warmup_calls, calls)``.

    The per-call time is estimated from the warm-up (one extra call when the config asks for no warm-up).
    """
    warmup, start = 0, timer()
    now = start
    while warmup < config.warmup_min_calls or now - start < config.warmup_min_s:
        fn()
        warmup += 1
        now = timer()
    if warmup == 0:
        fn()
        warmup, now = 1, timer()
    per_call = max((now - start) / warmup, 1e-9)
    calls = max(math.ceil(config.min_calls / rounds), math.ceil(config.min_s / rounds / per_call))
    cap = min(max(1, config.max_calls // rounds), max(1, math.floor(config.max_s / rounds / per_call)))
    return warmup, int(max(1, min(calls, cap)))


def time_interleaved(contestants: Sequence[Contestant], *, config: LatencyConfig,
                     timer: Callable[[], float] = time.perf_counter) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Warm up and size every model, then run :attr:`LatencyConfig.rounds` interleaved rounds.

    Returns:
        Per contestant, ``(stats, samples)``: stats as :func:`~.latency.summarize_samples` gives them plus
        ``timing`` ("interleaved"), ``rounds``, ``calls_per_round`` and ``median_ci_ms`` (95 % CI of the median over
        rounds, :func:`rounds_median_ci`); samples a ``(rounds, calls_per_round)`` array of milliseconds.
    """
    rounds = int(config.rounds)
    sizes = [calls_per_round(c.fn, config=config, rounds=rounds, timer=timer) for c in contestants]
    samples, _ = run_rounds([c.fn for c in contestants], [s[1] for s in sizes], rounds=rounds, timer=timer)
    out = []
    for c, (warmup, _), s in zip(contestants, sizes, samples, strict=True):
        stats = summarize_samples(s.ravel(), batch_size=c.batch_size, threads=c.threads, backend=c.backend,
                                  warmup=warmup, cold_start_ms=c.cold_start_ms)
        low, high = rounds_median_ci(s)
        stats.update(timing="interleaved", rounds=rounds, calls_per_round=int(s.shape[1]),
                     median_ci_ms=[low, high])
        out.append((stats, s))
    return out


def _as_rounds(samples: Any, name: str) -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{name} must be a (rounds, calls) array of milliseconds, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise InputError(f"{name} has latency samples that are not finite positive milliseconds")
    return arr


def _boot_medians(arrays: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Medians of each array over the same resampled rounds (rows drawn with replacement, shared by all arrays)."""
    rounds = arrays[0].shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, rounds, size=(n_boot, rounds))
    out = [np.empty(n_boot) for _ in arrays]
    width = max(a.size for a in arrays)
    step = max(1, _BOOT_BLOCK_ELEMENTS // width)
    for lo in range(0, n_boot, step):
        idx = draws[lo:lo + step]
        for a, o in zip(arrays, out, strict=True):
            o[lo:lo + len(idx)] = np.median(a[idx].reshape(len(idx), -1), axis=1)
    return out


def _check_boot(n_boot: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise InputError(f"n_boot = {n_boot!r} is out of range; allowed: an integer >= 100")


def rounds_median_ci(samples: Any, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of the median latency, resampling whole rounds (rows of ``samples``)."""
    _check_boot(n_boot)
    arr = _as_rounds(samples, "samples")
    (medians,) = _boot_medians([arr], n_boot, seed)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def rounds_ratio(reference: Any, candidate: Any, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Speed-up of ``candidate`` over ``reference`` timed in the same rounds: ratio of medians with a 95 % CI.

    ``ratio`` = median of all the reference's calls / median of all the candidate's (above 1: the candidate is
    faster). The CI is a percentile bootstrap over rounds, paired: a resample draws rounds with replacement and
    takes every call of both models in the drawn rounds, so the shared state of a round cancels in the ratio and
    a round where one model was slow moves the interval.

    Args:
        reference, candidate: ``(rounds, calls)`` milliseconds each, with the same number of rounds.
    """
    _check_boot(n_boot)
    ref, cand = _as_rounds(reference, "reference"), _as_rounds(candidate, "candidate")
    if ref.shape[0] != cand.shape[0]:
        raise InputError(f"reference has {ref.shape[0]} rounds but candidate has {cand.shape[0]}: a speed-up over "
                         "rounds needs both timed in the same rounds")
    ref_boot, cand_boot = _boot_medians([ref, cand], n_boot, seed)
    low, high = np.percentile(ref_boot / cand_boot, [2.5, 97.5])
    return {"ratio": float(np.median(ref) / np.median(cand)), "ci_low": float(low), "ci_high": float(high),
            "rounds": int(ref.shape[0]), "method": ROUNDS_METHOD}
