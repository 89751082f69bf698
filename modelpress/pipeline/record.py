"""A stage's entry in report.json, built in one place from the evaluation and the stage's own record.

Why one function: the entry used to be assembled three times (the runner, ``evaluate``, a stage re-evaluated from the
cache), and a stage's record reached report.json only when its key was on a hard-coded list (quantization,
verification, explain), so pruning, distillation, training and TensorRT records never did. Now a stage's record is
whatever it wrote into ``artifact.metadata`` — every key it added or changed relative to its input — and
:func:`stage_entry` stores it whole, next to the evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..compress.registry import COST_KEY
from ..evaluate.evaluator import EXTRA_SECTIONS, EvalResult

#: A confusion matrix over more classes than this is cut (:func:`cap_confusion`): 1000 classes would be a million
#: cells, megabytes of report.json for a few hundred images.
CONFUSION_MAX_CLASSES = 50
#: With more classes than :data:`CONFUSION_MAX_CLASSES` occurring, this many most frequent confusions are kept.
CONFUSION_TOP_PAIRS = 100

#: Fields of a stage entry that the report itself owns; a stage record may not replace them.
ENTRY_FIELDS = ("name", "kind", "params", "notes", "artifact", "metrics", "fidelity", "latency", "footprint",
                "gates", COST_KEY, *EXTRA_SECTIONS)


def stage_record(metadata: Mapping[str, Any], *, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a stage recorded: the keys of ``metadata`` it added or changed relative to its input's ``before``.

    Metadata flows from stage to stage (a quantized model still carries its export's ``verification``), so the
    difference is what this stage said about itself. The cost record (:data:`COST_KEY`) is reported apart, as
    ``cost``. Values are made JSON-safe (tuples become lists, NaN and infinities ``null``, other objects text).
    """
    before = before or {}
    return {key: _json_safe(value) for key, value in metadata.items()
            if key != COST_KEY and (key not in before or _json_safe(before[key]) != _json_safe(value))}


def stage_entry(name: str, kind: str, params: Mapping[str, Any], *, artifact: dict[str, Any], result: EvalResult,
                notes: list[str], record: Mapping[str, Any] | None = None,
                cost: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One stage of report.json: what ran (name, kind, params), the artifact, the evaluation, the stage's record.

    Args:
        artifact: the ``artifact`` section (``ModelArtifact.describe``, path relative to the run folder).
        notes: notes of the stage; the evaluation's notes follow them.
        record: :func:`stage_record` of the stage; each key becomes a section of the entry. A key that names one
            of the report's own fields (:data:`ENTRY_FIELDS`) is left out with a note instead of replacing it.
        cost: what making the artifact cost (``cost`` section); ``None``: no section.
    """
    entry: dict[str, Any] = {"name": name, "kind": kind, "params": dict(params), "notes": [*notes, *result.notes],
                             "artifact": artifact, **result.as_stage_fields(), "gates": []}
    if isinstance(entry.get("metrics"), Mapping):
        entry["metrics"] = cap_confusion(entry["metrics"])
    for key, value in (record or {}).items():
        if key in ENTRY_FIELDS:
            entry["notes"].append(f"the stage's record {key!r} clashes with the report field of that name and "
                                  f"is left out")
            continue
        entry[key] = value
    if cost is not None:
        entry[COST_KEY] = _json_safe(dict(cost))
    return entry


def cap_confusion(metrics: Mapping[str, Any], *, max_classes: int = CONFUSION_MAX_CLASSES,
                  top_pairs: int = CONFUSION_TOP_PAIRS) -> dict[str, Any]:
    """``metrics`` with a confusion matrix that stays small whatever the model's class count, saying what was cut.

    Up to ``max_classes`` classes: unchanged. More, but at most ``max_classes`` of them occur (as a label or a
    prediction): the matrix over those classes only, their indices in ``confusion_classes`` (every row and column
    left out is all zeros). More occurring: no matrix (``confusion_matrix: null``) but the ``top_pairs`` most frequent
    confusions in ``confusion_pairs`` (``[true, predicted, count]``, most frequent first; the correct counts are the
    per-class rows). ``confusion_note`` says which was done.
    """
    out = dict(metrics)
    matrix = out.get("confusion_matrix")
    if not isinstance(matrix, list) or len(matrix) <= max_classes:
        return out
    arr = np.asarray(matrix, dtype=np.int64)
    k = arr.shape[0]
    used = np.flatnonzero(arr.sum(axis=0) + arr.sum(axis=1))
    if used.size <= max_classes:
        out["confusion_matrix"] = arr[np.ix_(used, used)].tolist()
        out["confusion_classes"] = [int(c) for c in used]
        out["confusion_note"] = (f"confusion matrix over the {used.size} of {k} classes that occur as a label or a "
                                 f"prediction (confusion_classes); the rows and columns of the other "
                                 f"{k - used.size} classes are all zero and are not stored")
        return out
    off = arr.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    counts = off[true, pred]
    order = np.lexsort((pred, true, -counts))[:top_pairs]
    out["confusion_matrix"] = None
    out["confusion_pairs"] = [[int(true[i]), int(pred[i]), int(counts[i])] for i in order]
    out["confusion_note"] = (f"{used.size} of {k} classes occur, too many for a stored matrix: the "
                             f"{len(order)} most frequent of {true.size} distinct confusions are in confusion_pairs "
                             f"([true, predicted, count]); correct counts per class are in per_class")
    return out


def stage_result(name: str, kind: str, params: dict[str, Any], artifact: ModelArtifact, result: EvalResult,
                 *, out_dir: Path, notes: list[str], record: Mapping[str, Any] | None = None,
                 cost: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`stage_entry` for an artifact described relative to the report folder ``out_dir``."""
    return stage_entry(name, kind, params, artifact=artifact.describe(relative_to=out_dir), result=result,
                       notes=notes, record=record, cost=cost)


def predictions_of(y_true: np.ndarray, results: list[tuple[str, EvalResult]]) -> dict[str, np.ndarray]:
    """predictions.npz content: y_true, per-stage probabilities and logits, raw latency samples.

    Keys: ``y_true``, ``proba::STAGE``, ``logits::STAGE``, ``latency_ms::STAGE::BACKEND::bBATCH``.
    """
    arrays: dict[str, np.ndarray] = {"y_true": np.asarray(y_true)}
    for name, r in results:
        if r.probabilities.shape[1:] != (0,):  # an embedding model's stage has no class scores to test
            arrays[f"proba::{name}"] = r.probabilities.astype(np.float32)
        arrays[f"logits::{name}"] = r.logits.astype(np.float32)
        for key, samples in r.latency_samples.items():
            arrays[f"latency_ms::{name}::{key}"] = samples
    return arrays


def _json_safe(value: Any) -> Any:
    """Plain JSON values: what report.json can hold and what compares equal after a write and a read."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
