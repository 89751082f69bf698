"""Pruning and distillation on sklearn digits: what each variant costs in accuracy and buys in size and time.

For zoo:cnn (32/64 channels) and a wider CNN (64/128 channels), trained on digits' train split:
dense · magnitude 50/80/90 % · structured 30/50/70 % · 2:4 — each without and with fine-tuning — and
structured 50 % → distillation from the dense model (same epoch budget as the fine-tune).

Columns: accuracy and macro F1 on the test split (the evaluator), parameters (non-zero / total), dense MACs per
sample, safetensors size and its zlib-compressed size, median latency at one batch size on torch and on
onnxruntime (the same thread count for every row; rows timed in interleaved rounds so that machine drift hits all
alike), and the wall-clock speed-up against the dense model on the same backend: a ratio of medians with a bootstrap
95 % CI (runtime.latency.speedup_ratio). The MAC ratio is what dense
kernels compute; the speed-up is measured; the two are different numbers and are reported apart.

    python benchmarks/prune_distill.py [--quick] [--threads 1] [--batch-size 64] [--models cnn,wide-cnn]

Target: structured 50 % + fine-tune gives ≥ 1.6× wall-clock on onnxruntime at batch 64 with ≤ 1 point accuracy loss.

``--distill-only`` measures distillation on its own instead (about a minute): a 32-unit MLP student trained on 135
labelled digits (every 10th train sample) from scratch and distilled from a 256-unit MLP teacher trained on the whole
train split, same epochs, learning rate and seed per pair; prints each seed's test accuracies and the gain in points
(the setting of tests/distill, over more seeds).

``--workload imagenet-cnn`` (pretrained EfficientNet-Lite1 at 224×224; ``--quick`` for a smoke run of a few
minutes): structured pruning to half the MACs with modelpress's prune stage (activation importance on unlabelled
crops, residual stream kept whole, channels rounded to 8), then distillation from the dense model on unlabelled
crops (alpha 1.0: the labels are never read); the prune stage also refits the 1×1 projections by least squares
to the dense model's outputs on the crops (``reconstruct``), beside Torch-Pruning's own MagnitudePruner used directly on the same
model at the same MAC target. Training crops and test crops are drawn from the two photos scikit-learn ships with
different seeds (modelpress/zoo/photos.py); the script checks that no test crop is also a training crop. Fidelity to
the dense model on the test crops: top-1 agreement, top-5 agreement (the dense model's top-1 class is among the
pruned model's top 5), mean logit cosine. Every model is exported to ONNX (verified against torch by the export
stage) and its MACs are counted on the ONNX graph; wall-clock on onnxruntime FP32 at 1 thread and all cores, batch
1 and 8, in interleaved rounds, speed-up = ratio of medians with a bootstrap 95 % CI.

    python benchmarks/prune_distill.py --workload imagenet-cnn --threads 2 [--quick] [--epochs 2] [--train-crops 128]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.compress import StageContext, run_stage
from modelpress.compress.distill import DistillConfig
from modelpress.compress.export import ExportConfig
from modelpress.compress.prune import PruneConfig
from modelpress.compress.train import fit
from modelpress.data import load_data
from modelpress.runtime.sessions import make_runner
from modelpress.evaluate.evaluator import EvalConfig, evaluate
from modelpress.runtime.latency import LatencyConfig, measure_latency, speedup_ratio
from modelpress.sources import load_model

MODELS = {"cnn": {"channels": [32, 64], "hidden": 64}, "wide-cnn": {"channels": [64, 128], "hidden": 128}}
#: (method, amount, round_to). Structured rows keep multiples of 8 channels (what MLAS/oneDNN kernels are fastest
#: on); one unrounded row shows what odd channel counts cost on onnxruntime.
VARIANTS = [("magnitude", 0.5, 1), ("magnitude", 0.8, 1), ("magnitude", 0.9, 1), ("structured", 0.3, 8),
            ("structured", 0.3, 1), ("structured", 0.5, 8), ("structured", 0.7, 8), ("2:4", None, 1)]


def build_row(label: str, artifact: Any, test: Any, work: Path, *, threads: int) -> dict[str, Any]:
    """Save, score on torch (the evaluator, no latency yet), export to ONNX (verified) and score that too."""
    folder = work / label.replace(" ", "_").replace("%", "").replace(":", "").replace("→", "to").replace("+", "")
    saved = artifact.save(folder)
    raw = (folder / "model.safetensors").read_bytes()
    result = evaluate(saved, test, config=EvalConfig(threads=threads, measure_latency=False))
    onnx = run_stage(saved, ExportConfig(), StageContext(work_dir=folder / "onnx", eval=test, threads=threads))
    ort = evaluate(onnx, test, config=EvalConfig(threads=threads, measure_latency=False))
    fp = result.footprint
    return {
        "label": label, "accuracy": result.metrics["accuracy"], "f1": result.metrics["f1_macro"],
        "ort_accuracy": ort.metrics["accuracy"], "params": fp["params"], "nonzero": fp["nonzero_params"],
        "macs": fp["macs"], "size": len(raw), "zsize": len(zlib.compress(raw, 6)),
        "artifacts": {"torch": saved, "onnxruntime": onnx}, "torch": [], "onnxruntime": [], "unstable": set(),
    }


def time_rows(rows: list[dict[str, Any]], test: Any, *, threads: int, batch_size: int, latency: LatencyConfig,
              rounds: int) -> None:
    """Median-latency samples per row and backend, measured in interleaved rounds (row 1, row 2, …, row 1, …) so
    that slow drift of the machine (thermal, other processes) hits every row alike instead of biasing one."""
    for backend in ("torch", "onnxruntime"):
        time_rows_backend(rows, test, backend=backend, threads=threads, batch_size=batch_size, latency=latency,
                          rounds=rounds)


def time_rows_backend(rows: list[dict[str, Any]], test: Any, *, backend: str, threads: int, batch_size: int,
                      latency: LatencyConfig, rounds: int) -> None:
    """:func:`time_rows` for one backend: ``row[backend]`` gets every call's milliseconds, all rounds together."""
    batch = {k: np.ascontiguousarray(v[:batch_size]) for k, v in test.inputs.items()}
    runners = [make_runner(r["artifacts"][backend], backend, threads=threads) for r in rows]
    for _ in range(rounds):
        for row, runner in zip(rows, runners):
            stats, samples = measure_latency(lambda runner=runner: runner(batch), config=latency,
                                             batch_size=batch_size, threads=threads, backend=backend)
            row[backend].append(samples)
            if stats["unstable"]:
                row["unstable"].add(backend)
    for row in rows:
        row[backend] = np.concatenate(row[backend])


