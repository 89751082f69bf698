"""Cross-layer equalization and bias correction (modelpress.compress.equalize) on tiny ONNX conv nets.

Expected values come from the test's own arithmetic (torch convolutions, its own int8 rounding), not from the module.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from modelpress.compress.equalize import (correct_biases, cross_layer_equalize, equalize, find_pairs,
                                           smooth_activations)
from modelpress.errors import InputError

ort = pytest.importorskip("onnxruntime")


def _net(*, act1: str = "Relu", act2: str = "Clip", seed: int = 0) -> onnx.ModelProto:
    """Conv 3→8 (3×3, pad 1) → act1 → depthwise 8 (3×3, stride 2, pads 0,0,1,1) → act2 → Conv 8→4 (1×1).

    Channel ranges of the first two layers spread over four orders of magnitude, as folded BatchNorm makes them.
    """
    rng = np.random.default_rng(seed)
    spread = np.logspace(-2, 2, 8)
    w1 = (rng.normal(size=(8, 3, 3, 3)) * spread[:, None, None, None]).astype(np.float32)
    b1 = (rng.normal(size=8) * spread).astype(np.float32)
    w2 = (rng.normal(size=(8, 1, 3, 3)) / spread[:, None, None, None]).astype(np.float32)
    b2 = rng.normal(size=8).astype(np.float32)
    w3 = rng.normal(size=(4, 8, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3")]]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6.0, np.float32), "hi")]

    def act(kind: str, x: str, y: str) -> onnx.NodeProto:
        return helper.make_node(kind, [x, "lo", "hi"] if kind == "Clip" else [x], [y], name=f"{kind}_{y}")

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             act(act1, "c1", "a1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="dw", group=8, strides=[2, 2],
                              pads=[0, 0, 1, 1]),
             act(act2, "c2", "a2"), helper.make_node("Conv", ["a2", "w3"], ["y"], name="project")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}


def _x(n: int = 16, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, 3, 8, 8)) * 2).astype(np.float32)


@pytest.mark.parametrize("act1,act2,clip", [("Relu", "Relu", "relu"), ("Relu", "Clip", "channel"),
                                            ("Clip", "Clip", "channel")])
def test_equalized_model_computes_the_same_function(act1: str, act2: str, clip: str) -> None:
    model = _net(act1=act1, act2=act2)
    x = _x()
    before = _run(model, x)
    result = cross_layer_equalize(model, clip=clip)
    onnx.checker.check_model(model)
    after = _run(model, x)
    assert result.pairs == 2  # conv1 → dw and dw → project
    assert np.abs(after - before).max() <= 1e-5 * max(1.0, np.abs(before).max())
    assert np.abs(before).max() > 1.0  # the comparison is not between two near-zero outputs


def test_per_channel_ranges_equalized() -> None:
    model = _net(act1="Relu", act2="Relu")
    w = _weights(model)
    r1 = np.abs(w["w1"]).reshape(8, -1).max(1)
    r2 = np.abs(w["w2"]).reshape(8, -1).max(1)
    # a single pair conv1 → dw equalizes in one step to the geometric mean (Nagel et al. 2019, eq. 11)
    model1 = _net(act1="Relu", act2="Relu")
    cross_layer_equalize(model1, max_iterations=1)
    e = _weights(model1)
    new_r1 = np.abs(e["w1"]).reshape(8, -1).max(1)
    np.testing.assert_allclose(new_r1, np.sqrt(r1 * r2), rtol=1e-5)
    assert r1.max() / r1.min() > 1e3  # the fixture really was unbalanced
    # iterated to convergence every pair's channels match: out-range of the first == in-range of the second
    cross_layer_equalize(model)
    e = _weights(model)
    np.testing.assert_allclose(np.abs(e["w1"]).reshape(8, -1).max(1), np.abs(e["w2"]).reshape(8, -1).max(1),
                               rtol=1e-3)
    np.testing.assert_allclose(np.abs(e["w2"]).reshape(8, -1).max(1), np.abs(e["w3"]).max(axis=(0, 2, 3)),
                               rtol=1e-3)


def test_clip_modes() -> None:
    model = _net(act1="Clip", act2="Clip")
    assert find_pairs(model, clip="skip") == []  # ReLU6 lacks positive homogeneity: exact mode leaves it alone
    relu = _net(act1="Clip", act2="Clip")
    result = cross_layer_equalize(relu, clip="relu")
    assert result.clips_rewritten == 2 and [n.op_type for n in relu.graph.node].count("Clip") == 0
    with pytest.raises(InputError, match="clip must be one of skip, channel, relu, got 'relu6'"):
        find_pairs(model, clip="relu6")


def _own_int8(w: np.ndarray, bits7: bool) -> np.ndarray:
    """Symmetric per-output-channel int8 rounding as onnxruntime writes weights: [-127, 127], or [-64, 64]."""
    q = 64 if bits7 else 127
    t = torch.from_numpy(w)
    scale = (t.abs().amax(dim=(1, 2, 3), keepdim=True) / q).float().double()
    return (torch.clamp(torch.round(t / scale), -q, q) * scale).numpy()


@pytest.mark.parametrize("bits7", [False, True])
def test_bias_correction_removes_the_mean_output_shift(bits7: bool) -> None:
    model = _net(act1="Relu", act2="Relu", seed=3)
    w = _weights(model)
    x = torch.from_numpy(_x(64, seed=5).astype(np.float64))
    padded = F.pad(x, (1, 1, 1, 1))

    def mean_out(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return F.conv2d(padded, torch.from_numpy(weight), torch.from_numpy(bias)).mean(dim=(0, 2, 3)).numpy()

    fp32 = mean_out(w["w1"], w["b1"])
    wq = _own_int8(w["w1"], bits7)
    shift_before = np.abs(mean_out(wq, w["b1"]) - fp32)
    feeds = [{"x": x[i:i + 16].numpy().astype(np.float32)} for i in range(0, 64, 16)]
    changed = correct_biases(model, feeds, per_channel=True, reduce_range=bits7)
    shift_after = np.abs(mean_out(wq, _weights(model)["b1"]) - fp32)
    assert changed == 3
    assert shift_before.max() > 1e-3  # rounding really shifted the mean
    assert shift_after.max() < 1e-4 * max(1.0, np.abs(fp32).max())


def test_bias_correction_adds_a_bias_where_a_conv_had_none() -> None:
    model = _net(act1="Relu", act2="Relu")
    assert len(next(n for n in model.graph.node if n.name == "project").input) == 2
    correct_biases(model, [{"x": _x(8)}], per_channel=False, reduce_range=False)
    project = next(n for n in model.graph.node if n.name == "project")
    assert len(project.input) == 3 and _weights(model)[project.input[2]].shape == (4,)
    onnx.checker.check_model(model)


def test_bad_input() -> None:
    with pytest.raises(InputError, match="bias correction needs calibration batches"):
        equalize(_net(), bias_correction=True, batches=None)
    with pytest.raises(InputError, match="got 0 samples"):
        correct_biases(_net(), [], per_channel=True, reduce_range=False)


def _matmul_net(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_smoothing_keeps_the_product_and_flattens_activation_ranges() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    x = rng.normal(size=(6, 5, 8)).astype(np.float32)
    x[..., 2] *= 40.0  # one outlier channel, as after a transformer's GELU
    model = _matmul_net(w)
    before = _run_named(model, {"x": x})
    assert smooth_activations(model, [{"x": x}], alpha=1.0) == 1
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run_named(model, {"x": x}), before, rtol=1e-5, atol=1e-4)
    mul = next(n for n in model.graph.node if n.op_type == "Mul")
    inv = _weights(model)[mul.input[1]]
    # alpha = 1 divides each channel by its own range: every channel of the MatMul's input now spans exactly 1
    np.testing.assert_allclose(np.abs(x * inv).reshape(-1, 8).max(axis=0), np.ones(8), rtol=1e-5)
    with pytest.raises(InputError, match=r"alpha must be in \[0, 1\], got 1.5"):
        smooth_activations(_matmul_net(w), [{"x": x}], alpha=1.5)


def _run_named(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def test_bias_correction_leaves_excluded_convs_alone() -> None:
    model = _net(act1="Relu", act2="Relu")
    before = _weights(model)
    assert correct_biases(model, [{"x": _x(8)}], per_channel=True, reduce_range=False, exclude=("conv1",)) == 2
    np.testing.assert_array_equal(_weights(model)["b1"], before["b1"])
    assert not np.array_equal(_weights(model)["b2"], before["b2"])


def test_quantize_stage_applies_bias_correction(tmp_path) -> None:
    """The static quantize stage corrects Conv biases by default (the target table), records it, and skips U8U8."""
    from modelpress.compress import StageContext, run_stage
    from modelpress.compress.quantize import QuantizeConfig
    from modelpress.data import load_data
    from modelpress.sources import load_model

    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    fp32 = load_model("zoo:cnn", data=test)

    def quantize(name: str, **kw: object) -> tuple[dict, list[str], dict[str, np.ndarray]]:
        ctx = StageContext(work_dir=tmp_path / name, train=train, eval=test, calibration=train)
        out = run_stage(fp32, QuantizeConfig(mode="static", target="x86-vnni", guard=False, **kw), ctx)
        q = out.metadata["quantization"]
        biases = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out.path)).graph.initializer
                  if i.data_type == TensorProto.INT32}
        return q, ctx.notes, biases

    q, notes, corrected = quantize("bc")
    assert q["bias_correction"]["convs"] >= 2 and "bias_correction" in q["target"]["defaults_from_target"]
    assert any(n.startswith("bias correction: ") for n in notes)
    q_off, _, plain = quantize("off", bias_correction=False)
    assert "bias_correction" not in q_off
    assert any(not np.array_equal(corrected[k], plain[k]) for k in plain if k in corrected)
    _, notes_u8, _ = quantize("u8u8", weight_type="uint8")
    assert "bias correction skipped: it models symmetric int8 weights, not --weight-type uint8" in notes_u8
