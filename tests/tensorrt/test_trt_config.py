"""Pure parts of the TensorRT export: config validation, profiles, build plan, Q/DQ checks, tolerances, metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.artifacts import InputSpec
from modelpress.compress.export import ExportConfig
from modelpress.compress.registry import config_for
from modelpress.compress.tensorrt import (
    DEFAULT_TOLERANCES,
    BuildPlan,
    Tolerance,
    build_plan,
    compare_outputs,
    engine_metadata,
    gate_message,
    network_inputs,
    profile_shapes,
    qdq_info,
    tolerance_for,
    verify_samples,
)
from modelpress.errors import GateFailed, InputError
from modelpress.runtime.tensorrt import check_engine_compatible

TRT = {"format": "tensorrt"}


# ---- config validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, match", [
    ({**TRT, "precision": "int4"}, r"export.precision must be one of fp32, fp16, int8, got 'int4'"),
    ({**TRT, "trt_int8": "implicit"}, r"export.trt_int8 must be one of qdq, calibrator, got 'implicit'"),
    ({"trt_int8": "calibrator"}, r"export.trt_int8 applies to format tensorrt only \(format is onnx\)"),
    ({**TRT, "min_batch": 8, "opt_batch": 4}, r"min_batch ≤ opt_batch ≤ max_batch must hold, got 8, 4, 256"),
    ({**TRT, "opt_batch": 64, "max_batch": 32}, r"min_batch ≤ opt_batch ≤ max_batch must hold, got 1, 64, 32"),
    ({**TRT, "min_seq_len": 300, "opt_seq_len": 200}, r"min_seq_len ≤ opt_seq_len ≤ max_seq_len .* 300, 200, 512"),
    ({**TRT, "workspace_mb": 0}, r"export.workspace_mb must be an integer > 0 \(MiB\), got 0"),
    ({**TRT, "workspace_mb": -5}, r"export.workspace_mb must be an integer > 0 \(MiB\), got -5"),
    ({**TRT, "workspace_mb": 1.5}, r"export.workspace_mb must be an integer > 0 \(MiB\), got 1.5"),
    ({**TRT, "min_batch": 0}, r"export.min_batch must be an integer > 0, got 0"),
    ({**TRT, "max_batch": True}, r"export.max_batch must be an integer > 0, got True"),
    ({**TRT, "calibration_batches": 0}, r"export.calibration_batches must be an integer > 0, got 0"),
    ({**TRT, "timing_cache": ""}, r"export.timing_cache must be a file path, got ''"),
    ({**TRT, "trt_min_top1": 1.5}, r"export.trt_min_top1 must be in \[0, 1\], got 1.5"),
    ({**TRT, "trt_atol": -1e-3}, r"export.trt_atol must be ≥ 0, got -0.001"),
    ({**TRT, "trt_rtol": float("nan")}, r"export.trt_rtol must be ≥ 0, got nan"),
    ({"precision": "fp16"}, r"export.precision applies to format tensorrt only \(format is onnx\)"),
    ({"max_batch": 64}, r"export.max_batch applies to format tensorrt only"),
])
def test_bad_tensorrt_config_is_one_input_error(params, match):
    with pytest.raises(InputError, match=match) as info:
        ExportConfig(**params)
    assert "\n" not in info.value.format_message()


def test_yaml_style_params_build_a_tensorrt_config():
    config = config_for("export", {"format": "tensorrt", "precision": "int8", "min_batch": 2, "opt_batch": 16,
                                   "max_batch": 64, "workspace_mb": 512, "optional": True})
    assert (config.precision, config.min_batch, config.opt_batch, config.max_batch) == ("int8", 2, 16, 64)
    assert config.optional is True
    with pytest.raises(InputError, match="unknown key 'precison'.*did you mean 'precision'"):
        config_for("export", {"format": "tensorrt", "precison": "fp16"})


def test_default_onnx_config_is_unchanged_by_the_tensorrt_fields():
    config = ExportConfig()
    assert config.format == "onnx" and config.precision == "fp32"
    assert ExportConfig(format="tensorrt", precision="fp16", max_batch=8, opt_batch=8).max_batch == 8


# ---- optimization profiles -------------------------------------------------------------------------------------------
def test_image_input_gets_the_batch_range_and_keeps_fixed_dims():
    shapes = profile_shapes([InputSpec("input", (None, 1, 8, 8))], batch=(1, 32, 256), seq=(1, 128, 512))
    assert shapes == {"input": {"min": [1, 1, 8, 8], "opt": [32, 1, 8, 8], "max": [256, 1, 8, 8]}}


def test_text_inputs_get_batch_and_sequence_ranges():
    inputs = [InputSpec("input_ids", (None, None), "int64"), InputSpec("attention_mask", (None, None), "int64")]
    shapes = profile_shapes(inputs, batch=(1, 8, 64), seq=(4, 128, 256))
    for name in ("input_ids", "attention_mask"):
        assert shapes[name] == {"min": [1, 4], "opt": [8, 128], "max": [64, 256]}


def test_static_batch_network_keeps_its_batch():
    specs = network_inputs([("input", (2, 64), "float32"), ("ids", (-1, -1), "int32")])
    assert specs[0].shape == (2, 64) and specs[1].shape == (None, None)
    shapes = profile_shapes(specs, batch=(1, 4, 8), seq=(1, 16, 32))
    assert shapes["input"] == {"min": [2, 64], "opt": [2, 64], "max": [2, 64]}
    assert shapes["ids"] == {"min": [1, 1], "opt": [4, 16], "max": [8, 32]}


@pytest.mark.parametrize("batch, seq, match", [
    ((4, 2, 8), (1, 1, 1), r"min_batch ≤ opt_batch ≤ max_batch must hold with min ≥ 1, got 4, 2, 8"),
    ((0, 1, 1), (1, 1, 1), r"got 0, 1, 1"),
    ((1, 1, 1), (1, 9, 8), r"min_seq_len ≤ opt_seq_len ≤ max_seq_len .* got 1, 9, 8"),
])
def test_profile_shapes_rejects_unordered_ranges(batch, seq, match):
    with pytest.raises(InputError, match=match):
        profile_shapes([InputSpec("x", (None, None))], batch=batch, seq=seq)


# ---- build plan --------------------------------------------------------------------------------------------------
_QDQ = BuildPlan(int8_mode="qdq", strongly_typed=True)


@pytest.mark.parametrize("precision, major, qdq, calib, int8, expected", [
    ("fp32", 10, 0, False, "qdq", BuildPlan(clear_flags=("TF32",))),
    ("fp16", 10, 0, False, "qdq", BuildPlan(set_flags=("FP16",))),
    # int8 is explicit by default: a Q/DQ model builds as it is, a float one is quantized first; never the INT8 flag
    ("int8", 10, 6, False, "qdq", _QDQ),
    ("int8", 10, 0, True, "qdq", BuildPlan(int8_mode="qdq", strongly_typed=True, quantize=True)),
    ("int8", 11, 6, False, "qdq", _QDQ),
    ("int8", 11, 0, True, "qdq", BuildPlan(int8_mode="qdq", strongly_typed=True, quantize=True)),
    # the deprecated implicit path only when asked for, on TensorRT 10
    ("int8", 10, 0, True, "calibrator", BuildPlan(set_flags=("INT8",), int8_mode="calibrated")),
    ("fp32", 11, 0, False, "qdq", BuildPlan(clear_flags=("TF32",), strongly_typed=True)),
], ids=["fp32", "fp16", "qdq-model", "float-quantized", "trt11-qdq-model", "trt11-float-quantized", "calibrator",
        "trt11-fp32"])
def test_build_plan(precision, major, qdq, calib, int8, expected):
    assert build_plan(precision, trt_major=major, qdq_nodes=qdq, has_calibration=calib, int8=int8) == expected


@pytest.mark.parametrize("precision, major, qdq, calib, int8, match", [
    ("int8", 10, 0, False, "qdq", "precision int8 on a model without Q/DQ nodes needs calibration data"),
    ("int8", 10, 0, False, "calibrator", "the INT8 calibrator needs calibration data"),
    ("int8", 10, 6, True, "calibrator", "the ONNX model has 6 Q/DQ nodes .* the calibrator applies to a float"),
    ("fp16", 10, 4, True, "qdq", "the ONNX model has 4 Q/DQ nodes .* precision fp16 cannot build it"),
    ("fp16", 11, 0, True, "qdq", "TensorRT 11 removed the FP16 builder flag"),
    ("int8", 11, 0, True, "calibrator", r"TensorRT 11 removed the INT8 calibrator \(deprecated since 10.1\)"),
])
def test_build_plan_refusals(precision, major, qdq, calib, int8, match):
    with pytest.raises(InputError, match=match):
        build_plan(precision, trt_major=major, qdq_nodes=qdq, has_calibration=calib, int8=int8)


def test_quantize_qdq_writes_symmetric_int8_that_tracks_the_float_model(trained_mlp, digits, tmp_path):
    """CPU-only half of the default int8 path: the Q/DQ model TensorRT would build, checked with onnxruntime."""
    import onnxruntime as ort

    from onnx import load

    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.compress.tensorrt import CalibrationFeeder, calibration_batches, quantize_qdq

    artifact, _ = trained_mlp
    train, test = digits
    onnx_artifact = run_stage(artifact, ExportConfig(), StageContext(work_dir=tmp_path, eval=test))
    feeder = CalibrationFeeder(train.inputs, ["input"], {"input": np.float32}, 32, 4, cuda=None, seed=0)
    record = quantize_qdq(onnx_artifact.path, tmp_path / "model.qdq.onnx", calibration_batches(feeder))
    assert record["calibration"] == {"algorithm": "minmax", "batches": 4, "samples": 128}
    info = qdq_info(load(tmp_path / "model.qdq.onnx"))
    assert info == {"nodes": record["nodes"], "problems": []} and info["nodes"] >= 4

    def logits(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": test.inputs["input"].astype(np.float32)})[0]

    want, got = logits(onnx_artifact.path), logits(tmp_path / "model.qdq.onnx")
    assert not np.array_equal(want, got)  # quantized, not a copy
    assert (want.argmax(1) == got.argmax(1)).mean() >= 0.97
    assert np.abs(got - want).max() <= 0.25 * np.abs(want).max()  # the int8 verification bound of export


def _qdq_model(zero_point: np.ndarray | None):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale")]
    q_inputs = ["x", "scale"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        q_inputs.append("zp")
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", *q_inputs[1:]], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits)
    return helper.make_model(graph)


def test_qdq_info_counts_nodes_and_flags_what_tensorrt_refuses():
    assert qdq_info(_qdq_model(np.array(0, dtype=np.int8))) == {"nodes": 2, "problems": []}
    uint8 = qdq_info(_qdq_model(np.array(128, dtype=np.uint8)))
    assert uint8["nodes"] == 2 and uint8["problems"] == ["q: uint8 zero point", "dq: uint8 zero point"]
    shifted = qdq_info(_qdq_model(np.array(3, dtype=np.int8)))
    assert shifted["problems"][0] == "q: non-zero zero point"


def test_plain_onnx_export_has_no_qdq_nodes(tmp_path):
    from modelpress.compress.export import export_onnx
    from modelpress.data import load_data
    from modelpress.onnx_utils import load_onnx
    from modelpress.sources import load_model

    artifact = load_model("zoo:mlp", data=load_data("sklearn:iris", split="test"), kwargs={"hidden": [8]})
    config = ExportConfig(exporter="torchscript", opset=17)
    onnx_artifact = export_onnx(artifact, tmp_path / "m.onnx", config=config)
    assert qdq_info(load_onnx(onnx_artifact.path, with_data=False)) == {"nodes": 0, "problems": []}


# ---- tolerances and the output comparison ----------------------------------------------------------------------------
def test_tolerance_defaults_and_overrides():
    assert tolerance_for(ExportConfig(format="tensorrt")) == Tolerance(1e-3, 1e-3)
    assert tolerance_for(ExportConfig(format="tensorrt", precision="fp16")) == Tolerance(1e-2, 1e-2)
    int8 = tolerance_for(ExportConfig(format="tensorrt", precision="int8"))
    assert int8 == DEFAULT_TOLERANCES["int8"] and int8.min_top1 == 0.99 and int8.atol_of_range == 0.25
    custom = tolerance_for(ExportConfig(format="tensorrt", precision="int8", trt_atol=0.5, trt_min_top1=0.9))
    assert (custom.atol, custom.atol_of_range, custom.min_top1) == (0.5, 0.0, 0.9)


def _logits(n=200, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, classes)) * 4).astype(np.float32)


def test_fp32_passes_within_1e3_and_fails_beyond():
    want = _logits()
    tol = DEFAULT_TOLERANCES["fp32"]
    ok = compare_outputs([(want, want + 5e-4)], tol)
    assert ok["passed"] and ok["max_abs_diff"] == pytest.approx(5e-4, rel=1e-3) and ok["top1_agreement"] == 1.0
    bad = want.copy()
    bad[3, 2] += 0.05
    report = compare_outputs([(want[:100], bad[:100]), (want[100:], bad[100:])], tol)
    assert not report["passed"] and report["max_abs_diff"] == pytest.approx(0.05, rel=1e-3)
    assert report["n_samples"] == 200


def test_fp16_bound_is_ten_times_looser():
    want = _logits()
    assert compare_outputs([(want, want + 5e-3)], DEFAULT_TOLERANCES["fp16"])["passed"]
    assert not compare_outputs([(want, want + 5e-3)], DEFAULT_TOLERANCES["fp32"])["passed"]


def test_int8_needs_top1_agreement_and_a_range_scaled_bound():
    want = _logits(n=300)
    scale = float(np.abs(want).max())
    tol = DEFAULT_TOLERANCES["int8"]
    report = compare_outputs([(want, want * 1.05)], tol)  # 5 % scale error, same argmax everywhere
    assert report["passed"] and report["atol"] == pytest.approx(0.25 * scale)
    margins = np.sort(want, 1)[:, -1] - np.sort(want, 1)[:, -2]
    flips = np.argsort(margins)  # the rows whose top-2 are closest
    swapped = want.copy()
    for i in flips[:6]:  # 6 of 300 = 98 % agreement: under 0.99
        top2 = np.argsort(swapped[i])[-2:]
        swapped[i, top2] = swapped[i, top2[::-1]]
    report = compare_outputs([(want, swapped)], tol)
    assert report["top1_agreement"] == pytest.approx(294 / 300)
    assert not report["passed"]
    assert "top-1 agreement 0.9800 (need ≥ 0.99)" in gate_message(report, "int8")
    shifted = compare_outputs([(want, want + 0.3 * scale)], tol)
    assert shifted["top1_agreement"] == 1.0 and not shifted["passed"]


def test_nan_outputs_fail_and_are_counted():
    want = _logits(n=20)
    got = want.copy()
    got[0, 0] = np.nan
    report = compare_outputs([(want, got)], Tolerance(atol=1e9, rtol=1e9))
    assert report["non_finite"] == 1 and not report["passed"]
    assert "1 NaN/inf outputs" in gate_message(report, "fp32")


def test_shape_mismatch_is_a_failed_gate():
    with pytest.raises(GateFailed, match=r"TensorRT output shape \(4, 3\) differs from onnxruntime \(4, 2\)"):
        compare_outputs([(np.zeros((4, 2)), np.zeros((4, 3)))], DEFAULT_TOLERANCES["fp32"])


def test_int8_verifies_on_at_least_500_samples():
    assert verify_samples(ExportConfig(format="tensorrt", precision="int8"), 10_000) == 500
    assert verify_samples(ExportConfig(format="tensorrt", precision="int8"), 300) == 300
    assert verify_samples(ExportConfig(format="tensorrt"), 10_000) == 64


# ---- metadata --------------------------------------------------------------------------------------------------------
def test_engine_metadata_shape_is_plain_json():
    profiles = profile_shapes([InputSpec("input", (None, 64))], batch=(1, 32, 256), seq=(1, 128, 512))
    meta = engine_metadata(
        trt_version="10.3.0", device={"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
        precision="int8", plan=BuildPlan(set_flags=("INT8",), int8_mode="calibrated"), profiles=profiles,
        workspace_mb=1024, timing_cache={"path": "trt.cache", "reused": True, "bytes_in": 2048},
        calibration={"algorithm": "entropy2", "batch_size": 32, "batches": 16, "samples": 512}, build_s=12.34567,
        engine_sha256="ab" * 32)
    assert json.loads(json.dumps(meta)) == meta
    assert set(meta) == {"version", "gpu", "compute_capability", "precision", "int8_mode", "strongly_typed",
                         "builder_flags", "profiles", "workspace_mb", "timing_cache", "calibration", "qdq",
                         "build_s", "engine_sha256"}
    assert meta["profiles"]["input"] == {"min": [1, 64], "opt": [32, 64], "max": [256, 64]}
    assert (meta["version"], meta["compute_capability"], meta["build_s"]) == ("10.3.0", "9.0", 12.346)
    assert meta["builder_flags"] == ["INT8"] and meta["int8_mode"] == "calibrated" and meta["qdq"] is None


def test_engine_from_another_tensorrt_or_gpu_is_refused_before_loading():
    meta = {"tensorrt": {"version": "10.3.0", "compute_capability": "8.6"}}
    check_engine_compatible(meta, trt_version="10.3.0", compute_capability="8.6", source="e")
    with pytest.raises(InputError, match="built with TensorRT 10.3.0; this machine has 10.4.0.*rebuild the engine"):
        check_engine_compatible(meta, trt_version="10.4.0", compute_capability="8.6", source="e")
    with pytest.raises(InputError, match="built for compute capability 8.6; this GPU is 9.0"):
        check_engine_compatible(meta, trt_version="10.3.0", compute_capability="9.0", source="e")
