"""What ``modelpress explain`` finds, and what its ranking buys the accuracy-aware quantizer.

Table 1 — explain on three candidates, each against its FP32 reference (same batch, same threads for every row):
an MLP with one activation channel 1000× larger than the rest (quantized dynamic and static), a digits-sized
zoo:cnn (static), and a QDQ graph whose Q/DQ pairs wrap an op without an int8 kernel (fake quantization). Shows the
candidate's speed-up over FP32 and over an FP16 copy (ratio of medians, bootstrap 95 % CI), int8 kernels that ran,
unfused Q/DQ pairs, the layer ranked first, the first recommendation and the slowdown sentence.

Table 2 — the accuracy-aware search on the outlier MLP (static, tolerance 5 %): per-node leave-one-out sensitivity
(one build per node) against the layer-error ranking (one pass over intermediate tensors).

    python benchmarks/explain.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelpress.compress.registry import StageContext, config_for, run_stage
from modelpress.data import load_data
from modelpress.diagnose import ExplainConfig, explain
from modelpress.errors import ModelpressError
from modelpress.sources import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "diagnose"))
from conftest import mlp_onnx, qdq_chain_onnx


def _quantize(artifact, data, train, mode: str, work: Path, **params):
    ctx = StageContext(work_dir=work, train=train, eval=data, calibration=train)
    # the outlier model is built to collapse: the quantize guard (on by default) would refuse to write it
    return run_stage(artifact, config_for("quantize", {"mode": mode, "guard": False, **params}), ctx), ctx.notes


def _row(label: str, result: dict) -> list[str]:
    rows = {r["name"]: r for r in result["latency"]}

    def speed(name: str) -> str:
        s = rows.get(name, {}).get("speedup")
        return f"{s['ratio']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s else "—"

    graph = result["graph"] or {}
    top = result["layers"][0] if result["layers"] else {}
    rec = result["recommendations"][0]["summary"][:60] if result["recommendations"] else "none"
    fp32 = "reference-onnx" if "reference-onnx" in rows else "reference"  # a torch reference is exported too
    return [label, speed(fp32), speed("reference-fp16"), str(graph.get("int8_kernels_executed", "—")),
            str(graph.get("unfused_pairs", "—")), f"{top.get('exclude_name', '—')} ({top.get('op_type', '')})",
            rec, (result["slowdown"]["reason"] or "not slower")[:140]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = ExplainConfig(threads=args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))

    path = mlp_onnx(work / "mlp.onnx", dims=[64, 256, 256, 256, 10], outlier=1000.0)
    x = np.random.default_rng(1).normal(size=(400, 64)).astype(np.float32)
    mlp_data = load_data(str(_save(work / "mlp.npz", x, load_model(str(path), data=None))), split="all")
    mlp = load_model(str(path), data=mlp_data)
    digits, digits_train = load_data("sklearn:digits", split="test"), load_data("sklearn:digits", split="train")
    cnn = load_model("zoo:cnn", data=digits)
    chain_ref = load_model(str(qdq_chain_onnx(work / "ref.onnx", qdq=False)), data=None)
    chain = load_model(str(qdq_chain_onnx(work / "chain.onnx", qdq=True)), data=None)
    chain_data = load_data(str(_save(work / "chain.npz", np.random.default_rng(2).normal(size=(128, 256)), chain_ref)),
                           split="all")

    table = []
    for label, (cand, ref, data) in {
        "outlier MLP, dynamic": (_quantize(mlp, mlp_data, mlp_data, "dynamic", work / "d")[0], mlp, mlp_data),
        "outlier MLP, static": (_quantize(mlp, mlp_data, mlp_data, "static", work / "s")[0], mlp, mlp_data),
        "zoo:cnn, static": (_quantize(cnn, digits, digits_train, "static", work / "c")[0], cnn, digits),
        "Q/DQ around Abs": (chain, chain_ref, chain_data),
    }.items():
        table.append(_row(label, explain(cand, ref, data, config=config)))
    print(f"threads={args.threads}, batch {config.batch_size}; speed-up = FP32 (or FP16) median / candidate median, "
          "FP32 = the ONNX reference (zoo:cnn: its ONNX export)\n")
    _print(["candidate", "vs FP32", "vs FP16", "int8 kernels", "unfused Q/DQ", "layer ranked first",
            "first recommendation", "slowdown reason"], table)

    rows = []
    for sensitivity in ("leave_one_out", "layer_error"):
        start = time.perf_counter()
        try:
            result, _ = _quantize(mlp, mlp_data, mlp_data, "static", work / sensitivity, accuracy_tolerance=0.05,
                                  sensitivity=sensitivity)
            search = result.metadata["quantization"]["accuracy_search"]
            kept = result.metadata["quantization"]["excluded_nodes"]["accuracy"]
            outcome = [str(search["builds"]), ", ".join(kept), f"{search['final_metric']:.3f}"]
        except ModelpressError as exc:
            outcome = ["—", "—", f"failed: {exc.format_message()[:90]}"]
        rows.append([sensitivity, *outcome, f"{time.perf_counter() - start:.1f}"])
    print("\naccuracy-aware search, outlier MLP static, tolerance 0.05 (relative accuracy drop)\n")
    _print(["sensitivity", "builds", "kept FP32", "accuracy (FP32 1.000)", "seconds"], rows)


def _save(path: Path, x: np.ndarray, reference) -> Path:
    from modelpress.runtime.sessions import make_runner

    x = x.astype(np.float32)
    y = make_runner(reference, "onnxruntime")({"x": x}).argmax(axis=1)
    np.savez(path, x=x, y=y, class_names=np.array([str(i) for i in range(10)]))
    return path


def _print(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")


if __name__ == "__main__":
    main()
