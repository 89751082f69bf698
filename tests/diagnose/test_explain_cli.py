"""``modelpress explain``: exit codes, the report folder, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FAST = ["--runs", "5", "--samples", "48", "--batch-size", "16", "--no-fp16"]


def test_explain_writes_a_report_with_the_explain_stage(run_cli, outlier: dict, quantize_outlier,
                                                        tmp_path: Path) -> None:
    candidate, _ = quantize_outlier("dynamic")
    data = f"{outlier['npz']}#test"  # the seeded 60 of 240 samples this test was written for (a file is used whole)
    result = run_cli("explain", candidate.path.parent, "--reference", outlier["onnx"], "--data", data,
                     "--out", tmp_path / "out", "--name", "why", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "## Explain: why it is slow or inaccurate" in result.stdout
    assert "--exclude-nodes fc2" in result.stdout
    assert result.stderr.strip().endswith("(also report.md, report.html)")
    folder = tmp_path / "out" / "why"
    report = json.loads((folder / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["reference", "candidate"]
    explain = report["stages"][1]["explain"]
    assert explain["layers"][0]["exclude_name"].startswith("fc2")
    assert report["stages"][1]["fidelity"]["top1_agreement"] < 0.8  # the evaluator agrees: the model is broken
    assert report["stages"][1]["latency"][0]["batch_size"] == 16
    assert "### Explain" in (folder / "report.md").read_text()
    assert "Where the error comes from" in (folder / "report.html").read_text()
    assert not list(folder.glob(".*.tmp"))

    as_json = run_cli("explain", candidate.path.parent, "--reference", outlier["onnx"], "--data", data,
                      "--out", tmp_path / "out", "--name", "why2", "--json", *FAST)
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["explain_version"] == 1


def test_reference_with_other_input_names_is_exit_2(run_cli, outlier: dict, build_mlp, tmp_path: Path) -> None:
    other = build_mlp(tmp_path / "renamed.onnx", dims=[64, 128, 128, 128, 10], input_name="pixels")
    result = run_cli("explain", outlier["onnx"], "--reference", other, "--data", outlier["npz"], *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: reference ") and "['pixels']" in result.stderr and "['x']" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not Path("reports").exists()  # refused before anything was written


def test_reference_with_other_classes_is_exit_2(run_cli, outlier: dict, build_mlp, tmp_path: Path) -> None:
    other = build_mlp(tmp_path / "three.onnx", dims=[64, 32, 32, 32, 3])
    result = run_cli("explain", outlier["onnx"], "--reference", other, "--data", outlier["npz"], *FAST)
    assert result.exit_code == 2
    assert "outputs 3 classes but candidate" in result.stderr and "outputs 10" in result.stderr


def test_bad_usage_and_bad_data_are_exit_2(run_cli, outlier: dict, tmp_path: Path) -> None:
    missing = run_cli("explain", outlier["onnx"], "--data", outlier["npz"])
    assert missing.exit_code == 2 and "--reference" in missing.stderr
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((8, 7), np.float32), y=np.zeros(8, np.int64))
    result = run_cli("explain", outlier["onnx"], "--reference", outlier["onnx"], "--data", wrong, *FAST)
    assert result.exit_code == 2 and "expects input" in result.stderr
    absent = run_cli("explain", tmp_path / "nope.onnx", "--reference", outlier["onnx"], "--data", outlier["npz"])
    assert absent.exit_code == 2
