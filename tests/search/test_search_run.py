"""Running searches: shared stage store, resume, retry-then-fail, exit 1 naming the closest trial, best.yaml."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

from modelpress.cli import main
from modelpress.pipeline import load_spec
from modelpress.search import load_search
from modelpress.errors import GateFailed
from modelpress.search.execute import SearchResult, _task, run_search, run_trial
from modelpress.search.report import finalize

from .conftest import search_yaml


def test_search_shares_stages_and_writes_a_runnable_best(write_search, tmp_path):
    # the bound makes amount 0.25 infeasible: 16 hidden units x (4 in + 3 out) = 112 weights + 19 biases = 131
    # params; magnitude pruning of 0.25 keeps more than 100 non-zero, 0.5 and 0.75 keep fewer
    path = write_search(search_yaml(extra="constraints:\n  footprint.nonzero_params: {max: 100}\n"))
    spec = load_search(path)
    result = run_search(spec, out=tmp_path / "out", workers=2)
    assert [t["id"] for t in result.trials] == ["t000", "t001", "t002"] and result.resumed == 0
    # 3 trials x 2 stages (original, prune): the original's stage is shared, computed once, copied twice
    assert result.stage_counts == {"stage_runs": 4, "stages_from_store": 2}
    statuses = {t["params"]["stages.prune.amount"]: t["status"] for t in result.trials}
    assert statuses == {0.25: "infeasible", 0.5: "ok", 0.75: "ok"}
    summary = finalize(spec, result, rounds=2)
    feasible = [t for t in result.trials if t["status"] == "ok"]
    assert summary["best"] in {t["id"] for t in feasible}
    assert set(summary["screening_front"]) <= {t["id"] for t in feasible}
    best = next(t for t in result.trials if t["id"] == summary["best"])
    # best.yaml reloads through the pipeline loader with the winning values
    reloaded = load_spec(result.folder / "best.yaml")
    assert reloaded.stages[0].amount == best["params"]["stages.prune.amount"]
    assert reloaded.gates == {} and reloaded.name == "tiny-best"
    assert "<script" not in (result.folder / "summary.html").read_text()
    # each trial is a run folder: compare works between two of them
    rc = main(["compare", str(result.folder / "trials" / "t001"), str(result.folder / "trials" / "t002")])
    assert rc == 0


def test_no_trial_meets_the_constraints_exit_1_naming_the_closest(write_search, tmp_path):
    # finished trials as the ledger records them (no run needed): every one infeasible; the closest is the one with
    # the smallest relative violation (t001: accuracy 0.9 vs min 0.95 → 0.053; t000: 0.8 → 0.158)
    spec = load_search(write_search(search_yaml(extra="constraints:\n  metrics.accuracy: {min: 0.95}\n")))
    folder = tmp_path / "s"
    folder.mkdir()
    trials = [{"id": "t000", "params": {"stages.prune.amount": 0.75}, "status": "infeasible", "violation": 0.158,
               "violations": ["metrics.accuracy 0.8 < 0.95"], "objective_values": [0.8, 50], "intervals": [[0.7, 0.9],
               [50, 50]]},
              {"id": "t001", "params": {"stages.prune.amount": 0.25}, "status": "infeasible", "violation": 0.053,
               "violations": ["metrics.accuracy 0.9 < 0.95"], "objective_values": [0.9, 100],
               "intervals": [[0.8, 0.95], [100, 100]]},
              {"id": "t002", "params": {"stages.prune.amount": 0.5}, "status": "failed", "error": "boom"}]
    with pytest.raises(GateFailed) as info:
        finalize(spec, SearchResult(folder, trials))
    assert info.value.exit_code == 1
    assert info.value.format_message().startswith(
        "no trial meets the constraints; closest: t001 (prune.amount=0.25): metrics.accuracy 0.9 < 0.95")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best"] is None and summary["closest"]["id"] == "t001" and not (folder / "best.yaml").exists()
    assert summary["counts"] == {"ok": 0, "infeasible": 2, "failed": 1}


def _race(args: tuple[dict, str]) -> dict:
    task, marker = args
    return run_trial(task)


def test_two_workers_racing_on_the_same_prefix_compute_it_once(write_search, tmp_path):
    spec = load_search(write_search(search_yaml()))
    folder = tmp_path / "s"
    (folder / "trials").mkdir(parents=True)
    tasks = [_task(spec, folder, f"t00{i}", {"stages.prune.amount": 0.5}) for i in range(2)]
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_race, [(t, "") for t in tasks])
    assert [r["status"] for r in results] == ["ok", "ok"]
    # the same two stages: one worker computed each (holding the key's lock), the other copied it
    assert sum(r["stage_runs"] for r in results) == 2 and sum(r["store_hits"] for r in results) == 2
    entries = [p for p in (folder / "store").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2
    reports = [json.loads((Path(t["run_dir"]) / "report.json").read_text()) for t in tasks]
    assert reports[0]["stages"][-1]["metrics"] == reports[1]["stages"][-1]["metrics"]


PLUGIN = '''
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from modelpress.compress.registry import StageConfig, register_stage
from modelpress.config import Checked, Options, option


@dataclass(frozen=True)
class DieConfig(Checked, StageConfig):
    """Kills its worker process: always, once (a marker file remembers), or never."""

    kind: ClassVar[str] = "die_test"
    mode: str = option("never", Options(("never", "once", "always")), help="When to die.")
    marker: str = option("", help="Marker file of mode once.")


@register_stage(DieConfig)
def run_die(artifact, config, ctx):
    if config.mode == "always" or (config.mode == "once" and not Path(config.marker).exists()):
        if config.mode == "once":
            Path(config.marker).touch()
        os._exit(17)
    return artifact
'''


@pytest.fixture
def die_plugin(tmp_path, monkeypatch):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "die_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(plugin_dir))  # spawned workers inherit sys.path
    yield
    from modelpress.compress.registry import STAGES

    STAGES.pop("die_test", None)
    sys.modules.pop("die_test_plugin", None)


def test_a_dying_worker_is_retried_once_then_marked_failed(write_search, tmp_path, die_plugin):
    marker = tmp_path / "died-once"
    text = (f"name: s\nbase:\n  name: dying\n  model: zoo:mlp\n  data: {{eval: sklearn:iris}}\n"
            f"  plugins: [die_test_plugin]\n  stages:\n    - {{type: die_test, marker: '{marker}'}}\n"
            f"  evaluate: {{latency: false}}\nspace:\n  stages.die_test.mode: [always, once]\n"
            f"objectives:\n  - maximize: metrics.accuracy\n")
    spec = load_search(write_search(text))
    result = run_search(spec, out=tmp_path / "out", workers=1)
    by_mode = {t["params"]["stages.die_test.mode"]: t for t in result.trials}
    assert by_mode["always"]["status"] == "failed" and by_mode["always"]["attempts"] == 2
    assert "died 2 times" in by_mode["always"]["error"]
    # the search went on: the next trial's worker died once, its retry finished
    assert by_mode["once"]["status"] == "ok" and by_mode["once"]["attempts"] == 2 and marker.exists()


def test_ray_address_that_does_not_answer_is_exit_2_fast(write_search, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'modelpress[ray]')")
    import time

    path = write_search(search_yaml())
    start = time.monotonic()
    rc = main(["search", str(path), "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:9"])
    assert rc == 2 and time.monotonic() - start < 30
    assert "the Ray cluster at 127.0.0.1:9 does not answer" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_local_gives_the_same_front_as_the_pool(write_search, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'modelpress[ray]')")
    spec = load_search(write_search(search_yaml("  stages.prune.amount: [0.25, 0.75]\n",
                                                objectives="  - maximize: metrics.accuracy\n"
                                                           "  - minimize: footprint.nonzero_params\n")))
    pool = run_search(spec, out=tmp_path / "pool", workers=1)
    ray = run_search(spec, out=tmp_path / "ray", workers=2, ray="local")
    strip = [(t["id"], t["params"], t["status"], t["objective_values"]) for t in pool.trials]
    assert [(t["id"], t["params"], t["status"], t["objective_values"]) for t in ray.trials] == strip
    assert finalize(spec, pool)["front"] == finalize(spec, ray)["front"]


def test_a_killed_search_resumes_without_rerunning_finished_trials(write_search, tmp_path):
    import os
    import signal
    import subprocess
    import time

    path = write_search(search_yaml())
    out = tmp_path / "out"
    ledger = out / "s" / "trials.json"
    proc = subprocess.Popen([sys.executable, "-m", "modelpress.cli", "search", str(path), "--out", str(out), "-q"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.is_file() and json.loads(ledger.read_text())["trials"]:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its worker, mid-run
        proc.wait()
    finished = json.loads(ledger.read_text())["trials"]
    assert 1 <= len(finished) <= 3
    result = run_search(load_search(path), out=out, workers=1)
    assert result.resumed == len(finished)
    assert [t["id"] for t in result.trials] == ["t000", "t001", "t002"]
    assert [t for t in result.trials if t["id"] in {f["id"] for f in finished}] == finished  # not rerun
