"""Render a report as one self-contained HTML page: a stage-by-stage table and embedded PNG plots.

The table's metric columns, labels and formats are the declarations of :mod:`modelpress.metric_schema` (``column``);
latency columns go after the ``metrics`` section's.

jinja2 runs with ``autoescape=True`` and ``StrictUndefined``: every name that comes from a report (run, model,
stage, class, backend, notes, params) is escaped by the template, and a missing field is a bug caught in tests,
never a silently empty cell. The page needs no network: styles are inline and plots are ``data:`` PNGs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_text
from ..metric_schema import Metric, columns, section
from . import plots
from .fmt import NONE, compact_ms as _ms, finite_number as _num, general, integer as _int
from .measurements import measurement_tables
from .storage import load_predictions_for_plots as load_predictions

__all__ = ["HTML_FILENAME", "load_predictions", "render_html", "write_html"]

HTML_FILENAME = "report.html"


def write_html(report: Mapping[str, Any], out_dir: str | Path, *,
               predictions: Mapping[str, np.ndarray] | None = None, with_plots: bool = True) -> Path:
    """Write ``out_dir/report.html`` atomically and return its path (call it before report.json is written)."""
    path = Path(out_dir) / HTML_FILENAME
    write_text(path, render_html(report, predictions=predictions, with_plots=with_plots))
    return path


def render_html(report: Mapping[str, Any], *, predictions: Mapping[str, np.ndarray] | None = None,
                with_plots: bool = True) -> str:
    """The HTML page for ``report``; ROC curves need ``predictions`` (``y_true`` and ``proba::STAGE``).

    ``with_plots=False`` skips the matplotlib figures (the slow part), e.g. for a run's intermediate reports.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2").render(**_view(report, predictions, with_plots=with_plots))


# ---- view model: every value formatted here, the template only lays it out ------------------------------------
def _view(report: Mapping[str, Any], predictions: Mapping[str, np.ndarray] | None, *,
          with_plots: bool) -> dict[str, Any]:
    run = report.get("run") or {}
    data = report.get("data") or {}
    stages: list[Mapping[str, Any]] = [s for s in report.get("stages") or [] if isinstance(s, Mapping)]
    pipeline = report.get("pipeline") if isinstance(report.get("pipeline"), Mapping) else {}
    batch_sizes = sorted({r.get("batch_size") for s in stages for r in s.get("latency") or []
                          if isinstance(r.get("batch_size"), int)})
    class_names = data.get("class_names") if isinstance(data.get("class_names"), list) else None
    first: Mapping[str, Any] = stages[0] if stages else {}
    figures: list[dict[str, str]] = []
    batch, _ = plots.pareto_points(stages)
    if with_plots:
        _figures(figures, stages, predictions, class_names, batch)
    planned = pipeline.get("stages_planned") if isinstance(pipeline.get("stages_planned"), list) else None
    return {
        "title": str(run.get("name", "unnamed")),
        "run_rows": _run_rows(run),
        "data_line": _data_line(data) + _timing_line(pipeline),
        "complete": bool(pipeline.get("complete", True)),
        "progress": f"{len(stages)} of {len(planned)} planned stages" if planned else f"{len(stages)} stages",
        "skipped": [{"name": str(s.get("name")), "reason": str(s.get("reason"))}
                    for s in pipeline.get("skipped") or [] if isinstance(s, Mapping)],
        "batch_sizes": batch_sizes,
        "lead_columns": [m.label for m in _split_columns()[0]],
        "tail_columns": [m.label for m in _split_columns()[1]],
        "rows": [_row(i, s, first, batch_sizes) for i, s in enumerate(stages, start=1)],
        "first_name": str(first.get("name", "")),
        "figures": figures,
        "details": [_details(i, s) for i, s in enumerate(stages, start=1)],
        "gates": [{"stage": str(s.get("name")), "name": str(g.get("name")), "threshold": _general(g.get("threshold")),
                   "value": _general(g.get("value")), "passed": bool(g.get("passed")),
                   "status": str(g.get("status") or ("passed" if g.get("passed") else "failed")),
                   "message": str(g.get("message") or "")}
                  for s in stages for g in s.get("gates") or [] if isinstance(g, Mapping)],
        "pending_gates": _pending_gates(pipeline, stages),
        "measurements": measurement_tables(stages),
    }


