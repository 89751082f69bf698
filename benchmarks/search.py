"""``modelpress search`` on examples/digits-search.yaml: wall-clock with 1 and 2 local workers and with Ray local,
stage runs saved by the shared stage store, and whether the pool and Ray reach the same Pareto front.

Each configuration searches into a fresh folder (nothing cached from an earlier configuration), runs all 12 trials
(3 prune amounts x dynamic / static INT8 x 3 calibrators; train 10 epochs, prune + 3 fine-tune epochs, export,
quantize),
then re-times the finalists side by side (``--rounds`` interleaved rounds, the search's threads). Columns:

  wall s         the whole search: trials + final timing, measured here around run_search + finalize; the
                 machine's 1-minute load average at the end says how much else was running (cores are shared)
  stage runs     stages computed; ``from store`` stages copied from the store because another trial (or worker)
                 had computed the same stage key; without the store every trial computes all of its stages
  ok / infeas.   trials meeting / missing the constraint (accuracy drop <= 2 pts vs the trained model, McNemar)
  front          the final Pareto front (objectives: latency b1, size, accuracy), ties in brackets; best = best.yaml

"Same results" compares what a trial computes (accuracy, size of every trial), which must be identical whichever
worker ran it; the latency part of the front can legitimately differ between two searches on a loaded machine
(measurement noise), so the fronts are printed side by side and compared as well.

    python benchmarks/search.py [--spec examples/digits-search.yaml] [--rounds 5] [--no-ray] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def run_one(spec: Any, out: Path, *, workers: int, ray: str | None, rounds: int) -> dict[str, Any]:
    from modelpress.errors import GateFailed
    from modelpress.search.execute import run_search
    from modelpress.search.report import finalize

    start = time.perf_counter()
    result = run_search(spec, out=out, workers=workers, ray=ray)
    try:
        summary = finalize(spec, result, rounds=rounds)
    except GateFailed as exc:
        summary = {"front": [], "best": None, "error": exc.format_message()}
    wall = time.perf_counter() - start
    load = os.getloadavg()[0]
    computed = {t["id"]: tuple(t.get("objective_values") or ())[1:] for t in result.trials}
    return {"wall": wall, "load": load, "trials": len(result.trials), "counts": result.stage_counts,
            "ok": sum(t["status"] == "ok" for t in result.trials),
            "infeasible": sum(t["status"] == "infeasible" for t in result.trials),
            "failed": sum(t["status"] == "failed" for t in result.trials),
            "front": [(r["id"], tuple(r["ties"])) for r in summary["front"]], "best": summary.get("best"),
            "computed": computed, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "examples" / "digits-search.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray local configuration.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds of the finalists' final timing.")
    parser.add_argument("--out", help="Folder for the searches (default: a temp folder, removed).")
    args = parser.parse_args()
    os.environ.setdefault("MODELPRESS_QUIET", "1")
    import onnxruntime
    import torch

    from modelpress import progress
    from modelpress.reports.schema import run_info
    from modelpress.search import load_search

    progress.set_quiet(True)
    spec = load_search(args.spec)
    info = run_info("bench-search", threads=spec.threads)
    print(f"cpu {info.get('cpu')} · flags {', '.join(info.get('cpu_flags') or [])} · cores {os.cpu_count()} · "
          f"load avg {' '.join(f'{x:.1f}' for x in os.getloadavg())} · torch {torch.__version__} · onnxruntime "
          f"{onnxruntime.__version__} · python {platform.python_version()}")
    objectives = ", ".join(f"{o.direction} {o.name}" for o in spec.objectives)
    print(f"search {spec.name}: {len(spec.grid())} trials ({spec.sampler}); objectives {objectives}; "
          f"threads {spec.threads} per trial; latency batch "
          f"{', '.join(str(o.batch) for o in spec.objectives if o.batch) or '-'}; final timing {args.rounds} rounds\n")
    configs: list[tuple[str, int, str | None]] = [(f"pool x{w}", w, None) for w in args.workers]
    if not args.no_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed: the Ray row is skipped (pip install 'modelpress[ray]')\n")
        else:
            configs.append((f"ray local x{args.ray_workers}", args.ray_workers, "local"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        rows = []
        for label, workers, ray in configs:
            out = root / label.replace(" ", "-")
            row = run_one(spec, out, workers=workers, ray=ray, rounds=args.rounds)
            rows.append((label, row))
            print(f"  {label}: {row['wall']:.0f} s", flush=True)
    print()
    print("| run | wall s | load avg (1 min) at end | trials | ok / infeas. / failed | stage runs | from store | "
          "without store | front (ties) | best |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, row in rows:
        runs, hits = row["counts"].get("stage_runs", 0), row["counts"].get("stages_from_store", 0)
        front = ", ".join(f"{i}" + (f" [{'/'.join(t)}]" if t else "") for i, t in row["front"])
        print(f"| {label} | {row['wall']:.0f} | {row['load']:.1f} | {row['trials']} | {row['ok']} / "
              f"{row['infeasible']} / {row['failed']} | {runs} | {hits} | {runs + hits} | {front} | {row['best']} |")
    base_label, base = rows[0]
    print()
    for label, row in rows[1:]:
        same_values = row["computed"] == base["computed"]
        same_front = [i for i, _ in row["front"]] == [i for i, _ in base["front"]]
        print(f"{label} vs {base_label}: size and accuracy of every trial identical: {same_values}; "
              f"same final front: {same_front}; same best: {row['best'] == base['best']}")
    for label, row in rows:
        for entry in row["summary"]["front"]:
            values = ", ".join(f"{o.label} {o.metric.format(v)}" for o, v in zip(spec.objectives, entry["values"],
                                                                                strict=True))
            print(f"  {label} front {entry['id']}: {values}")


if __name__ == "__main__":
    main()
