"""`modelpress demo` runs the bundled examples/digits.yaml end to end."""

from __future__ import annotations

import pytest

from modelpress.compress.registry import STAGES
from modelpress.reports import load_report


@pytest.mark.slow
def test_demo_completes_and_passes_its_gates(tmp_path, run_cli):
    result = run_cli("demo", "--out", tmp_path)
    assert result.exit_code == 0, result.stderr
    report = load_report(tmp_path / "demo")
    names = [s["name"] for s in report["stages"]]
    assert names == report["pipeline"]["stages_planned"] and names[0] == "01-train"  # every stage ran
    assert {n.split("-", 1)[1] for n in names} <= set(STAGES.names())
    export = next(s for s in report["stages"] if s["kind"] == "export")
    assert export["artifact"]["format"] == "onnx" and export["verification"]["passed"] is True
    final = report["stages"][-1]
    assert final["metrics"]["accuracy"] > 0.9
    assert final["gates"] and all(g["passed"] for g in final["gates"])
    assert report["pipeline"]["complete"] is True
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000  # table + embedded plots
    assert "01-train" in result.stdout and "report: " in result.stderr