def _figures(figures: list[dict[str, str]], stages: Sequence[Mapping[str, Any]],
             predictions: Mapping[str, np.ndarray] | None, class_names: list[Any] | None, batch: int | None) -> None:
    """Pareto plot, size bars, ROC curves (needs predictions) and the first and last confusion matrices."""
    _add(figures, "Accuracy vs latency", plots.pareto_png(stages),
         f"median latency at batch size {batch}; outlined points are on the Pareto front" if batch else "")
    _add(figures, "Size", plots.size_png(stages), "artifact size on disk")
    if predictions is not None and "y_true" in predictions:
        probas = {str(s.get("name")): predictions[f"proba::{s.get('name')}"] for s in stages
                  if f"proba::{s.get('name')}" in predictions}
        _add(figures, "ROC curves", plots.roc_png(predictions["y_true"], probas), "from predictions.npz")
    if not stages:
        return
    ends = (("original", stages[0]), ("final", stages[-1])) if len(stages) > 1 else (("model", stages[0]),)
    for label, stage in ends:
        metrics = stage.get("metrics") if isinstance(stage.get("metrics"), Mapping) else {}
        matrix, names = metrics.get("confusion_matrix"), class_names
        kept = metrics.get("confusion_classes")
        if isinstance(kept, list) and class_names and all(isinstance(c, int) and 0 <= c < len(class_names)
                                                           for c in kept):
            names = [class_names[c] for c in kept]  # a matrix cut to the classes that occur (record.cap_confusion)
        elif isinstance(kept, list):
            names = [str(c) for c in kept]
        title = f"Confusion matrix: {stage.get('name')} ({label})"
        _add(figures, title, plots.confusion_png(matrix, names, title) if matrix else None,
             str(metrics.get("confusion_note") or ""))


def _add(figures: list[dict[str, str]], title: str, png: str | None, caption: str) -> None:
    if png:
        figures.append({"title": title, "png": png, "caption": caption})


