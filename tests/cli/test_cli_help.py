"""Smoke: the group's and every command's --help work, in-process and as ``python -m modelpress.cli``; the
click-free floors stay click-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelpress.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_group_help_lists_every_command(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0
    for name in cli.commands:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_command_help(run_cli, name):
    result = run_cli(name, "--help")
    assert result.exit_code == 0 and "Usage: modelpress " + name in result.stdout


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "modelpress.cli", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "Usage: modelpress" in done.stdout, done.stderr[-2000:]


def test_nothing_below_cli_imports_click():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "modelpress").rglob("*.py")
                 if "cli" not in p.relative_to(ROOT / "modelpress").parts[:1]
                 and any(line.strip().startswith(("import click", "from click"))
                         for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []


@pytest.mark.parametrize(("argv", "missing"), [
    (("prune", "zoo:mlp", "--data", "sklearn:iris", "--amount", "0.5"), "--method"),
    (("distill", "--teacher", "zoo:mlp", "--data", "sklearn:iris"), "--student"),
])
def test_a_missing_required_config_option_is_named(run_cli, tmp_path, argv, missing):
    """A field a command requires although its config has a default (prune --method) is click's "Missing option",
    not the config's "must be one of …, got None" (click ≥ 8.2 takes an explicit default=None as a value)."""
    result = run_cli(*argv, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert f"Missing option '{missing}'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
