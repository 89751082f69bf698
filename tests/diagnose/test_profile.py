"""Per-operator profiles: trace parsing is exact, totals add up, unfused Q/DQ pairs are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpress.diagnose.profile import (
    kernel_class,
    node_key,
    parse_ort_trace,
    profile_onnx,
    profile_torch,
    qdq_analysis,
)
from modelpress.diagnose.recommend import slowdown
from modelpress.errors import InputError


def _trace() -> list[dict]:
    """Two calls of a two-kernel model; the first is the warm-up. Times in µs, as onnxruntime writes them."""
    def run(ts: int, dur: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def kernel(name: str, op: str, ts: int, dur: int) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    return [run(0, 1000), kernel("fused fc0/MatMulAddFusion", "FusedGemm", 10, 900), kernel("x_q", "QuantizeLinear",
                                                                                           920, 50),
            run(2000, 400), kernel("fused fc0/MatMulAddFusion", "FusedGemm", 2010, 300),
            kernel("x_q", "QuantizeLinear", 2320, 60),
            {"cat": "Node", "name": "x_q_fence_before", "ts": 2319, "dur": 1}]


def test_trace_parsing_skips_warmup_and_assigns_kernels_to_calls() -> None:
    summary = parse_ort_trace(_trace(), skip=1, batch_size=8, threads=2)
    assert summary["runs"] == 1
    assert summary["run_ms"] == pytest.approx(0.4)
    assert summary["kernel_ms"] == pytest.approx(0.36)
    assert summary["coverage"] == pytest.approx(0.9)
    nodes = {n["node"]: n for n in summary["by_node"]}
    assert nodes["fused fc0/MatMulAddFusion"]["ms"] == pytest.approx(0.3)
    assert nodes["fused fc0/MatMulAddFusion"]["key"] == "fc0"
    assert summary["by_class_ms"] == {"float_compute": pytest.approx(0.3), "qdq": pytest.approx(0.06)}
    assert summary["qdq_kernels_executed"] == ["x_q"]
    with pytest.raises(InputError, match="no model_run"):
        parse_ort_trace(_trace(), skip=2, batch_size=8, threads=2)


def test_tied_kernel_times_still_average_exactly_the_faster_half() -> None:
    """Kernel times are whole µs, so calls tie; ``k <= median`` once took 7 of 12 calls on an AVX2 CPU."""
    events = []
    for call, dur in enumerate([300, 300, 300, 300, 500]):  # call 0 is the warm-up; four tied calls follow
        ts = call * 1000
        events += [{"cat": "Session", "name": "model_run", "ts": ts, "dur": dur + 20},
                   {"cat": "Node", "name": "fc_kernel_time", "ts": ts + 5, "dur": dur, "args": {"op_name": "Gemm"}}]
    events[0:2] = [{**events[0], "dur": 5000}, {**events[1], "dur": 4000}]
    summary = parse_ort_trace(events, skip=1, batch_size=8, threads=1)
    assert summary["runs"] == 4 and summary["calls_averaged"] == 2
    assert summary["kernel_ms"] == pytest.approx(0.3)


def test_names_and_classes() -> None:
    assert node_key("fc2/MatMulAddFusion_quant_kernel_time") == "fc2"
    assert node_key("fused conv1") == "conv1"
    assert [kernel_class(op) for op in ("QGemm", "QLinearAdd", "DequantizeLinear", "Cast", "FusedConv", "Relu")] == \
        ["int8", "int8", "qdq", "cast", "float_compute", "other"]


def test_kernel_times_add_up_to_the_profiled_call(tmp_path: Path, build_mlp) -> None:
    """Tolerance logic: onnxruntime spends a fixed few tens of µs per call outside kernels (binding inputs,
    allocating outputs, fences). With ~1 ms or more of kernel work per call that is under 10 %, so the summed
    per-operator times must cover ≥ 90 % of the profiled ``model_run`` time of the same calls, and can never exceed
    it (sequential executor: kernels do not overlap). Per-node times are averaged over the same calls as the
    per-call totals, so they add up to ``kernel_ms`` exactly, however noisy the machine is."""
    path = build_mlp(tmp_path / "big.onnx", dims=[512, 1024, 1024, 1024, 10])
    batch = {"x": np.random.default_rng(0).normal(size=(64, 512)).astype(np.float32)}
    summary = profile_onnx(path, batch, threads=1, runs=12, warmup=3)
    assert summary["run_ms"] > 0.5
    assert 0.90 <= summary["coverage"] <= 1.0
    per_node = sum(n["ms"] for n in summary["by_node"])
    assert per_node == pytest.approx(summary["kernel_ms"], rel=1e-9)
    assert summary["calls_averaged"] == 6 and summary["runs"] == 12
    assert sum(r["ms"] for r in summary["by_op_type"]) == pytest.approx(per_node)
    assert {r["class"] for r in summary["by_op_type"]} <= {"float_compute", "other"}


def test_unfused_qdq_pairs_are_flagged(tmp_path: Path, build_qdq_chain) -> None:
    import onnx

    path = build_qdq_chain(tmp_path / "chain.onnx", qdq=True, depth=6)
    batch = {"x": np.random.default_rng(0).normal(size=(32, 256)).astype(np.float32)}
    summary = profile_onnx(path, batch, threads=1, runs=5, warmup=1)
    graph = qdq_analysis(onnx.load(str(path)), summary)
    assert graph["qdq_pairs"] == 6 and graph["boundary_pairs"] == 1
    assert graph["unfused_pairs"] == 5
    assert graph["unfused_consumer_ops"] == {"Abs": 5}
    assert graph["int8_kernels_executed"] == 0
    assert graph["qdq_ms"] > 0
    ref = profile_onnx(build_qdq_chain(tmp_path / "ref.onnx", qdq=False), batch, threads=1, runs=5, warmup=1)
    rows = [{"name": "reference", "label": "the reference (onnx)", "batch_size": 32, "threads": 1, "median_ms": 0.02,
             "candidate_median_ms": 0.06, "speedup": {"ratio": 1 / 3, "ci_low": 0.3, "ci_high": 0.36}},
            {"name": "candidate", "label": "the candidate", "median_ms": 0.06}]
    speed = slowdown(rows, summary, ref, graph, [])
    assert speed["slower"] and speed["slower_than"] == ["reference"]
    assert speed["causes"][0]["cause"] == "qdq"
    assert speed["reason"].startswith("The candidate is 3.00× slower than the reference (onnx)")
    assert "5 Q/DQ pair(s) were not fused into int8 kernels" in speed["reason"]


def test_no_slowdown_when_the_interval_includes_one() -> None:
    rows = [{"name": "reference", "label": "ref", "batch_size": 1, "threads": 1, "median_ms": 1.0,
             "candidate_median_ms": 1.02, "speedup": {"ratio": 0.98, "ci_low": 0.95, "ci_high": 1.01}}]
    assert slowdown(rows, {"by_class_ms": {}}, None, None, [])["reason"] is None
    rows[0]["speedup"] = {"ratio": 0.97, "ci_low": 0.965, "ci_high": 0.975}  # significant but under 5 %
    assert not slowdown(rows, {"by_class_ms": {}}, None, None, [])["slower"]


def test_torch_profile_counts_int8_kernels(digits) -> None:
    from modelpress.compress.quantize_torch import run_torch_dynamic
    from modelpress.sources import load_model

    artifact = load_model("zoo:mlp", data=digits[1], kwargs={"hidden": [64]})
    quantized = run_torch_dynamic(artifact, engine="x86", notes=[])
    batch = {"input": digits[1].inputs["input"][:16]}
    summary = profile_torch(quantized, batch, threads=1, runs=5, warmup=1)
    assert summary["backend"] == "torch"
    assert any(op.startswith("quantized::linear_dynamic") for op in summary["int8_kernels_executed"])
    assert {n["node"] for n in summary["by_node"]} == {"1", "3"}
    float_summary = profile_torch(artifact, batch, threads=1, runs=5, warmup=1)
    assert float_summary["int8_kernels_executed"] == {}
