"""SIGINT and SIGKILL at random points of ``modelpress run``, and a full disk: nothing readable is ever lost.

After every kill the previous report.json must still load, and a final uninterrupted resume must produce the same
metrics and artifacts as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpress.reports import load_report

SPEC = """\
name: tiny
model: zoo:mlp
model_kwargs: {hidden: [16]}
data: {eval: sklearn:iris}
stages:
  - type: train
    epochs: 40
    lr: 0.01
  - type: prune
    method: magnitude
    amount: 0.5
  - type: export
evaluate:
  batch_sizes: [1]
  latency: {warmup_min_calls: 2, warmup_min_s: 0.0, min_calls: 20, min_s: 0.05}
"""


def _run(spec: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "MODELPRESS_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "modelpress.cli", "run", str(spec), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=spec.parent)


def _metrics(report: dict) -> list[tuple]:
    return [(s["name"], s["metrics"]["accuracy"], s["metrics"]["f1_macro"], s["artifact"]["sha256"])
            for s in report["stages"]]


@pytest.mark.slow
def test_random_sigint_and_sigkill_never_lose_results(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    reference = _run(spec, tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    expected = _metrics(load_report(tmp_path / "ref" / "tiny"))

    rng = random.Random(1234)
    run_dir = tmp_path / "runs" / "tiny"
    kills = attempts = completed = 0
    while kills < 20 and attempts < 80:
        attempts += 1
        proc = _run(spec, tmp_path / "runs")
        time.sleep(rng.uniform(0.2, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if kills % 2 else signal.SIGKILL)
            kills += 1
            proc.wait(timeout=120)
        else:  # the resumed run finished before the kill: check it, then start over to kill it elsewhere
            assert proc.returncode == 0, proc.stderr.read().decode()
            assert _metrics(load_report(run_dir)) == expected
            completed += 1
            shutil.rmtree(run_dir)
        if (run_dir / "report.json").exists():
            load_report(run_dir)  # the report is always readable: either the previous one or a complete new one
    assert kills >= 20
    final = _run(spec, tmp_path / "runs")
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    assert _metrics(load_report(run_dir)) == expected
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]
    assert leftovers == []


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def test_full_disk_keeps_earlier_results_and_says_so(tmp_path, run_cli, trained_mlp):
    """A report written earlier survives a later run that runs out of space; the error names the file."""
    _, folder = trained_mlp
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "400k"):
        pytest.skip("needs root and tmpfs to simulate a full disk (mount -t tmpfs failed)")
    try:
        first = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--out", disk, "--name", "r")
        assert first.exit_code == 0, first.stderr
        before = (disk / "r" / "report.json").read_bytes()
        (disk / "filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 4096))
        second = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--out", disk, "--name", "r",
                         "--force")
        assert second.exit_code != 0
        assert "no space left writing" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert (disk / "r" / "report.json").read_bytes() == before
        json.loads(before)
        assert not [p for p in (disk / "r").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
