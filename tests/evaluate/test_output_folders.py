"""Where commands write (README "Commands": `--out DIR` is a reports folder, the run goes to DIR/NAME/; `-o PATH` is
the output folder itself), and `compare` / `report` reading a reports folder that holds exactly one run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def two_reports(trained_mlp, tmp_path_factory):
    """Two reports folders, each holding one evaluate run of the same model and data."""
    from modelpress.cli import _State, main

    _, folder = trained_mlp
    root = tmp_path_factory.mktemp("folders")
    for side in ("base", "cand"):
        _State.debug = False
        code = main(["evaluate", str(folder), "--data", "sklearn:digits", "--no-latency", "--name", f"run-{side}",
                     "--out", str(root / side)])
        assert code == 0
    return root


def test_out_is_a_reports_folder_and_o_is_the_folder_itself(trained_mlp, two_reports, run_cli, tmp_path):
    assert sorted(p.name for p in (two_reports / "base").iterdir()) == ["run-base"]
    assert (two_reports / "base" / "run-base" / "report.json").is_file()
    spec = tmp_path / "p.yaml"
    spec.write_text("name: tiny\nmodel: zoo:mlp\nmodel_kwargs: {hidden: [4]}\ndata: {eval: sklearn:iris}\n"
                    "stages: []\nevaluate:\n  batch_sizes: [1]\n"
                    "  latency: {min_calls: 2, min_s: 0, warmup_min_calls: 1, warmup_min_s: 0}\n", encoding="utf-8")
    r = run_cli("run", spec, "--out", tmp_path / "runs", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "runs" / "tiny" / "report.json").is_file()
    _, folder = trained_mlp
    r = run_cli("export", folder, "--format", "onnx", "--no-verify", "-o", tmp_path / "exported")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "exported" / "model.onnx").is_file()


def test_compare_and_report_accept_a_folder_holding_one_run(two_reports, run_cli):
    r = run_cli("compare", two_reports / "base", two_reports / "cand", "--json")
    assert r.exit_code == 0, r.stderr
    sides = json.loads(r.stdout)
    assert sides["baseline"]["source"].endswith("run-base/report.json")
    assert sides["candidate"]["source"].endswith("run-cand/report.json")
    r = run_cli("report", two_reports / "base", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["run"]["name"] == "run-base"


def test_a_folder_holding_several_runs_is_exit_2_listing_them(two_reports, run_cli, tmp_path):
    import shutil

    several = tmp_path / "several"
    for side in ("base", "cand"):
        shutil.copytree(two_reports / side / f"run-{side}", several / f"run-{side}")
    r = run_cli("compare", several, two_reports / "cand")
    assert r.exit_code == 2
    assert f"{several} holds 2 runs (run-base, run-cand); name one: {several / 'run-base'}" in r.stderr
    r = run_cli("report", tmp_path)  # no report and no run folder with one
    assert r.exit_code == 2 and "holds no report.json, and no run folder with one" in r.stderr
