"""The measurements through a pipeline: spec keys, report sections, Markdown/HTML/compare, cache, TensorBoard."""

from __future__ import annotations

import json

import pytest

from modelpress.errors import InputError
from modelpress.pipeline import parse_spec

SPEC = """
name: breadth
model: zoo:mlp
model_kwargs: {hidden: [16]}
data: sklearn:digits
tensorboard: true
evaluate:
  latency: false
  knn: 5
  knn_layer: "2"
  noise: [0.5, 2]
stages:
  - type: train
    epochs: 2
    batch_size: 128
  - type: prune
    method: magnitude
    amount: 0.3
  - type: train
    epochs: 1
    lr: 0.001
    batch_size: 256
"""


@pytest.fixture(scope="module")
def breadth_run(tmp_path_factory):
    from modelpress.pipeline import execute_pipeline

    out = tmp_path_factory.mktemp("breadth") / "breadth"
    outcome = execute_pipeline(parse_spec(SPEC), out_dir=out)
    return outcome, out


def test_report_has_cost_knn_and_robustness_per_stage(breadth_run):
    outcome, out = breadth_run
    first, pruned, last = outcome.report["stages"]
    assert first["cost"]["epochs"] == 2 and last["cost"]["epochs"] == 1  # never an earlier stage's cost
    assert pruned["cost"].get("epochs") != 2 and pruned["cost"]["stage_wall_s"] >= 0
    for stage in (first, last):
        cost = stage["cost"]
        assert cost["train_wall_s"] > 0 and cost["stage_wall_s"] >= cost["train_wall_s"]
        assert cost["peak_rss_bytes"] > 0 and len(cost["curves"]["loss"]) == cost["epochs"]
    for stage in (first, pruned, last):
        assert stage["knn"]["layer"] == "2" and 0.5 < stage["knn"]["accuracy"] <= 1
        assert [row["level"] for row in stage["robustness"]["levels"]] == [0.0, 0.5, 2.0]
        assert stage["robustness"]["levels"][0]["accuracy"] == stage["metrics"]["accuracy"]
        assert "memory" not in stage  # off unless asked
    assert "reference" not in first["knn"]  # the trained model is the reference of the stages after it
    for stage in (pruned, last):
        assert stage["knn"]["reference"] == "01-train"
        assert 0.8 < stage["knn"]["reference_cosine_mean"] <= 1 + 1e-6
    saved = json.loads((out / "report.json").read_text())
    assert saved["stages"][1]["knn"] == pruned["knn"]


def test_markdown_html_and_compare_show_the_measurements(breadth_run):
    from modelpress.reports.compare import compare_runs
    from modelpress.reports.compare_md import render_comparison_markdown

    _, out = breadth_run
    md = (out / "report.md").read_text()
    for title in ("## k-NN probe", "## Robustness to noise", "## Cost", "| level 0 (clean) | level 0.5 | level 2 |"):
        assert title in md
    html = (out / "report.html").read_text()
    assert "<h2>k-NN probe</h2>" in html and "<h2>Cost</h2>" in html
    comparison = compare_runs(out, out, baseline_stage="01-train", candidate_stage="03-train")
    keys = {row["key"]: row for row in comparison.rows}
    assert keys["knn_accuracy"]["kind"] == "fraction" and keys["epochs"]["baseline"] == 2
    assert keys["epochs"]["candidate"] == 1 and "accuracy[noise=0.5]" in keys
    assert "| k-NN accuracy |" in render_comparison_markdown(comparison)  # the declared label (metric_schema)


def test_cached_rerun_keeps_the_measurements(breadth_run):
    from modelpress.pipeline import execute_pipeline

    outcome, out = breadth_run
    again = execute_pipeline(parse_spec(SPEC), out_dir=out)
    assert [s.status for s in again.stages] == ["cached", "cached", "cached"]
    for before, after in zip(outcome.report["stages"], again.report["stages"], strict=True):
        for key in ("knn", "robustness", "cost"):
            assert after[key] == before[key]


