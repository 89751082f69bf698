"""A finished search: the front, fair final timings of the finalists, best.yaml and the summaries.

* **Front** — among the trials that meet the constraints, those no other dominates on the screening numbers (each
  trial timed itself, possibly while another worker competed for the cores: screening numbers).
* **Final timing** — when an objective is a latency, the finalists (the front) are timed again here, in one process,
  side by side in interleaved rounds (A B C … A B C …) with the same threads, batch and backend as the objective;
  the
  front, its ties and the best pick are then decided again among the finalists on these final numbers. The summary
  marks every number as ``screening`` or ``final``.
* **Best** — :func:`~.pareto.pick_best` over the (final) front: objectives in the spec's order as priorities, with
  statistical ties; written as ``best.yaml``, the trial's pipeline, which ``modelpress run best.yaml`` reproduces.
* **No trial meets the constraints** — the summary is written, then exit 1 naming the closest trial (smallest
  relative violation) and why it missed.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GateFailed
from ..io import write_json, write_text
from .execute import SearchResult
from .pareto import Estimate, median_interval, pareto_front, pick_best, ties
from .spec import SearchSpec

__all__ = ["finalize", "retime", "round_interval"]

ROUNDS = 5


def _estimates(trial: dict[str, Any]) -> list[Estimate]:
    out = []
    for value, (low, high) in zip(trial["objective_values"], trial["intervals"], strict=True):
        out.append(Estimate(value, value if low is None else low, value if high is None else high))
    return out


def retime(spec: SearchSpec, folder: Path, finalists: list[dict[str, Any]], *, rounds: int = ROUNDS,
           chunk_s: float = 0.25) -> dict[str, dict[int, dict[str, Any]]]:
    """Time the finalists' final models side by side: ``rounds`` interleaved rounds per latency objective, one
    process, the objective's batch, backend and the search's threads. → ``{trial id: {objective index: stats}}``."""
    from ..runtime.latency import LatencyConfig, measure_latency
    from ..runtime.sessions import make_runner
    from ..runtime.timing import latency_batch
    from ..sources import load_model, trusted_code
    from ..data import load_data

    out: dict[str, dict[int, dict[str, Any]]] = {t["id"]: {} for t in finalists}
    latency = [(k, o) for k, o in enumerate(spec.objectives) if o.metric.section == "latency"]
    if not latency or not finalists:
        return out
    data = load_data(spec.base.data.eval, split="test", label_column=spec.base.data.label_column)
    with trusted_code(spec.base.named_code()):
        for k, objective in latency:
            runs = []
            for trial in finalists:
                stage = trial["final_stage"]
                artifact = load_model(str(folder / trial["run_dir"] / "stages" / stage))
                backend = objective.backend or trial["latency_backends"].get(str(k))
                runner = make_runner(artifact, backend, threads=spec.threads)
                batch = latency_batch(data, objective.batch or 1)
                runs.append((trial["id"], backend, artifact.format, lambda r=runner, b=batch: r(b), []))
            for r in range(rounds):
                for _tid, _backend, fmt, fn, samples in runs:
                    if fmt == "torch":
                        import torch

                        torch.set_num_threads(spec.threads)
                    config = LatencyConfig(warmup_min_calls=3 if r == 0 else 1, warmup_min_s=0.2 if r == 0 else 0.0,
                                           min_calls=10, min_s=chunk_s, max_s=max(chunk_s * 4, 2.0))
                    _, s = measure_latency(fn, config=config, batch_size=objective.batch or 1, threads=spec.threads,
                                           backend=_backend)
                    samples.append(s)
            for tid, backend, _fmt, _fn, samples in runs:
                allsamples = np.concatenate(samples)
                low, high = round_interval([float(np.median(s)) for s in samples], allsamples)
                out[tid][k] = {"median_ms": float(np.median(allsamples)), "ci": [low, high], "n": int(allsamples.size),
                               "rounds": rounds, "backend": backend, "threads": spec.threads,
                               "batch_size": objective.batch}
    return out


def round_interval(round_medians: list[float], samples: np.ndarray) -> tuple[float, float]:
    """The interval of a finalist's median latency: the range of its per-round medians (the true median lies outside
    the range of ``r`` independent round medians with probability 2 x 0.5^r: 6 % for 5 rounds), which includes the
    drift between rounds that one round's samples do not show; widened to the order-statistics interval of all the
    samples when that is wider. With fewer than 2 rounds, that interval alone."""
    low, high = median_interval(samples)
    if len(round_medians) >= 2:
        low, high = min(low, min(round_medians)), max(high, max(round_medians))
    return low, high


def finalize(spec: SearchSpec, result: SearchResult, *, rounds: int = ROUNDS) -> dict[str, Any]:
    """Front, final timings, best.yaml and summary.{json,md,html} in the search folder; exit 1 (GateFailed) when no
    trial meets the constraints. Returns the summary."""
    folder = result.folder
    trials = result.trials
    maximize = [o.maximize for o in spec.objectives]
    feasible = [t for t in trials if t["status"] == "ok"]
    screening = {t["id"]: _estimates(t) for t in feasible}
    front_ids = pareto_front({i: [e.value for e in es] for i, es in screening.items()}, maximize)
    finalists = [next(t for t in feasible if t["id"] == i) for i in front_ids]
    for trial in finalists:
        _final_details(folder, trial, spec)
    final = retime(spec, folder, finalists, rounds=rounds) if finalists else {}
    final_estimates: dict[str, list[Estimate]] = {}
    for trial in finalists:
        estimates = list(screening[trial["id"]])
        for k, stats in final.get(trial["id"], {}).items():
            estimates[k] = Estimate(stats["median_ms"], *stats["ci"])
        final_estimates[trial["id"]] = estimates
    final_front = pareto_front({i: [e.value for e in es] for i, es in final_estimates.items()}, maximize)
    tie_map = ties(final_estimates, final_front)
    best = pick_best(final_estimates, final_front, maximize)
    timed = sorted(k for stats in final.values() for k in stats)
    summary: dict[str, Any] = {
        "search": spec.name, "spec": spec.source, "sampler": spec.sampler, "seed": spec.seed, "threads": spec.threads,
        "objectives": [{"name": o.name, "label": o.label, "direction": o.direction,
                        "numbers": "final" if k in timed else "exact or screening"}
                       for k, o in enumerate(spec.objectives)],
        "constraints": [c.describe() for c in spec.constraints] + [f"{k} {v}" for k, v in spec.base.gates.items()
                                                                    if k not in {c.name for c in spec.constraints}],
        "trials": [_trial_row(t) for t in trials],
        "counts": {s: sum(t["status"] == s for t in trials) for s in ("ok", "infeasible", "failed")},
        "stage_runs": result.stage_counts, "seconds": round(result.seconds, 1), "resumed": result.resumed,
        "screening_front": front_ids,
        "front": [{"id": i, "params": next(t for t in finalists if t["id"] == i)["params"],
                   "values": [e.value for e in final_estimates[i]],
                   "intervals": [[e.low, e.high] for e in final_estimates[i]],
                   "numbers": ["final" if k in final.get(i, {}) else "screening" if
                               spec.objectives[k].metric.section == "latency" else "exact"
                               for k in range(len(spec.objectives))],
                   "ties": tie_map.get(i, []), "final_timing": {str(k): v for k, v in final.get(i, {}).items()}}
                  for i in final_front],
        "dropped_on_final_timing": [i for i in front_ids if i not in final_front],
        "best": best,
    }
    if best is not None:
        trial = next(t for t in finalists if t["id"] == best)
        header = (f"# The best recipe of search {spec.name} ({spec.source}): trial {best}.\n"
                  f"# Objectives in priority order: {', '.join(f'{o.direction} {o.name}' for o in spec.objectives)};"
                  f" constraints: {', '.join(summary['constraints']) or 'none'}.\n"
                  f"# Reproduce with: modelpress run best.yaml\n")
        write_text(folder / "best.yaml", spec.trial_yaml(trial["params"], name=f"{spec.base.name}-best",
                                                         header=header))
        summary["best_pipeline"] = "best.yaml"
    else:
        (folder / "best.yaml").unlink(missing_ok=True)
        closest = min((t for t in trials if t["status"] == "infeasible"), key=lambda t: t.get("violation") or 0,
                      default=None)
        summary["closest"] = None if closest is None else {"id": closest["id"], "params": closest["params"],
                                                           "violations": closest.get("violations")}
    write_json(folder / "summary.json", summary)
    write_text(folder / "summary.md", render_markdown(spec, summary))
    write_text(folder / "summary.html", render_html(spec, summary))
    if best is None:
        closest = summary.get("closest")
        if closest is None:
            raise GateFailed(f"no trial of search {spec.name} finished ({summary['counts']['failed']} failed)",
                             hint=f"see {folder / 'summary.md'}")
        why = "; ".join(closest["violations"] or []) or "a constraint failed"
        raise GateFailed(f"no trial meets the constraints; closest: {closest['id']} "
                         f"({_params_text(closest['params'])}): {why}", hint=f"see {folder / 'summary.md'}")
    return summary


def _final_details(folder: Path, trial: dict[str, Any], spec: SearchSpec) -> None:
    from ..io import read_json

    report = read_json(folder / trial["run_dir"] / "report.json")
    stage = (report.get("stages") or [{}])[-1]
    trial["final_stage"] = stage.get("name")
    trial["latency_backends"] = {}
    for k, objective in enumerate(spec.objectives):
        if objective.metric.section != "latency":
            continue
        for row in stage.get("latency") or []:
            if row.get("batch_size") == objective.batch and (objective.backend in (None, row.get("backend"))):
                trial["latency_backends"][str(k)] = row.get("backend")
                break


def _trial_row(t: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "status", "params", "objective_values", "intervals", "violations", "error", "attempts", "seconds",
            "stage_runs", "store_hits", "run_dir", "pipeline")
    return {k: t.get(k) for k in keys}


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('stages.')}={json.dumps(v)}" for k, v in values.items()) or "(base)"


def _fmt(spec: SearchSpec, k: int, value: Any) -> str:
    return spec.objectives[k].metric.format(value)


def render_markdown(spec: SearchSpec, summary: dict[str, Any]) -> str:
    lines = [f"# Search {spec.name}", "",
             f"Sampler {spec.sampler} (seed {spec.seed}); {len(summary['trials'])} trials: "
             f"{summary['counts']['ok']} meet the constraints, {summary['counts']['infeasible']} do not, "
             f"{summary['counts']['failed']} failed. Threads {spec.threads}. "
             f"Stage runs {summary['stage_runs'].get('stage_runs', 0)}, stages copied from the shared store "
             f"{summary['stage_runs'].get('stages_from_store', 0)}.", "",
             "Constraints: " + (", ".join(summary["constraints"]) or "none") + ".", ""]
    labels = [o.label for o in spec.objectives]
    lines += ["## Pareto front", ""]
    if summary["front"]:
        lines.append("Latency numbers in this table are **final**: the finalists re-timed side by side in one process "
                     f"in interleaved rounds with {spec.threads} thread(s). Intervals: latency, the range of the "
                     "per-round medians (≈94 % with 5 rounds); accuracy-like metrics, Wilson 95 %. Points marked tie "
                     "overlap on every objective.")
        lines.append("")
        lines.append("| trial | params | " + " | ".join(labels) + " | ties | |")
        lines.append("|---|---|" + "---|" * len(labels) + "---|---|")
        for row in summary["front"]:
            cells = []
            for k, (v, (lo, hi)) in enumerate(zip(row["values"], row["intervals"], strict=True)):
                tag = " (final)" if row["numbers"][k] == "final" else ""
                ci = f" [{_fmt(spec, k, lo)}, {_fmt(spec, k, hi)}]" if lo != hi else ""
                cells.append(f"{_fmt(spec, k, v)}{ci}{tag}")
            best = "**best**" if row["id"] == summary["best"] else ""
            lines.append(f"| {row['id']} | {_params_text(row['params'])} | " + " | ".join(cells) +
                         f" | {', '.join(row['ties']) or '—'} | {best} |")
        if summary["dropped_on_final_timing"]:
            lines += ["", "On the screening front but dominated once re-timed: "
                      + ", ".join(summary["dropped_on_final_timing"]) + "."]
        if summary.get("best"):
            lines += ["", f"Best: {summary['best']} → best.yaml (`modelpress run best.yaml` reproduces it)."]
    else:
        closest = summary.get("closest")
        lines.append("No trial meets the constraints." + (
            f" Closest: {closest['id']} ({_params_text(closest['params'])}): "
            f"{'; '.join(closest['violations'] or [])}." if closest else ""))
    lines += ["", "## Every trial", "",
              "Latency here is the **screening** number each trial measured for itself (workers may have competed "
              "for cores).", "",
              "| trial | status | params | " + " | ".join(labels) + " | stage runs | note |",
              "|---|---|---|" + "---|" * len(labels) + "---|---|"]
    for t in summary["trials"]:
        values = t.get("objective_values") or [None] * len(labels)
        note = t.get("error") or "; ".join(t.get("violations") or []) or ""
        lines.append(f"| {t['id']} | {t['status']} | {_params_text(t['params'])} | " +
                     " | ".join(_fmt(spec, k, v) for k, v in enumerate(values)) +
                     f" | {t.get('stage_runs') if t.get('stage_runs') is not None else '—'} | "
                     f"{note.replace('|', '/')[:200]} |")
    lines += ["", "Each trial is a run folder under trials/: `modelpress compare trials/t000 trials/t001`.", ""]
    return "\n".join(lines)


def render_html(spec: SearchSpec, summary: dict[str, Any]) -> str:
    """A self-contained page: the Markdown tables as HTML (every value escaped) and a scatter of the first two
    objectives (front points filled)."""
    e = html.escape
    labels = [o.label for o in spec.objectives]
    rows = []
    front_ids = {r["id"] for r in summary["front"]}
    for t in summary["trials"]:
        values = t.get("objective_values") or [None] * len(labels)
        cells = "".join(f"<td>{e(_fmt(spec, k, v))}</td>" for k, v in enumerate(values))
        mark = " (front)" if t["id"] in front_ids else ""
        rows.append(f"<tr><td>{e(t['id'])}{e(mark)}</td><td>{e(t['status'])}</td><td>{e(_params_text(t['params']))}"
                    f"</td>{cells}<td>{e(str(t.get('error') or '; '.join(t.get('violations') or [])))}</td></tr>")
    head = "".join(f"<th>{e(x)}</th>" for x in ["trial", "status", "params", *labels, "note"])
    plot = _svg(spec, summary) if len(labels) >= 2 else ""
    best = summary.get("best")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(spec.name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:3px 6px;font-size:13px}</style></head><body>"
            f"<h1>Search {e(spec.name)}</h1><p>Best: {e(best or 'none meets the constraints')}. Screening numbers "
            "in the table; the front's final numbers are in summary.md / summary.json.</p>"
            f"{plot}<table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n")


def _svg(spec: SearchSpec, summary: dict[str, Any]) -> str:
    points = [(t["id"], t["objective_values"][0], t["objective_values"][1], t["status"])
              for t in summary["trials"] if t.get("objective_values") and None not in t["objective_values"][:2]]
    if not points:
        return ""
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    w, h, m = 520, 320, 50

    def scale(v: float, lo: float, hi: float, size: int) -> float:
        return m + (v - lo) / (hi - lo) * (size - 2 * m) if hi > lo else size / 2

    front = {r["id"] for r in summary["front"]}
    dots = []
    for tid, x, y, status in points:
        cx, cy = scale(x, min(xs), max(xs), w), h - scale(y, min(ys), max(ys), h)
        fill = "#1f77b4" if tid in front else ("#bbb" if status != "ok" else "#fff")
        dots.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='5' fill='{fill}' stroke='#1f77b4'>"
                    f"<title>{html.escape(tid)} {html.escape(status)}</title></circle>")
    a, b = spec.objectives[0], spec.objectives[1]
    return (f"<svg width='{w}' height='{h}' style='border:1px solid #ddd'>{''.join(dots)}"
            f"<text x='{w / 2}' y='{h - 10}' text-anchor='middle'>{html.escape(a.label)} ({a.direction})</text>"
            f"<text x='12' y='{h / 2}' transform='rotate(-90 12 {h / 2})' text-anchor='middle'>"
            f"{html.escape(b.label)} ({b.direction})</text></svg>")
