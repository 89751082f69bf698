"""Every file modelpress writes follows the umask, like ``open()`` does (0644 under 022, 0600 under 077).

``mkstemp`` / ``mkdtemp`` create 0600 / 0700 and that mode used to survive the rename: report.json was owner-only
while model.onnx was 0644, so a CI artifact upload or a server running as another user could not read it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelpress import io as mpio
from modelpress.cli import cli

UMASKS = [pytest.param(0o022, id="umask022"), pytest.param(0o077, id="umask077")]
FAST_LATENCY = "{min_calls: 3, min_s: 0, warmup_min_calls: 1, warmup_min_s: 0}"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of every file and folder under ``root`` (root included), by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_modes(root: Path, mask: int, *, expect: set[str]) -> None:
    """Files are 0o666 & ~mask, folders 0o777 & ~mask; ``expect`` names files that must be among them."""
    found = modes(root)
    assert expect <= set(found), f"missing {sorted(expect - set(found))} under {root}: {sorted(found)}"
    wrong = {}
    for rel, mode in found.items():
        want = (0o777 if (root / rel).is_dir() else 0o666) & ~mask
        if mode != want:
            wrong[rel] = f"{mode:04o} != {want:04o}"
    assert not wrong, f"under umask {mask:03o}: {wrong}"


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ---- the atomic writer ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", UMASKS)
def test_atomic_write_follows_umask_on_create_and_on_replace(tmp_path, mask):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)  # a replaced file gets the umask's mode, not the old file's nor mkstemp's 0600
    with umask(mask):
        mpio.write_json(target, {"a": 1})
        mpio.write_bytes(tmp_path / "new.bin", b"\x00")
        assert mpio.current_umask() == mask  # reading it does not change it
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o666 & ~mask
    assert target.read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'


def test_current_umask_without_proc_uses_the_round_trip(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    with umask(0o027):
        assert mpio.current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # restored after the read


def test_atomic_write_failure_leaves_old_file_and_its_mode(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)
    with umask(0o022), pytest.raises(RuntimeError, match="boom"), mpio.atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_make_temp_dir_follows_umask(tmp_path):
    with umask(0o022):
        folder = mpio.make_temp_dir(tmp_path, prefix=".x.")
    assert folder.parent == tmp_path and folder.name.startswith(".x.") and folder.name.endswith(mpio.TMP_SUFFIX)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


# ---- real commands --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", UMASKS)
def test_export_evaluate_report_outputs_follow_umask(tmp_path, monkeypatch, mask):
    monkeypatch.chdir(tmp_path)
    with umask(mask):
        invoke(["export", "zoo:mlp", "--data", "sklearn:iris", "-o", "exp"])
        invoke(["evaluate", "exp", "--data", "sklearn:iris", "--out", "ev", "--batch-size", "1"])
        (report_dir,) = [p.parent for p in Path("ev").rglob("report.json")]
        invoke(["report", str(report_dir), "--format", "html", "-o", "ev/page.html"])
    assert_modes(tmp_path / "exp", mask, expect={"manifest.json", "model.onnx"})
    rel = str(report_dir.relative_to("ev"))
    assert_modes(tmp_path / "ev", mask, expect={f"{rel}/report.json", f"{rel}/report.md", f"{rel}/predictions.npz",
                                                "page.html"})


def test_pipeline_run_outputs_follow_umask(tmp_path, monkeypatch):
    """``run`` writes stage.json, eval.npz, model files and the reports; under 077 all are owner-only, no more."""
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(textwrap.dedent(f"""\
        name: perm
        model: zoo:mlp
        model_kwargs: {{hidden: [8]}}
        data: {{eval: sklearn:iris}}
        stages:
          - {{type: prune, method: magnitude, amount: 0.5}}
        evaluate:
          batch_sizes: [1]
          latency: {FAST_LATENCY}
        """), encoding="utf-8")
    with umask(0o027):
        invoke(["run", "p.yaml", "--out", "runs", "--quiet"])
    assert_modes(tmp_path / "runs" / "perm", 0o027, expect={
        "report.json", "report.md", "report.html", "predictions.npz",
        "stages/00-original/stage.json", "stages/00-original/eval.npz", "stages/00-original/manifest.json",
        "stages/01-prune/model.safetensors", "stages/01-prune/stage.json", "stages/01-prune/eval.npz"})
