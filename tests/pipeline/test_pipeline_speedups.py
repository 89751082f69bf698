"""A pipeline's latency: every stage and the reference timed again, interleaved, on this machine; speed-ups only
against the reference on the same backend, batch and threads (an ONNX stage against the reference exported to
ONNX); a cached stage's latency from another machine is re-timed, or marked when re-timing is off."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelpress.pipeline import execute_pipeline, load_spec
from modelpress.reports import load_report

LATENCY = "{{min_calls: 6, min_s: 0, warmup_min_calls: 1, warmup_min_s: 0, rounds: 3, interleaved: {on}}}"


def run(tmp_path: Path, *, interleaved: bool = True, backends: str | None = None):
    """zoo:mlp → ONNX export on iris, evaluated at batch 2 (on ``backends``, a YAML list, when given)."""
    text = textwrap.dedent(f"""\
        name: t
        model: zoo:mlp
        model_kwargs: {{hidden: [8]}}
        data: {{eval: sklearn:iris}}
        stages:
          - {{type: export, exporter: torchscript}}
        evaluate:
          batch_sizes: [2]
          latency: {LATENCY.format(on=str(interleaved).lower())}
        """) + (f"  backends: {backends}\n" if backends else "")
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return execute_pipeline(load_spec(path), out_dir=tmp_path / "out" / "t")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speedups")
    return tmp, run(tmp)


def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["name"], r["backend"]): r for s in report["stages"] for r in s["latency"]}


def test_speedups_compare_like_with_like_and_carry_a_ci_over_rounds(first):
    tmp, outcome = first
    report = load_report(outcome.out_dir)
    got = rows(report)
    assert set(got) == {("00-original", "torch"), ("00-original", "onnxruntime"), ("01-export", "onnxruntime")}
    ref_onnx = got[("00-original", "onnxruntime")]
    assert "exported to ONNX" in ref_onnx["timed_as"] and ref_onnx["speedup"] is None
    speed = got[("01-export", "onnxruntime")]["speedup"]
    assert speed["reference"] == "00-original" and speed["rounds"] == 3
    assert speed["ci_low"] <= speed["ratio"] <= speed["ci_high"]
    # the ratio is of the two onnxruntime rows' medians, never of the torch row
    assert speed["ratio"] == pytest.approx(ref_onnx["median_ms"] / got[("01-export", "onnxruntime")]["median_ms"])
    for row in got.values():
        assert row["timing"] == "interleaved" and row["rounds"] == 3 and row["n"] == 6
        assert row["machine_id"] == report["run"]["machine_id"]
        lo, hi = row["median_ci_ms"]
        assert lo <= row["median_ms"] <= hi
    timing = report["pipeline"]["latency"]
    assert timing["timing"] == "interleaved" and timing["reference"] == "00-original"
    assert "measured in this run on this machine" in timing["note"]
    with np.load(outcome.out_dir / "predictions.npz") as npz:
        assert npz["latency_ms::00-original::onnxruntime::b2"].shape == (6,)
    md = (outcome.out_dir / "report.md").read_text(encoding="utf-8")
    assert "measured in this run on this machine" in md and "×" in md.split("01-export", 1)[1]


def test_cached_latency_from_another_machine_is_marked_or_retimed(first):
    tmp, _ = first
    out = tmp / "out" / "t"
    run(tmp, interleaved=False)  # evaluation rows, no speed-ups
    stage_json = out / "stages" / "01-export" / "stage.json"
    record = json.loads(stage_json.read_text(encoding="utf-8"))
    for row in record["stage"]["latency"]:
        row["machine_id"] = "0ther0machine"  # as if the cache had been made on another CPU
    stage_json.write_text(json.dumps(record), encoding="utf-8")

    kept = run(tmp, interleaved=False)
    assert {s.name: s.status for s in kept.stages} == {"00-original": "cached", "01-export": "cached"}
    report = load_report(out)
    row = rows(report)[("01-export", "onnxruntime")]
    assert row["timing"] == "at evaluation" and row["speedup"] is None
    assert "0ther0machine" in row["machine_note"] and "not re-timed" in row["machine_note"]
    assert any("another machine" in n for n in report["stages"][1]["notes"])
    assert rows(report)[("00-original", "torch")].get("machine_note") is None  # this machine's own row
    assert "(other machine)" in (out / "report.md").read_text(encoding="utf-8")

    retimed = run(tmp, interleaved=True)
    assert {s.name: s.status for s in retimed.stages} == {"00-original": "re-evaluated", "01-export": "re-evaluated"}
    row = rows(load_report(out))[("01-export", "onnxruntime")]
    assert row["machine_id"] == load_report(out)["run"]["machine_id"] and row["timing"] == "interleaved"
    assert "machine_note" not in row and row["speedup"]["reference"] == "00-original"


def test_a_self_timing_device_backend_gets_rows_but_no_speedup(tmp_path, monkeypatch):
    """A backend that times itself (TensorRT's CUDA events) is not interleaved: its hook's rows, no ratio."""
    from modelpress.runtime.latency import summarize_samples
    from modelpress.runtime.sessions import BACKENDS, Backend

    def hook(artifact, batch, *, batch_size, threads, latency):
        samples = np.array([2.0, 2.0, 4.0])
        return [(summarize_samples(samples, batch_size=batch_size, threads=threads, backend="fake-device",
                                   warmup=0), samples)]

    monkeypatch.setattr(BACKENDS, "_entries", dict(BACKENDS._entries))
    BACKENDS.add("fake-device", Backend("fake-device", ("onnx",), BACKENDS.get("onnxruntime").runner, latency=hook))
    outcome = run(tmp_path, backends="[onnxruntime, fake-device]")
    got = rows(outcome.report)
    device = got[("01-export", "fake-device")]
    assert device["median_ms"] == 2.0 and device["speedup"] is None and "on the device" in device["speedup_reason"]
    assert got[("01-export", "onnxruntime")]["speedup"]["reference"] == "00-original"
    assert ("00-original", "fake-device") not in got  # the torch original is not run on the device backend
    assert any("latency on fake-device skipped: it does not run torch models" in n
               for n in outcome.report["stages"][0]["notes"])
