"""Each quantization mode makes the model smaller, keeps its outputs close to FP32 and says what it did."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from modelpress.compress import StageContext, config_for, run_stage
from modelpress.compress import quantize_onnx as qo
from modelpress.compress.quantize import QuantizeConfig
from modelpress.errors import InputError
from modelpress.evaluate.evaluator import predict
from modelpress.runtime.metrics import fidelity
from modelpress.sources import load_model


@pytest.fixture(scope="module")
def cnn(digits, tmp_path_factory):
    """zoo:cnn at its default widths (32, 64 channels): big enough that weights, not graph overhead, set the size."""
    from modelpress.compress.train import fit

    train, test = digits
    artifact = load_model("zoo:cnn", data=test)
    fit(artifact.module, train, epochs=2, lr=1e-2, batch_size=64, seed=0)
    return artifact.save(tmp_path_factory.mktemp("cnn32"))


def _quantize(artifact, digits, tmp_path, **params):
    train, test = digits
    ctx = StageContext(work_dir=tmp_path / "stage", train=train, eval=test, calibration=train, original=artifact)
    result = run_stage(artifact, config_for("quantize", params), ctx).save(tmp_path / "stage")
    return result, ctx


def _fidelity(reference, candidate, test):
    return fidelity(predict(reference, test), predict(candidate, test), n_classes=test.n_classes)


def test_dynamic_onnx_is_smaller_and_close_to_fp32(trained_mlp, digits, tmp_path):
    artifact, _ = trained_mlp
    result, ctx = _quantize(artifact, digits, tmp_path, mode="dynamic")
    q = result.metadata["quantization"]
    assert result.format == "onnx"
    assert q["quantized_op_counts"] == {"MatMul": 2}  # both Linear layers (exported as Gemm, rewritten)
    assert q["gemm_rewritten"] == 2
    assert q["size_ratio"] < 0.6
    fid = _fidelity(artifact, result, digits[1])
    assert fid["top1_agreement"] >= 0.98
    assert fid["max_abs_diff"] < 0.5
    assert any(n.startswith("quantized dynamic") for n in ctx.notes)


@pytest.mark.parametrize("calibrate", ["minmax", "entropy", "percentile"])
def test_static_each_calibrator_quantizes_conv_and_stays_close(cnn, digits, tmp_path, calibrate):
    artifact = cnn
    result, _ = _quantize(artifact, digits, tmp_path, mode="static", calibrate=calibrate, calibration_samples=64)
    q = result.metadata["quantization"]
    assert q["calibrator"] == calibrate and q["quant_format"] == "qdq"
    assert q["calibration"]["n_samples"] == 64
    assert q["quantized_op_counts"] == {"Conv": 2, "Gemm": 2} and q["float_op_counts"] == {}
    assert q["size_ratio"] < 0.42  # int8 weights; scales, int32 biases and graph overhead make the rest
    fid = _fidelity(artifact, result, digits[1])
    assert fid["top1_agreement"] >= 0.95


def test_static_qoperator_format_uses_qlinear_kernels(trained_cnn, digits, tmp_path):
    artifact, _ = trained_cnn
    result, _ = _quantize(artifact, digits, tmp_path, mode="static", quant_format="qoperator", calibration_samples=32,
                          min_agreement=0.95)  # the narrow 3-epoch CNN agrees 0.971 on a VNNI Xeon
    kernels = result.metadata["quantization"]["kernels"]
    assert kernels.get("QLinearConv") == 2 and "DequantizeLinear" in kernels


def test_min_reduction_keeps_tiny_layers_fp32(trained_cnn, digits, tmp_path):
    artifact, _ = trained_cnn
    result, ctx = _quantize(artifact, digits, tmp_path, mode="static", min_reduction=16, calibration_samples=32)
    q = result.metadata["quantization"]
    # the first conv (1 input channel, 3×3: 9 multiply-adds per output) is under the threshold; the second is not
    assert len(q["excluded_nodes"]["small_reduction"]) == 1 and q["float_op_counts"] == {"Conv": 1}
    assert any(n.startswith("kept FP32 (reduction < 16 multiply-adds per output") for n in ctx.notes)
    assert _fidelity(artifact, result, digits[1])["top1_agreement"] >= 0.95


def test_fp16_halves_weights_keeps_io_fp32(cnn, digits, tmp_path):
    artifact = cnn
    result, _ = _quantize(artifact, digits, tmp_path, mode="fp16")
    q = result.metadata["quantization"]
    assert 0.45 < q["size_ratio"] < 0.6  # half-size weights plus graph overhead
    assert q["quantized_op_counts"] == {"Conv": 2, "Gemm": 2}
    graph = onnx.load(str(result.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fid = _fidelity(artifact, result, digits[1])
    assert fid["max_abs_diff"] < 0.05 and fid["top1_agreement"] >= 0.99


def test_torch_dynamic_reapplied_at_load(trained_mlp, digits, tmp_path):
    artifact, _ = trained_mlp
    result, ctx = _quantize(artifact, digits, tmp_path, mode="dynamic", engine="torch")
    q = result.metadata["quantization"]
    assert q["quantized_op_counts"] == {"Linear": 2}
    assert q["size_ratio"] < 0.4  # int8 weights + float biases vs FP32 weights
    assert q["check"]["n_samples"] == 450 and q["check"]["passed"]  # the guard covers torch.ao's kernels too
    assert q["check"]["kernels"].startswith("torch x86 on ") and q["target"]["requested"] == "auto"
    reloaded = load_model(str(tmp_path / "stage"))
    modules = list(reloaded.module.modules())
    assert sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in modules) == 2
    assert not any(type(m) is torch.nn.Linear for m in modules)
    test = digits[1]
    np.testing.assert_array_equal(predict(result, test), predict(reloaded, test))
    assert _fidelity(artifact, reloaded, test)["top1_agreement"] >= 0.98
    assert any(type(m) is torch.nn.Linear for m in artifact.module.modules())  # the input stays float


def test_onnx_input_is_quantized_without_export(trained_mlp, digits, tmp_path):
    artifact, _ = trained_mlp
    ctx = StageContext(work_dir=tmp_path / "exp", eval=digits[1])
    exported = run_stage(artifact, config_for("export", {}), ctx).save(tmp_path / "exp")
    result, _ = _quantize(exported, digits, tmp_path, mode="static", calibration_samples=32)
    assert "exporter" not in result.metadata["quantization"]
    assert result.metadata["quantization"]["quantized_op_counts"] == {"Gemm": 2}


def test_exclude_nodes_are_kept_float_and_unknown_names_refused(trained_mlp, digits, tmp_path):
    artifact, _ = trained_mlp
    full, _ = _quantize(artifact, digits, tmp_path / "a", mode="static", calibration_samples=32)
    first = full.metadata["quantization"]["quantized_nodes"][0]
    kept, _ = _quantize(artifact, digits, tmp_path / "b", mode="static", calibration_samples=32,
                        exclude_nodes=[first])
    assert kept.metadata["quantization"]["excluded_nodes"]["user"] == [first]
    assert first not in kept.metadata["quantization"]["quantized_nodes"]
    with pytest.raises(InputError, match="no node named 'nope'"):
        _quantize(artifact, digits, tmp_path / "c", mode="static", exclude_nodes=["nope"])


def test_input_artifact_is_not_mutated(trained_mlp, digits, tmp_path):
    artifact, _ = trained_mlp
    before = {k: v.clone() for k, v in artifact.module.state_dict().items()}
    _quantize(artifact, digits, tmp_path, mode="dynamic", engine="torch")
    assert artifact.transforms == [] and "quantization" not in artifact.metadata
    for key, value in artifact.module.state_dict().items():
        assert torch.equal(value, before[key])


def test_config_validation_names_key_and_allowed_values():
    with pytest.raises(InputError, match=r"quantize.mode = 'int2' is not allowed"):
        QuantizeConfig(mode="int2")
    with pytest.raises(InputError, match="engine torch supports mode dynamic only"):
        QuantizeConfig(mode="static", engine="torch")
    with pytest.raises(InputError, match=r"percentile must be in \(50, 100\), got 10"):
        QuantizeConfig(percentile=10)
    with pytest.raises(InputError, match=r"accuracy_tolerance must be in \[0, 1\)"):
        QuantizeConfig(accuracy_tolerance=1.5)
    with pytest.raises(InputError, match="unknown key 'calibrator'"):
        config_for("quantize", {"calibrator": "minmax"})
    assert QuantizeConfig(op_types="Conv, MatMul").op_types == ("Conv", "MatMul")


def _tiny(nodes, inputs, outputs, inits=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, feed):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_residual_sum_rewrite_keeps_outputs():
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 8])
    inits = [numpy_helper.from_array(np.full(8, 1.5, np.float32), "g"),
             numpy_helper.from_array(np.full(8, 0.1, np.float32), "b")]
    model = _tiny([helper.make_node("Add", ["x", "s"], ["t"], name="residual"),
                   helper.make_node("LayerNormalization", ["t", "g", "b"], ["y"], axis=-1)], [x, s], [y], inits)
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(2, 3, 8)).astype(np.float32), "s": rng.normal(size=(2, 3, 8)).astype(np.float32)}
    want = _run(model, feed)
    assert qo.residual_sum(model) == 1 and model.graph.node[0].op_type == "Sum"
    np.testing.assert_allclose(_run(model, feed), want, rtol=0, atol=1e-6)


def test_gemm_to_matmul_keeps_outputs():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])
    inits = [numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")]
    model = _tiny([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], [x], [y], inits)
    feed = {"x": rng.normal(size=(4, 5)).astype(np.float32)}
    want = _run(model, feed)
    # the dynamo exporter records every tensor's shape, the weight's too: it must not survive the transpose
    model.graph.value_info.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 5]))
    assert qo.gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    assert "w" not in {v.name for v in model.graph.value_info}
    onnx.shape_inference.infer_shapes(model, strict_mode=True)  # was: "Inferred shape and existing shape differ"
    np.testing.assert_allclose(_run(model, feed), want, rtol=1e-6, atol=1e-6)
