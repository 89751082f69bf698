"""The CPU target of INT8: defaults per target, the target in manifest and report, and the guard that refuses a
collapsed model. ``MODELPRESS_HOST_TARGET`` forces the detected host, so both default branches run on any CPU."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelpress.compress.quantize import QuantizeConfig, resolve_defaults
from modelpress.compress.quantize_targets import DEFAULTS
from modelpress.errors import InputError
from modelpress.runtime.target import HOST_ENV, TARGETS


def _int8_weight_range(path) -> tuple[int, int]:
    model = onnx.load(str(path))
    values = [numpy_helper.to_array(i) for i in model.graph.initializer
              if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("weight_quantized")]
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


def test_every_target_has_a_row_and_saturating_ones_use_7_bit_weights():
    assert set(DEFAULTS) == set(TARGETS)
    for name, target in TARGETS.items():
        config, filled = resolve_defaults(QuantizeConfig(mode="static", target=name))
        assert config.reduce_range is target.saturates, name  # 7-bit weights exactly where u8×s8 pairs saturate
        assert (config.activation_type, config.weight_type, config.per_channel) == ("uint8", "int8", True)
        assert set(filled) == {"activation_type", "weight_type", "reduce_range", "per_channel", "residual_sum",
                               "bias_correction", "smooth_quant", "op_types"}


@pytest.mark.parametrize(("host", "reduce_range"), [("x86-avx2", True), ("x86-avx512", True), ("x86-vnni", False),
                                                     ("arm64", False)])
def test_auto_takes_the_hosts_defaults(monkeypatch, host, reduce_range):
    monkeypatch.setenv(HOST_ENV, host)
    config, _ = resolve_defaults(QuantizeConfig(mode="dynamic"))
    assert config.reduce_range is reduce_range


def test_a_user_setting_wins_over_the_target(monkeypatch):
    monkeypatch.setenv(HOST_ENV, "x86-avx2")
    config, filled = resolve_defaults(QuantizeConfig(mode="static", reduce_range=False, weight_type="uint8"))
    assert config.reduce_range is False and config.weight_type == "uint8"
    assert "reduce_range" not in filled and "weight_type" not in filled and "activation_type" in filled


def test_unknown_target_lists_the_names(trained_cnn, run_cli):
    with pytest.raises(InputError, match=r"unknown target 'x86'.*auto, x86-avx2, x86-avx512, x86-vnni, arm64"):
        QuantizeConfig(target="x86")
    result = run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "--target", "bogus", "-o", "q")
    assert result.exit_code == 2
    assert "'bogus' is not one of 'auto', 'x86-avx2', 'x86-avx512', 'x86-vnni', 'arm64'" in result.stderr


@pytest.mark.parametrize(("host", "low", "high"), [("x86-avx2", -64, 64), ("x86-vnni", -127, 127)])
def test_auto_target_in_manifest_and_weights(trained_cnn, run_cli, tmp_path, monkeypatch, host, low, high):
    monkeypatch.setenv(HOST_ENV, host)
    result = run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "--data", "sklearn:digits",
                     "--calibration-samples", "64", "--min-agreement", "0.9", "-o", "q")
    assert result.exit_code == 0, result.stderr
    assert f"target {host} (built on {host})" in result.stdout
    q = json.loads((tmp_path / "q" / "manifest.json").read_text())["metadata"]["quantization"]
    assert q["target"]["name"] == host and q["target"]["host"] == host and q["target"]["host_kernels_match"]
    assert q["reduce_range"] is (host == "x86-avx2") and "reduce_range" in q["target"]["defaults_from_target"]
    assert _int8_weight_range(tmp_path / "q" / "model.onnx") == (low, high)  # 7-bit weights only where saturating
    assert q["check"]["n_samples"] == 450 and q["check"]["passed"]  # the guard ran on all of the test split


def test_explicit_target_other_than_host_is_recorded(trained_cnn, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv(HOST_ENV, "x86-vnni")
    result = run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "--data", "sklearn:digits",
                     "--target", "x86-avx2", "--calibration-samples", "64", "--min-agreement", "0.9", "-o", "q")
    assert result.exit_code == 0, result.stderr
    q = json.loads((tmp_path / "q" / "manifest.json").read_text())["metadata"]["quantization"]
    assert q["target"] | {"defaults_from_target": None} == {
        "name": "x86-avx2", "requested": "x86-avx2", "description": q["target"]["description"],
        "u8s8_accumulation": "int16-pairs-saturating", "host": "x86-vnni", "host_kernels_match": False,
        "defaults_from_target": None}
    # 7-bit weights cannot saturate: the host's exact kernels compute the target's integers, and the record says so
    assert "computes the same integers as x86-avx2" in q["check"]["kernels"]


@pytest.fixture
def shrunk_calibration(digits, tmp_path):
    """Digits features ×0.01: activation ranges calibrated on it clip every real input (a true collapse on any CPU)."""
    train, _ = digits
    path = tmp_path / "tiny-range.npz"
    np.savez(path, x=(next(iter(train.inputs.values())) * 0.01).astype(np.float32), y=train.y)
    return path


def test_guard_refuses_a_collapsed_model_and_writes_nothing(trained_cnn, run_cli, tmp_path, shrunk_calibration,
                                                              monkeypatch):
    monkeypatch.setenv(HOST_ENV, "x86-avx2")
    args = ["quantize", str(trained_cnn[1]), "--mode", "static", "--data", "sklearn:digits", "--calibration",
            str(shrunk_calibration), "--no-reduce-range", "-o", "q"]
    result = run_cli(*args)
    assert result.exit_code == 1, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("error:"))
    assert "quantized model refused: top-1 agreement with FP32 0." in line and "< 0.98 on 450 samples" in line
    assert "x86-avx2 adds u8×s8 products in pairs into int16 with saturation: use --reduce-range" in line
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q.*"))  # nothing written, no staging left
    result = run_cli(*args[:-2], "--no-guard", "-o", "q")
    assert result.exit_code == 0 and "note: guard off (--no-guard): top-1 agreement" in result.stderr
    assert (tmp_path / "q" / "model.onnx").is_file()


def test_guard_floor_is_validated():
    with pytest.raises(InputError, match=r"min_agreement must be in \[0, 1\].*got 1.5"):
        QuantizeConfig(min_agreement=1.5)
