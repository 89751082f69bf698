"""Streaming image folders: peak memory and throughput of ``evaluate`` on ``images:DIR`` as the folder grows.

Writes N synthetic photos (400×300 JPEG, quality 90: smooth colour gradients plus noise, two class folders) into a
temporary folder, then, in a fresh child process per N (one thread, batch 64), reads ``images:DIR`` (preset
imagenet: 224×224) once batch by batch without a model (decoding alone), then evaluates MobileNetV2 (width 0.25,
random weights: only the cost matters here) on it, latency off. Each row gives what a dense float32 array of the N
preprocessed images would take, the growth of the child's peak resident memory (``ru_maxrss``) over its peak before
the first batch was decoded (imports done, model built) after decoding and after evaluating, the peak itself, and
images per second of each pass. If memory were not bounded, the growth would follow the dense-array column.

    python benchmarks/images.py [--sizes 250 1000 4000] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from modelpress.data import load_data
from modelpress.evaluate.evaluator import EvalConfig, evaluate
from modelpress.sources import load_model

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

folder, batch = sys.argv[1], int(sys.argv[2])
data = load_data(f"images:{folder}?preset=imagenet", split="all")
model = load_model("zoo:mobilenet_v2", data=data, kwargs={"width_mult": 0.25})
before = rss()
start = time.perf_counter()
for _ in data.batches(batch):  # decoding alone
    pass
decode_wall, decode_peak = time.perf_counter() - start, rss()
start = time.perf_counter()
result = evaluate(model, data, config=EvalConfig(predict_batch_size=batch, measure_latency=False))
wall = time.perf_counter() - start
lazy = data.inputs["input"]
print(json.dumps({"n": len(data), "before": before, "decode_peak": decode_peak, "peak": rss(), "wall": wall,
                  "decode_wall": decode_wall, "decoded": lazy.n_decoded, "largest": lazy.largest_batch,
                  "full": lazy.counter["n_full_decodes"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    from modelpress.reports.schema import run_info

    info = run_info("images", threads=1)
    print(f"CPU: {info['cpu']} ({os.cpu_count()} logical cores; flags: {info.get('cpu_flags', '?')}), "
          f"torch {info['torch']}, 1 thread, batch {args.batch}, 224×224 from 400×300 JPEGs")
    print()
    print("| images | dense float32 array of them | RSS growth: decoding | RSS growth: evaluating | peak RSS | "
          "decoding images/s | evaluating images/s | largest decoded batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="modelpress-images-") as tmp:
        written = 0
        folder = Path(tmp) / "photos"
        for n in sorted(args.sizes):
            write_photos_range(folder, written, n)
            written = n
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(args.batch)], capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            row = json.loads(done.stdout.strip().splitlines()[-1])
            assert row["full"] == 0 and row["decoded"] >= row["n"], row
            dense, mib = row["n"] * 3 * 224 * 224 * 4, 2**20
            print(f"| {row['n']:,} | {dense / mib:,.0f} MiB | {(row['decode_peak'] - row['before']) / mib:,.0f} MiB | "
                  f"{(row['peak'] - row['before']) / mib:,.0f} MiB | {row['peak'] / mib:,.0f} MiB | "
                  f"{row['n'] / row['decode_wall']:,.0f} | {row['n'] / row['wall']:,.0f} | {row['largest']} |")


def write_photos_range(folder: Path, start: int, stop: int) -> None:
    """Photos ``start`` … ``stop - 1`` (the folder grows between rows; earlier photos are kept)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    for k in range(start, stop):
        rng = np.random.default_rng(k)
        sub = folder / f"class{k % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 1, 3)
        base = np.stack([xx / 400 * 255 * a, yy / 300 * 255 * b, (xx + yy) / 700 * 255 * c], axis=-1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(sub / f"{k:06d}.jpg", quality=90)


if __name__ == "__main__":
    main()
