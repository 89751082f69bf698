"""Robustness to input noise: accuracy and F1 under seeded perturbations, so a user sees whether compression made a
model brittle (compare the original's curve with the compressed model's; the inputs are perturbed identically).

Each level perturbs every input of the evaluation data:

* float inputs get Gaussian noise ``x + level × std(x) × z``: ``level`` is σ in units of that input's standard
  deviation over the evaluation set (so σ = 0.1 is noise at a tenth of the data's spread, whatever its units);
* integer token inputs (any integer input except ``attention_mask`` / ``token_type_ids``) get ``level`` read as a
  probability p ∈ [0, 1]: each real token (``attention_mask`` = 1, the first and last real token — [CLS] / [SEP] —
  kept) is perturbed with probability p. ``replace`` swaps it for a token drawn from the ids seen at such positions
  in the data; ``dropout`` removes it, shifts the rest left and pads the end, with ``attention_mask`` (and any other
  per-token input) shifted the same way so the mask stays consistent.

The noise is drawn once from ``seed`` (common random numbers): ``z`` and the per-token draws are the same at every
level and for every model, so levels differ only in magnitude and two models' curves are paired comparisons (for a
linear classifier, a sample it gets right on clean data and wrong at σ stays wrong at every larger σ). Level 0 is
the clean data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import InputError

__all__ = ["TOKEN_MODES", "NoisePlan", "robustness"]

TOKEN_MODES = ("replace", "dropout")
#: Integer inputs that describe tokens rather than being tokens: never perturbed, shifted along under dropout.
TOKEN_SIDE_INPUTS = ("attention_mask", "token_type_ids")


@dataclass
class NoisePlan:
    """The seeded draws for one dataset, reused at every level (see the module docstring)."""

    inputs: dict[str, np.ndarray]
    gaussian: dict[str, tuple[np.ndarray, float]]  # name -> (z, std)
    tokens: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (u, replacement ids, eligible mask)
    mode: str

    @classmethod
    def draw(cls, inputs: dict[str, np.ndarray], *, seed: int, mode: str = "replace") -> NoisePlan:
        if mode not in TOKEN_MODES:
            raise InputError(f"token noise mode must be one of {', '.join(TOKEN_MODES)}, got {mode!r}")
        rng = np.random.default_rng(seed)
        gaussian: dict[str, tuple[np.ndarray, float]] = {}
        tokens: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        mask = inputs.get("attention_mask")
        for name in sorted(inputs):
            array = inputs[name]
            if array.dtype.kind == "f":
                std = float(np.std(array))
                gaussian[name] = (rng.standard_normal(array.shape).astype(array.dtype), std if std > 0 else 1.0)
            elif array.dtype.kind in "iu" and name not in TOKEN_SIDE_INPUTS:
                eligible = _eligible(array, mask)
                vocab = np.unique(array[eligible]) if eligible.any() else np.unique(array)
                replacement = vocab[rng.integers(0, len(vocab), size=array.shape)].astype(array.dtype)
                tokens[name] = (rng.random(array.shape), replacement, eligible)
        return cls(dict(inputs), gaussian, tokens, mode)

    def describe(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"name": n, "perturbation": "gaussian", "std": s}
                                      for n, (_, s) in self.gaussian.items()]
        rows += [{"name": n, "perturbation": f"token-{self.mode}", "vocabulary": int(len(np.unique(r)))}
                 for n, (_, r, _) in self.tokens.items()]
        return rows

    def apply(self, level: float) -> dict[str, np.ndarray]:
        """The inputs perturbed at ``level`` (σ for float inputs, probability for token inputs)."""
        out = dict(self.inputs)
        for name, (z, std) in self.gaussian.items():
            out[name] = (self.inputs[name] + np.asarray(level * std, dtype=z.dtype) * z).astype(z.dtype)
        for name, (u, replacement, eligible) in self.tokens.items():
            hit = eligible & (u < level)
            if self.mode == "replace":
                out[name] = np.where(hit, replacement, self.inputs[name])
            else:
                _dropout(out, name, hit)
        return out


def _eligible(ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Positions that may be perturbed: real tokens, without the first and last real token of each row."""
    if mask is None or mask.shape != ids.shape:
        return np.ones(ids.shape, dtype=bool)
    real = mask.astype(bool)
    if ids.ndim != 2:
        return real
    eligible = real.copy()
    count = real.sum(axis=1)
    rows = np.flatnonzero(count > 0)
    first = real.argmax(axis=1)
    last = ids.shape[1] - 1 - real[:, ::-1].argmax(axis=1)
    eligible[rows, first[rows]] = False
    eligible[rows, last[rows]] = False
    return eligible


