"""Time a backend on a model: cold start, then warm latency of ``runner(batch)``.

The evaluator's latency rows and ``explain``'s baselines are timed by this one function, through the same
:func:`~.sessions.make_runner` and :func:`~.latency.measure_latency` stop rules, so their numbers compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..artifacts import ModelArtifact
from ..data import Dataset
from .latency import LatencyConfig, measure_cold_start, measure_latency
from .sessions import make_runner

__all__ = ["latency_batch", "time_backend"]


def latency_batch(data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
    """The first ``batch_size`` samples, tiled when the dataset is smaller (latency needs a full batch)."""
    reps = -(-batch_size // len(data))
    return {k: np.ascontiguousarray(np.concatenate([v[:batch_size]] * reps)[:batch_size])  # v[:n]: lazy images
            for k, v in data.inputs.items()}                                                 # decode one batch


def time_backend(artifact: ModelArtifact, data: Dataset, *, backend: str, batch_size: int, threads: int,
                 latency: LatencyConfig) -> tuple[dict[str, Any], np.ndarray]:
    """Cold start (runner creation + first call) then warm latency of ``runner(batch)``."""
    batch = latency_batch(data, batch_size)

    def make() -> Any:
        runner = make_runner(artifact, backend, threads=threads)
        return lambda: runner(batch)

    cold_ms, fn = measure_cold_start(make)
    with progress.bar(None, f"latency {backend} b{batch_size}", unit="call") as bar:
        return measure_latency(fn, config=latency, batch_size=batch_size, threads=threads, backend=backend,
                               cold_start_ms=cold_ms, progress=bar)
