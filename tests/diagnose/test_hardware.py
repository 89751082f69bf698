"""explain's hardware section: real kernels beside the Q/DQ arithmetic, saturation named, other targets predicted.

Which branch runs depends on the CPU: the real kernels follow the real CPU (detected from CPUID, not from
``MODELPRESS_HOST_TARGET``), so each test states what it expects on an exact (VNNI/arm64) CPU and on a saturating
(AVX2) one. The emulation covers the other kind on any host.
"""

from __future__ import annotations

import platform

import pytest

from modelpress.data import Dataset
from modelpress.diagnose import ExplainConfig
from modelpress.diagnose.hardware import kernel_effects, saturation_recommendation
from modelpress.diagnose.layer_error import onnx_layer_errors
from modelpress.errors import InputError
from modelpress.reports.explain_md import explain_markdown
from modelpress.runtime.target import HOST_ENV, TARGETS, host_features, target_for_features

REAL_CPU = target_for_features(host_features(), platform.machine())


@pytest.fixture(scope="module")
def measured(saturating_cnn):
    import onnxruntime as ort

    fp32, int8, images = saturating_cnn
    labels = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"x": images})[0]
    data = Dataset({"x": images}, labels.argmax(1), tuple(str(i) for i in range(10)), "digits")
    return fp32, int8, data, onnx_layer_errors(fp32, int8, data)


def test_real_kernels_beside_qdq_and_a_prediction_for_the_other_kind(measured, monkeypatch) -> None:
    monkeypatch.delenv(HOST_ENV, raising=False)
    fp32, int8, data, qdq = measured
    other = TARGETS["x86-vnni"] if REAL_CPU.saturates else TARGETS["x86-avx2"]
    effects = kernel_effects(int8, fp32, data, qdq, target=other)
    assert effects["host"] == REAL_CPU.name and effects["n_samples"] == 128
    assert effects["qdq"]["sqnr_db"] == pytest.approx(qdq["output"]["sqnr_db"])
    predicted = effects["predicted"]
    assert predicted["target"] == other.name and predicted["n_samples"] == 128
    if REAL_CPU.saturates:  # AVX2: the real kernels lose what the Q/DQ arithmetic keeps; VNNI would keep it
        assert effects["hardware_effect"] and effects["saturated_layers"][0] == "conv1"
        assert effects["qdq"]["sqnr_db"] - effects["real"]["sqnr_db"] >= 3.0
        assert predicted["sqnr_db"] == pytest.approx(effects["qdq"]["sqnr_db"], abs=0.5)
    else:  # exact int32: the real kernels compute the Q/DQ arithmetic; AVX2 would saturate conv1
        assert not effects["hardware_effect"] and effects["saturated_layers"] == []
        assert effects["real"]["sqnr_db"] == pytest.approx(effects["qdq"]["sqnr_db"], abs=0.1)
        assert predicted["saturated_layers"][0] == "conv1" and predicted["saturated_pairs"]["conv1"] > 0.005
        assert effects["real"]["sqnr_db"] - predicted["sqnr_db"] >= 3.0


def test_a_forced_saturating_host_counts_its_saturated_pairs(measured, monkeypatch) -> None:
    monkeypatch.setenv(HOST_ENV, "x86-avx2")
    fp32, int8, data, qdq = measured
    effects = kernel_effects(int8, fp32, data, qdq)
    assert effects["host"] == "x86-avx2" and effects["predicted"] is None
    assert effects["layers"]["conv1"]["saturated_pairs"] > 0.005 and effects["layers"]["conv2"]["saturated_pairs"] == 0
    assert effects["saturated_layers"][0] == "conv1"
    if not REAL_CPU.saturates:  # the label is forced, the kernels are not: no measured effect here
        assert not effects["hardware_effect"]


def test_saturation_recommendation_names_layers_and_the_target_fix() -> None:
    effects = {"hardware_effect": True, "host": "x86-avx2", "saturated_layers": ["conv1", "fc"],
               "real": {"top1_agreement": 0.869}, "qdq": {"top1_agreement": 0.984}}
    rec = saturation_recommendation(effects, {"reference_ref": "fp32.onnx", "data_ref": "sklearn:digits",
                                              "quantization": {"mode": "static"}})
    assert "x86-avx2 kernels saturate u8×s8 pairs in int16 (conv1, fc)" in rec["summary"]
    assert "0.869 with the real kernels vs 0.984" in rec["summary"]
    assert "--target x86-avx2 --reduce-range" in rec["command"] and "reduce_range: true" in rec["yaml"]
    assert saturation_recommendation({**effects, "hardware_effect": False}, {}) is None
    predicted = {"target": "x86-avx512", "saturates": True, "top1_agreement": 0.9, "sqnr_db": 12.0,
                 "saturated_layers": ["conv1"]}
    rec = saturation_recommendation({**effects, "hardware_effect": False, "predicted": predicted,
                                     "qdq": {"top1_agreement": 0.99, "sqnr_db": 35.0}}, {})
    assert "x86-avx512 kernels saturate u8×s8 pairs in int16 (predicted by emulation) (conv1)" in rec["summary"]
    assert "--target x86-avx512 --reduce-range" in rec["command"]
    close = {**predicted, "top1_agreement": 0.99, "sqnr_db": 34.0}  # within 0.005 and 3 dB: nothing to fix
    assert saturation_recommendation({**effects, "hardware_effect": False, "predicted": close,
                                      "qdq": {"top1_agreement": 0.99, "sqnr_db": 35.0}}, {}) is None


def test_markdown_reports_the_real_session_first() -> None:
    kernels = {"host": "x86-avx2", "n_samples": 360, "hardware_effect": True, "saturated_layers": ["conv1"],
               "real": {"top1_agreement": 0.869, "cosine": 0.95, "sqnr_db": 11.3},
               "qdq": {"top1_agreement": 0.984, "cosine": 0.9999, "sqnr_db": 34.8},
               "predicted": {"target": "x86-vnni", "top1_agreement": 0.99, "cosine": 0.9999, "sqnr_db": 34.7,
                             "saturated_layers": []}}
    text = explain_markdown({"kernels": kernels, "reference": {"source": "fp32"}})
    first_table = text.index("**Agreement with the reference (360 samples)**")
    assert first_table < text.index("**Speed:**") < text.index("**Recommendations") and "| real onnxruntime kernels (x86-avx2, this CPU) | " \
        "86.9%" in text.replace(" %", "%")
    assert "| predicted on x86-vnni (emulated) |" in text
    assert "saturate in int16 on x86-avx2 in: conv1" in text
    skipped = {**kernels, "emulation_skipped": "the emulation does not cover com.microsoft op FastGelu",
               "predicted": {"target": "x86-vnni", "skipped": "the emulation does not cover com.microsoft op"}}
    text = explain_markdown({"kernels": skipped, "reference": {"source": "fp32"}})
    assert "saturated pairs not counted: the emulation does not cover com.microsoft op FastGelu" in text
    assert "no prediction for x86-vnni: the emulation does not cover" in text
    assert "| predicted on" not in text


def test_unknown_target_is_an_input_error_listing_the_names() -> None:
    with pytest.raises(InputError, match="unknown target 'x86-sse'") as info:
        ExplainConfig(target="x86-sse")
    assert "x86-avx2, x86-avx512, x86-vnni, arm64" in info.value.format_message()

