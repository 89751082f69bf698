"""`modelpress quantize` on the command line: happy path, report notes, and bad input → exit 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.sources import load_model


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    return lines[0]


def test_quantize_static_cli_writes_artifact_and_reports(trained_cnn, run_cli, tmp_path):
    _, folder = trained_cnn
    result = run_cli("quantize", str(folder), "--mode", "static", "--data", "sklearn:digits",
                     "--calibrate", "percentile", "--calibration-samples", "32", "--min-agreement", "0.95", "-o", "q")
    assert result.exit_code == 0, result.stderr
    assert "static (onnxruntime): Conv ×2, Gemm ×2; size" in result.stdout
    assert "vs FP32 on 450 samples: top-1 agreement" in result.stdout  # the guard: all of the test split
    assert "note: quantized static (percentile, qdq), per-channel True for x86-" in result.stderr
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    q = manifest["metadata"]["quantization"]
    assert q["mode"] == "static" and q["calibrator"] == "percentile" and q["percentile"] == 99.999
    assert manifest["history"][-1]["kind"] == "quantize"
    assert load_model("q").format == "onnx"
    assert not [p for p in (tmp_path / "q").iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_pipeline_yaml_quantize_stage_lands_in_report(run_cli, tmp_path):
    spec = tmp_path / "q.yaml"
    spec.write_text("name: q\nmodel: zoo:cnn\ndata:\n  eval: sklearn:digits\nstages:\n"
                    "  - type: train\n    epochs: 1\n"
                    "  - type: quantize\n    mode: static\n    calibration_samples: 32\n    op_types: [Conv, Gemm]\n"
                    "evaluate:\n  batch_sizes: [8]\n  latency:\n    min_calls: 5\n    min_s: 0.0\n"
                    "    warmup_min_calls: 1\n    warmup_min_s: 0.0\n")
    result = run_cli("run", str(spec), "--out", "runs")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "runs" / "q" / "report.json").read_text())
    stage = report["stages"][-1]
    assert stage["kind"] == "quantize" and stage["params"]["op_types"] == ["Conv", "Gemm"]
    assert any(n.startswith("quantized static (minmax, qdq)") for n in stage["notes"])
    host = stage["quantization"]["target"]["host"]  # target: auto is the host, in report.json and in the notes
    assert stage["quantization"]["target"]["name"] == host and stage["params"]["target"] == "auto"
    assert any(n.startswith(f"target {host} (the host)") for n in stage["notes"])
    assert stage["fidelity"]["top1_agreement"] >= 0.9
    trained = report["stages"][-2]
    assert trained["kind"] == "train"
    assert stage["footprint"]["size_bytes"] < 0.5 * trained["footprint"]["size_bytes"]


def test_static_without_calibration_data(trained_cnn, run_cli):
    line = _one_line_error(run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "-o", "q"))
    assert line == ("error: static quantization needs calibration data; pass --calibration DATA (or --data DATA, "
                    "whose train split is used)")


def test_calibration_of_the_wrong_shape(trained_cnn, run_cli, tiny_npz):
    line = _one_line_error(run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "--calibration",
                                   str(tiny_npz), "-o", "q"))
    assert "expects input 'input' of shape (N, 64) float32, got shape (1, 6) float32" in line


def test_empty_calibration_data(trained_cnn, run_cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(f"f{i}" for i in range(64)) + ",label\n")
    line = _one_line_error(run_cli("quantize", str(trained_cnn[1]), "--mode", "static", "--calibration",
                                   str(empty), "-o", "q"))
    assert "is empty: 0 samples" in line


def test_bad_options_are_refused_before_anything_runs(trained_cnn, run_cli, tmp_path):
    folder = str(trained_cnn[1])
    cases = {
        ("--mode", "static", "--engine", "torch"): "engine torch supports mode dynamic only",
        ("--mode", "dynamic", "--accuracy-tolerance", "0.01"): "--accuracy-tolerance needs --data",
        ("--mode", "dynamic", "--accuracy-tolerance", "2", "--data", "sklearn:digits"):
            "accuracy_tolerance must be in [0, 1)",
        ("--mode", "static", "--data", "sklearn:digits", "--exclude-nodes", "conv9"): "no node named 'conv9'",
        ("--mode", "int2",): "Invalid value for '--mode'",
    }
    for args, message in cases.items():
        assert message in _one_line_error(run_cli("quantize", folder, *args, "-o", "q")), args
    assert not (tmp_path / "q").exists()


def test_already_quantized_and_wrong_engine(trained_cnn, trained_mlp, run_cli):
    assert run_cli("quantize", str(trained_mlp[1]), "--mode", "dynamic", "--data", "sklearn:digits",
                   "-o", "q1").exit_code == 0
    assert "is already quantized (dynamic)" in _one_line_error(
        run_cli("quantize", "q1", "--mode", "static", "--data", "sklearn:digits", "-o", "q2"))
    assert "--engine torch quantizes torch models" in _one_line_error(
        run_cli("quantize", "q1", "--mode", "dynamic", "--engine", "torch", "-o", "q3"))
    assert "has no Linear, LSTM or GRU layers" not in run_cli(
        "quantize", str(trained_cnn[1]), "--mode", "dynamic", "--engine", "torch", "-o", "q4").stderr


def test_unsupported_ops_are_skipped_and_named(digits, run_cli, tmp_path):
    """Static QDQ has no LSTM kernel: the LSTM stays FP32, the head is quantized, and the notes say so."""
    artifact = load_model("zoo:lstm", data=digits[1], kwargs={"hidden": 16})
    artifact.save(tmp_path / "lstm")
    result = run_cli("quantize", "lstm", "--mode", "static", "--data", "sklearn:digits", "--calibration-samples",
                     "32", "-o", "q")
    assert result.exit_code == 0, result.stderr
    assert ("note: not quantized in static mode: LSTM ×1 (onnxruntime's static quantizer has no int8 kernel for "
            "it)") in result.stderr
    q = load_model("q").metadata["quantization"]
    assert q["float_op_counts"] == {"LSTM": 1} and q["quantized_op_counts"] == {"Gemm": 1}


def test_nothing_to_quantize_is_an_error_not_a_silent_no_op(trained_cnn, run_cli):
    line = _one_line_error(run_cli("quantize", str(trained_cnn[1]), "--mode", "dynamic", "--data",
                                   "sklearn:digits", "--op-types", "LSTM", "-o", "q"))
    assert "changed nothing" in line and "['LSTM']" in line


@pytest.mark.parametrize("mode", ["dynamic", "fp16"])
def test_cli_modes_shrink_the_model(trained_mlp, run_cli, mode, digits):
    result = run_cli("quantize", str(trained_mlp[1]), "--mode", mode, "--data", "sklearn:digits", "-o", "q")
    assert result.exit_code == 0, result.stderr
    q = load_model("q").metadata["quantization"]
    assert q["size_ratio"] < {"dynamic": 0.6, "fp16": 0.8}[mode]
    assert q["check"]["top1_agreement"] >= 0.98 and np.isfinite(q["check"]["max_abs_diff"])
