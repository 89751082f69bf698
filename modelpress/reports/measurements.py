"""The optional measurements of a report (memory, k-NN probe, robustness, cost) as cross-stage tables.

One table per measurement, one row per stage that has it, so the original and the compressed model sit side by
side. Cells are plain text here; the Markdown renderer escapes them with :func:`~modelpress.reports.markdown.md_escape`
and the HTML template autoescapes them, so a stage or backend named ``<script>`` or ``a|b`` stays inert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..metric_schema import format_delta, metric
from .fmt import NONE, compact_bytes as _bytes, compact_s as _seconds, finite_number as _num
from .fmt import integer as _int, percent as _pct, plain_text as _str

__all__ = ["measurement_tables"]



def measurement_tables(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"title", "headers", "rows", "note"}]`` for the measurements present in ``stages`` (may be empty)."""
    stages = [s for s in stages if isinstance(s, Mapping)]
    tables = [_knn(stages), _robustness(stages), _memory(stages), _cost(stages)]
    return [t for t in tables if t is not None]


def _knn(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    have = [s for s in stages if isinstance(s.get("knn"), Mapping)]
    if not have:
        return None
    first = _num(have[0]["knn"].get("accuracy"))
    rows = []
    for s in have:
        knn = s["knn"]
        accuracy = _pct(knn.get("accuracy"))
        if knn.get("accuracy") is None and knn.get("reason"):
            accuracy = f"{NONE} ({knn['reason']})"
        elif s is not have[0]:
            accuracy += _delta_pts(knn.get("accuracy"), first)
        cosine = NONE
        mean, low = knn.get("reference_cosine_mean"), knn.get("reference_cosine_min")
        if _num(mean) is not None or _num(low) is not None:
            cosine = (f"{metric('knn.reference_cosine_mean').format(mean)} / "
                      f"{metric('knn.reference_cosine_min').format(low)}")
        elif knn.get("reference_cosine_reason"):
            cosine = f"{NONE} ({knn['reference_cosine_reason']})"
        rows.append([_str(s.get("name")), _str(knn.get("layer") or "output"), _int(knn.get("k")),
                     _int(knn.get("folds")), accuracy, cosine])
    return {"title": "k-NN probe", "headers": ["stage", "embeddings", "k", "folds", metric("knn.accuracy").label,
                                               "cosine to reference (mean / min)"],
            "rows": rows, "note": "out-of-fold accuracy of a cosine k-NN classifier on the embeddings "
                                  "(stratified folds); changes in points against the first stage"}


def _robustness(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    have = [s for s in stages if isinstance(s.get("robustness"), Mapping)]
    if not have:
        return None
    levels: list[float] = []
    for s in have:
        for row in _list(s["robustness"].get("levels")):
            level = _num(row.get("level")) if isinstance(row, Mapping) else None
            if level is not None and level not in levels:
                levels.append(level)
    levels.sort()
    rows = []
    for s in have:
        by_level = {_num(r.get("level")): r for r in _list(s["robustness"].get("levels")) if isinstance(r, Mapping)}
        cells = [_str(s.get("name"))]
        for level in levels:
            row = by_level.get(level)
            cells.append(NONE if row is None else f"{_pct(row.get('accuracy'))} (F1 {_pct(row.get('f1_macro'))})")
        rows.append(cells)
    kinds = sorted({str(i.get("perturbation", "")) for s in have for i in _list(s["robustness"].get("inputs"))
                    if isinstance(i, Mapping)})
    return {"title": "Robustness to noise",
            "headers": ["stage", *(f"level {level:g}" + (" (clean)" if level == 0 else "") for level in levels)],
            "rows": rows, "note": f"accuracy (macro F1) under {', '.join(map(str, kinds)) or 'no'} perturbation; "
                                  "level = σ in units of the input's std (tokens: perturbation probability); "
                                  "the same seeded noise for every stage"}


def _memory(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    have = [s for s in stages if isinstance(s.get("memory"), Mapping)]
    if not have:
        return None
    rows = []
    for s in have:
        memory = s["memory"]
        for row in _list(memory.get("rows")) or [None]:
            row = row if isinstance(row, Mapping) else {}
            rows.append([_str(s.get("name")), _bytes(memory.get("weight_bytes")), _str(row.get("backend")),
                         _int(row.get("batch_size")), _bytes(row.get("load_delta_bytes")),
                         _bytes(row.get("peak_rss_bytes")), _bytes(row.get("peak_delta_bytes"))
                         + ("" if row.get("hwm_reset", True) else " (peak since start)")])
    return {"title": "Memory", "headers": ["stage", "weights", "backend", "batch", "loaded model",
                                           "peak RSS", "peak over loaded"],
            "rows": rows, "note": "resident memory of a fresh process per row: after loading the model and runtime "
                                  "(loaded model = the growth from loading), the peak while inferring, and that "
                                  "peak over the post-load baseline"}


def _cost(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    have = [s for s in stages if isinstance(s.get("cost"), Mapping)]
    if not have:
        return None
    rows = [[_str(s.get("name")), _seconds(s["cost"].get("stage_wall_s")), _seconds(s["cost"].get("train_wall_s")),
             _int(s["cost"].get("epochs")), _seconds(s["cost"].get("calibration_wall_s")),
             _bytes(s["cost"].get("peak_rss_bytes"))] for s in have]
    return {"title": "Cost", "headers": ["stage", "stage time", "training time", "epochs", "calibration time",
                                         "peak RSS (training)"],
            "rows": rows, "note": "wall-clock time the stage took when it ran (cached stages keep the time of the "
                                  "run that made them); peak RSS is the process high-water mark after training"}


# ---- formatting ----------------------------------------------------------------------------------------------
def _list(value: Any) -> list[Any]:
    """A report from elsewhere may hold anything where a list belongs: only a list is iterated."""
    return value if isinstance(value, list) else []


def _delta_pts(value: Any, base: float | None) -> str:
    return "" if _num(value) is None or base is None else f" ({format_delta('fraction', base, value)})"
