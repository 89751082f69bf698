"""explain(): recommendations that work when applied, the quantize stage hooks, and the rendered section."""

from __future__ import annotations

import json

import pytest

from modelpress.diagnose import ExplainConfig, explain, layer_errors
from modelpress.errors import InputError
from modelpress.runtime.latency import LatencyConfig

FAST = ExplainConfig(runs=5, warmup=1, samples=64,
                     latency=LatencyConfig(warmup_min_calls=2, warmup_min_s=0.0, min_calls=20, min_s=0.05))


def test_recommendation_applied_improves_fidelity(outlier: dict, quantize_outlier) -> None:
    """The acceptance test: re-quantizing with the recommended nodes kept FP32 recovers the model, and the
    predicted output SQNR is close to what the re-quantized model measures."""
    candidate, _ = quantize_outlier("dynamic")
    result = explain(candidate, outlier["artifact"], outlier["data"], config=FAST,
                     context={"reference_ref": str(outlier["onnx"]), "data_ref": str(outlier["npz"])})
    rec = result["recommendations"][0]
    assert rec["kind"] == "exclude_nodes" and [n[:3] for n in rec["nodes"]] == ["fc2"]
    assert f"--exclude-nodes {rec['nodes'][0]}" in rec["command"]
    assert rec["command"].startswith(f"modelpress quantize {outlier['onnx']} --mode dynamic")
    assert f'exclude_nodes: ["{rec["nodes"][0]}"]' in rec["yaml"]

    fixed, _ = quantize_outlier("dynamic", exclude_nodes=tuple(rec["nodes"]))
    data = outlier["data"].subset(slice(0, 64))
    before = layer_errors(candidate, outlier["artifact"], data)["output"]
    after = layer_errors(fixed, outlier["artifact"], data)["output"]
    assert before["top1_agreement"] < 0.6 and after["top1_agreement"] >= 0.95
    assert after["channel_sqnr_db"] > before["channel_sqnr_db"] + 20
    assert rec["predicted"]["output_channel_sqnr_db"] == pytest.approx(after["channel_sqnr_db"], abs=6)
    assert rec["predicted"]["output_channel_sqnr_db_now"] == pytest.approx(before["channel_sqnr_db"], abs=1)


def test_explain_result_shape(outlier: dict, quantize_outlier) -> None:
    candidate, _ = quantize_outlier("dynamic")
    result = explain(candidate, outlier["artifact"], outlier["data"], config=FAST)
    assert [r["name"] for r in result["latency"]] == ["reference", "reference-fp16", "candidate"]
    assert all(r["batch_size"] == 32 and r["threads"] == 1 for r in result["latency"])
    assert {"ratio", "ci_low", "ci_high"} <= set(result["latency"][0]["speedup"])
    assert result["profile"]["candidate"]["int8_kernels_executed"]  # DynamicQuantizeMatMul after fusion
    assert result["graph"]["dynamic_quantize_nodes"] == 4 and result["graph"]["float_layers"] == []
    top = result["layers"][0]
    assert top["candidate_ms"] is not None and top["reference_ms"] is not None and 0 < top["time_share"] < 1
    json.dumps(result, allow_nan=False)  # report.json is strict JSON


def test_explain_refuses_models_that_do_not_belong_together(outlier: dict, tmp_path, build_mlp) -> None:
    from modelpress.sources import load_model

    other = load_model(str(build_mlp(tmp_path / "five.onnx", dims=[64, 16, 16, 16, 5])), data=outlier["data"])
    with pytest.raises(InputError, match="outputs 5 classes but candidate .* outputs 10"):
        explain(outlier["artifact"], other, outlier["data"], config=FAST)


