"""Render a :class:`~modelpress.reports.compare.Comparison` as Markdown, for a PR comment or ``$GITHUB_STEP_SUMMARY``.

The verdict comes first (what a reviewer needs), then the gates with their evidence, then every metric, latency row
and size side by side. Metric labels, formats and how a change reads are the declarations of
:mod:`modelpress.metric_schema`. Reports may come from elsewhere, so every string from them goes through
:func:`~modelpress.reports.markdown.md_escape` and cannot add a table column or reach the viewer as HTML.
"""

from __future__ import annotations

import os
from typing import Any

from ..io import write_text
from .compare import Comparison, GateResult
from ..metric_schema import find, format_delta, format_value
from .markdown import NONE, _bytes, _int, _ms, _num, _pct, _sig, _table, _text, md_escape

__all__ = ["render_comparison_markdown", "write_comparison_markdown"]

_RESULT = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}


def render_comparison_markdown(comparison: Comparison) -> str:
    """GitHub-flavoured Markdown: verdict, gates, notes, paired counts, metrics, latency, size, runs.

    Returns:
        The text, ending in one newline.
    """
    c = comparison
    base, cand = c.baseline, c.candidate
    lines = [f"# modelpress compare: {md_escape(base['run'])} ({md_escape(base['stage'])}) → "
             f"{md_escape(cand['run'])} ({md_escape(cand['stage'])})", ""]
    verdict = "**Result: FAILED**:" if not c.passed else "**Result: passed**:" if c.gates else "**Result:**"
    lines += [f"{verdict} {md_escape(_short_summary(c))}.", ""]
    data = c.data
    lines += [f"Data: {_text(data.get('source'))} · {_int(data.get('n_samples'))} samples · "
              f"{_int(data.get('n_classes'))} classes" + (f" · sha256 {md_escape(str(data['sha256'])[:12])}"
                                                          if data.get("sha256") else ""), ""]
    if c.gates:
        rows = [[md_escape(g.name), _RESULT[g.status], _limit(g), _value(g), _sig(g.p_value), _ci(g),
                 md_escape(g.message)] for g in c.gates]
        lines += ["## Gates", "", *_table(["gate", "result", "limit", "value", "p-value", "CI", "details"], rows), ""]
    if c.notes:
        lines += ["## Notes", "", *(f"- {md_escape(note)}" for note in c.notes), ""]
    if c.paired:
        p = c.paired
        lines += ["## Paired predictions", "",
                  f"{_int(p['n'])} samples: both right {_int(p['both_correct'])}, only the baseline right "
                  f"{_int(p['baseline_only'])}, only the candidate right {_int(p['candidate_only'])}, both wrong "
                  f"{_int(p['both_wrong'])}; top-1 agreement {_pct(p['top1_agreement'])}; exact McNemar p = "
                  f"{_sig(p['p_value'])}.", ""]
    if c.rows:
        rows = [[md_escape(_label(r)), _cell(r["baseline"], r["kind"], r), _cell(r["candidate"], r["kind"], r),
                 format_delta(r["kind"], r["baseline"], r["candidate"])] for r in c.rows]
        lines += ["## Metrics", "", *_table(["metric", "baseline", "candidate", "change"], rows), ""]
    if c.latency_rows:
        by_name = {g.name: g for g in c.gates}
        rows = []
        for r in c.latency_rows:
            gate = by_name.get(f"max_latency_ratio[{r['backend']} b={r['batch_size']}]")
            ratio = NONE if r["ratio"] is None else f"{_sig(r['ratio'])}×"
            if gate is not None and gate.ci_low is not None:
                ratio += f" (95% CI {_sig(gate.ci_low)} to {_sig(gate.ci_high)})"
            threads = {r["baseline_threads"], r["candidate_threads"]} - {None}
            rows.append([md_escape(r["backend"]), _int(r["batch_size"]),
                         " vs ".join(_int(t) for t in (r["baseline_threads"], r["candidate_threads"]))
                         if len(threads) > 1 else _int(next(iter(threads), None)),
                         _p50_p99(r["baseline_median_ms"], r["baseline_p99_ms"]),
                         _p50_p99(r["candidate_median_ms"], r["candidate_p99_ms"]), ratio])
        headers = ["backend", "batch", "threads", "baseline p50 / p99", "candidate p50 / p99",
                   "candidate / baseline median"]
        comparable = "" if c.latency_comparable else " (not comparable: " + md_escape(
            "; ".join(c.latency_differences)) + ")"
        lines += [f"## Latency{comparable}", "", *_table(headers, rows), ""]
    if c.runs:
        rows = [[md_escape(r["key"]), _run_value(r["baseline"]), _run_value(r["candidate"]),
                 "" if r["same"] else "differs"] for r in c.runs]
        lines += ["## Runs", "", *_table(["", "baseline", "candidate", ""], rows), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_comparison_markdown(comparison: Comparison, path: str | os.PathLike[str]) -> None:
    """Write :func:`render_comparison_markdown` to ``path`` atomically (the old file stays intact on failure)."""
    write_text(path, render_comparison_markdown(comparison))


def _short_summary(c: Comparison) -> str:
    if not c.gates:
        return "no gates were set"
    skipped = sum(g.status == "skipped" for g in c.gates)
    tail = f", {skipped} skipped" if skipped else ""
    if c.passed:
        return f"all {len(c.gates) - skipped} gates passed{tail}"
    return f"{len(c.failed)} of {len(c.gates)} gates failed ({', '.join(g.name for g in c.failed)}){tail}"


def _limit(g: GateResult) -> str:
    return _fmt(g.threshold, g.unit)


def _value(g: GateResult) -> str:
    return _fmt(g.value, g.unit)


def _fmt(value: Any, unit: str) -> str:
    if _num(value) is None:
        return NONE
    if unit == "pts":
        return f"{value:.2f} pts"
    if unit == "fraction":
        return _pct(value)
    if unit == "bytes":
        return _bytes(value)
    return f"{_sig(value)}×"


def _ci(g: GateResult) -> str:
    if g.ci_low is None or g.ci_high is None:
        return NONE
    if g.unit == "pts":
        return f"{g.ci_low:+.2f} to {g.ci_high:+.2f} pts"
    return f"{_sig(g.ci_low)} to {_sig(g.ci_high)}"


def _declared(row: dict[str, Any]) -> Any:
    """The declaration behind a row (k-NN rows are keyed ``knn_<key>``), or None for undeclared measurements."""
    key = str(row["key"])
    if row["section"] == "knn" and key.startswith("knn_"):
        key = key[len("knn_"):]
    return find(row["section"], key)


def _label(row: dict[str, Any]) -> str:
    """The declared label; undeclared measurements (``peak_rss_bytes[...]``, robustness levels) show their key."""
    declared = _declared(row)
    return declared.label if declared is not None else str(row["key"])


def _cell(value: Any, kind: str, row: dict[str, Any] | None = None) -> str:
    """A value as its declaration formats it (the same text report.md shows), else by its unit."""
    if _num(value) is None:
        return _text(value)
    declared = _declared(row) if row is not None else None
    return declared.format(value) if declared is not None else format_value(kind, value)


def _p50_p99(median: Any, p99: Any) -> str:
    if _num(median) is None:
        return NONE
    return f"{_ms(median, unit=False)} / {_ms(p99)}"


def _run_value(value: Any) -> str:
    if isinstance(value, list):
        return md_escape(", ".join(str(v) for v in value)) if value else NONE
    if isinstance(value, str) and len(value) == 40 and all(ch in "0123456789abcdef" for ch in value):
        return md_escape(value[:12])
    return _text(value)
