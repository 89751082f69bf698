"""TensorRT engines (fp32 / fp16 / int8) vs onnxruntime on CPU, same model, data and thread setting, one run.

Trains zoo:cnn on sklearn digits, exports and verifies ONNX, builds one engine per precision — fp32, fp16, int8 from
explicit Q/DQ (the default) and, on TensorRT 10, int8 from the deprecated calibrator — each verified against
onnxruntime (a failed verification is reported as a row, not hidden), then evaluates every artifact with the one
evaluator: accuracy, fidelity to the torch model, and latency at batch 1 and 32. TensorRT rows are timed with CUDA
events, with (``tensorrt+copy``) and without (``tensorrt``) host↔device copies; onnxruntime rows with the host
clock. Speed-up = ratio of medians vs onnxruntime at the same batch size, with a bootstrap 95 % CI.

Writes ``benchmarks/results/tensorrt-<date>.md`` (or ``--out``) and prints it. Without TensorRT or a CUDA GPU it
prints what is missing, writes nothing and exits with code 3. It has not been run on a GPU yet.

    python benchmarks/tensorrt.py [--threads 1] [--epochs 10] [--precise]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# This script is named like the package it measures: drop its own folder from sys.path, or `import tensorrt`
# would import this file instead of TensorRT.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--precise", action="store_true", help="≥1000 calls and ≥10 s per latency row")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default: results/tensorrt-<date>.md)")
    args = parser.parse_args()

    from modelpress.runtime.tensorrt import INSTALL_HINT, tensorrt_missing

    missing = tensorrt_missing()
    if missing is not None:
        print(f"benchmarks/tensorrt.py needs TensorRT and a CUDA GPU, but {missing}; {INSTALL_HINT}",
              file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="mp-trt-bench-") as tmp:
        text = run(Path(tmp), threads=args.threads, epochs=args.epochs, precise=args.precise)
    out = args.out or RESULTS / f"tensorrt-{dt.date.today().isoformat()}.md"
    from modelpress.io import write_text

    write_text(out, text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def run(tmp: Path, *, threads: int, epochs: int, precise: bool) -> str:
    import onnxruntime
    import tensorrt as trt

    from modelpress.compress.export import ExportConfig
    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.compress.train import fit
    from modelpress.data import load_data
    from modelpress.errors import GateFailed
    from modelpress.evaluate.evaluator import EvalConfig, evaluate, predict
    from modelpress.runtime.latency import LatencyConfig, speedup_ratio
    from modelpress.runtime.tensorrt import CudaRuntime
    from modelpress.reports.schema import run_info
    from modelpress.sources import load_model

    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    model = load_model("zoo:cnn", data=test)
    fit(model.module, train, epochs=epochs, lr=1e-2, batch_size=64, seed=0)
    reference = predict(model, test, threads=threads)
    latency = LatencyConfig.precise() if precise else LatencyConfig()
    config = EvalConfig(batch_sizes=(1, 32), threads=threads, latency=latency)

    def stage(artifact, export_config, name):
        ctx = StageContext(work_dir=tmp / name, train=train, eval=test, calibration=train, threads=threads)
        return run_stage(artifact, export_config, ctx).save(tmp / name), ctx.notes

    onnx_artifact, _ = stage(model, ExportConfig(), "onnx")
    runs = [("onnx", "-", evaluate(onnx_artifact, test, config=config, reference_logits=reference), None)]
    variants = [("fp32", "qdq"), ("fp16", "qdq"), ("int8", "qdq")]
    if int(trt.__version__.split(".")[0]) < 11:
        variants.append(("int8", "calibrator"))
    for precision, int8 in variants:
        label = f"{precision} {int8}" if precision == "int8" else precision
        try:
            engine, notes = stage(onnx_artifact, ExportConfig(format="tensorrt", precision=precision, trt_int8=int8),
                                  label.replace(" ", "-"))
        except GateFailed as exc:
            runs.append(("tensorrt", label, None, f"verification failed: {exc.format_message()}"))
            continue
        result = evaluate(engine, test, config=config, reference_logits=reference)
        v = engine.metadata["verification"]
        runs.append(("tensorrt", label, result, f"verified: max abs diff {v['max_abs_diff']:.3g}, top-1 "
                                                    f"agreement {v['top1_agreement']:.4f} on {v['n_samples']}"))

    base = {bs: runs[0][2].latency_samples[f"onnxruntime::b{bs}"] for bs in (1, 32)}
    gpu = CudaRuntime().device_info()
    cpu = run_info("tensorrt", threads=threads)["cpu"]
    lines = [
        f"# TensorRT vs onnxruntime (CPU) — {dt.date.today().isoformat()}",
        "",
        f"GPU {gpu['name']} (compute capability {gpu['compute_capability']}), TensorRT {trt.__version__}, "
        f"onnxruntime {onnxruntime.__version__} on {cpu}, "
        f"threads={threads} for every row, {'precise' if precise else 'quick'} latency profile.",
        f"Model zoo:cnn trained {epochs} epochs on sklearn digits; {len(test)} test samples.",
        "",
        "| artifact | precision | backend | batch | median ms | p99 ms | samples/s | accuracy | top-1 vs torch | "
        "speed-up vs onnxruntime (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for kind, precision, result, note in runs:
        if note:
            notes.append(f"- {kind} {precision}: {note}")
        if result is None:
            continue
        for row in result.latency:
            bs = row["batch_size"]
            samples = result.latency_samples[f"{row['backend']}::b{bs}"]
            s = speedup_ratio(base[bs], samples)
            lines.append(
                f"| {kind} | {precision} | {row['backend']} | {bs} | {row['median_ms']:.4f} | {row['p99_ms']:.4f} | "
                f"{row['throughput_per_s']:.0f} | {result.metrics['accuracy']:.4f} | "
                f"{result.fidelity['top1_agreement']:.4f} | {s['ratio']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] |")
    lines += ["", "Notes:", *notes, "",
              "TensorRT rows are CUDA-event times (`tensorrt`: execute only; `tensorrt+copy`: with host↔device "
              "copies from pinned memory); onnxruntime rows are host times of the full call."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
