"""Emulated INT8 kernels: hand-computed saturation cases, and the emulation of this CPU against its real kernels.

The pure tests run everywhere and pin both targets' arithmetic with numbers computed by hand. The validation test
compares the emulation of the CPU the test runs on (detected from CPUID, ignoring ``MODELPRESS_HOST_TARGET``: the
real kernels follow the real CPU) with onnxruntime's real outputs: on an AVX-512 VNNI CPU the exact-int32
emulation, on an AVX2 CPU (or under ``qemu-x86_64 -cpu max``) the saturating one. Models are built in ONNX and
quantized with onnxruntime directly (no torch), so the test also runs under qemu in a few minutes.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from modelpress.errors import InputError
from modelpress.runtime.emulate import (
    Emulator,
    emulate_outputs,
    integer_conv,
    integer_matmul,
    ort_integer_outputs,
    saturating_dot,
)
from modelpress.runtime.target import TARGETS, host_features, target_for_features

AVX2, VNNI = TARGETS["x86-avx2"], TARGETS["x86-vnni"]


# ---- pure arithmetic ---------------------------------------------------------------------------------------------
def test_one_pair_of_large_products_saturates_in_int16() -> None:
    a, w = np.array([[255, 255]]), np.array([[127, 127]])
    assert saturating_dot(a, w, saturate=False)[0].item() == 64770  # 2 · 255 · 127
    acc, clipped = saturating_dot(a, w, saturate=True)
    assert acc.item() == 32767 and clipped == 1


def test_pairs_saturate_separately_so_opposite_signs_do_not_cancel() -> None:
    a, w = np.array([[255, 255, 255, 255]]), np.array([[127, 127, -127, -127]])
    assert saturating_dot(a, w, saturate=False)[0].item() == 0
    assert saturating_dot(a, w, saturate=True)[0].item() == 32767 - 32768  # +64770 → 32767, −64770 → −32768


def test_odd_length_pads_the_last_pair_and_small_pairs_are_exact() -> None:
    a, w = np.array([[255, 255, 255]]), np.array([[127, 127, 127]])
    assert saturating_dot(a, w, saturate=True)[0].item() == 32767 + 32385
    a, w = np.array([[100, 100, 3]]), np.array([[100, 60, -7]])
    assert saturating_dot(a, w, saturate=True)[0].item() == 16000 - 21  # 16000 < 32767: nothing clips


def test_zero_points_are_corrected_after_the_raw_products_saturate() -> None:
    # raw pair 255·127 + 255·127 saturates to 32767; minus za·Σw = 128·254 → 32767 − 32512 = 255
    out = integer_matmul(np.array([[255, 255]], np.uint8), np.uint8(128), np.array([[127], [127]], np.int8),
                         np.int8(0), target=AVX2)
    assert out.item() == 255
    exact = integer_matmul(np.array([[255, 255]], np.uint8), np.uint8(128), np.array([[127], [127]], np.int8),
                           np.int8(0), target=VNNI)
    assert exact.item() == 2 * 127 * 127  # (255 − 128) · 127 · 2


def test_uint8_weights_never_saturate() -> None:
    out = integer_matmul(np.array([[255, 255]], np.uint8), 0, np.array([[255], [255]], np.uint8), 0, target=AVX2)
    assert out.item() == 2 * 255 * 255


def test_convolution_pairs_adjacent_input_channels_at_one_tap() -> None:
    """QLinearConv runs channels-last: (kh, kw, c) with c fastest. Two channels at one 1×1 tap form one pair."""
    x = np.full((1, 2, 1, 1), 255, np.uint8)
    w = np.full((1, 2, 1, 1), 127, np.int8)
    assert integer_conv(x, 0, w, 0, target=AVX2).item() == 32767
    assert integer_conv(x, 0, w, 0, target=VNNI).item() == 64770
    # one channel, 1×3 kernel: taps pair up (0,1) and (2, padding): 32767 + 32385
    x1 = np.full((1, 1, 1, 3), 255, np.uint8)
    w1 = np.full((1, 1, 1, 3), 127, np.int8)
    assert integer_conv(x1, 0, w1, 0, target=AVX2).item() == 32767 + 32385
    # padding uses the zero point's raw value (here 255), which saturates with the taps next to it
    x2 = np.full((1, 1, 1, 1), 255, np.uint8)
    w2 = np.full((1, 1, 1, 3), 127, np.int8)
    out = integer_conv(x2, np.uint8(255), w2, 0, target=AVX2, pads=(0, 1, 0, 1))
    assert out.item() == 32767 + 32385 - 255 * 3 * 127  # raw products minus zx·Σw


def test_depthwise_convolution_is_exact_on_every_target() -> None:
    x = np.full((1, 2, 1, 2), 255, np.uint8)
    w = np.full((2, 1, 1, 2), 127, np.int8)
    out = integer_conv(x, 0, w, 0, target=AVX2, group=2)
    assert out.reshape(-1).tolist() == [64770, 64770]


def test_mismatched_reduction_lengths_are_refused() -> None:
    with pytest.raises(InputError, match="activations 3, weights 2"):
        saturating_dot(np.zeros((1, 3)), np.zeros((1, 2)), saturate=True)


# ---- against the real kernels of this CPU ---------------------------------------------------------------------------
def _fp32_models(folder: Path) -> dict[str, Path]:
    """A 2-conv CNN for 8×8 digits and a 64-128-10 MLP, FP32, random weights scaled so activations fill u8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def save(name: str, nodes: list, inits: dict, shape: list) -> Path:
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                                  [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        return path

    cnn = save("cnn", [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ], {"w1": rng.normal(scale=0.1, size=(16, 1, 3, 3)), "b1": rng.normal(scale=0.1, size=16),
        "w2": rng.normal(scale=1 / 12, size=(32, 16, 3, 3)), "b2": rng.normal(scale=0.1, size=32),
        "w3": rng.normal(scale=0.4, size=(10, 512)), "b3": np.zeros(10)}, ["N", 1, 8, 8])
    mlp = save("mlp", [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["logits"], name="fc2"),
    ], {"w1": rng.normal(scale=1 / 8, size=(64, 128)), "b1": rng.normal(scale=0.1, size=128),
        "w2": rng.normal(scale=0.4, size=(128, 10))}, ["N", 64])
    return {"cnn": cnn, "mlp": mlp}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """{name: (int8 path, FP32 path, images)}: static QDQ U8S8 per-channel (onnxruntime's own quantizer)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("emulate")
    images = load_digits().images.astype(np.float32)[:256] / 16.0

    class Reader(CalibrationDataReader):
        def __init__(self, feed: np.ndarray) -> None:
            self.batches = iter([{"x": feed[i:i + 32]} for i in range(0, 128, 32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    out = {}
    for name, path in _fp32_models(folder).items():
        feed = images[:, None] if name == "cnn" else images.reshape(-1, 64)
        qpath = folder / f"{name}-int8.onnx"
        quantize_static(str(path), str(qpath), Reader(feed), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        out[name] = (qpath, path, feed[128:])
    return out


def _real(path: Path, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": feed[i:i + 64]})[0] for i in range(0, len(feed), 64)])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="validates x86 kernels")
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_emulating_this_cpu_matches_its_real_kernels(quantized, name: str) -> None:
    """Tolerance: the same integers reach the same outputs; the emulated Q/DQ ops around the layers round in
    float32 as onnxruntime does, so a rare tie may move one int8 step: top-1 agreement ≥ 0.99, max |Δlogit| ≤ 0.05
    (logits span about ±10). Measured: 1.000 and 0.0 on Sapphire Rapids (VNNI); see README for AVX2 under qemu."""
    import onnx

    qpath, _, feed = quantized[name]
    host = target_for_features(host_features(), platform.machine())
    model = onnx.load(str(qpath))
    real = _real(qpath, feed)
    emulated, emulator = emulate_outputs(model, host, ({"x": feed[i:i + 64]} for i in range(0, len(feed), 64)))
    assert set(emulator.plans) >= ({"conv1", "conv2", "fc"} if name == "cnn" else {"fc1", "fc2"})
    assert np.mean(emulated.argmax(1) == real.argmax(1)) >= 0.99
    assert np.abs(emulated - real).max() <= 0.05
    other = VNNI if host.saturates else AVX2
    predicted, other_emulator = emulate_outputs(model, other, ({"x": feed[i:i + 64]} for i in range(0, len(feed), 64)))
    saturating = emulator if host.saturates else other_emulator
    assert sum(v["clipped"] for v in saturating.clipped.values()) > 0  # these models do saturate without VNNI
    assert np.abs(predicted - real).max() > 0.05  # saturation changes the outputs: the two targets differ here


def test_ort_integer_kernels_are_mapped_back_to_the_layers(quantized) -> None:
    import onnx

    model = onnx.load(str(quantized["cnn"][0]))
    outs = ort_integer_outputs(model)
    emulator = Emulator(model, VNNI, integer_outputs=outs)
    assert {k: v[0] for k, v in emulator.plans.items()} == {"conv1": "requantize", "conv2": "requantize",
                                                            "fc": "requantize"}
    # with no integer kernels reported, every layer runs as the Q/DQ arithmetic of the graph (float)
    assert Emulator(model, VNNI, integer_outputs=set()).plans == {}


def _artifact(path: Path, target: str | None):
    from modelpress.artifacts import InputSpec, ModelArtifact

    meta = {"quantization": {"mode": "static", **({"target": {"name": target}} if target else {})}}
    return ModelArtifact(format="onnx", inputs=(InputSpec("x", (None, 1, 8, 8), "float32"),), n_classes=10,
                         source=str(path), path=path, metadata=meta)


def test_evaluating_on_a_host_with_other_kernels_says_so_with_numbers(quantized, monkeypatch) -> None:
    from modelpress.data import Dataset
    from modelpress.runtime.emulate import host_mismatch_note

    qpath, _, feed = quantized["cnn"]
    data = Dataset({"x": feed}, np.zeros(len(feed), np.int64), tuple(str(i) for i in range(10)), "digits")
    monkeypatch.setenv("MODELPRESS_HOST_TARGET", "x86-avx2")  # both branches on any CPU
    logits = _real(qpath, feed)
    note = host_mismatch_note(_artifact(qpath, "x86-vnni"), data, logits)
    assert note is not None and note.startswith("built for x86-vnni (int32-exact) but measured on x86-avx2")
    assert f"emulated, {len(feed)} samples) top-1 agreement" in note and "max |Δ|" in note
    assert host_mismatch_note(_artifact(qpath, "x86-avx512"), data, logits) is None  # same accumulation
    assert host_mismatch_note(_artifact(qpath, None), data, logits) is None  # no target in the manifest: silent
    monkeypatch.setenv("MODELPRESS_HOST_TARGET", "x86-vnni")
    assert host_mismatch_note(_artifact(qpath, "arm64"), data, logits).startswith("built for arm64")


def test_ops_the_emulation_lacks_are_input_errors_naming_the_node() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("FastGelu", ["x"], ["y"], name="gelu0", domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(InputError, match="does not cover com.microsoft op FastGelu \\(node 'gelu0'\\)"):
        Emulator(model, AVX2, integer_outputs=set()).run({"x": np.ones((1, 4), np.float32)})
