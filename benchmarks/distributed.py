"""Data-parallel training on one machine: wall-clock of fit() with 1 process vs 2 forked gloo ranks.

Trains zoo:cnn (channels 32/64, hidden 64 by default; ``--model mlp`` for a 128-unit MLP) on sklearn digits' train
split (1,347 samples) for ``--epochs`` epochs at ``--batch-size``, with the same seed, in three ways:

* ``1 proc × 1 thread`` — the baseline;
* ``1 proc × 2 threads`` — torch's intra-op threads on the same cores;
* ``2 procs × 1 thread`` — ``nproc=2``: two forked ranks, each half of every batch, gradients all-reduced by gloo
  (forked ranks run one thread each, see modelpress/compress/distributed.py).

The three are timed in interleaved rounds (``--rounds``), so a busy neighbour slows all alike; the table shows the
median seconds per training run, the speed-up over the baseline (ratio of medians, block-bootstrap 95 % CI from
``runtime.latency.speedup_ratio``) and the largest weight difference from the baseline's result (the float-order
tolerance of tests/distributed). The 2-rank time includes forking the ranks and joining the group (each call of fit
does both). The CPU model, its relevant flags, the core count and the 1-minute load average are printed with it.

    python benchmarks/distributed.py [--model cnn|mlp] [--epochs 2] [--batch-size 64] [--rounds 5]

``--fidelity`` measures instead how far 2 ranks land from one process (no timing): the max abs weight difference
after 3 epochs at lr 3e-3 for the settings of tests/distributed (MLP and zoo:cnn with BatchNorm, AdamW and SGD, last
batch of 1 or 3 samples), then a longer run (zoo:cnn, full train split, lr 3e-2, 12 epochs with early stopping on a
20 % validation split) beside the difference that a second intra-op thread makes in one process, with the epochs
run and the test accuracy of each.

    python benchmarks/distributed.py --fidelity
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import numpy as np
import torch

from modelpress.compress.train import fit
from modelpress.data import load_data
from modelpress.reports.schema import _cpu_flags, _cpu_model
from modelpress.runtime.latency import speedup_ratio
from modelpress.sources import load_model

SETUPS = (("1 proc × 1 thread", 1, 1), ("1 proc × 2 threads", 1, 2), ("2 procs × 1 thread", 2, 1))


def run_once(module: Any, data: Any, *, nproc: int, threads: int, epochs: int, batch_size: int) -> tuple[float, Any]:
    torch.set_num_threads(threads)
    trained = copy.deepcopy(module)
    started = time.perf_counter()
    fit(trained, data, epochs=epochs, lr=3e-3, batch_size=batch_size, seed=0, nproc=nproc)
    return time.perf_counter() - started, trained


def _diff(a: Any, b: Any) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def _accuracy(module: Any, data: Any) -> float:
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(data.inputs["input"])))
    return float((out.argmax(1).numpy() == data.y).mean())


def fidelity() -> None:
    torch.set_num_threads(1)
    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    widths = {"mlp": {"hidden": [32]}, "cnn": {"channels": [4, 8], "hidden": 16}}

    def fresh(kind: str) -> Any:
        return load_model(f"zoo:{kind}", data=test, kwargs=widths[kind], seed=0).module

    print(f"CPU: {_cpu_model()}; torch {torch.__version__}; one intra-op thread per process unless said")
    print()
    print("| model | samples (last batch) | optimizer | max abs weight diff, 2 ranks vs 1 process |")
    print("|---|---|---|---:|")
    for kind in ("mlp", "cnn"):
        for n in (6 * 64 + 1, 6 * 64 + 3):
            for optimizer in ("adamw", "sgd"):
                data = train.subset(np.arange(n))
                one, two = fresh(kind), fresh(kind)
                fit(one, data, epochs=3, lr=3e-3, batch_size=64, seed=0, optimizer=optimizer)
                fit(two, data, epochs=3, lr=3e-3, batch_size=64, seed=0, optimizer=optimizer, nproc=2)
                print(f"| zoo:{kind} {widths[kind]} | {n} ({n % 64}) | {optimizer} | {_diff(one, two):.1e} |")
    print()
    settings = dict(epochs=12, lr=3e-2, batch_size=64, seed=0, val_fraction=0.2, patience=2)
    runs = {}
    for label, nproc, threads in (("1 process, 1 thread", 1, 1), ("2 ranks, 1 thread each", 2, 1),
                                  ("1 process, 2 threads", 1, 2)):
        torch.set_num_threads(threads)
        module = fresh("cnn")
        log = fit(module, train, nproc=nproc, **settings)
        runs[label] = (module, log)
    torch.set_num_threads(1)
    base = runs["1 process, 1 thread"][0]
    print(f"zoo:cnn {widths['cnn']}, {len(train)} train samples, {settings}")
    print()
    print("| run | epochs run (best) | test accuracy | max abs weight diff vs 1 process, 1 thread |")
    print("|---|---|---:|---:|")
    for label, (module, log) in runs.items():
        print(f"| {label} | {log['epochs_run']} ({log['best_epoch']}) | {_accuracy(module, test):.4f} | "
              f"{_diff(base, module):.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fidelity", action="store_true", help="2 ranks vs 1 process: weight differences only")
    args = parser.parse_args()
    if args.fidelity:
        fidelity()
        return
    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    kwargs = {"channels": [32, 64], "hidden": 64} if args.model == "cnn" else {"hidden": [128]}
    module = load_model(f"zoo:{args.model}", data=test, kwargs=kwargs, seed=0).module
    run_once(module, train.subset(np.arange(args.batch_size * 2)), nproc=1, threads=1, epochs=1,
             batch_size=args.batch_size)  # warm-up: first-call costs out of the table
    times: dict[str, list[float]] = {label: [] for label, _, _ in SETUPS}
    results: dict[str, Any] = {}
    for _ in range(args.rounds):
        for label, nproc, threads in SETUPS:
            seconds, trained = run_once(module, train, nproc=nproc, threads=threads, epochs=args.epochs,
                                        batch_size=args.batch_size)
            times[label].append(seconds)
            results[label] = trained
    base_label = SETUPS[0][0]
    base = results[base_label].state_dict()
    print(f"CPU: {_cpu_model()} (flags: {' '.join(_cpu_flags()) or 'none of note'}), {os.cpu_count()} logical "
          f"cores, 1-min load average {os.getloadavg()[0]:.1f} at the end")
    print(f"zoo:{args.model} {kwargs} on sklearn:digits train ({len(train)} samples), {args.epochs} epochs, global "
          f"batch {args.batch_size}, AdamW, seed 0; {args.rounds} interleaved rounds; torch {torch.__version__}")
    print()
    print("| setup | median s per run | speed-up vs 1×1 (95 % CI) | max abs weight diff vs 1×1 |")
    print("|---|---:|---:|---:|")
    for label, _, _ in SETUPS:
        med = float(np.median(times[label]))
        if label == base_label:
            speed = "1.00"
        else:
            r = speedup_ratio(np.array(times[base_label]) * 1e3, np.array(times[label]) * 1e3)
            speed = f"{r['ratio']:.2f} ({r['ci_low']:.2f}–{r['ci_high']:.2f})"
        other = results[label].state_dict()
        diff = max(float((base[k].double() - other[k].double()).abs().max()) for k in base)
        print(f"| {label} | {med:.2f} | {speed} | {diff:.1e} |")


if __name__ == "__main__":
    main()
