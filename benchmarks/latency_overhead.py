"""How much does modelpress's latency harness add to what it measures?

For zoo:mlp at batch 1 and zoo:cnn at batch 32 (digits-sized inputs, torch backend), compare the median per-call time
reported by ``measure_latency`` with a bare ``time.perf_counter`` loop around the same call. The two are run in
alternating rounds in one process (same threads, same warm caches) so that drift hits both equally; the ratio's 95 %
CI is a bootstrap over those rounds (runtime.interleaved.rounds_ratio), since calls within a round are not
independent.
Target: overhead < 2 %.

    python benchmarks/latency_overhead.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from modelpress.data import load_data
from modelpress.runtime.sessions import make_runner
from modelpress.runtime.interleaved import rounds_ratio
from modelpress.runtime.latency import LatencyConfig, measure_latency
from modelpress.reports.schema import run_info
from modelpress.sources import load_model


def bare_loop(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    data = load_data("sklearn:digits")
    config = LatencyConfig(warmup_min_calls=50, warmup_min_s=0.2, min_calls=500, min_s=0.5)
    info = run_info("latency-overhead", threads=args.threads)
    print(f"CPU: {info['cpu']} ({os.cpu_count()} logical cores; flags {' '.join(info['cpu_flags'])}), "
          f"torch {info['torch']}, threads={args.threads}, rounds={args.rounds}, alternating harness / bare loop "
          "per round\n")
    print("| model | batch | bare median ms | harness median ms | overhead | harness/bare ratio 95% CI |")
    print("|---|---|---|---|---|---|")
    for name, batch_size in (("mlp", 1), ("cnn", 32)):
        artifact = load_model(f"zoo:{name}", data=data)
        runner = make_runner(artifact, "torch", threads=args.threads)
        batch = {"input": np.ascontiguousarray(data.inputs["input"][:batch_size])}
        fn = lambda: runner(batch)  # noqa: E731
        bare_loop(fn, 200)  # warm-up for both
        bare, harness = [], []
        for _ in range(args.rounds):
            _, samples = measure_latency(fn, config=config, batch_size=batch_size, threads=args.threads,
                                         backend="torch")
            harness.append(samples)
            bare.append(bare_loop(fn, len(samples)))
        # CI over rounds (a round's calls resampled together), not over single calls: calls are not independent.
        # Rounds are cut to the shortest one, so that every round weighs the same.
        width = min(len(x) for x in harness)
        b_rounds, h_rounds = np.stack([x[:width] for x in bare]), np.stack([x[:width] for x in harness])
        b, h = b_rounds.ravel(), h_rounds.ravel()
        ratio = rounds_ratio(b_rounds, h_rounds)
        overhead = np.median(h) / np.median(b) - 1
        print(f"| zoo:{name} | {batch_size} | {np.median(b):.4f} | {np.median(h):.4f} | {overhead:+.2%} | "
              f"{1 / ratio['ratio']:.4f} [{1 / ratio['ci_high']:.4f}, {1 / ratio['ci_low']:.4f}] |")


if __name__ == "__main__":
    main()