def test_quantize_stage_explain_option_measures_its_recommendation(quantize_outlier) -> None:
    result, notes = quantize_outlier("static", explain=True)
    explanation = result.metadata["explain"]
    assert explanation["explain_version"] == 1
    rec = explanation["recommendations"][0]
    assert [n[:3] for n in rec["nodes"]] == ["fc1", "fc2"]
    measured = rec["measured"]
    assert measured["top1_agreement_before"] < 0.6 and measured["top1_agreement_after"] >= 0.95
    assert measured["output_sqnr_db_after"] > measured["output_sqnr_db_before"] + 20
    assert any(n.startswith("explain recommends: keep in FP32: fc1") for n in notes)
    assert any(n.startswith("explain: layers adding the most error: fc1") for n in notes)


def test_accuracy_search_uses_the_layer_error_ranking(quantize_outlier) -> None:
    """One ranking for explain and the accuracy-aware mode: the QDQ pair (fc1, fc2) is found in 3 builds,
    where one-node-at-a-time sensitivity cannot see that the two only help together."""
    result, notes = quantize_outlier("static", accuracy_tolerance=0.05, sensitivity="layer_error")
    search = result.metadata["quantization"]["accuracy_search"]
    assert search["met"] and search["builds"] == 3
    assert [n[:3] for n in result.metadata["quantization"]["excluded_nodes"]["accuracy"]] == ["fc1", "fc2"]
    assert any("ranked 1 by layer error" in n for n in notes)


def test_sensitivity_value_is_validated() -> None:
    from modelpress.compress.registry import config_for

    with pytest.raises(InputError, match="sensitivity"):
        config_for("quantize", {"sensitivity": "random"})


def test_report_renders_explain_section_escaped(outlier: dict, quantize_outlier) -> None:
    from modelpress.reports.explain_md import explain_markdown
    from modelpress.reports.html import render_html
    from modelpress.reports import render_markdown

    candidate, _ = quantize_outlier("dynamic")
    result = explain(candidate, outlier["artifact"], outlier["data"], config=FAST)
    result["layers"][0]["exclude_name"] = "fc|2 <script>"
    result["recommendations"][0]["command"] = "modelpress quantize `rm` x"
    text = explain_markdown(result)
    assert "fc\\|2 &lt;script&gt;" in text and "<script>" not in text
    assert "`rm`" not in text and "'rm'" in text
    for row in (line for line in text.splitlines() if line.startswith("| 1 |")):
        assert row.count(" | ") == 11  # twelve cells: the escaped pipe did not add a column
    report = {"schema_version": 1, "run": {"name": "r", "created": "now"},
              "data": {"source": "d", "n_samples": 1, "n_classes": 10},
              "stages": [{"name": "candidate", "kind": "explain", "params": {}, "artifact": None, "metrics": None,
                          "fidelity": None, "latency": [], "footprint": None, "gates": [], "explain": result}]}
    assert "### Explain: why it is slow or inaccurate" in render_markdown(report)
    html = render_html(report, with_plots=False)
    assert "fc|2 &lt;script&gt;" in html and "<script>" not in html.split("<body>", 1)[1]
    assert "Where the error comes from" in html


def test_explain_torch_candidate_against_torch_reference(digits) -> None:
    from modelpress.compress.quantize_torch import run_torch_dynamic
    from modelpress.sources import load_model

    reference = load_model("zoo:mlp", data=digits[1], kwargs={"hidden": [64]})
    candidate = run_torch_dynamic(reference, engine="x86", notes=[])
    result = explain(candidate, reference, digits[1], config=FAST)
    assert result["profile"]["candidate"]["backend"] == "torch"
    assert result["errors"]["method"] == "torch-hooks"
    assert {lay["precision"] for lay in result["layers"]} == {"int8"}
    assert all(lay["candidate_ms"] is not None and lay["reference_ms"] is not None for lay in result["layers"])
    assert [r["name"] for r in result["latency"]] == ["reference", "candidate"]
    assert "no FP16 baseline: it is made from an ONNX reference" in result["notes"]
    assert result["graph"] is None