def _pending_gates(pipeline: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> list[str]:
    gates = pipeline.get("gates")
    if not isinstance(gates, Mapping) or not gates or any(s.get("gates") for s in stages):
        return []
    return [f"{k} = {_general(v)}" for k, v in gates.items()]


def _run_rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = ("created", "modelpress_version", "git_sha", "python", "torch", "onnxruntime", "onnx", "numpy",
            "platform", "cpu", "cpu_flags", "threads")
    rows = []
    for key in keys:
        value = run.get(key)
        if value is None:
            continue
        rows.append((key.replace("_", " "), ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def _data_line(data: Mapping[str, Any]) -> str:
    parts = [str(data.get("source", NONE))]
    if data.get("n_samples") is not None:
        parts.append(f"{data['n_samples']} samples")
    if data.get("n_classes") is not None:
        parts.append(f"{data['n_classes']} classes")
    if isinstance(data.get("sha256"), str):
        parts.append(f"sha256 {data['sha256'][:12]}")
    return " · ".join(parts)


def _split_columns() -> tuple[list[Metric], list[Metric]]:
    """The declared summary columns before the latency columns (the ``metrics`` section's) and after them."""
    ordered = list(columns())
    cut = next((i for i, m in enumerate(ordered) if m.section != "metrics"), len(ordered))
    return ordered[:cut], ordered[cut:]


def _row(number: int, stage: Mapping[str, Any], first: Mapping[str, Any], batch_sizes: list[int]) -> dict[str, Any]:
    lead, tail = _split_columns()
    latency = []
    for bs in batch_sizes:
        rows = [r for r in stage.get("latency") or [] if r.get("batch_size") == bs]
        latency.append([{"backend": str(r.get("backend")),
                         "text": f"{_ms(r.get('median_ms'))} / {_ms(r.get('p99_ms'))}" + _speed_note(r),
                         "unstable": bool(r.get("unstable"))} for r in rows])
    return {
        "number": number,
        "name": str(stage.get("name", "")),
        "kind": str(stage.get("kind", "")),
        "format": str((stage.get("artifact") or {}).get("format", NONE)),
        "lead": [_cell(m, stage, first, number > 1) for m in lead],
        "latency": latency,
        "tail": [_cell(m, stage, first, number > 1) for m in tail],
    }


def _timing_line(pipeline: Mapping[str, Any]) -> str:
    """Where and how the latency rows were measured (a pipeline's ``latency`` block), after the data line."""
    timing = pipeline.get("latency")
    return f" · latency: {timing['note']}" if isinstance(timing, Mapping) and timing.get("note") else ""


def _speed_note(row: Mapping[str, Any]) -> str:
    """The row's speed-up against the reference (same backend, batch and threads, same rounds), never a ratio across
    backends; an exported copy of the reference and another machine's row say so."""
    from .markdown import speedup_text

    text = speedup_text(row)
    out = f" · {text}" if text != NONE else ""
    if row.get("timed_as"):
        out += f" ({row['timed_as']})"
    if row.get("machine_note"):
        out += f" ({row['machine_note']})"
    return out


def _cell(m: Metric, stage: Mapping[str, Any], first: Mapping[str, Any], compare: bool) -> dict[str, Any]:
    """``{"text", "delta", "worse"}``: the declared format, and the change against the first stage where it has one
    (points for fractions, red when lower; a ratio for sizes, counts and times)."""
    block, base_block = stage.get(m.section), first.get(m.section)
    value = block.get(m.key) if isinstance(block, Mapping) else None
    base = base_block.get(m.key) if isinstance(base_block, Mapping) else None
    delta = ""
    if compare and m.vs_first:
        this, ref = _num(value), _num(base)
        if m.unit == "fraction":
            delta = _delta_pts(value, base)
        elif m.unit in ("bytes", "count", "ms", "s") and this and ref:
            delta = f"{this / ref:.2f}× of first"
    return {"text": m.format(value), "delta": delta, "worse": m.unit == "fraction" and delta.startswith("−")}


def _details(number: int, stage: Mapping[str, Any]) -> dict[str, Any]:
    params = stage.get("params") if isinstance(stage.get("params"), Mapping) else {}
    artifact = stage.get("artifact") if isinstance(stage.get("artifact"), Mapping) else {}
    latency = [
        {"backend": str(r.get("backend")), "batch": _int(r.get("batch_size")), "threads": _int(r.get("threads")),
         "n": _int(r.get("n")), "p50": _ms(r.get("median_ms")) + _median_ci(r) + _speed_note(r),
         "p90": _ms(r.get("p90_ms")),
         "p99": _ms(r.get("p99_ms")), "iqr": _ms(r.get("iqr_ms")), "throughput": _general(r.get("throughput_per_s")),
         "cold": _ms(r.get("cold_start_ms")), "unstable": bool(r.get("unstable"))}
        for r in stage.get("latency") or [] if isinstance(r, Mapping)
    ]
    metrics = stage.get("metrics") if isinstance(stage.get("metrics"), Mapping) else {}
    undefined = [f"{m.label} undefined: {metrics[m.key + '_reason']}" for m in section("metrics")
                 if metrics.get(m.key) is None and metrics.get(m.key + "_reason")]
    return {
        "number": number,
        "name": str(stage.get("name", "")),
        "kind": str(stage.get("kind", "")),
        "artifact": f"{artifact.get('path', NONE)} ({artifact.get('format', NONE)}, "
                    f"sha256 {str(artifact.get('sha256') or NONE)[:12]})" if artifact else NONE,
        "params": [(str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
                   for k, v in params.items()],
        "notes": [str(n) for n in stage.get("notes") or []] + undefined,
        "latency": latency,
        "explain": _explain(stage),
    }


def _median_ci(row: Mapping[str, Any]) -> str:
    ci = row.get("median_ci_ms")
    if isinstance(ci, list) and len(ci) == 2 and all(_num(v) is not None for v in ci):
        return f" [95 % CI {_ms(ci[0])}, {_ms(ci[1])} over rounds]"
    return ""


def _explain(stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stage's Explain section (modelpress explain / quantize explain: true) as plain strings."""
    from .explain_md import explain_view

    explain = stage.get("explain")
    return explain_view(explain) if isinstance(explain, Mapping) else None


# ---- formatting (numbers: reports/fmt.py) ---------------------------------------------------------------------


def _general(value: Any) -> str:
    """A gate's threshold or value: a number with 4 significant digits, true/false, or the text as given."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return str(value).lower()
    return general(value) if _num(value) is not None else str(value)


def _delta_pts(value: Any, base: Any) -> str:
    this, ref = _num(value), _num(base)
    if this is None or ref is None:
        return ""
    delta = (this - ref) * 100
    return f"{'−' if delta < -0.005 else '+'}{abs(delta):.2f} pts"
