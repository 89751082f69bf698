"""SmoothQuant as a quantize setting (``smooth_quant``): validated, exact in FP32, recorded, and what it buys.

Expected values come from the test's own arithmetic: the FP32 graph before the rewrite, and a numpy model of
dynamic INT8 (per-tensor uint8 activations, per-channel symmetric 7-bit weights) on the paper's definition of the
smoothing factors, not from the module.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelpress.compress import StageContext, run_stage
from modelpress.compress.equalize import smooth_activations
from modelpress.compress.quantize import QuantizeConfig
from modelpress.data import load_data
from modelpress.errors import InputError
from modelpress.sources import load_model

from .test_equalize import _run  # one unoptimized onnxruntime run of input "x" for both files

ort = pytest.importorskip("onnxruntime")


def _block(d: int = 16, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """A transformer-like block: LayerNorm (one outlier gamma channel, as in BERTs) → MatMul + bias → Relu →
    MatMul + bias → residual Add → LayerNorm → mean over tokens: (N, T, d) → (N, d)."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(d, np.float32)
    gamma[3] = 30.0
    arrays = {"g1": gamma, "b1": rng.normal(size=d).astype(np.float32) * 0.1,
              "w1": rng.normal(size=(d, hidden)).astype(np.float32) / 4, "c1": np.zeros(hidden, np.float32),
              "w2": rng.normal(size=(hidden, d)).astype(np.float32) / 6, "c2": rng.normal(size=d).astype(np.float32),
              "g2": np.ones(d, np.float32), "b2": np.zeros(d, np.float32), "axes": np.array([1], np.int64)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g1", "b1"], ["ln1"], name="ln1", axis=-1),
             helper.make_node("MatMul", ["ln1", "w1"], ["m1"], name="up"),
             helper.make_node("Add", ["m1", "c1"], ["a1"], name="up_bias"),
             helper.make_node("Relu", ["a1"], ["r1"], name="act"),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="down"),
             helper.make_node("Add", ["m2", "c2"], ["a2"], name="down_bias"),
             helper.make_node("Add", ["a2", "x"], ["res"], name="residual"),
             helper.make_node("LayerNormalization", ["res", "g2", "b2"], ["ln2"], name="ln2", axis=-1),
             helper.make_node("ReduceMean", ["ln2", "axes"], ["y"], name="pool", keepdims=0)]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", d])],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _tokens(n: int, seed: int, d: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6, d)).astype(np.float32)


def _artifact(tmp_path, model: onnx.ModelProto, x: np.ndarray):
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(len(x), np.int64))
    data = load_data(str(tmp_path / "d.npz"))
    return load_model(str(tmp_path / "m.onnx"), data=data), data


def test_the_option_is_validated(run_cli, tmp_path):
    for bad in (1.5, -0.1):
        with pytest.raises(InputError, match=r"quantize.smooth_quant must be in \[0, 1\], got "):
            QuantizeConfig(smooth_quant=bad)
    onnx.save(_block(), str(tmp_path / "m.onnx"))
    result = run_cli("quantize", str(tmp_path / "m.onnx"), "--mode", "dynamic", "--smooth-quant", "1.5", "-o", "q")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "smooth_quant" in lines[0] and "1.5" in lines[0] and "Traceback" not in result.stderr


def test_smoothing_is_an_exact_rewrite_in_fp32():
    model = _block()
    x = _tokens(8, seed=1)
    before = _run(model, x)
    assert smooth_activations(model, [{"x": _tokens(16, seed=2)}], alpha=0.7) == 2  # both weight MatMuls
    onnx.checker.check_model(model)
    assert sum(n.op_type == "Mul" for n in model.graph.node) == 2
    after = _run(model, x)
    assert np.abs(before).max() > 0.5  # not two near-zero outputs
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()


def test_matmuls_reading_one_tensor_share_one_mul():
    """Q/K/V-like projections of one tensor get one smoothing factor (the largest weight row over all three) and
    one Mul, so the quantizer still sees one activation tensor."""
    rng = np.random.default_rng(0)
    weights = {f"w{k}": rng.normal(size=(8, 4)).astype(np.float32) * (k + 1) for k in range(3)}
    nodes = [helper.make_node("MatMul", ["x", f"w{k}"], [f"y{k}"], name=f"proj{k}") for k in range(3)]
    nodes.append(helper.make_node("Sum", ["y0", "y1", "y2"], ["y"], name="sum"))
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.normal(size=(32, 8)).astype(np.float32)
    x[:, 1] *= 50
    before = _run(model, x)
    assert smooth_activations(model, [{"x": x}], alpha=0.5) == 3
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert len(muls) == 1 and all(n.input[0] == muls[0].output[0] for n in model.graph.node if n.op_type == "MatMul")
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-4 * np.abs(before).max())
    # s_k = a_k^0.5 / w_k^0.5 with w_k the largest |W[k, :]| over the three weights (the test's own arithmetic)
    a = np.abs(x).max(axis=0).astype(np.float64)
    w = np.max([np.abs(v).max(axis=1) for v in weights.values()], axis=0)
    inv = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == muls[0].input[1]))
    np.testing.assert_allclose(inv, np.sqrt(w / a), rtol=1e-5)


