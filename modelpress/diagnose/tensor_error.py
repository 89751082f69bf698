"""Streaming error statistics of a tensor pair and the per-layer result record, shared by the ONNX
(:mod:`.layer_error`) and torch (:mod:`.torch_layers`) per-layer error passes.

Kept apart from both so that neither imports the other for them (they used to import each other).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError

#: SQNR reported for identical tensors (float32 round-off sits near 140 dB), so the ranking stays finite.
SQNR_CAP_DB = 150.0


@dataclass
class _Stats:
    """Streaming error statistics of one tensor (float64 sums over every batch, per channel)."""

    signal: float = 0.0
    noise: float = 0.0
    cosine_sum: float = 0.0
    rows: int = 0
    channel_signal: np.ndarray | None = None
    channel_noise: np.ndarray | None = None

    def add(self, ref: np.ndarray, cand: np.ndarray, batch: int) -> None:
        ref = np.asarray(ref, dtype=np.float64)
        cand = np.asarray(cand, dtype=np.float64)
        diff = cand - ref
        rows = batch if ref.ndim and ref.shape[0] == batch else 1
        r = ref.reshape(rows, -1)
        c = cand.reshape(rows, -1)
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(diff * diff))
        ref_norm, cand_norm = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
        norms = ref_norm * cand_norm
        cos = np.where(norms > 0, np.sum(r * c, axis=1) / np.where(norms > 0, norms, 1.0),
                       np.where((ref_norm == 0) & (cand_norm == 0), 1.0, 0.0))
        self.cosine_sum += float(np.sum(cos))
        self.rows += rows
        axis = channel_axis(ref.ndim)
        sums = tuple(i for i in range(ref.ndim) if i != axis)
        signal_c = np.sum(ref * ref, axis=sums).reshape(-1)
        noise_c = np.sum(diff * diff, axis=sums).reshape(-1)
        if self.channel_signal is None or self.channel_signal.shape != signal_c.shape:
            if self.channel_signal is not None:  # channel count changed between batches: fall back to one channel
                signal_c, noise_c = np.array([signal_c.sum()]), np.array([noise_c.sum()])
            if self.channel_signal is None or self.channel_signal.shape != signal_c.shape:
                self.channel_signal, self.channel_noise = np.zeros_like(signal_c), np.zeros_like(noise_c)
        self.channel_signal += signal_c
        self.channel_noise += noise_c

    @property
    def noise_ratio(self) -> float:
        """Relative noise power Σ(cand−ref)² / Σref² (0 for identical tensors)."""
        if self.noise == 0:
            return 0.0
        return self.noise / self.signal if self.signal > 0 else math.inf

    @property
    def channel_noise_ratio(self) -> float:
        """Mean over channels of each channel's relative noise power, clipped at 1 (a channel rounded to zero).

        Unlike :attr:`noise_ratio`, a channel with a huge range cannot hide the other channels being crushed — the
        failure of per-tensor quantization with an activation outlier.
        """
        if self.channel_signal is None or self.noise == 0:
            return 0.0
        live = self.channel_signal > 1e-12 * max(float(self.channel_signal.max()), 1e-300)
        if not live.any():
            return 1.0
        return float(np.mean(np.minimum(self.channel_noise[live] / self.channel_signal[live], 1.0)))

    def as_dict(self) -> dict[str, float | None]:
        ratio = self.noise_ratio
        return {"sqnr_db": _db(ratio), "rel_l2": math.sqrt(ratio) if math.isfinite(ratio) else None,
                "cosine": self.cosine_sum / self.rows if self.rows else None,
                "channel_sqnr_db": _db(self.channel_noise_ratio)}


def channel_axis(ndim: int) -> int:
    """Channel axis by rank: (N, C) and (N, C, H, W…) use axis 1, (N, T, D) sequences the last axis."""
    if ndim <= 1:
        return 0
    return ndim - 1 if ndim == 3 else 1


def _batches(data: Dataset, names: list[str], batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    for batch, y in data.batches(batch_size):
        if len(names) == 1 and len(batch) == 1:
            yield {names[0]: np.ascontiguousarray(next(iter(batch.values())))}, len(y)
        else:
            missing = [n for n in names if n not in batch]
            if missing:
                raise InputError(f"the model expects inputs {names} but the data has {sorted(batch)}")
            yield {n: np.ascontiguousarray(batch[n]) for n in names}, len(y)


# ---- results ------------------------------------------------------------------------------------------------------
def _db(ratio: float) -> float:
    if ratio <= 0:
        return SQNR_CAP_DB
    if not math.isfinite(ratio):
        return -SQNR_CAP_DB
    return min(SQNR_CAP_DB, -10 * math.log10(ratio))


def _added(out_ratio: float, in_ratio: float) -> float:
    if not math.isfinite(out_ratio):
        return math.inf
    return out_ratio - in_ratio


def _result(method: str, n_samples: int, matched: int, unmatched: int, layers: list[dict[str, Any]],
            output: _Stats, ref_logits: np.ndarray, cand_logits: np.ndarray) -> dict[str, Any]:
    layers.sort(key=lambda r: (-r["noise_added"], r["channel_sqnr_db"], r["node"]))
    agreement = float(np.mean(ref_logits.argmax(axis=1) == cand_logits.argmax(axis=1))) if ref_logits.shape[1] > 1 \
        else float(np.mean((ref_logits[:, 0] > 0) == (cand_logits[:, 0] > 0)))
    return {"method": method, "n_samples": n_samples, "matched_tensors": matched, "unmatched_layers": unmatched,
            "layers": layers, "output": {**output.as_dict(), "top1_agreement": agreement}}