def table(model: str, rows: list[dict[str, Any]], batch_size: int) -> list[str]:
    dense = rows[0]
    out = [f"### {model} (batch {batch_size})", "",
           ("| variant | accuracy | F1 macro | params (non-zero / total) | MACs/sample | MAC ratio | size KiB | "
            "zlib KiB | torch ms | ort ms | torch speed-up [95% CI] | ort speed-up [95% CI] |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for backend in ("torch", "onnxruntime"):
            s = speedup_ratio(dense[backend], r[backend])
            cells.append(f"{s['ratio']:.2f}× [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
        flag = " (unstable: " + ", ".join(sorted(r["unstable"])) + ")" if r["unstable"] else ""
        out.append(
            f"| {r['label']}{flag} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['nonzero']:,} / {r['params']:,} | "
            f"{r['macs']:,} | {r['macs'] / dense['macs']:.3f} | {r['size'] / 1024:.1f} | {r['zsize'] / 1024:.1f} | "
            f"{np.median(r['torch']):.3f} | {np.median(r['onnxruntime']):.3f} | {cells[0]} | {cells[1]} |")
    return out


def distill_gain(*, seeds: int, threads: int) -> list[str]:
    """Test accuracy of the same student from scratch and distilled, per seed, and the mean gain with its spread."""
    from modelpress.compress import config_for
    from modelpress.evaluate.evaluator import predict
    from modelpress.reports.schema import run_info

    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    few = train.subset(np.arange(0, len(train), 10))
    teacher = load_model("zoo:mlp", data=test, kwargs={"hidden": [256]})
    fit(teacher.module, train, epochs=15, lr=3e-3, batch_size=64, seed=0)

    def accuracy(artifact: Any) -> float:
        return float((predict(artifact, test, threads=threads).argmax(1) == test.y).mean())

    info = run_info("distill", threads=threads)
    lines = [f"CPU: {info['cpu']}; threads={threads}; teacher zoo:mlp [256] on {len(train)} samples: "
             f"{accuracy(teacher):.4f}; student zoo:mlp [32] on {len(few)} labelled samples, 60 epochs, lr 1e-2, "
             "T=3, alpha=0.9", "", "| seed | from scratch | distilled | gain (points) |", "|---|---|---|---|"]
    gains = []
    with tempfile.TemporaryDirectory(prefix="modelpress-distill-") as tmp:
        for seed in range(seeds):
            scratch = load_model("zoo:mlp", data=test, kwargs={"hidden": [32]}, seed=seed)
            fit(scratch.module, few, epochs=60, lr=1e-2, batch_size=32, seed=seed)
            config = config_for("distill", {"teacher": "input", "student": "zoo:mlp",
                                            "student_kwargs": {"hidden": [32]}, "temperature": 3.0, "alpha": 0.9,
                                            "epochs": 60, "lr": 1e-2, "batch_size": 32, "seed": seed})
            student = run_stage(teacher, config, StageContext(work_dir=Path(tmp) / str(seed), train=few))
            a, b = accuracy(scratch), accuracy(student)
            gains.append((b - a) * 100)
            lines.append(f"| {seed} | {a:.4f} | {b:.4f} | {gains[-1]:+.2f} |")
    g = np.array(gains)
    lines += ["", f"gain over {seeds} seeds: mean {g.mean():+.2f} points, min {g.min():+.2f}, max {g.max():+.2f}; "
                  f"distilled better on {int((g > 0).sum())}/{seeds} seeds"]
    return lines


# ---- --workload imagenet-cnn ---------------------------------------------------------------------------------------
LITE = "zoo:efficientnet_lite1?pretrained=1"
#: The modelpress prune stage's settings for the 224×224 Lite1 (also examples/imagenet_prune.yaml).
LITE_PRUNE = {"method": "structured", "target_macs": 0.5, "importance": "activation", "round_to": 8,
              "reconstruct": True, "ignore": ("_conv_stem", "_blocks.*._project_conv", "_conv_head")}


def photo_crops(n: int, seed: int, name: str) -> Any:
    """``n`` seeded 224×224 crops of the sklearn photos as a Dataset (labels: the photo's class, never read by
    distillation with alpha 1.0)."""
    from modelpress.data import Dataset
    from modelpress.zoo.photos import PHOTO_CLASSES, sample_photos

    x, which = sample_photos(n, seed=seed)
    names = tuple(f"imagenet_{i}" for i in range(1000))
    return Dataset({"input": x}, np.asarray(PHOTO_CLASSES, dtype=np.int64)[which], names, name)


def fidelity(teacher_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, top-5 agreement (teacher's top-1 within the student's top 5), mean logit cosine."""
    t1 = teacher_logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    cos = (logits * teacher_logits).sum(1) / (np.linalg.norm(logits, axis=1) * np.linalg.norm(teacher_logits, axis=1))
    return {"top1": float((logits.argmax(1) == t1).mean()), "top5": float((top5 == t1[:, None]).any(1).mean()),
            "cosine": float(cos.mean())}


def tp_magnitude_prune(dense: Any, example: Any, target: float) -> tuple[Any, float, float]:
    """Torch-Pruning used directly as its README shows: MagnitudePruner, L2 group importance, the classifier ignored,
    the channel ratio bisected (on tp's own MAC count) to the largest MAC ratio ≤ ``target``. Returns the pruned
    module, the ratio and the seconds the search and the pruning took."""
    import copy
    import warnings

    import torch_pruning as tp

    started = time.perf_counter()
    base, _ = tp.utils.count_ops_and_params(dense.module, example)

    def pruned(ratio: float) -> tuple[Any, float]:
        model = copy.deepcopy(dense.module).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp.pruner.MagnitudePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[model._fc]).step()
        return model, tp.utils.count_ops_and_params(model, example)[0] / base

    low, high = 0.0, 0.9
    best = None
    for _ in range(9):
        mid = (low + high) / 2
        model, ratio = pruned(mid)
        if ratio <= target:
            best, high = (model, mid), mid
        else:
            low = mid
    if best is None:
        raise SystemExit(f"Torch-Pruning's MagnitudePruner did not reach a MAC ratio of {target}")
    return best[0], best[1], time.perf_counter() - started


def imagenet_cnn(args: argparse.Namespace) -> None:
    import os

    import torch

    from modelpress.evaluate.evaluator import predict
    from modelpress.reports.schema import run_info
    from modelpress.runtime.footprint import footprint

    quick = args.quick
    n_train = args.train_crops or (16 if quick else 128)  # the README's run: the defaults, --threads 2
    n_test = args.test_crops or (16 if quick else 64)
    epochs = args.epochs or (1 if quick else 2)
    rounds = args.rounds or (1 if quick else 6)
    threads_list = sorted({1, os.cpu_count() or 1})
    latency = (LatencyConfig(warmup_min_calls=3, warmup_min_s=0.05, min_calls=5, min_s=0.1) if quick
               else LatencyConfig(warmup_min_calls=5, warmup_min_s=0.2, min_calls=10, min_s=0.3))
    distill_params = {"teacher": "original", "alpha": 1.0, "temperature": 2.0, "epochs": epochs, "lr": 3e-4,
                      "batch_size": 32, "seed": 0}
    train, test = photo_crops(n_train, 101, "photo crops seed 101"), photo_crops(n_test, 202, "photo crops seed 202")
    seen = {hashlib.sha256(x.tobytes()).hexdigest() for x in train.inputs["input"]}
    shared = sum(hashlib.sha256(x.tobytes()).hexdigest() in seen for x in test.inputs["input"])
    if shared:
        raise SystemExit(f"{shared} test crops are also training crops; pick other seeds")
    info = run_info("prune", threads=args.threads)
    out = [f"CPU: {info['cpu']}; torch threads for pruning/distillation: {args.threads}; {n_train} unlabelled "
           f"training crops (seed 101), {n_test} test crops (seed 202, none among the training crops); "
           f"distillation {distill_params}; quick={quick}", ""]
    started = time.perf_counter()
    dense = load_model(LITE, data=test)
    teacher_logits = predict(dense, test, threads=args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelpress-lite-") as tmp:
        work = Path(tmp)
        ctx = StageContext(work_dir=work / "stages", train=train, eval=test, original=dense, threads=args.threads)

        def add(label: str, artifact: Any, seconds: float | None, note: str = "") -> dict[str, Any]:
            folder = work / f"m{len(rows)}"
            saved = artifact.save(folder)
            onnx = run_stage(saved, ExportConfig(), StageContext(work_dir=folder / "onnx", eval=test,
                                                                 threads=args.threads))
            fp_torch, fp_onnx = footprint(saved), footprint(onnx)
            row = {"label": label, "params": fp_torch["params"], "macs": fp_torch["macs"],
                   "onnx_macs": fp_onnx["macs"], "seconds": seconds, "note": note, "onnx": onnx,
                   **fidelity(teacher_logits, predict(saved, test, threads=args.threads)),
                   "ort": fidelity(teacher_logits, predict(onnx, test, threads=args.threads))}
            rows.append(row)
            print(f"  {label}: MACs {row['macs']:,} (ONNX {row['onnx_macs']:,}), top-1 {row['top1']:.3f}, "
                  f"top-5 {row['top5']:.3f}, cosine {row['cosine']:.4f} [{time.perf_counter() - started:.0f} s]",
                  flush=True)
            return row

        add("dense (pretrained)", dense, None)
        t0 = time.perf_counter()
        pruned = run_stage(dense, config_for_prune(), ctx)
        add("modelpress prune (activation, reconstruct, residual stream whole)", pruned, time.perf_counter() - t0)
        t0 = time.perf_counter()
        distilled = run_stage(pruned, DistillConfig(**distill_params), ctx)
        log = distilled.metadata["distillation"]["training"]
        add(f"  → distilled, {epochs} epochs on unlabelled crops", distilled, time.perf_counter() - t0,
            note="loss per epoch " + ", ".join(f"{v:.3f}" for v in log["loss_per_epoch"]))
        example = torch.from_numpy(test.inputs["input"][:1])
        tp_module, tp_ratio, tp_seconds = tp_magnitude_prune(dense, example, 0.5)
        add(f"Torch-Pruning MagnitudePruner (L2, ratio {tp_ratio:.3f})", dense.evolve(module=tp_module, path=None,
            builder={**dense.builder, "resized": True}), tp_seconds)
        out += lite_tables(rows, test, threads_list, latency, rounds)
    out.append(f"\n(total {time.perf_counter() - started:.0f} s)")
    print("\n".join(out))


def config_for_prune() -> PruneConfig:
    return PruneConfig(**{k: v for k, v in LITE_PRUNE.items()})


def lite_tables(rows: list[dict[str, Any]], test: Any, threads_list: list[int], latency: LatencyConfig,
                rounds: int) -> list[str]:
    dense = rows[0]
    out = ["| model | params | MACs (torch) | MACs (ONNX graph) | MAC ratio | top-1 agr. | top-5 agr. | "
           "logit cosine | ORT top-5 agr. | prune/distill s | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = "—" if r["seconds"] is None else f"{r['seconds']:.0f}"
        out.append(f"| {r['label']} | {r['params']:,} | {r['macs']:,} | {r['onnx_macs']:,} | "
                   f"{r['onnx_macs'] / dense['onnx_macs']:.3f} | {r['top1']:.3f} | {r['top5']:.3f} | "
                   f"{r['cosine']:.4f} | {r['ort']['top5']:.3f} | {seconds} | {r['note']} |")
    timed = [r for r in rows if "distilled" not in r["label"]]  # the distilled model has the pruned one's shapes
    out += ["", "onnxruntime FP32 wall-clock (median ms; speed-up over dense = ratio of medians, bootstrap 95 % CI; "
            f"{rounds} interleaved rounds):", "",
            "| threads | batch | " + " | ".join(r["label"].strip() for r in timed) + " | "
            + " | ".join(f"speed-up {r['label'].split(' (')[0]}" for r in timed[1:]) + " |",
            "|---|---|" + "---|" * (2 * len(timed) - 1)]
    for threads in threads_list:
        for batch_size in (1, 8):
            for r in timed:
                r["onnxruntime"], r["unstable"] = [], set()
                r["artifacts"] = {"onnxruntime": r["onnx"]}
            time_rows_backend(timed, test, backend="onnxruntime", threads=threads, batch_size=batch_size,
                              latency=latency, rounds=rounds)
            cells = [f"{np.median(r['onnxruntime']):.2f}" for r in timed]
            for r in timed[1:]:
                s = speedup_ratio(dense["onnxruntime"], r["onnxruntime"])
                cells.append(f"{s['ratio']:.2f}× [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
            out.append(f"| {threads} | {batch_size} | " + " | ".join(cells) + " |")
            print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer epochs and shorter latency runs (minutes).")
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads for torch and onnxruntime alike.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", default=",".join(MODELS), help=f"Comma-separated subset of {list(MODELS)}.")
    parser.add_argument("--distill-only", action="store_true", help="Only distillation vs training from scratch.")
    parser.add_argument("--seeds", type=int, default=5, help="Seeds of --distill-only.")
    parser.add_argument("--workload", choices=("digits", "imagenet-cnn"), default="digits",
                        help="digits: the zoo CNNs on sklearn digits; imagenet-cnn: pretrained EfficientNet-Lite1.")
    parser.add_argument("--epochs", type=int, default=None, help="imagenet-cnn: distillation epochs.")
    parser.add_argument("--train-crops", type=int, default=None, help="imagenet-cnn: unlabelled training crops.")
    parser.add_argument("--test-crops", type=int, default=None, help="imagenet-cnn: test crops.")
    parser.add_argument("--rounds", type=int, default=None, help="imagenet-cnn: interleaved timing rounds.")
    args = parser.parse_args()
    import logging

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    torch.set_num_threads(args.threads)
    if args.workload == "imagenet-cnn":
        imagenet_cnn(args)
        return
    if args.distill_only:
        started = time.perf_counter()
        print("\n".join(distill_gain(seeds=args.seeds, threads=args.threads)))
        print(f"\n(total {time.perf_counter() - started:.0f} s)")
        return
    epochs, ft_epochs = (10, 6) if args.quick else (20, 8)
    latency = (LatencyConfig(warmup_min_calls=10, warmup_min_s=0.1, min_calls=50, min_s=0.25) if args.quick
               else LatencyConfig(warmup_min_calls=20, warmup_min_s=0.2, min_calls=100, min_s=0.5))
    rounds = 2 if args.quick else 4
    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    from modelpress.reports.schema import run_info

    cpu = run_info("prune", threads=args.threads)["cpu"]
    lines = [(f"CPU: {cpu}; threads={args.threads}, batch={args.batch_size}, dense epochs={epochs}, "
              f"fine-tune/distill epochs={ft_epochs}, quick={args.quick}"), ""]
    targets = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-") as tmp:
        for name in args.models.split(","):
            work = Path(tmp) / name
            dense = load_model("zoo:cnn", data=test, kwargs=MODELS[name])
            fit(dense.module, train, epochs=epochs, lr=1e-2, batch_size=64, seed=0)
            rows = [build_row("dense", dense, test, work, threads=args.threads)]
            for method, amount, round_to in VARIANTS:
                for ft in (0, ft_epochs):
                    label = (f"{method}{'' if amount is None else f' {amount:.0%}'}"
                             f"{' unrounded' if method == 'structured' and round_to == 1 else ''}"
                             f"{' + fine-tune' if ft else ''}")
                    config = PruneConfig(method=method, amount=amount, round_to=round_to, finetune_epochs=ft,
                                         lr=3e-3)
                    ctx = StageContext(work_dir=work / "stages", train=train, eval=test, original=dense)
                    rows.append(build_row(label, run_stage(dense, config, ctx), test, work, threads=args.threads))
            ctx = StageContext(work_dir=work / "stages", train=train, eval=test, original=dense)
            pruned = run_stage(dense, PruneConfig(method="structured", amount=0.5, round_to=8), ctx)
            distilled = run_stage(pruned, DistillConfig(teacher="original", epochs=ft_epochs, lr=3e-3), ctx)
            rows.append(build_row("structured 50% → distill", distilled, test, work, threads=args.threads))
            time_rows(rows, test, threads=args.threads, batch_size=args.batch_size, latency=latency, rounds=rounds)
            lines += table(f"zoo:cnn {MODELS[name]} ({name})", rows, args.batch_size) + [""]
            tuned = next(r for r in rows if r["label"] == "structured 50% + fine-tune")
            s = speedup_ratio(rows[0]["onnxruntime"], tuned["onnxruntime"])
            loss = (rows[0]["accuracy"] - tuned["accuracy"]) * 100
            ok = s["ratio"] >= 1.6 and loss <= 1.0
            targets.append(f"{name}: structured 50% + fine-tune → onnxruntime speed-up {s['ratio']:.2f}× "
                           f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}], accuracy loss {loss:+.2f} points → "
                           f"{'meets' if ok else 'MISSES'} the target (≥ 1.6×, ≤ 1 point)")
    print("\n".join(lines + targets))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