def test_the_stage_smooths_by_default_on_a_transformer_graph_and_records_it(tmp_path):
    artifact, data = _artifact(tmp_path, _block(), _tokens(32, seed=3))
    ctx = StageContext(work_dir=tmp_path / "w", eval=data, calibration=data)
    out = run_stage(artifact, QuantizeConfig(mode="dynamic", min_agreement=0.0), ctx).save(tmp_path / "q")
    record = out.metadata["quantization"]["smooth_quant"]
    assert record == {"alpha": 0.7, "from_target": True, "matmuls": 2, "samples": 32, "calibration": data.source}
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["metadata"]["quantization"]["smooth_quant"] == record
    assert "smooth_quant" in manifest["metadata"]["quantization"]["target"]["defaults_from_target"]
    quantized = onnx.load(str(tmp_path / "q" / "model.onnx"))
    assert {n.name for n in quantized.graph.node if n.op_type == "Mul"} >= {"up_smooth", "down_smooth"}
    assert any("SmoothQuant alpha 0.7: 2 MatMul inputs smoothed" in n for n in ctx.notes)
    # switched off explicitly: recorded as off, no Mul inserted
    off = run_stage(artifact, QuantizeConfig(mode="dynamic", smooth_quant=0.0, min_agreement=0.0),
                    StageContext(work_dir=tmp_path / "w0", eval=data, calibration=data))
    assert off.metadata["quantization"]["smooth_quant"] == {"alpha": None, "from_target": False}
    assert not [n for n in onnx.load(str(off.path)).graph.node if n.name.endswith("_smooth")]


def test_the_default_skips_graphs_without_layer_norm_and_explicit_needs_data(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    artifact, data = _artifact(tmp_path, plain, rng.normal(size=(16, 8)).astype(np.float32))
    out = run_stage(artifact, QuantizeConfig(mode="dynamic", min_agreement=0.0),
                    StageContext(work_dir=tmp_path / "w", eval=data, calibration=data))
    assert out.metadata["quantization"]["smooth_quant"] == {
        "alpha": None, "from_target": True, "skipped": "no LayerNormalization in the graph (the default is for "
                                                       "transformers)"}
    with pytest.raises(InputError, match="quantize.smooth_quant needs calibration data"):
        run_stage(artifact, QuantizeConfig(mode="dynamic", smooth_quant=0.5), StageContext(work_dir=tmp_path / "n"))


def _dynamic_int8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` as dynamic INT8 computes it: x per-tensor uint8 (range including 0, zero point), w per output
    column symmetric 7-bit ([-64, 64], ``reduce_range``)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    zero = np.clip(np.round(-lo / scale), 0, 255)
    xq = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
    ws = np.abs(w).max(axis=0) / 64
    wq = np.clip(np.round(w / ws), -64, 64) * ws
    return xq.astype(np.float64) @ wq.astype(np.float64)


def test_smoothing_reduces_the_error_of_an_outlier_channel_matmul(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    x[:, [5, 40]] *= 60.0  # two outlier channels set the per-tensor activation scale
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "outlier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
                              [numpy_helper.from_array(w, "w")])
    artifact, data = _artifact(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), x)
    exact = x.astype(np.float64) @ w.astype(np.float64)

    def error(alpha: float) -> float:
        config = QuantizeConfig(mode="dynamic", target="x86-avx2", smooth_quant=alpha, guard=False,
                                calibration_samples=256)
        out = run_stage(artifact, config, StageContext(work_dir=tmp_path / f"a{alpha}", eval=data, calibration=data))
        got = _run_any(out.path, x)
        return float(np.sqrt(np.mean((got - exact) ** 2)))

    alpha = 0.8
    s = np.abs(x).max(axis=0) ** alpha / np.abs(w).max(axis=1) ** (1 - alpha)  # the paper's smoothing factors
    expected_plain = np.sqrt(np.mean((_dynamic_int8(x, w) - exact) ** 2))
    expected_smooth = np.sqrt(np.mean((_dynamic_int8(x / s, w * s[:, None]) - exact) ** 2))
    plain, smooth = error(0.0), error(alpha)
    assert plain == pytest.approx(expected_plain, rel=0.15)
    assert smooth == pytest.approx(expected_smooth, rel=0.15)
    assert expected_smooth < 0.5 * expected_plain  # what the numpy model predicts ...
    assert smooth < 0.5 * plain  # ... and the real kernels show


def _run_any(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], dtype=np.float64)
