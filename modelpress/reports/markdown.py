"""Render a report as Markdown (report.md, ``modelpress report``).

Every string that comes from a report (run, model, stage, class and backend names, notes, params) goes through
:func:`md_escape`: a report may come from elsewhere, and a class named ``a|b`` must not add a table column, nor a
model named ``<script>`` reach a Markdown viewer as HTML. Which metrics show, their labels, units and formats come
from :mod:`modelpress.metric_schema`: the summary table's columns are the declared ``column`` metrics, and each
stage's Metrics / Fidelity / Footprint lists are its section's declarations in order.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..metric_schema import Metric, columns, format_delta, section
from .fmt import NONE, binary_bytes, md_escape, finite_number as _num, general, percent, significant

__all__ = ["md_escape", "render_markdown", "speedup_text"]



def render_markdown(report: Mapping[str, Any]) -> str:
    """Render a (validated) report as GitHub-flavoured Markdown.

    The summary table has one row per stage; with two stages or more, every stage after the first shows its change
    against the first stage: accuracy, F1 and ROC-AUC in percentage points, size as a ratio. A latency cell shows a
    speed-up only where its row carries one (``speedup``: against the reference on the same backend, batch and
    threads, timed interleaved in the same run, with a 95 % CI over rounds; see ``pipeline/timing.py``); rows
    without one say why under the table. No ratio is ever taken across backends.

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
    timing = (report.get("pipeline") or {}).get("latency") if isinstance(report.get("pipeline"), Mapping) else None
    if isinstance(timing, Mapping) and timing.get("note"):
        lines += [f"**Latency:** {md_escape(timing['note'])}.", ""]
    if stages:
        lines += _summary_section(stages)
        lines += _measurements_section(stages)
        for number, stage in enumerate(stages, start=1):
            lines += _stage_section(stage, number=number, class_names=data.get("class_names"))
    else:
        lines += ["No stages were run.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


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
    lead, tail = _split_columns()
    headers = ["#", "stage", "format", *(md_escape(m.label) for m in lead)]
    headers += [
        f"p50 / p99 {md_escape(b)} b={_int(bs)}" + (f" t={_int(t)}" if show_threads else "") for b, bs, t in keys
    ]
    headers += [md_escape(m.label) for m in tail]
    rows: list[list[str]] = []
    for number, stage in enumerate(stages, start=1):
        compare = len(stages) >= 2 and number > 1
        artifact = stage.get("artifact") or {}
        row = [str(number), md_escape(stage.get("name", "")), _text(artifact.get("format"))]
        row += [_summary_cell(m, stage, first, compare) for m in lead]
        for key in keys:
            latency = _latency_row(stage, key)
            if latency is None:
                row.append(NONE)
                continue
            cell = f"{_ms(latency.get('median_ms'), unit=False)} / {_ms(latency.get('p99_ms'))}"
            cell += _speed_delta(latency)
            if latency.get("timed_as"):
                cell += " †"
            if latency.get("machine_note"):
                cell += " (other machine)"
            row.append(cell)
        row += [_summary_cell(m, stage, first, compare) for m in tail]
        rows.append(row)
    lines = ["## Summary", "", *_table(headers, rows), ""]
    if len(stages) >= 2:
        lines += [
            f"Changes are against the first stage ({md_escape(first.get('name', ''))}): metrics in percentage points, "
            "size as a ratio.",
            "",
        ]
    return lines + _latency_notes(stages)


def _split_columns() -> tuple[list[Metric], list[Metric]]:
    """The summary columns before the latency columns (the ``metrics`` section's) and after them (the rest)."""
    ordered = list(columns())
    cut = next((i for i, m in enumerate(ordered) if m.section != "metrics"), len(ordered))
    return ordered[:cut], ordered[cut:]


def _summary_cell(m: Metric, stage: Mapping[str, Any], first: Mapping[str, Any], compare: bool) -> str:
    block = stage.get(m.section)
    value = block.get(m.key) if isinstance(block, Mapping) else None
    cell = _metric_text(m, value)
    if compare and m.vs_first:
        first_block = first.get(m.section)
        cell += _change_vs_first(m, value, first_block.get(m.key) if isinstance(first_block, Mapping) else None)
    return cell


def _change_vs_first(m: Metric, value: Any, base: Any) -> str:
    """Points for fractions (`` (+1.20 pts)``), a ratio for sizes, counts and times (`` (0.26× size)``)."""
    this, ref = _num(value), _num(base)
    if this is None or ref is None:
        return ""
    if m.unit == "fraction":
        return f" ({format_delta(m.unit, ref, this)})"
    if m.unit in ("bytes", "count", "ms", "s") and ref > 0:
        return f" ({_ratio(this / ref)}× {md_escape(m.label)})"
    return ""


def _metric_text(m: Metric, value: Any) -> str:
    """The declared format for a number; anything else from a report shows as its escaped text (or —)."""
    return m.format(value) if _num(value) is not None else _text(value)


def _block_title(name: str, block: Mapping[str, Any]) -> str:
    if name == "metrics":
        return f"**Metrics** (n = {_int(block.get('n_samples'))})"
    if name == "fidelity":
        return f"**Fidelity** against {_text(block.get('reference'))} (n = {_int(block.get('n_samples'))})"
    return f"**{md_escape(name.capitalize())}**"


def _metric_lines(name: str, block: Mapping[str, Any]) -> list[str]:
    """One bullet per declared metric of section ``name``, in declaration order.

    Neighbours whose labels differ in one word share a line (``F1 macro / weighted: 90.00% / 89.00%``); a metric
    declared ``within`` another shows in parentheses on its line; an undefined value with a ``<key>_reason`` in the
    block shows the reason (ROC-AUC with one class, MACs of an unsupported layer).
    """
    declared = section(name)
    inner: dict[str, list[Metric]] = {}
    for m in declared:
        if m.within is not None:
            inner.setdefault(m.within, []).append(m)
    groups: list[tuple[list[Metric], int | None]] = []
    for m in (m for m in declared if m.within is None):
        if groups and m.key not in inner:
            group, position = groups[-1]
            at = _differs_at(group[0].label, m.label)
            if at is not None and (position is None or position == at) and group[0].key not in inner:
                groups[-1] = ([*group, m], at)
                continue
        groups.append(([m], None))
    lines = []
    for group, position in groups:
        label = group[0].label
        if position is not None:
            words = label.split(" ")
            words[position] = " / ".join(m.label.split(" ")[position] for m in group)
            label = " ".join(words)
        text = " / ".join(_detail_value(m, block) for m in group)
        children = inner.get(group[0].key, [])
        if children:
            text += f" ({', '.join(_inner_text(child, group[0], block) for child in children)})"
        lines.append(f"- {md_escape(label)}: {text}")
    return lines


def _differs_at(a: str, b: str) -> int | None:
    """The one word position where two labels of equal length differ (``max abs diff`` / ``mean abs diff``: 0)."""
    x, y = a.split(" "), b.split(" ")
    if len(x) != len(y) or len(x) < 2:
        return None
    diff = [i for i, (u, v) in enumerate(zip(x, y, strict=True)) if u != v]
    return diff[0] if len(diff) == 1 else None


def _detail_value(m: Metric, block: Mapping[str, Any]) -> str:
    value = block.get(m.key)
    reason = block.get(f"{m.key}_reason")
    if value is None and reason:
        return f"{NONE} ({md_escape(reason)})"
    return _metric_text(m, value)


def _inner_text(child: Metric, parent: Metric, block: Mapping[str, Any]) -> str:
    """``12,500 non-zero`` when the label ends with the parent's (``non-zero params``), else ``sparsity 50.0%``."""
    value = _detail_value(child, block)
    suffix = f" {parent.label}"
    if child.label.endswith(suffix):
        return f"{value} {md_escape(child.label[: -len(suffix)])}"
    return f"{md_escape(child.label)} {value}"


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
    for name in ("metrics", "fidelity", "footprint"):
        block = stage.get(name)
        if isinstance(block, Mapping):
            lines += [_block_title(name, block), "", *_metric_lines(name, block), ""]

    latency = stage.get("latency") or []
    if latency:
        headers = ["backend", "batch", "threads", "n", "warm-up", "p50 (median) [95 % CI]", "mean ± std", "IQR", "p90", "p95",
                   "p99", "min", "max", "throughput/s", "cold start", "stable", "speed-up [95 % CI]"]
        rows = [
            [
                _text(r.get("backend")),
                _int(r.get("batch_size")),
                _int(r.get("threads")),
                _int(r.get("n")),
                _int(r.get("warmup")),
                _ms(r.get("median_ms")) + _median_ci(r),
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
                speedup_text(r),
            ]
            for r in latency
        ]
        lines += ["**Latency**", "", *_table(headers, rows), ""]

    if isinstance(metrics, Mapping) and metrics.get("confusion_note"):
        lines += [f"Confusion matrix: {md_escape(metrics['confusion_note'])}.", ""]
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


def _median_ci(row: Mapping[str, Any]) -> str:
    """`` [lo, hi]``: the median's 95 % CI over interleaved rounds, when the row has one."""
    ci = row.get("median_ci_ms")
    if isinstance(ci, list) and len(ci) == 2 and all(_num(v) is not None for v in ci):
        return f" [{_sig(ci[0])}, {_sig(ci[1])}]"
    return ""


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


def _speed_delta(row: Mapping[str, Any]) -> str:
    """The row's own speed-up (same backend, batch and threads as its reference, timed in the same rounds) with its
    95 % CI; nothing when the row has none."""
    speedup = row.get("speedup")
    if not isinstance(speedup, Mapping):
        return ""
    ratio, low, high = (_num(speedup.get(k)) for k in ("ratio", "ci_low", "ci_high"))
    if ratio is None or ratio <= 0:
        return ""
    ci = low is not None and high is not None and low > 0 and high > 0
    if ratio >= 1:
        return f" ({_times(ratio)}× faster" + (f" [{_times(low)}, {_times(high)}])" if ci else ")")
    return f" ({_times(1 / ratio)}× slower" + (f" [{_times(1 / high)}, {_times(1 / low)}])" if ci else ")")


def _times(ratio: float) -> str:
    return f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.1f}" if ratio >= 10 else f"{ratio:.2f}"


