"""Weight-only INT4 (``quantize --mode int4``): MatMulNBits nodes, an error bound from block-wise 4-bit rounding,
the size it should have, bad settings, the guard, the accuracy-aware fallback and the CLI.

Expected values come from the test's own arithmetic (the bound and the byte count of packed 4-bit blocks), not from
the module.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from modelpress.compress import StageContext, run_stage
from modelpress.compress.quantize import QuantizeConfig
from modelpress.data import load_data
from modelpress.errors import GateFailed, InputError
from modelpress.sources import load_model

ort = pytest.importorskip("onnxruntime")
K, N, BLOCK = 256, 64, 32


def _matmul_model(tmp_path, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(K, N)).astype(np.float32)
    w[:, :8] *= 10  # columns of other magnitudes: per-block scales matter
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", N])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    x = rng.normal(size=(64, K)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(len(x), np.int64))
    data = load_data(str(tmp_path / "d.npz"))
    return load_model(str(tmp_path / "m.onnx"), data=data), data, x, w


def _run(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0], dtype=np.float64)


@pytest.mark.parametrize("level", [1, 4])
def test_matmul_becomes_matmulnbits_within_the_block_rounding_bound(tmp_path, level):
    artifact, data, x, w = _matmul_model(tmp_path)
    config = QuantizeConfig(mode="int4", int4_block_size=BLOCK, int4_symmetric=True, int4_accuracy_level=level,
                            guard=False)
    out = run_stage(artifact, config, StageContext(work_dir=tmp_path / f"w{level}", eval=data))
    model = onnx.load(str(out.path))
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 1 and not [n for n in model.graph.node if n.op_type == "MatMul"]
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert (attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (
        K, N, 4, BLOCK, level)
    q = out.metadata["quantization"]
    assert (q["mode"], q["bits"], q["block_size"], q["symmetric"], q["algorithm"]) == ("int4", 4, BLOCK, True, "rtn")
    assert q["quantized_op_counts"] == {"MatMul": 1} and q["kernels"] == {"MatMulNBits": 1}

    # Bound: a symmetric 4-bit block of max |w| = m has a step of at most m / 7 (codes -8..7 or -7..7, scale m/8
    # or m/7), so each weight moves by at most m / 7 (rounding, or clipping the block's extreme at code 7).
    blocks = np.abs(w).reshape(K // BLOCK, BLOCK, N).max(axis=1)  # (K/B, N): max |w| per block and column
    step_w = np.repeat(blocks / 7, BLOCK, axis=0)  # (K, N)
    bound = np.abs(x).astype(np.float64) @ step_w
    if level == 4:  # the kernel also rounds x to int8 per block of K: each x moves by at most max|x_block| / 254
        step_x = np.repeat(np.abs(x).reshape(len(x), K // BLOCK, BLOCK).max(axis=2) / 254, BLOCK, axis=1)
        bound = bound + step_x @ (np.abs(w) + step_w)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    err = np.abs(_run(out.path, x) - exact)
    assert (err <= bound + 1e-4).all()
    assert err.mean() > 0.01 * bound.mean()  # really quantized, not a float MatMul in disguise


@pytest.mark.parametrize("symmetric", [True, False])
def test_size_is_packed_4_bit_blocks_plus_scales(tmp_path, symmetric):
    artifact, data, _, _ = _matmul_model(tmp_path)
    config = QuantizeConfig(mode="int4", int4_block_size=BLOCK, int4_symmetric=symmetric, guard=False)
    out = run_stage(artifact, config, StageContext(work_dir=tmp_path / "w", eval=data))
    n_blocks = K // BLOCK
    expected = N * n_blocks * BLOCK // 2 + N * n_blocks * 4  # packed codes + one fp32 scale per block
    if not symmetric:
        expected += N * -(-n_blocks // 2)  # 4-bit zero points, two per byte per column
    size = (out.path.parent / "model.onnx").stat().st_size
    assert expected <= size <= expected + 1500  # + graph and names
    assert size < 0.2 * K * N * 4  # vs 4 bytes per FP32 weight
    assert out.metadata["quantization"]["size_ratio"] == pytest.approx(size / (tmp_path / "m.onnx").stat().st_size)


def test_bad_settings_are_exit_2(run_cli, tmp_path):
    with pytest.raises(InputError, match=r"int4_block_size must be one of 16, 32, 64, 128, 256 .*got 48"):
        QuantizeConfig(mode="int4", int4_block_size=48)
    with pytest.raises(InputError, match="hqq is asymmetric only"):
        QuantizeConfig(mode="int4", int4_algorithm="hqq", int4_symmetric=True)
    QuantizeConfig(mode="dynamic", int4_block_size=48)  # int4 settings are checked in int4 mode only
    _matmul_model(tmp_path)
    for args in (["--int4-block-size", "48"], ["--int4-block-size", "512"], ["--int4-algorithm", "awq"]):
        result = run_cli("quantize", str(tmp_path / "m.onnx"), "--mode", "int4", *args, "-o", "q")
        assert result.exit_code == 2, (args, result.stderr)
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "q").exists()


@pytest.fixture(scope="module")
def mlp_with_outlier(tmp_path_factory):
    """zoo:mlp trained on digits whose first layer has a huge weight on input pixel 0 (always 0 in digits): the
    FP32 outputs do not change, but that weight sets the 4-bit scale of its block, whose other weights round to 0."""
    from modelpress.compress.train import fit

    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    artifact = load_model("zoo:mlp", data=test, kwargs={"hidden": [64]})
    fit(artifact.module, train, epochs=8, lr=3e-3, batch_size=64, seed=0)
    assert not next(iter(test.inputs.values()))[:, 0].any() and not next(iter(train.inputs.values()))[:, 0].any()
    first = next(m for m in artifact.module.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight[:, 0] = 1e4
    folder = tmp_path_factory.mktemp("mlp-outlier")
    return artifact.save(folder), folder, train, test


def test_guard_refuses_a_collapsed_int4_model(mlp_with_outlier, tmp_path):
    artifact, _, train, test = mlp_with_outlier
    ctx = StageContext(work_dir=tmp_path / "w", eval=test, calibration=train)
    with pytest.raises(GateFailed, match=r"quantized model refused: top-1 agreement with FP32 0\.\d+ < 0\.98 .*"
                                         r"weight-only INT4"):
        run_stage(artifact, QuantizeConfig(mode="int4"), ctx)
    # the same model with the outlier's layer in float passes: the outlier, not int4 itself, made the collapse
    out = run_stage(artifact, QuantizeConfig(mode="int4", accuracy_tolerance=0.01), StageContext(
        work_dir=tmp_path / "w2", eval=test, calibration=train))
    q = out.metadata["quantization"]
    kept = q["excluded_nodes"]["accuracy"]
    assert len(kept) == 1 and q["check"]["passed"] and q["check"]["top1_agreement"] >= 0.98
    first_matmul = next(n for n in onnx.load(str(out.path)).graph.node if n.op_type == "MatMul")
    assert first_matmul.name == kept[0]  # the outlier's layer, kept float; the others are MatMulNBits
    assert q["quantized_op_counts"] == {"MatMul": 1} and q["kernels"] == {"MatMulNBits": 1}


def test_cli_int4_writes_the_artifact(mlp_with_outlier, run_cli, tmp_path):
    _, folder, _, _ = mlp_with_outlier
    result = run_cli("quantize", str(folder), "--mode", "int4", "--data", "sklearn:digits", "--exclude-nodes",
                     _first_gemm(folder), "--int4-block-size", "64", "-o", "q")
    assert result.exit_code == 0, result.stderr
    assert "int4 (onnxruntime): MatMul ×1; size" in result.stdout
    assert "note: quantized int4, rtn, block 64, asymmetric, accuracy_level 4" in result.stderr
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    q = manifest["metadata"]["quantization"]
    assert q["mode"] == "int4" and q["block_size"] == 64 and q["check"]["passed"]
    assert q["excluded_nodes"]["user"] == [_first_gemm(folder)]
    assert load_model("q").format == "onnx"


def _first_gemm(folder) -> str:
    model = onnx.load(str(folder / "model.onnx")) if (folder / "model.onnx").exists() else None
    if model is not None:
        return next(n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))
    from modelpress.compress.export import ExportConfig, export_onnx

    exported = export_onnx(load_model(str(folder)), folder.parent / f"{folder.name}-fp32.onnx", config=ExportConfig())
    return next(n.name for n in onnx.load(str(exported.path)).graph.node if n.op_type in ("Gemm", "MatMul"))


@pytest.mark.parametrize("algorithm", ["hqq", "gptq"])
def test_hqq_and_gptq_write_valid_models(tmp_path, algorithm):
    artifact, data, x, w = _matmul_model(tmp_path)
    config = QuantizeConfig(mode="int4", int4_algorithm=algorithm, int4_block_size=BLOCK, guard=False)
    out = run_stage(artifact, config, StageContext(work_dir=tmp_path / "w", eval=data, calibration=data))
    model = onnx.load(str(out.path))
    onnx.checker.check_model(model)  # GPTQ's output lacked the com.microsoft opset import
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits"]
    exact = x.astype(np.float64) @ w.astype(np.float64)
    rel = np.abs(_run(out.path, x) - exact).mean() / np.abs(exact).mean()
    assert 0 < rel < 0.15  # 4-bit blocks of 32: a few % of the output magnitude
    if algorithm == "gptq":
        assert out.metadata["quantization"]["calibration"]["n_samples"] == len(data)
