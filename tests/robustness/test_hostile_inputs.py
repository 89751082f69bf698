"""Hostile and broken inputs through the CLI: one line, exit 2 (or 1 for a gate), nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch


def _one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_onnx_model_with_input_the_data_does_not_fit(run_cli, trained_mlp, tmp_path):
    _, folder = trained_mlp
    assert run_cli("export", folder, "--data", "sklearn:digits", "-o", tmp_path / "onnx").exit_code == 0
    r = run_cli("evaluate", tmp_path / "onnx" / "model.onnx", "--data", "sklearn:iris", "--no-latency",
                "--out", tmp_path / "rep")
    _one_line(r, 2, "expects input 'input' of shape (N, 64) float32, got shape (1, 4) float32")
    assert not (tmp_path / "rep").exists()


def test_state_dict_with_wrong_dtypes(run_cli, tmp_path):
    from safetensors.torch import save_file

    from modelpress.data import load_data
    from modelpress.sources import load_model

    module = load_model("zoo:mlp", data=load_data("sklearn:iris"), kwargs={"hidden": [8]}).module
    save_file({k: v.to(torch.int32) for k, v in module.state_dict().items()}, tmp_path / "w.safetensors")
    r = run_cli("evaluate", f"zoo:mlp@{tmp_path / 'w.safetensors'}", "--data", "sklearn:iris", "--no-latency")
    assert r.exit_code == 2
    assert "dtype" in r.stderr and "torch.int32" in r.stderr


def _module_file(tmp_path, body: str) -> str:
    pkg = tmp_path / "hostile_mods"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    return "hostile_mods.m"


def test_factory_that_raises_and_model_with_wrong_output_shape(run_cli, tmp_path, monkeypatch):
    mod = _module_file(tmp_path, """
        import torch
        def broken():
            raise RuntimeError("boom at build time")
        def two_outputs():
            return torch.nn.Linear(4, 2)
        def crashes():
            return torch.nn.Linear(7, 3)
    """)
    try:
        r = run_cli("evaluate", f"{mod}:broken", "--data", "sklearn:iris", "--no-latency")
        _one_line(r, 2, "model factory hostile_mods.m:broken raised RuntimeError: boom at build time")
        r = run_cli("evaluate", f"{mod}:two_outputs", "--data", "sklearn:iris", "--no-latency")
        _one_line(r, 2, "data sklearn:iris has 12 of 38 labels ≥ 2 (up to 2) but model hostile_mods.m:two_outputs")
        r = run_cli("evaluate", f"{mod}:crashes", "--data", "sklearn:iris", "--no-latency")
        _one_line(r, 2, "model hostile_mods.m:crashes failed on a batch of input (38, 4) float32: RuntimeError: mat1")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("hostile_mods.m", None)
        sys.modules.pop("hostile_mods", None)


def test_spec_with_module_that_raises_runs_nothing(run_cli, tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\nmodel: nosuch_pkg_zz.models:make\ndata: {eval: sklearn:iris}\nstages:\n  - type: export\n")
    r = run_cli("run", tmp_path / "p.yaml", "--out", tmp_path / "out")
    assert r.exit_code == 2, r.stderr
    assert "nosuch_pkg_zz" in r.stderr
    assert not (tmp_path / "out" / "p" / "report.json").exists()


@pytest.mark.parametrize("doc, text", [
    ("name: !!python/object/apply:os.system ['touch /tmp/mp-yaml-pwned']\nmodel: zoo:mlp\n", "python"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n", ""),
], ids=["python-tag", "alias-bomb"])
def test_hostile_yaml_is_refused_quickly(run_cli, tmp_path, doc, text):
    (tmp_path / "evil.yaml").write_text(doc)
    r = run_cli("run", tmp_path / "evil.yaml", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert text in r.stderr
    assert not list((tmp_path / "out").rglob("report.json")) if (tmp_path / "out").exists() else True
    import os

    assert not os.path.exists("/tmp/mp-yaml-pwned")


def test_one_class_only_reports_null_auc_with_reason(run_cli, tmp_path, trained_mlp):
    _, folder = trained_mlp
    from modelpress.data import load_data

    test = load_data("sklearn:digits")
    keep = test.y == 3
    np.savez(tmp_path / "threes.npz", x=test.inputs["input"][keep], y=test.y[keep],
             class_names=np.array([str(i) for i in range(10)]))
    r = run_cli("evaluate", folder, "--data", f"{tmp_path / 'threes.npz'}#all", "--no-latency", "--json",
                "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["roc_auc"] is None and "only one class" in metrics["roc_auc_reason"]
    assert metrics["accuracy"] > 0.5


@pytest.mark.slow
def test_a_million_rows_evaluate_in_bounded_memory(tmp_path):
    """Predictions stream in batches: peak memory stays far below what holding per-batch copies would need."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1_000_000, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "big.npz", x=x, y=y)
    code = textwrap.dedent(f"""
        import resource, json
        from modelpress.data import load_data
        from modelpress.sources import load_model
        from modelpress.evaluate.evaluator import EvalConfig, evaluate
        data = load_data({str(tmp_path / 'big.npz')!r}, split="all")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = load_model("zoo:mlp", data=data, kwargs={{"hidden": [8]}})
        result = evaluate(model, data, config=EvalConfig(measure_latency=False, predict_batch_size=4096))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"growth_kb": peak - base, "n": result.metrics["n_samples"]}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["n"] == 1_000_000
    # 1e6 × 2 logits (float32) + probabilities/log-probabilities (float64) ≈ 60 MB; metrics copies add a few more.
    assert out["growth_kb"] < 400_000, out
