"""The pipeline runner: stage folders, cache hits, partial recomputation, kill-and-resume, optional stages, gates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelpress.errors import InputError
from modelpress.pipeline import execute_pipeline, load_spec
from modelpress.reports import load_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAST_LATENCY = "{min_calls: 5, min_s: 0, warmup_min_calls: 1, warmup_min_s: 0}"


def spec_text(stages: str, *, batch_sizes: str = "[1]", extra: str = "") -> str:
    return textwrap.dedent("""\
        name: t
        model: zoo:mlp
        model_kwargs: {{hidden: [8]}}
        plugins: [mp_test_stages]
        data: {{eval: sklearn:iris}}
        stages:
        {stages}
        evaluate:
          batch_sizes: {batch_sizes}
          latency: {latency}
        """).format(stages=textwrap.indent(textwrap.dedent(stages).strip(), "  "), batch_sizes=batch_sizes,
                    latency=FAST_LATENCY) + extra


@pytest.fixture
def plugin(monkeypatch):
    """The test stages, registered for this test only (other tests iterate over the registry)."""
    monkeypatch.syspath_prepend(str(HERE))
    import mp_test_stages

    mp_test_stages.register()
    yield mp_test_stages
    mp_test_stages.unregister()


def run(tmp_path: Path, text: str, **kwargs):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return execute_pipeline(load_spec(path), out_dir=tmp_path / "out" / "t", **kwargs)


def statuses(outcome) -> dict[str, str]:
    return {s.name: s.status for s in outcome.stages}


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def zeros(stage: dict) -> int:
    return stage["footprint"]["params"] - stage["footprint"]["nonzero_params"]


def counter_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def four_stages(counter: Path, amount: float = 0.5) -> str:
    return f"""
        - type: train
          epochs: 3
        - {{type: mp_test_count, counter: {counter}, label: a}}
        - {{type: prune, method: magnitude, amount: {amount}}}
        - {{type: mp_test_count, counter: {counter}, label: b}}
        """


def test_rerun_is_a_cache_hit_with_an_identical_report(tmp_path, plugin):
    counter = tmp_path / "count.txt"
    first = run(tmp_path, spec_text(four_stages(counter)))
    assert statuses(first) == {"01-train": "ran", "02-mp_test_count": "ran", "03-prune": "ran",
                               "04-mp_test_count": "ran"}
    out = first.out_dir
    assert sorted(p.name for p in (out / "stages").iterdir()) == list(statuses(first))
    assert {"model.safetensors", "manifest.json", "eval.npz", "stage.json"} <= set(os.listdir(out / "stages/03-prune"))
    before = mtimes(out / "stages")
    report = load_report(out)
    assert zeros(report["stages"][2]) == 28  # half of the 4·8 + 8·3 = 56 weights of mlp[8] on iris
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 4 and "03-prune" in html

    second = run(tmp_path, spec_text(four_stages(counter)))
    assert set(statuses(second).values()) == {"cached"}
    assert counter_lines(counter) == ["a", "b"]  # the counting stages ran once, in the first run only
    assert mtimes(out / "stages") == before
    again = load_report(out)["stages"]
    # everything but latency is reused as it was; latency is re-timed in every run, interleaved, on this machine
    assert [{k: v for k, v in s.items() if k != "latency"} for s in again] == \
        [{k: v for k, v in s.items() if k != "latency"} for s in report["stages"]]
    assert all(r["timing"] == "interleaved" for s in again for r in s["latency"])


def test_changed_stage_config_recomputes_that_stage_and_later_ones(tmp_path, plugin):
    counter = tmp_path / "count.txt"
    first = run(tmp_path, spec_text(four_stages(counter, 0.5)))
    before = mtimes(first.out_dir / "stages")
    second = run(tmp_path, spec_text(four_stages(counter, 0.75)))
    assert statuses(second) == {"01-train": "cached", "02-mp_test_count": "cached", "03-prune": "ran",
                                "04-mp_test_count": "ran"}
    assert counter_lines(counter) == ["a", "b", "b"]
    after = mtimes(first.out_dir / "stages")
    for name, mtime in before.items():
        assert (after[name] == mtime) == name.startswith(("01-", "02-")), name
    assert [zeros(s) for s in load_report(first.out_dir)["stages"]] == [0, 0, 42, 42]  # 75 % of 56 weights


def test_changed_evaluation_reevaluates_without_recomputing_and_no_resume_redoes_all(tmp_path, plugin):
    counter = tmp_path / "count.txt"
    run(tmp_path, spec_text(four_stages(counter)))
    second = run(tmp_path, spec_text(four_stages(counter), batch_sizes="[1, 2]"))
    assert set(statuses(second).values()) == {"re-evaluated"}
    assert counter_lines(counter) == ["a", "b"]
    assert all(len(s["latency"]) == 2 for s in load_report(second.out_dir)["stages"])
    again = run(tmp_path, spec_text(four_stages(counter), batch_sizes="[1, 2]"), resume=False)
    assert set(statuses(again).values()) == {"ran"}
    assert counter_lines(counter) == ["a", "b", "a", "b"]


def test_original_is_evaluated_and_is_the_fidelity_reference(tmp_path, plugin, trained_mlp):
    _, folder = trained_mlp
    text = spec_text(f"- {{type: mp_test_count, counter: {tmp_path / 'c.txt'}}}").replace(
        "model: zoo:mlp\nmodel_kwargs: {hidden: [8]}", f"model: {folder}").replace("sklearn:iris", "sklearn:digits")
    outcome = run(tmp_path, text)
    report = load_report(outcome.out_dir)
    assert [s["name"] for s in report["stages"]] == ["00-original", "01-mp_test_count"]
    assert report["stages"][1]["fidelity"]["reference"] == "00-original"
    assert report["stages"][1]["fidelity"]["top1_agreement"] == 1.0
    assert report["stages"][0]["artifact"]["path"] == "stages/00-original/model.safetensors"


def test_optional_stage_is_skipped_and_a_required_one_exits_3(tmp_path, plugin, run_cli):
    counter = tmp_path / "count.txt"
    stages = f"""
        - {{type: train, epochs: 2}}
        - {{type: mp_test_unavailable, optional: true}}
        - {{type: mp_test_count, counter: {counter}}}
        """
    outcome = run(tmp_path, spec_text(stages))
    assert statuses(outcome)["02-mp_test_unavailable"] == "skipped"
    report = load_report(outcome.out_dir)
    assert [s["name"] for s in report["stages"]] == ["01-train", "03-mp_test_count"]
    assert report["pipeline"]["skipped"][0]["name"] == "02-mp_test_unavailable"
    assert any("02-mp_test_unavailable was skipped" in n for n in report["stages"][-1]["notes"])
    assert "was skipped" in (outcome.out_dir / "report.html").read_text(encoding="utf-8")

    path = tmp_path / "required.yaml"
    path.write_text(spec_text(stages.replace(", optional: true", "")), encoding="utf-8")
    result = run_cli("run", path, "--out", tmp_path / "out2")
    assert result.exit_code == 3
    assert "mp_test_unavailable needs a backend" in result.stderr and "Traceback" not in result.stderr


def test_failed_gate_exits_1_after_writing_the_report(tmp_path, plugin, run_cli):
    counter = tmp_path / "count.txt"
    path = tmp_path / "g.yaml"
    path.write_text(spec_text(four_stages(counter), extra="gates:\n  max_size_ratio: 0.01\n  min_fidelity: 0.5\n"),
                    encoding="utf-8")
    result = run_cli("run", path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "max_size_ratio" in result.stderr
    gates = {g["name"]: g for g in load_report(tmp_path / "out" / "t")["stages"][-1]["gates"]}
    assert gates["max_size_ratio"]["passed"] is False and gates["max_size_ratio"]["value"] == pytest.approx(1.0)
    assert gates["min_fidelity"]["passed"] is True
    assert "FAIL" in (tmp_path / "out" / "t" / "report.html").read_text(encoding="utf-8")


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, plugin):
    import fcntl

    out = tmp_path / "out" / "t"
    out.mkdir(parents=True)
    with open(out / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another modelpress run is writing"):
            run(tmp_path, spec_text(four_stages(tmp_path / "c.txt")))


def test_a_foreign_output_folder_is_refused(tmp_path, plugin):
    out = tmp_path / "out" / "t"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="is not a modelpress run folder"):
        run(tmp_path, spec_text(four_stages(tmp_path / "c.txt")))
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


# ---- kill mid-stage, resume ---------------------------------------------------------------------------------------
def kill_spec(tmp_path: Path, marker: Path) -> Path:
    stages = f"""
        - {{type: train, epochs: 3}}
        - {{type: mp_test_pause, marker: {marker}}}
        - {{type: prune, method: magnitude, amount: 0.5}}
        """
    path = tmp_path / "k.yaml"
    path.write_text(spec_text(stages), encoding="utf-8")
    return path


def cli_process(spec: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MODELPRESS_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "modelpress.cli", "run", str(spec), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same pipeline run start to finish in a fresh process: what a resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    marker = tmp / "marker"
    marker.write_text("no pause\n", encoding="utf-8")
    proc = cli_process(kill_spec(tmp, marker), tmp / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return load_report(tmp / "out" / "t")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_to_the_same_report(tmp_path, plugin, uninterrupted, sig):
    marker = tmp_path / "marker"
    spec = kill_spec(tmp_path, marker)
    proc = cli_process(spec, tmp_path / "out")
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the pause stage never started"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    out = tmp_path / "out" / "t"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    interrupted = load_report(out)  # the report written after stage 01: intact and readable
    assert [s["name"] for s in interrupted["stages"]] == ["01-train"]
    assert interrupted["pipeline"]["complete"] is False
    assert sorted(p.name for p in (out / "stages").iterdir()) == [".02-mp_test_pause.partial", "01-train"]
    trained = mtimes(out / "stages" / "01-train")

    resumed = execute_pipeline(load_spec(spec), out_dir=out)
    assert statuses(resumed) == {"01-train": "cached", "02-mp_test_pause": "ran", "03-prune": "ran"}
    assert mtimes(out / "stages" / "01-train") == trained
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["01-train", "02-mp_test_pause", "03-prune"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    final = load_report(out)
    assert final["pipeline"]["complete"] is True
    for got, want in zip(final["stages"], uninterrupted["stages"], strict=True):
        assert got["name"] == want["name"]
        assert got["artifact"]["sha256"] == want["artifact"]["sha256"]
        for key in ("accuracy", "f1_macro", "roc_auc", "confusion_matrix"):
            assert got["metrics"][key] == want["metrics"][key], (got["name"], key)
        assert (got["fidelity"] or {}).get("top1_agreement") == (want["fidelity"] or {}).get("top1_agreement")
    assert json.loads((out / "report.json").read_text())["stages"][-1]["name"] == "03-prune"