def test_tensorboard_true_writes_into_the_run_folder(breadth_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome, out = breadth_run
    acc = EventAccumulator(str(out / "tensorboard" / "breadth" / "01-train"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(
        outcome.report["stages"][0]["cost"]["curves"]["loss"])
    assert acc.Scalars("knn/accuracy")[0].value == pytest.approx(outcome.report["stages"][0]["knn"]["accuracy"])


@pytest.mark.parametrize(("evaluate", "message"), [
    ("knn: 0", "evaluate.knn: must be an integer ≥ 1, got 0"),
    ("knn_folds: 1", "evaluate.knn_folds: must be an integer ≥ 2, got 1"),
    ("noise: [0.5, -1]", "evaluate.noise: noise level (sigma) must be a finite number ≥ 0, got -1.0"),
    ("noise: 0.5", "evaluate.noise: expected a list of numbers, got 0.5"),
    ("token_noise: shuffle", "evaluate.token_noise: must be one of replace, dropout, got 'shuffle'"),
    ("memory: 1", "evaluate.memory: expected true or false"),
    ("knn_layr: x", "evaluate.knn_layr: unknown key"),
], ids=["k-zero", "folds", "negative-sigma", "noise-scalar", "token-mode", "memory-type", "typo"])
def test_spec_validates_the_new_keys_with_line_numbers(evaluate, message):
    text = f"model: zoo:mlp\ndata: sklearn:digits\nstages: []\nevaluate:\n  {evaluate}\n"
    with pytest.raises(InputError, match="pipeline>:5: ") as info:
        parse_spec(text)
    assert message in info.value.message


def test_spec_tensorboard_folder_resolves_against_the_spec(tmp_path):
    spec = parse_spec("model: zoo:mlp\ndata: sklearn:digits\nstages: []\ntensorboard: tb\n", source="p.yaml",
                      base_dir=tmp_path)
    assert spec.tensorboard == str(tmp_path / "tb")
    assert parse_spec("model: zoo:mlp\ndata: sklearn:digits\nstages: []\n").tensorboard is False


def test_markdown_and_html_escape_names_in_the_new_tables():
    from modelpress.reports.html import render_html
    from modelpress.reports import render_markdown

    stage = {"name": "<script>a|b</script>", "kind": "train", "params": {}, "artifact": None, "metrics": None,
             "fidelity": None, "latency": [], "footprint": None, "gates": [],
             "knn": {"k": 3, "folds": 2, "layer": "x|`y`", "accuracy": None, "reason": "no <b>layer</b>"},
             "memory": {"weight_bytes": 10, "rows": [{"backend": "<i>", "batch_size": 1, "peak_rss_bytes": 2048}]}}
    report = {"schema_version": 1, "run": {"name": "r", "created": "now"},
              "data": {"source": "d", "n_samples": 1, "n_classes": 2}, "stages": [stage]}
    md = render_markdown(report)
    knn_row = next(line for line in md.splitlines() if line.startswith("| &lt;script&gt;a\\|b"))
    assert knn_row.count(" | ") == 5  # six cells: the '|' in names did not add a column
    assert "<script>" not in md and "<b>" not in md
    html = render_html(report, with_plots=False)
    assert "&lt;script&gt;a|b&lt;/script&gt;" in html and "<script>" not in html and "<i>" not in html


def test_malformed_sections_from_elsewhere_render_and_compare_without_crashing():
    from modelpress.reports.compare import compare_reports
    from modelpress.reports.measurements import measurement_tables
    from modelpress.reports import render_markdown

    stage = {"name": "s", "kind": "k", "params": {}, "artifact": None, "metrics": None, "fidelity": None,
             "latency": [], "footprint": None, "gates": [], "memory": {"rows": 5, "weight_bytes": "big"},
             "robustness": {"levels": "x", "inputs": 3}, "knn": {"accuracy": "high"}, "cost": {"epochs": "many"}}
    report = {"schema_version": 1, "run": {"name": "r", "created": "now"},
              "data": {"source": "d", "n_samples": 1, "n_classes": 2}, "stages": [stage]}
    titles = [t["title"] for t in measurement_tables(report["stages"])]
    assert titles == ["k-NN probe", "Robustness to noise", "Memory", "Cost"]
    assert "## Memory" in render_markdown(report)
    rows = {r["key"]: r for r in compare_reports(report, report).rows}
    assert rows["knn_accuracy"]["delta"] is None and rows["epochs"]["candidate"] == "many"
