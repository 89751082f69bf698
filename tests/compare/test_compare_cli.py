"""``modelpress compare``: exit codes, one-line errors, output files, and two real runs end to end."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from modelpress.reports import load_report


def test_pass_exits_0_and_prints_markdown(pair, run_cli, tmp_path: Path) -> None:
    base, cand = pair(to_wrong=6, to_right=4)
    result = run_cli("compare", base.folder, cand.folder, "--max-accuracy-drop", "1", "--max-f1-drop", "1",
                     "--bootstrap", "200")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# modelpress compare: baseline (02-quantize) → candidate (02-quantize)")
    assert "**Result: passed**: all 2 gates passed." in result.stdout
    assert result.stderr.strip() == "compare: all 2 gates passed"


def test_regression_exits_1_with_one_line_and_writes_outputs(pair, run_cli, tmp_path: Path) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    junit, md = tmp_path / "ci" / "gates.xml", tmp_path / "ci" / "summary.md"
    result = run_cli("compare", base.folder / "report.json", cand.folder, "--max-accuracy-drop", "1",
                     "--junit", junit, "--markdown", md)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 1 of 1 gates failed: max_accuracy_drop: accuracy ")
    assert "McNemar exact p = " in lines[0] and "Traceback" not in result.stderr
    assert ET.parse(junit).getroot().get("failures") == "1"
    assert md.read_text(encoding="utf-8") == result.stdout
    assert not list((tmp_path / "ci").glob(".*.tmp"))


def test_json_output(pair, run_cli) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    result = run_cli("compare", base.folder, cand.folder, "--max-accuracy-drop", "5%", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["gates"][0]["name"] == "max_accuracy_drop"
    assert data["gates"][0]["threshold"] == pytest.approx(0.05 * 100 * data["paired"]["baseline_accuracy"])


@pytest.mark.parametrize(("args", "message"), [
    (["--max-accuracy-drop", "abc"], "error: max_accuracy_drop = 'abc' is not a threshold; use percentage points"),
    (["--alpha", "2"], "error: alpha = 2.0 is out of range; allowed: 0 < alpha < 1"),
    (["--max-latency-ratio", "x"], "error: Invalid value for '--max-latency-ratio'"),
    (["--candidate-stage", "99-nope"], "has no stage '99-nope'; --candidate-stage is one of"),
])
def test_bad_options_exit_2(pair, run_cli, args: list[str], message: str) -> None:
    base, cand = pair()
    result = run_cli("compare", base.folder, cand.folder, *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_mismatched_reports_exit_2(pair, run_cli, tmp_path: Path) -> None:
    base, cand = pair()
    report = load_report(cand.folder)
    report["data"]["sha256"] = "ee" * 32
    (cand.folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    result = run_cli("compare", base.folder, cand.folder, "--max-accuracy-drop", "1")
    assert result.exit_code == 2
    assert "error: reports differ in data sha256: abababababab… in " in result.stderr
    assert "; compare runs evaluated on the same data" in result.stderr

    missing = run_cli("compare", base.folder, tmp_path / "nowhere")
    assert missing.exit_code == 2 and "nowhere does not exist; pass a report.json or the folder" in missing.stderr


def test_outputs_may_not_overwrite_inputs(pair, run_cli) -> None:
    base, cand = pair()
    before = (cand.folder / "predictions.npz").read_bytes()
    result = run_cli("compare", base.folder, cand.folder, "--junit", cand.folder / "predictions.npz")
    assert result.exit_code == 2 and "is one of the compared reports' files" in result.stderr
    assert (cand.folder / "predictions.npz").read_bytes() == before
    folder = run_cli("compare", base.folder, cand.folder, "--markdown", cand.folder)
    assert folder.exit_code == 2 and "is a folder" in folder.stderr


def test_latency_on_other_hardware_warns_and_passes(pair, run_cli) -> None:
    rng = np.random.default_rng(0)
    base, cand = pair(baseline_latency_ms=rng.lognormal(0.7, 0.05, 200), latency_ms=rng.lognormal(1.0, 0.05, 200),
                      run={"threads": 8})
    result = run_cli("compare", base.folder, cand.folder, "--max-latency-ratio", "1.1")
    assert result.exit_code == 0 and "1 skipped" in result.stderr
    assert "latency is not comparable between these runs (threads 1 vs 8)" in result.stdout
    forced = run_cli("compare", base.folder, cand.folder, "--max-latency-ratio", "1.1", "--force-latency")
    assert forced.exit_code == 1 and "max_latency_ratio[onnxruntime b=1]" in forced.stderr


@pytest.mark.slow
def test_two_real_runs_of_one_model_pass(trained_mlp, run_cli, tmp_path: Path) -> None:
    """Evaluate one trained model twice (real predictions and latency samples), then gate the pair."""
    _, folder = trained_mlp
    for name in ("base", "cand"):
        done = run_cli("evaluate", folder, "--data", "sklearn:digits", "--batch-size", "1", "--out", tmp_path,
                       "--name", name)
        assert done.exit_code == 0, done.stderr
    junit = tmp_path / "gates.xml"
    result = run_cli("compare", tmp_path / "base", tmp_path / "cand", "--max-accuracy-drop", "0",
                     "--max-f1-drop", "0", "--max-auc-drop", "0", "--min-fidelity", "1", "--max-size-ratio", "1",
                     "--max-latency-ratio", "10", "--junit", junit, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["latency_comparable"] is True
    assert data["paired"]["n"] == data["data"]["n_samples"] > 100 and data["paired"]["top1_agreement"] == 1.0
    by_name = {g["name"]: g for g in data["gates"]}
    assert by_name["max_accuracy_drop"]["value"] == 0 and by_name["max_accuracy_drop"]["p_value"] == 1.0
    latency = by_name["max_latency_ratio[torch b=1]"]
    assert latency["status"] == "passed" and latency["test"] == "bootstrap-median-ratio"
    assert latency["ci_low"] <= latency["value"] <= latency["ci_high"]
    assert ET.parse(junit).getroot().get("tests") == "6"


def test_ci_example_workflow_uses_real_options() -> None:
    """docs/ci-example.yml is valid YAML and its compare / run command lines parse with today's CLI."""
    import shlex

    import yaml

    from modelpress.cli import cli

    doc = yaml.safe_load((Path(__file__).parents[2] / "docs" / "ci-example.yml").read_text(encoding="utf-8"))
    steps = doc["jobs"]["gates"]["steps"]
    commands = [line for step in steps for line in step.get("run", "").replace("\\\n", " ").splitlines()]
    compare_lines = [line for line in commands if line.strip().startswith("modelpress compare")]
    run_lines = [line for line in commands if line.strip().startswith("modelpress run")]
    assert len(compare_lines) == 1 and len(run_lines) == 2
    args = [a.replace("$RUN_NAME", "digits") for a in shlex.split(compare_lines[0])[2:]]
    ctx = cli.commands["compare"].make_context("compare", args)
    assert ctx.params["junit_path"] == Path("ci/gates.xml") and ctx.params["max_accuracy_drop"] == "1"
    run_args = shlex.split(run_lines[1])[2:]
    assert cli.commands["run"].make_context("run", run_args).params["out"] == Path("ci/head")
    assert any("action-junit-report" in str(step.get("uses")) for step in steps)
