"""Per-layer error: the layer that meets the activation outlier is ranked first, statistics are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelpress.diagnose.layer_error import (
    SQNR_CAP_DB,
    _Stats,
    channel_axis,
    layer_errors,
    onnx_layer_errors,
    sensitivity_ranking,
)
from modelpress.errors import InputError


def test_stats_match_closed_form() -> None:
    ref = np.array([[3.0, 4.0], [1.0, 0.0]])
    cand = np.array([[3.0, 3.0], [1.0, 1.0]])
    stats = _Stats()
    stats.add(ref, cand, 2)
    out = stats.as_dict()
    assert out["sqnr_db"] == pytest.approx(10 * math.log10(26 / 2))
    assert out["rel_l2"] == pytest.approx(math.sqrt(2 / 26))
    assert out["cosine"] == pytest.approx((21 / (5 * math.sqrt(18)) + 1 / math.sqrt(2)) / 2)
    # per channel: channel 0 exact, channel 1 noise 2 over signal 16
    assert stats.channel_noise_ratio == pytest.approx((0 + 2 / 16) / 2)


def test_channel_sqnr_sees_channels_an_outlier_hides() -> None:
    """One channel 1000× larger than the rest, the rest rounded to zero: plain SQNR looks fine, channel SQNR not."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(64, 32))
    ref[:, 0] *= 1000
    cand = np.zeros_like(ref)
    cand[:, 0] = ref[:, 0]
    stats = _Stats()
    stats.add(ref, cand, 64)
    assert stats.as_dict()["sqnr_db"] > 40
    assert stats.as_dict()["channel_sqnr_db"] < 0.2  # 31 of 32 channels are all noise


def test_identical_models_have_no_error(outlier: dict) -> None:
    result = onnx_layer_errors(outlier["onnx"], outlier["onnx"], outlier["data"].subset(slice(0, 32)))
    assert result["output"]["top1_agreement"] == 1.0
    assert result["output"]["sqnr_db"] == SQNR_CAP_DB
    assert result["layers"] and all(lay["noise_added"] == 0 and lay["precision"] == "fp32"
                                    for lay in result["layers"])
    assert sensitivity_ranking(result) == []


def test_channel_axis_by_rank() -> None:
    assert [channel_axis(n) for n in (1, 2, 3, 4)] == [0, 1, 2, 1]


def test_dynamic_outlier_layer_ranked_first(outlier: dict, quantize_outlier) -> None:
    """Dynamic int8 quantizes each MatMul's input per tensor: fc2 reads the outlier tensor and adds the error."""
    candidate, _ = quantize_outlier("dynamic")
    result = layer_errors(candidate, outlier["artifact"], outlier["data"].subset(slice(0, 64)))
    first = result["layers"][0]
    assert first["exclude_name"].startswith("fc2")
    assert first["precision"] == "int8" and first["op_type"] == "MatMulInteger"
    assert first["channel_sqnr_db"] < 3 and first["input_channel_sqnr_db"] > 25  # clean input, crushed output
    assert first["noise_added"] > 10 * max(lay["noise_added"] for lay in result["layers"][1:])
    assert result["output"]["top1_agreement"] < 0.6
    assert sensitivity_ranking(result)[0] == first["exclude_name"]


def test_static_outlier_layer_and_its_quantized_consumer(outlier: dict, quantize_outlier) -> None:
    """QDQ quantizes fc1's output tensor once, for fc1 and for fc2: both must stay FP32 together."""
    candidate, _ = quantize_outlier("static")
    result = layer_errors(candidate, outlier["artifact"], outlier["data"].subset(slice(0, 64)))
    first = result["layers"][0]
    assert first["exclude_name"].startswith("fc1")
    assert [n[:3] for n in first["also_exclude"]] == ["fc2"]
    assert [n[:3] for n in sensitivity_ranking(result)[:2]] == ["fc1", "fc2"]


def test_fp16_layers_add_little_error(outlier: dict, quantize_outlier) -> None:
    candidate, _ = quantize_outlier("fp16")
    result = layer_errors(candidate, outlier["artifact"], outlier["data"].subset(slice(0, 64)))
    assert {lay["precision"] for lay in result["layers"]} == {"fp16"}
    assert result["output"]["sqnr_db"] > 50 and result["output"]["top1_agreement"] == 1.0


def test_torch_layers_matched_by_module_name(digits) -> None:
    from modelpress.compress.quantize_torch import run_torch_dynamic
    from modelpress.sources import load_model

    artifact = load_model("zoo:mlp", data=digits[1], kwargs={"hidden": [32]})
    quantized = run_torch_dynamic(artifact, engine="x86", notes=[])
    result = layer_errors(quantized, artifact, digits[1].subset(slice(0, 64)))
    assert result["method"] == "torch-hooks"
    names = {lay["node"] for lay in result["layers"]}
    assert names == {n for n, m in artifact.module.named_modules() if type(m).__name__ == "Linear"}
    assert {lay["precision"] for lay in result["layers"]} == {"int8"}
    assert result["output"]["top1_agreement"] > 0.9


def test_models_of_different_formats_are_refused(outlier: dict) -> None:
    from modelpress.sources import load_model

    torch_mlp = load_model("zoo:mlp", data=outlier["data"], kwargs={"hidden": [32]})  # input named "input", not "x"
    with pytest.raises(InputError, match=r"takes inputs \['input'\] but candidate .* takes \['x'\]"):
        layer_errors(outlier["artifact"], torch_mlp, outlier["data"])
    renamed = torch_mlp.evolve(inputs=outlier["artifact"].inputs)
    with pytest.raises(InputError, match="one format"):
        layer_errors(outlier["artifact"], renamed, outlier["data"])