def _dropout(out: dict[str, np.ndarray], name: str, hit: np.ndarray) -> None:
    """Remove the ``hit`` tokens per row, shift left, pad the end; per-token inputs (mask included) move along."""
    ids = out[name]
    aligned = [k for k, v in out.items() if v.shape == ids.shape and v.dtype.kind in "iu"]
    mask = out.get("attention_mask")
    pad_value = 0
    if mask is not None and mask.shape == ids.shape and (mask == 0).any():
        values, counts = np.unique(ids[mask == 0], return_counts=True)
        pad_value = int(values[counts.argmax()])
    new = {k: np.empty_like(out[k]) for k in aligned}
    for row in range(ids.shape[0]):
        keep = ~hit[row]
        n_keep = int(keep.sum())
        for k in aligned:
            fill = pad_value if k == name else 0
            new[k][row, :n_keep] = out[k][row][keep]
            new[k][row, n_keep:] = fill
    out.update(new)


def check_levels(levels: Sequence[float], inputs: dict[str, np.ndarray] | None = None) -> tuple[float, ...]:
    """Validate noise levels: finite and ≥ 0, and ≤ 1 where they are token probabilities."""
    checked = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)):
            raise InputError(f"noise levels must be numbers, got {level!r}")
        if not np.isfinite(level) or level < 0:
            raise InputError(f"noise level (sigma) must be a finite number ≥ 0, got {level}")
        checked.append(float(level))
    if inputs is not None:
        tokens = [n for n, a in inputs.items() if a.dtype.kind in "iu" and n not in TOKEN_SIDE_INPUTS]
        too_big = [lv for lv in checked if lv > 1]
        if tokens and too_big:
            raise InputError(f"noise level {too_big[0]:g} is a token perturbation probability for integer input "
                             f"{tokens[0]!r} and must be ≤ 1")
    return tuple(checked)


def robustness(artifact: ModelArtifact, data: Dataset, *, levels: Sequence[float], seed: int = 0,
               token_mode: str = "replace", threads: int = 1, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, macro F1 and agreement with the clean predictions at each noise level (level 0 first).

    Returns:
        ``{"seed", "token_noise", "inputs": [{name, perturbation, std | vocabulary}], "levels": [{level, accuracy,
        f1_macro, agreement}]}``; ``agreement`` is the share of samples whose top-1 class is the one predicted on
        the clean data.

    Raises:
        InputError: a negative or non-finite level, a token probability above 1, an unknown token mode.
    """
    from ..runtime.sessions import make_runner
    from ..runtime.sessions import native_backend
    from ..runtime.metrics import classification_metrics, to_probabilities

    levels = check_levels(levels, data.inputs)
    plan = NoisePlan.draw(data.inputs, seed=seed, mode=token_mode)
    runner = make_runner(artifact, native_backend(artifact), threads=threads)
    class_names = list(artifact.class_names or data.class_names)
    rows = []
    clean_top1: np.ndarray | None = None
    for level in (0.0, *sorted(set(levels) - {0.0})):
        noisy = Dataset(plan.apply(level), data.y, data.class_names, data.source, data.split)
        logits = np.concatenate([np.asarray(runner(batch), dtype=np.float32).reshape(len(y), -1)
                                 for batch, y in noisy.batches(batch_size)])
        metrics = classification_metrics(data.y, logits, n_classes=artifact.n_classes, class_names=class_names)
        top1 = to_probabilities(logits, n_classes=artifact.n_classes)[0].argmax(axis=1)
        clean_top1 = top1 if clean_top1 is None else clean_top1
        rows.append({"level": level, "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
                     "agreement": float(np.mean(top1 == clean_top1))})
    return {"seed": int(seed), "token_noise": token_mode, "inputs": plan.describe(), "levels": rows}
