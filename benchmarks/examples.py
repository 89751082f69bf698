"""The "measured here" column of README's Examples table: run example pipelines and print one row each.

Each pipeline runs from scratch (no cache) into a temporary folder with ``modelpress run``'s code path; the row gives
the wall time of the whole run, the accuracy of the first and the last stage, the last stage's artifact size
against the first one's, and the batch-1 median latency of the first and last stage on each stage's own backend
(different backends, so this is not a like-for-like speed-up; the report's latency rows are). The CPU is printed
because every number here depends on it.

    python benchmarks/examples.py [examples/digits.yaml ...]     (default: examples/digits.yaml, about a minute)

examples/minilm.yaml takes about five minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def batch1(stage: dict[str, Any]) -> str:
    rows = [r for r in stage.get("latency") or [] if r["batch_size"] == 1]
    return f"{rows[0]['median_ms']:.3g} ms ({rows[0]['backend']})" if rows else "-"


def row(path: Path) -> str:
    from modelpress.errors import GateFailed
    from modelpress.pipeline import execute_pipeline, load_spec
    from modelpress.reports import load_report

    spec = load_spec(path)
    with tempfile.TemporaryDirectory(prefix="modelpress-example-") as tmp:
        started = time.perf_counter()
        verdict = "gates passed"
        try:
            execute_pipeline(spec, out_dir=Path(tmp) / "run", resume=False)
        except GateFailed as exc:  # the report is written before a gate fails the run
            verdict = f"gate failed: {exc.format_message()}"
        wall = time.perf_counter() - started
        report = load_report(Path(tmp) / "run" / "report.json")
    first, last = report["stages"][0], report["stages"][-1]
    size = last["artifact"]["size_bytes"] / first["artifact"]["size_bytes"]
    return (f"| `{path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path}` | {wall:.0f} s | "
            f"{first['metrics']['accuracy']:.2%} → {last['metrics']['accuracy']:.2%} ({first['name']} → "
            f"{last['name']}) | {size:.2f}× size | batch 1: {batch1(first)} → {batch1(last)} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipelines", nargs="*", type=Path, default=[HERE.parent / "examples" / "digits.yaml"])
    args = parser.parse_args()
    from modelpress.reports.schema import run_info

    info = run_info("examples", threads=1)
    print(f"CPU: {info['cpu']} ({os.cpu_count()} logical cores), torch {info['torch']}, "
          f"onnxruntime {info['onnxruntime']}\n")
    print("| pipeline | wall | accuracy (first → last stage) | size (last / first) | latency | gates |")
    print("|---|---|---|---|---|---|")
    for path in args.pipelines:
        print(row(path.resolve()), flush=True)


if __name__ == "__main__":
    main()
