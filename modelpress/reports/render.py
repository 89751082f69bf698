"""Render a report as Markdown and write the report folder (predictions.npz, report.md, report.json).

Every string that comes from a report (run, model, stage, class and backend names, notes, params) goes through
:func:`md_escape`: a report may come from elsewhere, and a class named ``a|b`` must not add a table column, nor a
model named ``<script>`` reach a Markdown viewer as HTML.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_write, write_json, write_text
from .fmt import NONE, finite_number as _num
from .schema import REPORT_FILENAME, validate_report

__all__ = ["MARKDOWN_FILENAME", "PREDICTIONS_FILENAME", "md_escape", "render_markdown", "write_report"]

MARKDOWN_FILENAME = "report.md"
PREDICTIONS_FILENAME = "predictions.npz"

_MD_ESCAPES = {
    "\\": "\\\\",
    "|": "\\|",
    "`": "\\`",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "\r\n": " ",
    "\r": " ",
    "\n": " ",
}


def md_escape(value: object) -> str:
    """Make any value safe inside a Markdown table cell, heading or list item.

    Backslashes, ``|`` and backticks are backslash-escaped (so a cell keeps its column and no code span opens),
    ``&``, ``<`` and ``>`` become HTML entities (so no tag or entity reaches the viewer), and line breaks become
    spaces (a newline would end the table row).

    Args:
        value: Anything; it is converted with ``str()`` first.

    Returns:
        The escaped text, which renders as the original characters.
    """
    text = str(value)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\r\n", i):
            out.append(" ")
            i += 2
            continue
        char = text[i]
        out.append(_MD_ESCAPES.get(char, char))
        i += 1
    return "".join(out)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Render a (validated) report as GitHub-flavoured Markdown.

    The summary table has one row per stage; with two stages or more, every stage after the first shows its change
    against the first stage: accuracy, F1 and ROC-AUC in percentage points, latency as a ratio of medians at the
    same batch size (same backend when the first stage measured it), size as a ratio.

    Args:
        report: A report dict as built by :func:`~modelpress.reports.schema.new_report` and the stages.

    Returns:
        The Markdown text, ending in a newline.
    """
    run = report.get("run") or {}
    data = report.get("data") or {}
    stages: list[Mapping[str, Any]] = list(report.get("stages") or [])
    lines: list[str] = [f"# modelpress report: {md_escape(run.get('name', 'unnamed'))}", ""]
    lines += _gates_summary(stages)
    lines += _run_section(run)
    lines += [_data_line(data), ""]
    if stages:
        lines += _summary_section(stages)
        lines += _measurements_section(stages)
        for number, stage in enumerate(stages, start=1):
            lines += _stage_section(stage, number=number, class_names=data.get("class_names"))
    else:
        lines += ["No stages were run.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(
    report: Mapping[str, Any],
    out_dir: str | Path,
    *,
    predictions: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write the report folder: predictions.npz (when given), report.md, and report.json last.

    report.json is the commit marker: each file is written atomically (temp file, fsync, rename), and report.json
    goes last, so a run killed or failing midway leaves the previous report.json byte-identical and no temp files.
    The report is validated before anything is written.

    Args:
        report: The report dict.
        out_dir: The run folder; created when missing.
        predictions: Per-sample arrays for paired tests in ``compare``: ``y_true`` and one probability array per
            stage, keyed by name. Object arrays are refused (they would need pickle to load).

    Returns:
        The written paths under the keys ``"predictions"`` (when given), ``"md"`` and ``"json"``.

    Raises:
        InputError: the report does not validate, or a prediction array is not numeric.
        ModelpressError: the disk is full ("no space left writing X"); earlier files are intact.
    """
    out = Path(out_dir)
    json_path = out / REPORT_FILENAME
    checked = validate_report(dict(report), source=str(json_path))
    arrays = _check_predictions(predictions) if predictions is not None else None
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if arrays is not None:
        npz_path = out / PREDICTIONS_FILENAME
        with atomic_write(npz_path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        paths["predictions"] = npz_path
    md_path = out / MARKDOWN_FILENAME
    write_text(md_path, render_markdown(checked))
    paths["md"] = md_path
    write_json(json_path, checked)
    paths["json"] = json_path
    return paths


# --------------------------------------------------------------------------------------------------- sections


def _gates_summary(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    gates = [(stage.get("name"), gate) for stage in stages for gate in (stage.get("gates") or [])]
    if not gates:
        return []
    failed = [(name, gate) for name, gate in gates if not gate.get("passed")]
    if not failed:
        return [f"**Gates:** all {len(gates)} passed.", ""]
    which = ", ".join(f"{md_escape(name)}: {md_escape(gate.get('name'))}" for name, gate in failed)
    return [f"**Gates: {len(failed)} of {len(gates)} FAILED** ({which}).", ""]


def _run_section(run: Mapping[str, Any]) -> list[str]:
    flags = run.get("cpu_flags")
    fields = [
        ("created", run.get("created")),
        ("modelpress", run.get("modelpress_version")),
        ("git", run.get("git_sha")),
        ("python", run.get("python")),
        ("torch", run.get("torch")),
        ("onnxruntime", run.get("onnxruntime")),
        ("onnx", run.get("onnx")),
        ("numpy", run.get("numpy")),
        ("platform", run.get("platform")),
        ("cpu", run.get("cpu")),
        ("cpu flags", ", ".join(str(f) for f in flags) if isinstance(flags, list) and flags else None),
        ("threads", run.get("threads")),
    ]
    lines = ["## Run", ""]
    lines += [f"- {label}: {_text(value)}" for label, value in fields if label != "git" or value is not None]
    return [*lines, ""]


def _data_line(data: Mapping[str, Any]) -> str:
    parts = [f"**Data:** {_text(data.get('source'))}"]
    if data.get("n_samples") is not None:
        parts.append(f"{_int(data.get('n_samples'))} samples")
    if data.get("n_classes") is not None:
        classes = f"{_int(data.get('n_classes'))} classes"
        names = data.get("class_names")
        if isinstance(names, list) and 0 < len(names) <= 20:
            classes += f" ({', '.join(md_escape(n) for n in names)})"
        parts.append(classes)
    sha = data.get("sha256")
    if isinstance(sha, str) and sha:
        parts.append(f"sha256 {md_escape(sha[:12])}")
    return " · ".join(parts)


def _summary_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    first = stages[0]
    keys = _latency_keys(stages)
    show_threads = len({k[2] for k in keys}) > 1
    headers = ["#", "stage", "format", "accuracy", "F1 macro", "ROC-AUC"]
    headers += [
        f"p50 / p99 {md_escape(b)} b={_int(bs)}" + (f" t={_int(t)}" if show_threads else "") for b, bs, t in keys
    ]
    headers += ["size", "params", "sparsity", "top-1 agreement", "max abs diff"]
    rows: list[list[str]] = []
    for number, stage in enumerate(stages, start=1):
        compare = len(stages) >= 2 and number > 1
        metrics = stage.get("metrics") or {}
        base_metrics = first.get("metrics") or {}
        footprint = stage.get("footprint") or {}
        fidelity = stage.get("fidelity") or {}
        artifact = stage.get("artifact") or {}
        row = [
            str(number),
            md_escape(stage.get("name", "")),
            _text(artifact.get("format")),
        ]
        for key in ("accuracy", "f1_macro", "roc_auc"):
            cell = _pct(metrics.get(key))
            if compare:
                cell += _pts_delta(metrics.get(key), base_metrics.get(key))
            row.append(cell)
        for key in keys:
            latency = _latency_row(stage, key)
            if latency is None:
                row.append(NONE)
                continue
            cell = f"{_ms(latency.get('median_ms'), unit=False)} / {_ms(latency.get('p99_ms'))}"
            if compare:
                cell += _speed_delta(latency, first)
            row.append(cell)
        size_cell = _bytes(footprint.get("size_bytes"))
        if compare:
            size_cell += _size_delta(footprint.get("size_bytes"), (first.get("footprint") or {}).get("size_bytes"))
        row += [
            size_cell,
            _int(footprint.get("params")),
            _pct(footprint.get("sparsity"), decimals=1),
            _pct(fidelity.get("top1_agreement")),
            _sig(fidelity.get("max_abs_diff")),
        ]
        rows.append(row)
    lines = ["## Summary", "", *_table(headers, rows), ""]
    if len(stages) >= 2:
        lines += [
            f"Changes are against the first stage ({md_escape(first.get('name', ''))}): metrics in percentage points, "
            "latency as the ratio of medians at the same batch size, size as a ratio.",
            "",
        ]
    return lines


def _measurements_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Memory, k-NN probe, robustness and cost side by side (only those measured; see ``measurements.py``)."""
    from .measurements import measurement_tables

    lines: list[str] = []
    for table in measurement_tables(stages):
        rows = [[md_escape(cell) for cell in row] for row in table["rows"]]
        lines += [f"## {md_escape(table['title'])}", "", *_table([md_escape(h) for h in table["headers"]], rows), "",
                  f"{md_escape(table['note'][:1].upper() + table['note'][1:])}.", ""]
    return lines


def _stage_section(stage: Mapping[str, Any], *, number: int, class_names: Any) -> list[str]:
    lines = [f"## {number}. {md_escape(stage.get('name', ''))} ({md_escape(stage.get('kind', ''))})", ""]
    artifact = stage.get("artifact")
    if isinstance(artifact, Mapping):
        sha = artifact.get("sha256")
        extra = [_text(artifact.get("format")), _bytes(artifact.get("size_bytes"))]
        if isinstance(sha, str) and sha:
            extra.append(f"sha256 {md_escape(sha[:12])}")
        lines.append(f"- artifact: {_text(artifact.get('path'))} ({', '.join(extra)})")
    params = stage.get("params") or {}
    if params:
        lines.append(f"- params: {', '.join(f'{md_escape(k)}={_param(v)}' for k, v in params.items())}")
    if len(lines) > 2:
        lines.append("")

    notes = stage.get("notes") or []
    if notes:
        lines += ["**Notes**", "", *(f"- {md_escape(note)}" for note in notes), ""]

    metrics = stage.get("metrics")
    if isinstance(metrics, Mapping):
        roc = _pct(metrics.get("roc_auc"))
        if metrics.get("roc_auc") is None and metrics.get("roc_auc_reason"):
            roc = f"{NONE} ({md_escape(metrics['roc_auc_reason'])})"
        lines += [
            f"**Metrics** (n = {_int(metrics.get('n_samples'))})",
            "",
            f"- accuracy: {_pct(metrics.get('accuracy'))}",
            f"- balanced accuracy: {_pct(metrics.get('balanced_accuracy'))}",
            f"- precision macro / weighted: {_pct(metrics.get('precision_macro'))} / "
            f"{_pct(metrics.get('precision_weighted'))}",
            f"- recall macro / weighted: {_pct(metrics.get('recall_macro'))} / {_pct(metrics.get('recall_weighted'))}",
            f"- F1 macro / weighted: {_pct(metrics.get('f1_macro'))} / {_pct(metrics.get('f1_weighted'))}",
            f"- ROC-AUC: {roc}",
            "",
        ]

    fidelity = stage.get("fidelity")
    if isinstance(fidelity, Mapping):
        lines += [
            f"**Fidelity** against {_text(fidelity.get('reference'))} (n = {_int(fidelity.get('n_samples'))})",
            "",
            f"- top-1 agreement: {_pct(fidelity.get('top1_agreement'))}",
            f"- max / mean abs diff: {_sig(fidelity.get('max_abs_diff'))} / {_sig(fidelity.get('mean_abs_diff'))}",
            f"- mean KL: {_sig(fidelity.get('mean_kl'))}",
            "",
        ]

    footprint = stage.get("footprint")
    if isinstance(footprint, Mapping):
        macs = _int(footprint.get("macs"))
        if footprint.get("macs") is None and footprint.get("macs_reason"):
            macs = f"{NONE} ({md_escape(footprint['macs_reason'])})"
        lines += [
            "**Footprint**",
            "",
            f"- params: {_int(footprint.get('params'))} ({_int(footprint.get('nonzero_params'))} non-zero, "
            f"sparsity {_pct(footprint.get('sparsity'), decimals=1)})",
            f"- size: {_bytes(footprint.get('size_bytes'))}",
            f"- MACs: {macs}",
            "",
        ]

    latency = stage.get("latency") or []
    if latency:
        headers = ["backend", "batch", "threads", "n", "warm-up", "p50", "mean ± std", "IQR", "p90", "p95", "p99",
                   "min", "max", "throughput/s", "cold start", "stable"]
        rows = [
            [
                _text(r.get("backend")),
                _int(r.get("batch_size")),
                _int(r.get("threads")),
                _int(r.get("n")),
                _int(r.get("warmup")),
                _ms(r.get("median_ms")),
                f"{_ms(r.get('mean_ms'), unit=False)} ± {_ms(r.get('std_ms'))}",
                _ms(r.get("iqr_ms")),
                _ms(r.get("p90_ms")),
                _ms(r.get("p95_ms")),
                _ms(r.get("p99_ms")),
                _ms(r.get("min_ms")),
                _ms(r.get("max_ms")),
                _sig(r.get("throughput_per_s")),
                _ms(r.get("cold_start_ms")),
                "**unstable** (IQR over 10 % of median)" if r.get("unstable") else "yes",
            ]
            for r in latency
        ]
        lines += ["**Latency**", "", *_table(headers, rows), ""]

    per_class = (metrics or {}).get("per_class") if isinstance(metrics, Mapping) else None
    if per_class:
        rows = []
        for i, entry in enumerate(per_class):
            index = entry.get("index", i)
            name = entry.get("name")
            known = isinstance(class_names, list) and isinstance(index, int) and 0 <= index < len(class_names)
            if name is None and known:
                name = class_names[index]
            rows.append([
                _int(index),
                _text(name),
                _pct(entry.get("precision")),
                _pct(entry.get("recall")),
                _pct(entry.get("f1")),
                _int(entry.get("support")),
            ])
        lines += ["**Per class**", "", *_table(["#", "class", "precision", "recall", "F1", "support"], rows), ""]

    explain = stage.get("explain")  # modelpress explain / quantize explain: true (see reports/explain_md.py)
    if isinstance(explain, Mapping):
        from .explain_md import explain_lines

        lines += explain_lines(explain, level=3)

    gates = stage.get("gates") or []
    if gates:
        rows = [
            [
                _text(g.get("name")),
                _general(g.get("threshold")),
                _general(g.get("value")),
                "pass" if g.get("passed") else "**FAIL**",
            ]
            for g in gates
        ]
        lines += ["**Gates**", "", *_table(["gate", "threshold", "value", "result"], rows), ""]
    return lines


# --------------------------------------------------------------------------------------------------- latency


def _latency_keys(stages: Iterable[Mapping[str, Any]]) -> list[tuple[str, Any, Any]]:
    keys: list[tuple[str, Any, Any]] = []
    for stage in stages:
        for row in stage.get("latency") or []:
            key = (str(row.get("backend")), row.get("batch_size"), row.get("threads"))
            if key not in keys:
                keys.append(key)
    return keys


def _latency_row(stage: Mapping[str, Any], key: tuple[str, Any, Any]) -> Mapping[str, Any] | None:
    for row in stage.get("latency") or []:
        if (str(row.get("backend")), row.get("batch_size"), row.get("threads")) == key:
            return row
    return None


def _speed_delta(row: Mapping[str, Any], first: Mapping[str, Any]) -> str:
    """Ratio of medians against the first stage at the same batch size; same backend when it has one."""
    candidates = [r for r in first.get("latency") or [] if r.get("batch_size") == row.get("batch_size")]
    same_backend = [r for r in candidates if r.get("backend") == row.get("backend")]
    base = (same_backend or candidates or [None])[0]
    if base is None:
        return ""
    this, ref = _num(row.get("median_ms")), _num(base.get("median_ms"))
    if this is None or ref is None or this <= 0 or ref <= 0:
        return ""
    ratio = ref / this
    if ratio >= 1:
        return f" ({_ratio(ratio)}× faster)"
    return f" ({_ratio(1 / ratio)}× slower)"


# --------------------------------------------------------------------------------------------------- formatting


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Cells must already be escaped; every row gets exactly ``len(headers)`` cells."""
    width = len(headers)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        cells = [*row[:width], *([NONE] * (width - len(row)))]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _text(value: Any) -> str:
    return NONE if value is None or value == "" else md_escape(value)


def _int(value: Any) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    number = _num(value)
    if number is not None and number.is_integer():
        return f"{int(number):,}"
    return _text(value)


def _pct(value: Any, *, decimals: int = 2) -> str:
    number = _num(value)
    return _text(value) if number is None else f"{number * 100:.{decimals}f}%"


def _sig(value: Any, *, digits: int = 3) -> str:
    """``digits`` significant digits; plain notation from 1e-4 up, integers kept whole above 10**digits."""
    number = _num(value)
    if number is None:
        return _text(value)
    if number == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude < -4:
        return f"{number:.{digits - 1}e}"
    decimals = digits - 1 - magnitude
    return f"{number:.{max(decimals, 0)}f}"


def _general(value: Any) -> str:
    """Gate thresholds and values have no fixed unit: 4 significant digits, trailing zeros dropped."""
    number = _num(value)
    return _text(value) if number is None else f"{number:.4g}"


def _ms(value: Any, *, unit: bool = True) -> str:
    text = _sig(value)
    return f"{text} ms" if unit and _num(value) is not None else text


def _bytes(value: Any) -> str:
    number = _num(value)
    if number is None:
        return _text(value)
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while abs(number) >= 1024 and index < len(units) - 1:
        number /= 1024
        index += 1
    return f"{int(number)} B" if index == 0 else f"{_sig(number)} {units[index]}"


def _ratio(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:.0f}"
    if ratio >= 1:
        return f"{ratio:.1f}"
    return _sig(ratio, digits=2)


def _pts_delta(value: Any, base: Any) -> str:
    this, ref = _num(value), _num(base)
    if this is None or ref is None:
        return ""
    return f" ({(this - ref) * 100:+.2f} pts)"


def _size_delta(value: Any, base: Any) -> str:
    this, ref = _num(value), _num(base)
    if this is None or ref is None or ref <= 0:
        return ""
    return f" ({_ratio(this / ref)}× size)"


def _param(value: Any) -> str:
    if isinstance(value, str):
        return md_escape(value)
    try:
        return md_escape(json.dumps(value, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return md_escape(repr(value))


def _check_predictions(predictions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, value in predictions.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise InputError(f"prediction names must be non-empty strings without '/', got {key!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise InputError(f"predictions {key!r} must be numeric (bool, int or float), got dtype {array.dtype}")
        arrays[key] = array
    return arrays
