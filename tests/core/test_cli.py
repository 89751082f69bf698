from __future__ import annotations

import json

import pytest

CNN = ["--data", "sklearn:digits"]


def test_evaluate_writes_report_and_prints_table(run_cli, trained_mlp, tmp_path):
    _, folder = trained_mlp
    r = run_cli("evaluate", folder, "--data", "sklearn:digits", "--batch-size", "1", "--no-latency",
                "--out", tmp_path, "--name", "ev")
    assert r.exit_code == 0, r.stderr
    assert "| accuracy" in r.stdout or "accuracy" in r.stdout
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["stages"][0]["metrics"]["accuracy"] > 0.85
    assert (tmp_path / "ev" / "report.md").exists() and (tmp_path / "ev" / "predictions.npz").exists()


def test_evaluate_json_output(run_cli, trained_mlp, tmp_path):
    _, folder = trained_mlp
    r = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--json", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["n_samples"] == 450


def test_export_then_evaluate_with_reference(run_cli, trained_cnn, tmp_path):
    _, folder = trained_cnn
    out = tmp_path / "onnx"
    r = run_cli("export", folder, *CNN, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "verified: max abs diff" in r.stdout
    assert (out / "model.onnx").exists() and (out / "manifest.json").exists()
    r = run_cli("evaluate", out, *CNN, "--reference", folder, "--no-latency", "--json", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    stage = json.loads(r.stdout)
    assert stage["fidelity"]["top1_agreement"] == 1.0
    assert stage["artifact"]["format"] == "onnx"


def test_export_refuses_existing_folder_and_input_as_output(run_cli, trained_cnn, tmp_path):
    _, folder = trained_cnn
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    r = run_cli("export", folder, *CNN, "-o", existing)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: output folder {existing} exists and is not empty; choose another -o or pass --force"]
    assert (existing / "keep.txt").read_text() == "precious"
    r = run_cli("export", folder, *CNN, "-o", folder)
    assert r.exit_code == 2 and "is the input" in r.stderr


def test_export_over_tolerance_exits_1_and_writes_nothing(run_cli, trained_cnn, tmp_path, monkeypatch):
    """onnxruntime's outputs are shifted by 1e-3 (a seam, not luck: exact float agreement would make a zero
    tolerance pass on some machines), so the default 1e-4 tolerance must fail with exit 1."""
    from modelpress.runtime import onnx_export as backends  # the export stage's verification runs its runners

    real = backends.make_runner

    def shifted(artifact, backend, **kw):
        runner = real(artifact, backend, **kw)
        if backend == "onnxruntime":
            call = runner.call
            runner.call = lambda batch: call(batch) + 1e-3
        return runner

    monkeypatch.setattr(backends, "make_runner", shifted)
    _, folder = trained_cnn
    out = tmp_path / "strict"
    r = run_cli("export", folder, *CNN, "-o", out)
    assert r.exit_code == 1, r.stderr
    assert "ONNX outputs differ from torch: max abs diff 0.001 > tolerance (atol 0.0001, rtol 0.0001)" in r.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("args, code, message", [
    (["evaluate", "zoo:resnet", "--data", "sklearn:digits"], 2, "error: unknown zoo model 'resnet'"),
    (["evaluate", "zoo:mlp", "--data", "missing.npz"], 2, "error: data file missing.npz does not exist"),
    (["evaluate", "nosuchpkg.mod:make", "--data", "sklearn:iris"], 2, "error: cannot import 'nosuchpkg.mod'"),
    (["evaluate", "zoo:mlp"], 2, "error: Missing option '--data'"),
    (["evaluate", "zoo:mlp", "--data", "sklearn:iris", "--backend", "tensorrt"], 3,
     "error: backend tensorrt needs the TensorRT Python package"),
    (["export", "zoo:mlp", "--data", "sklearn:iris", "--format", "tensorrt", "-o", "{tmp}/t"], 3,
     "error: export --format tensorrt needs TensorRT"),
    (["report", "{tmp}/nothing"], 2, "error: {tmp}/nothing does not exist"),
    (["frobnicate"], 2, "error: No such command 'frobnicate'"),
])
def test_errors_are_one_line_with_exit_code(run_cli, tmp_path, args, code, message):
    r = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(message.replace("{tmp}", str(tmp_path)))
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback(run_cli):
    r = run_cli("--debug", "evaluate", "zoo:resnet", "--data", "sklearn:digits")
    assert r.exit_code == 2
    assert "Traceback" in r.stderr


def test_report_command_renders_md_and_json(run_cli, trained_mlp, tmp_path):
    _, folder = trained_mlp
    assert run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--out", tmp_path,
                   "--name", "r").exit_code == 0
    md = run_cli("report", tmp_path / "r")
    assert md.exit_code == 0 and "# " in md.stdout
    js = run_cli("report", tmp_path / "r" / "report.json", "--format", "json")
    assert json.loads(js.stdout)["run"]["name"] == "r"


def test_every_command_has_help_with_example(run_cli):
    from modelpress.cli import cli

    for name in cli.commands:
        r = run_cli(name, "--help")
        assert r.exit_code == 0
        assert "Example" in r.stdout, name