def speedup_text(row: Mapping[str, Any]) -> str:
    """``2.1× faster [1.9, 2.3]``, or ``—`` when the row has no speed-up (also used by the HTML report)."""
    text = _speed_delta(row).strip()
    return text[1:-1] if text else NONE


def _latency_notes(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a latency row has no speed-up, which reference rows are an exported copy, which rows are another
    machine's (one line each, duplicates merged)."""
    reasons: dict[str, list[str]] = {}
    references: dict[str, list[str]] = {}
    against: list[str] = []
    for stage in stages:
        for row in stage.get("latency") or []:
            where = f"{md_escape(stage.get('name', ''))} {_text(row.get('backend'))} b={_int(row.get('batch_size'))}"
            reason = row.get("speedup_reason")
            if row.get("speedup") is None and reason and reason != "this is the reference":
                reasons.setdefault(str(reason), []).append(where)
            if row.get("machine_note"):
                reasons.setdefault(str(row["machine_note"]), []).append(where)
            if row.get("timed_as"):
                references.setdefault(str(row["timed_as"]), []).append(where)
            speedup = row.get("speedup")
            if isinstance(speedup, Mapping) and speedup.get("reference"):
                against.append(f"- speed-ups are against {md_escape(speedup['reference'])} on the same backend, "
                               "batch and threads, timed interleaved in this run (95 % CI over rounds)")
    lines = [f"- no speed-up for {', '.join(where)}: {md_escape(reason)}" for reason, where in reasons.items()]
    lines += [f"- † {', '.join(where)}: {md_escape(text)}" for text, where in references.items()]
    lines += list(dict.fromkeys(against))
    return [*lines, ""] if lines else []


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
    return _text(value) if number is None else percent(number, decimals)


def _sig(value: Any, *, digits: int = 3) -> str:
    number = _num(value)
    return _text(value) if number is None else significant(number, digits)


def _general(value: Any) -> str:
    """Gate thresholds and values have no fixed unit: 4 significant digits, trailing zeros dropped."""
    return general(value) if _num(value) is not None else _text(value)


def _ms(value: Any, *, unit: bool = True) -> str:
    text = _sig(value)
    return f"{text} ms" if unit and _num(value) is not None else text


def _bytes(value: Any) -> str:
    number = _num(value)
    return _text(value) if number is None else binary_bytes(number)


def _ratio(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:.0f}"
    if ratio >= 1:
        return f"{ratio:.1f}"
    return significant(ratio, 2)


def _param(value: Any) -> str:
    if isinstance(value, str):
        return md_escape(value)
    try:
        return md_escape(json.dumps(value, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return md_escape(repr(value))
