"""The "Explain" section of a report: a stage's ``explain`` result (see :mod:`modelpress.diagnose`).

:func:`explain_view` turns the result into plain text — sentences, tables of strings, recommendations — shared by
both renderers: :func:`explain_lines` (Markdown) escapes every piece with :func:`~.markdown.md_escape` and puts
commands in fenced code blocks with backticks removed; the HTML template escapes through jinja2's autoescape. A node
named ``a|b`` or ``<script>`` therefore neither breaks a table nor reaches a viewer as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fmt import NONE, finite_number as _num, number_or_dash, percent, plain_text as _t
from .fmt import integer as _i
from .fmt import md_escape

__all__ = ["explain_lines", "explain_markdown", "explain_view"]

TOP_OPS = 10
TOP_LAYERS = 12


def explain_view(explain: Mapping[str, Any]) -> dict[str, Any]:
    """Plain strings (unescaped): ``title``, ``speed``, ``tables`` [{title, headers, rows}], ``facts``,
    ``recommendations`` [{summary, effect, command, yaml}] and ``notes``."""
    ref = (explain.get("reference") or {}).get("source")
    speed = explain.get("slowdown") or {}
    tables = [t for t in (_kernels(explain), _baselines(explain), _time(explain), _errors(explain)) if t]
    return {
        "title": f"Explain: why it is slow or inaccurate (vs {_t(ref)})",
        "speed": speed.get("reason") or "not slower than any baseline (95 % CI of the ratio of medians, and at "
                                        "least 5 %).",
        "tables": tables,
        "facts": [*_kernel_facts(explain), *_facts(explain)],
        "recommendations": [_recommendation(r) for r in explain.get("recommendations") or []],
        "notes": [str(n) for n in explain.get("notes") or []],
    }


def explain_markdown(explain: Mapping[str, Any]) -> str:
    """The section as a standalone Markdown document (what ``modelpress explain`` prints)."""
    return "\n".join(explain_lines(explain, level=2)).rstrip("\n") + "\n"


def explain_lines(explain: Mapping[str, Any], *, level: int = 3) -> list[str]:
    """Markdown lines of the Explain section; ``level`` is the heading depth of the section title."""

    view = explain_view(explain)
    lines = [f"{'#' * level} {md_escape(view['title'])}", ""]
    speed = ["**Speed:** " + md_escape(view["speed"]), ""]
    first = [t for t in view["tables"] if t.get("first")]  # the real session's agreement leads, then the speed
    for table in [*first, speed, *(t for t in view["tables"] if not t.get("first"))]:
        if isinstance(table, list):
            lines += table
            continue
        lines += [f"**{md_escape(table['title'])}**", "",
                  "| " + " | ".join(md_escape(h) for h in table["headers"]) + " |",
                  "|" + "|".join("---" for _ in table["headers"]) + "|",
                  *("| " + " | ".join(md_escape(c) for c in row) + " |" for row in table["rows"]), ""]
        if table.get("footer"):
            lines += [md_escape(table["footer"]), ""]
    if view["facts"]:
        lines += [*(f"- {md_escape(f)}" for f in view["facts"]), ""]
    if not view["recommendations"]:
        lines += ["**Recommendations:** none — no accuracy problem and no slowdown found.", ""]
    else:
        lines += ["**Recommendations**", ""]
        for number, rec in enumerate(view["recommendations"], start=1):
            effect = f" — predicted: {md_escape(rec['effect'])}" if rec["effect"] else ""
            lines.append(f"{number}. {md_escape(rec['summary'])}{effect}")
            for label, key, lang in (("command", "command", "sh"), ("pipeline YAML", "yaml", "yaml")):
                if rec.get(key):
                    code = rec[key].replace("`", "'")
                    lines += ["", f"   {label}:", "", f"   ```{lang}", *(f"   {c}" for c in code.splitlines()),
                              "   ```"]
            lines.append("")
    if view["notes"]:
        lines += ["**Notes**", "", *(f"- {md_escape(n)}" for n in view["notes"]), ""]
    return lines


# ---- pieces ------------------------------------------------------------------------------------------------------
def _kernels(explain: Mapping[str, Any]) -> dict[str, Any] | None:
    """End-to-end agreement first: the real session (this CPU's kernels), the exact Q/DQ arithmetic, a prediction."""
    kernels = explain.get("kernels")
    if not isinstance(kernels, Mapping):
        return None
    rows = []
    for label, row in ((f"real onnxruntime kernels ({_t(kernels.get('host'))}, this CPU)", kernels.get("real")),
                       ("exact Q/DQ arithmetic (graph unoptimised)", kernels.get("qdq")),
                       (f"predicted on {_t((kernels.get('predicted') or {}).get('target'))} (emulated)",
                        kernels.get("predicted"))):
        if isinstance(row, Mapping) and row.get("top1_agreement") is not None:
            rows.append([label, _pct(row.get("top1_agreement")), _f(row.get("cosine"), 4), _db(row.get("sqnr_db"))])
    return {"title": f"Agreement with the reference ({_i(kernels.get('n_samples'))} samples)",
            "headers": ["outputs", "top-1 agreement", "cosine", "SQNR"], "rows": rows, "footer": "", "first": True}


def _kernel_facts(explain: Mapping[str, Any]) -> list[str]:
    kernels = explain.get("kernels")
    if not isinstance(kernels, Mapping):
        return []
    facts = []
    sat = [str(n) for n in kernels.get("saturated_layers") or []]
    if kernels.get("hardware_effect"):
        facts.append(f"hardware effect: the real kernels lose accuracy the Q/DQ arithmetic keeps — u8×s8 pairs "
                     f"saturate in int16 on {_t(kernels.get('host'))} in: {', '.join(sat[:8]) or 'the int8 layers'}")
    elif sat:
        facts.append(f"u8×s8 pairs saturate on {_t(kernels.get('host'))} in {', '.join(sat[:8])}, without a "
                     "measurable effect on the outputs")
    if kernels.get("emulation_skipped"):
        facts.append(f"saturated pairs not counted: {_t(kernels['emulation_skipped'])}")
    predicted = kernels.get("predicted")
    if isinstance(predicted, Mapping):
        if predicted.get("skipped"):
            facts.append(f"no prediction for {_t(predicted.get('target'))}: {_t(predicted['skipped'])}")
        else:
            layers = [str(n) for n in predicted.get("saturated_layers") or []]
            facts.append(f"predicted on {_t(predicted.get('target'))}: top-1 agreement "
                         f"{_pct(predicted.get('top1_agreement'))}; pairs saturate in "
                         f"{', '.join(layers[:8]) if layers else 'no layer'}")
    return facts


def _baselines(explain: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = []
    for row in explain.get("latency") or []:
        speedup = row.get("speedup")
        cell = NONE if not speedup else (f"{_f(speedup.get('ratio'), 3)} [{_f(speedup.get('ci_low'), 3)}, "
                                         f"{_f(speedup.get('ci_high'), 3)}]")
        rows.append([_t(row.get("name")), _t(row.get("backend")), _ms(row.get("median_ms")), _ms(row.get("p90_ms")),
                     cell + (" (unstable)" if row.get("unstable") else "")])
    if not rows:
        return None
    return {"title": f"Baselines (batch {_t(explain.get('batch_size'))}, {_t(explain.get('threads'))} thread(s); "
                     "speed-up = baseline median / candidate median, above 1: the candidate is faster)",
            "headers": ["model", "backend", "p50", "p90", "candidate speed-up [95 % CI]"], "rows": rows,
            "footer": ""}


def _time(explain: Mapping[str, Any]) -> dict[str, Any] | None:
    profiles = explain.get("profile") or {}
    cand, ref = profiles.get("candidate") or {}, profiles.get("reference") or {}
    if not cand:
        return None
    cand_ops = {r.get("op_type"): r for r in cand.get("by_op_type") or []}
    ref_ops = {r.get("op_type"): r for r in ref.get("by_op_type") or []}
    order = sorted(set(cand_ops) | set(ref_ops), key=lambda op: (-max(_num((cand_ops.get(op) or {}).get("ms")) or 0,
                                                                       _num((ref_ops.get(op) or {}).get("ms")) or 0),
                                                                   str(op)))
    rows = []
    for op in order[:TOP_OPS]:
        c, r = cand_ops.get(op) or {}, ref_ops.get(op) or {}
        rows.append([_t(op), _t(c.get("class") or r.get("class")), f"{_i(c.get('count'))} / {_i(r.get('count'))}",
                     _ms(c.get("ms")), _pct(c.get("share")), _ms(r.get("ms")), _pct(r.get("share"))])
    return {"title": f"Where the time goes (median per call over {_t(cand.get('runs'))} profiled calls; kernels cover "
                     f"{_pct(cand.get('coverage'))} of the candidate's {_ms(cand.get('run_ms'))} call; reference "
                     f"kernels {_ms(ref.get('kernel_ms'))} of {_ms(ref.get('run_ms'))})",
            "headers": ["op type", "class", "kernels cand. / ref.", "candidate", "share", "reference", "share"],
            "rows": rows, "footer": ""}


def _facts(explain: Mapping[str, Any]) -> list[str]:
    graph = explain.get("graph")
    if not isinstance(graph, Mapping):
        return []
    cand = (explain.get("profile") or {}).get("candidate") or {}
    executed = ", ".join(f"{k} ×{v}" for k, v in sorted((cand.get("int8_kernels_executed") or {}).items())) or "none"
    facts = [f"int8 kernels executed: {_i(graph.get('int8_kernels_executed'))} ({executed})",
             (f"Q/DQ pairs in the graph: {_i(graph.get('qdq_pairs'))} ({_i(graph.get('boundary_pairs'))} at the "
              f"model's inputs/outputs, {_i(graph.get('region_edges'))} where an int8 region starts or ends); "
              f"unfused: {_i(graph.get('unfused_pairs'))}; Q/DQ kernel time {_ms(graph.get('qdq_ms'))} "
              f"({_pct(graph.get('qdq_share'))} of kernel time)")]
    if graph.get("unfused_examples"):
        facts.append("unfused pairs: " + ", ".join(str(x) for x in graph["unfused_examples"]))
    floats = graph.get("float_layers") or []
    if floats:
        shown = ", ".join(f"{f.get('node')} ({f.get('op_type')}, {_ms(f.get('candidate_ms'))})" for f in floats[:10])
        facts.append(f"layers that stayed FP32: {len(floats)}: {shown}" + (" …" if len(floats) > 10 else ""))
    return facts


def _errors(explain: Mapping[str, Any]) -> dict[str, Any] | None:
    errors = explain.get("errors")
    if not isinstance(errors, Mapping):
        return None
    layers = explain.get("layers") or []
    out = errors.get("output") or {}
    rows = [[str(number), _t(lay.get("exclude_name")), _t(lay.get("op_type")), _t(lay.get("precision")),
             _f(lay.get("noise_added"), 3), _db(lay.get("sqnr_db")), _db(lay.get("real_sqnr_db")),
             _share(lay.get("saturated_pairs")), _db(lay.get("channel_sqnr_db")),
             _f(lay.get("cosine"), 4), _pct(lay.get("time_share")),
             f"{_ms(lay.get('candidate_ms'))} / {_ms(lay.get('reference_ms'))}"]
            for number, lay in enumerate(layers[:TOP_LAYERS], start=1)]
    return {"title": f"Where the error comes from ({_i(errors.get('n_samples'))} samples; output SQNR "
                     f"{_db(out.get('sqnr_db'))}, channel SQNR {_db(out.get('channel_sqnr_db'))}, cosine "
                     f"{_f(out.get('cosine'), 4)}, top-1 agreement {_pct(out.get('top1_agreement'))}; layers ranked "
                     "by the relative noise power they add, worst first)",
            "headers": ["#", "layer", "op", "precision", "noise added", "SQNR Q/DQ", "SQNR real kernels",
                        "pairs saturated", "channel SQNR", "cosine",
                        "time share", "ms candidate / FP32"], "rows": rows,
            "footer": f"{len(layers) - TOP_LAYERS} more layer(s) in report.json." if len(layers) > TOP_LAYERS else ""}


def _recommendation(rec: Mapping[str, Any]) -> dict[str, str]:
    predicted = rec.get("predicted") or {}
    effect = []
    if predicted.get("output_channel_sqnr_db") is not None:
        effect.append(f"output channel SQNR ≈ {_db(predicted['output_channel_sqnr_db'])} (now "
                      f"{_db(predicted.get('output_channel_sqnr_db_now'))})")
    if predicted.get("latency_note"):
        effect.append(str(predicted["latency_note"]))
    return {"summary": str(rec.get("summary", "")), "effect": "; ".join(effect),
            "command": str(rec.get("command") or ""), "yaml": str(rec.get("yaml") or "")}


# ---- formatting (plain text; each renderer escapes) --------------------------------------------------------------
def _f(value: Any, digits: int) -> str:
    return number_or_dash(value, lambda n: f"{n:.{digits}g}")


def _ms(value: Any) -> str:
    return number_or_dash(value, lambda n: f"{n:.3g} ms")


def _pct(value: Any) -> str:
    return percent(value, 1)


def _share(value: Any) -> str:
    return number_or_dash(value, lambda n: f"{100 * n:.2g} %")


def _db(value: Any) -> str:
    return number_or_dash(value, lambda n: f"{n:.1f} dB")
