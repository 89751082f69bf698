"""compare_reports / compare_runs: gate decisions, statistics, comparability and refusal of mismatched runs."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from modelpress.errors import GateFailed, InputError
from modelpress.reports import (
    GateConfig,
    Threshold,
    compare_reports,
    compare_runs,
    md_escape,
    render_comparison_markdown,
)

STAGE = "02-quantize"  # the candidate stage the conftest builders write


def _gate(comparison: Any, name: str) -> Any:
    return next(g for g in comparison.gates if g.name == name)


# ------------------------------------------------------------------------------------------------ A/A: no flapping


def _aa_false_alarms(synth: Any, gates: dict[str, Any], *, n_pairs: int, seed: int) -> tuple[dict[str, int], int]:
    """Gate failures over ``n_pairs`` pairs of independent noisy runs of one model (85 % true accuracy, 1,000
    samples), and how many pairs a bare comparison of the two accuracies would have called a drop.

    Independent noise is harsher than two real runs of one model, whose predictions mostly coincide.
    """
    n = 1000
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    # The gates judge the paired predictions; the reports only need to describe the same data, so build them once.
    base = synth.build_run(y, synth.noisy_proba(y, rng.random(n) < 0.85, rng, 3), with_earlier_stage=False)
    cand = synth.build_run(y, synth.noisy_proba(y, rng.random(n) < 0.85, rng, 3), with_earlier_stage=False)
    failures = {key: 0 for key in gates if key.startswith("max_")}
    bare_drops = 0
    for i in range(n_pairs):
        base.predictions[f"proba::{STAGE}"] = synth.noisy_proba(y, rng.random(n) < 0.85, rng, 3)
        cand.predictions[f"proba::{STAGE}"] = synth.noisy_proba(y, rng.random(n) < 0.85, rng, 3)
        result = compare_reports(base.report, cand.report, gates={**gates, "n_boot": 200, "seed": i},
                                 baseline_predictions=base.predictions, candidate_predictions=cand.predictions)
        for gate in result.gates:
            failures[gate.name] += gate.status == "failed"
        bare_drops += result.paired["candidate_accuracy"] < result.paired["baseline_accuracy"]
    return failures, bare_drops


def test_aa_accuracy_false_alarm_rate_is_at_most_alpha(synth) -> None:
    """200 A/A pairs with the strictest accuracy gate (0 points): fails at most α = 5 % of the time."""
    failures, bare_drops = _aa_false_alarms(synth, {"max_accuracy_drop": 0}, n_pairs=200, seed=2024)
    assert bare_drops > 70  # a gate on the bare numbers would flap on about half of the pairs
    assert failures["max_accuracy_drop"] <= 0.05 * 200


def test_aa_bootstrap_gates_false_alarm_rate_is_at_most_alpha(synth) -> None:
    """100 A/A pairs with F1 and ROC-AUC gates at 0 points and α = 0.1: each fails at most 10 % of the time."""
    gates = {"max_f1_drop": 0, "max_auc_drop": 0, "alpha": 0.1}
    failures, _ = _aa_false_alarms(synth, gates, n_pairs=100, seed=7)
    assert failures["max_f1_drop"] <= 10 and failures["max_auc_drop"] <= 10, failures


def test_same_model_twice_passes_every_gate(pair) -> None:
    base, cand = pair(to_wrong=0, to_right=0)
    cand_proba = base.predictions[f"proba::{STAGE}"]
    cand.predictions[f"proba::{STAGE}"] = cand_proba
    result = compare_reports(base.report, cand.report, gates={
        "max_accuracy_drop": 0, "max_f1_drop": 0, "max_auc_drop": 0, "min_fidelity": 1.0, "max_size_ratio": 1.0},
        baseline_predictions=base.predictions, candidate_predictions=cand.predictions)
    assert result.passed and [g.status for g in result.gates] == ["passed"] * 5
    assert _gate(result, "min_fidelity").value == 1.0
    result.raise_for_gates()


# ------------------------------------------------------------------------------------------------ accuracy


def test_three_point_drop_fails(pair) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    result = compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 1})
    gate = _gate(result, "max_accuracy_drop")
    assert gate.status == "failed" and gate.test == "mcnemar-exact"
    assert gate.value == pytest.approx(3.0) and gate.threshold == 1.0
    assert gate.p_value == pytest.approx(2 * 0.5**50 * sum(__import__("math").comb(50, k) for k in range(11)))
    assert gate.ci_low > 1.0 and gate.ci_high > gate.ci_low
    assert "40 samples only the baseline got right, 10 only the candidate" in gate.message
    with pytest.raises(GateFailed, match=r"^1 of 1 gates failed: max_accuracy_drop: accuracy .* \(-3\.00 pts\)"):
        result.raise_for_gates()


def test_small_drop_that_is_not_significant_passes_with_a_note(pair) -> None:
    base, cand = pair(to_wrong=6, to_right=4)
    result = compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 0.1})
    gate = _gate(result, "max_accuracy_drop")
    assert gate.status == "passed" and gate.value == pytest.approx(0.2)
    assert gate.p_value == pytest.approx(0.753906, abs=1e-6)
    assert "drop exceeds the limit but is not significant at α = 0.05 (noise)" in gate.message
    assert "max_accuracy_drop passed although the accuracy drop of 0.20 pts exceeds 0.10 pts: not significant " \
           "(p = 0.754, α = 0.05)" in result.notes[-1]
    assert result.passed and "## Notes" in render_comparison_markdown(result)


def test_a_larger_alpha_does_not_rescue_a_drop_within_the_limit(pair) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    result = compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 5, "alpha": 0.5})
    assert _gate(result, "max_accuracy_drop").status == "passed"
    assert "within the limit" in _gate(result, "max_accuracy_drop").message


@pytest.mark.parametrize(("threshold", "status", "limit"), [("2%", "failed", None), ("5%", "passed", None),
                                                             ("2.9pts", "failed", 2.9), ("3.1", "passed", 3.1)])
def test_relative_and_absolute_thresholds(pair, threshold: str, status: str, limit: float | None) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    gate = _gate(compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": threshold}), "max_accuracy_drop")
    assert gate.status == status
    base_acc = base.report["stages"][-1]["metrics"]["accuracy"]
    expected = limit if limit is not None else float(threshold[:-1]) * base_acc
    assert gate.threshold == pytest.approx(expected)


def test_f1_and_auc_drop_use_the_paired_bootstrap(pair) -> None:
    base, cand = pair(to_wrong=80, to_right=0)
    result = compare_runs(base.folder, cand.folder, gates={"max_f1_drop": 1, "max_auc_drop": "50%", "n_boot": 300})
    f1 = _gate(result, "max_f1_drop")
    assert f1.status == "failed" and f1.test == "paired-bootstrap" and f1.ci_low > 1.0
    auc = _gate(result, "max_auc_drop")
    assert auc.status == "passed" and "within the limit" in auc.message


def test_without_predictions_gates_use_report_numbers(pair) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    (cand.folder / "predictions.npz").unlink()
    result = compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 1})
    gate = _gate(result, "max_accuracy_drop")
    assert gate.status == "failed" and gate.test is None and "not tested for significance" in gate.message
    assert any("has no predictions.npz" in note for note in result.notes)
    assert result.paired is None


# ------------------------------------------------------------------------------------------------ latency


def _lat(median: float, seed: int, n: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), 0.08, size=n)


def test_latency_30_percent_slower_fails_a_1_1_gate(pair) -> None:
    base, cand = pair(baseline_latency_ms=_lat(2.0, 1), latency_ms=_lat(2.6, 2))
    result = compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1})
    gate = _gate(result, "max_latency_ratio[onnxruntime b=1]")
    assert gate.status == "failed" and gate.test == "bootstrap-median-ratio"
    assert gate.value == pytest.approx(1.3, rel=0.05) and gate.ci_low > 1.1
    assert "CI lower bound above the limit 1.1×" in gate.message


@pytest.mark.parametrize("seed", range(5))
def test_latency_noise_only_passes(pair, seed: int) -> None:
    base, cand = pair(baseline_latency_ms=_lat(2.0, 10 + seed), latency_ms=_lat(2.0, 20 + seed))
    gate = _gate(compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1}),
                 "max_latency_ratio[onnxruntime b=1]")
    assert gate.status == "passed" and gate.ci_low < 1.1


@pytest.mark.parametrize(("run", "difference"), [
    ({"cpu": "Other CPU 1"}, "cpu"), ({"cpu_flags": ["avx512_vnni"]}, "cpu_flags"), ({"threads": 4}, "threads"),
    ({"onnxruntime": "0.0.1"}, "onnxruntime"), ({"torch": "0.0.1"}, "torch"),
])
def test_latency_on_other_hardware_is_not_gated_unless_forced(pair, run: dict, difference: str) -> None:
    base, cand = pair(baseline_latency_ms=_lat(2.0, 1), latency_ms=_lat(2.6, 2), run=run)
    result = compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1})
    gate = _gate(result, "max_latency_ratio[onnxruntime b=1]")
    assert gate.status == "skipped" and result.passed and not result.latency_comparable
    assert any(d.startswith(difference + " ") for d in result.latency_differences)
    assert any("latency is not comparable" in note and "latency gates are skipped" in note for note in result.notes)
    forced = compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1, "force_latency": True})
    assert _gate(forced, "max_latency_ratio[onnxruntime b=1]").status == "failed"


def test_latency_gate_without_common_rows_is_an_input_error(pair) -> None:
    base, cand = pair(latency_ms=_lat(2.0, 1))
    with pytest.raises(InputError, match=r"no latency row .* baseline has none, candidate has onnxruntime b=1"):
        compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1})


def test_latency_without_samples_uses_medians(pair) -> None:
    base, cand = pair(baseline_latency_ms=_lat(2.0, 1), latency_ms=_lat(2.6, 2))
    preds = dict(np.load(cand.folder / "predictions.npz"))
    del preds[f"latency_ms::{STAGE}::onnxruntime::b1"]
    np.savez(cand.folder / "predictions.npz", **preds)
    gate = _gate(compare_runs(base.folder, cand.folder, gates={"max_latency_ratio": 1.1}),
                 "max_latency_ratio[onnxruntime b=1]")
    assert gate.status == "failed" and gate.ci_low is None and "no per-call samples" in gate.message


# ------------------------------------------------------------------------------------------------ size, fidelity


def test_size_gates(pair) -> None:
    base, cand = pair(size_bytes=12_000)
    result = compare_runs(base.folder, cand.folder, gates={"max_size_bytes": 10_000, "max_size_ratio": 0.5})
    assert _gate(result, "max_size_bytes").status == "failed"
    ratio = _gate(result, "max_size_ratio")
    assert ratio.status == "passed" and ratio.value == pytest.approx(0.3)
    assert "40,000 → 12,000 bytes = 0.3× ≤ 0.5×" in ratio.message


def test_fidelity_gate_is_a_one_sided_binomial_test(pair) -> None:
    base, cand = pair(to_wrong=5, to_right=0)
    cand.predictions[f"proba::{STAGE}"] = base.predictions[f"proba::{STAGE}"].copy()
    proba = cand.predictions[f"proba::{STAGE}"]
    proba[:60] = np.roll(proba[:60], 1, axis=1)  # change the top-1 class of 60 of 1000 samples
    args = dict(baseline_predictions=base.predictions, candidate_predictions=cand.predictions)
    fails = _gate(compare_reports(base.report, cand.report, gates={"min_fidelity": "99%"}, **args), "min_fidelity")
    assert fails.status == "failed" and fails.value == pytest.approx(0.94) and fails.p_value < 1e-6
    near = _gate(compare_reports(base.report, cand.report, gates={"min_fidelity": 0.945}, **args), "min_fidelity")
    assert near.status == "passed" and "below the floor but not significantly" in near.message


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": "ff" * 32}, r"reports differ in data sha256: abababababab… in .* vs ffffffffffff…"),
    ({"class_names": ["cat", "dog", "a|b", "bird"]}, r"class 3 is '<script>' in .* vs 'bird'"),
])
def test_mismatched_data_is_refused(pair, change: dict, message: str) -> None:
    base, cand = pair()
    cand.report["data"].update(change)
    with pytest.raises(InputError, match=message):
        compare_reports(base.report, cand.report, gates={"max_accuracy_drop": 1})


def test_different_sample_or_class_counts_are_refused(synth) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=100)
    build_run, noisy_proba = synth.build_run, synth.noisy_proba
    base = build_run(y, noisy_proba(y, rng.random(100) < 0.9, rng, 3))
    fewer = build_run(y[:90], noisy_proba(y[:90], rng.random(90) < 0.9, rng, 3))
    with pytest.raises(InputError, match="reports differ in data n_samples: 100 in baseline vs 90 in candidate"):
        compare_reports(base.report, fewer.report)
    wider = build_run(y, noisy_proba(y, rng.random(100) < 0.9, rng, 4))
    with pytest.raises(InputError, match="reports differ in data n_classes: 3 in baseline vs 4 in candidate"):
        compare_reports(base.report, wider.report)


def test_different_labels_in_predictions_are_refused(pair) -> None:
    base, cand = pair()
    cand.predictions["y_true"] = np.roll(cand.predictions["y_true"], 1)
    with pytest.raises(InputError, match=r"y_true differs between baseline and candidate in \d+ of 1000 samples"):
        compare_reports(base.report, cand.report, baseline_predictions=base.predictions,
                        candidate_predictions=cand.predictions)


def test_malformed_predictions_are_refused(pair) -> None:
    base, cand = pair()
    cand.predictions[f"proba::{STAGE}"] = cand.predictions[f"proba::{STAGE}"][:, :2]
    with pytest.raises(InputError, match=r"'proba::02-quantize' should be \(1000, 4\) probabilities, got shape"):
        compare_reports(base.report, cand.report, baseline_predictions=base.predictions,
                        candidate_predictions=cand.predictions)
    (cand.folder / "predictions.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="predictions.npz is truncated or corrupt"):
        compare_runs(base.folder, cand.folder)


def test_stage_selection(pair) -> None:
    base, cand = pair(to_wrong=40)
    result = compare_runs(base.folder, cand.folder, baseline_stage="00-original", gates={"max_accuracy_drop": 1})
    assert result.baseline["stage"] == "00-original" and result.candidate["stage"] == STAGE
    assert _gate(result, "max_accuracy_drop").value > 10  # the original stage is near perfect
    with pytest.raises(InputError, match=r"has no stage 'nope'; --candidate-stage is one of '00-original', '02-q"):
        compare_runs(base.folder, cand.folder, candidate_stage="nope")


@pytest.mark.parametrize(("mapping", "message"), [
    ({"max_acuracy_drop": 1}, r"gates: unknown key 'max_acuracy_drop'; known keys: max_accuracy_drop, "),
    ({"max_accuracy_drop": "1.5 percent"}, r"max_accuracy_drop = '1.5 percent' is not a threshold; use percentage"),
    ({"max_f1_drop": 120}, r"max_f1_drop = 120 is out of range; allowed: 0 to 100"),
    ({"max_auc_drop": True}, r"max_auc_drop = True is not a threshold"),
    ({"max_latency_ratio": 0}, r"max_latency_ratio = 0 is out of range; allowed: a number > 0"),
    ({"max_size_bytes": 1.5}, r"max_size_bytes = 1.5 is out of range"),
    ({"min_fidelity": 99}, r"min_fidelity = 99 is out of range; allowed: 0 to 1 \(or 0% to 100%\); use e.g. 0.99"),
    ({"alpha": 0}, r"alpha = 0 is out of range; allowed: 0 < alpha < 1"),
    ({"n_boot": 50}, r"n_boot = 50 is out of range; allowed: an integer >= 100"),
    ({"force_latency": "yes"}, r"force_latency = 'yes' should be true or false"),
])
def test_gate_config_validation(mapping: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        GateConfig.from_mapping(mapping)


def test_threshold_parsing() -> None:
    assert Threshold.parse(1.5, key="k") == Threshold(1.5) == Threshold.parse("1.5pts", key="k")
    assert Threshold.parse(" 2% ", key="k") == Threshold(2.0, relative=True)
    assert Threshold(2.0, relative=True).allowed_drop_pts(0.9) == pytest.approx(1.8)
    assert str(Threshold(2.0, relative=True)) == "2% of baseline" and str(Threshold(0.5)) == "0.5 pts"
    assert not GateConfig(alpha=0.1).any_gate and GateConfig(min_fidelity="99%").min_fidelity == 0.99


# ------------------------------------------------------------------------------------------------ rendering


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line.replace("\\\\", "")))


def test_markdown_tables_stay_intact_with_hostile_names(pair) -> None:
    base, cand = pair(to_wrong=40, to_right=10, name="evil|<script>", baseline_latency_ms=_lat(2.0, 1),
                      latency_ms=_lat(2.1, 2))
    md = render_comparison_markdown(compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 1,
                                                                                  "max_latency_ratio": 1.5}))
    assert md.startswith("# modelpress compare: baseline (02-quantize) → evil\\|&lt;script&gt; (02-quantize)\n")
    assert "**Result: FAILED**: 1 of 2 gates failed (max_accuracy_drop)." in md
    assert "<script>" not in md
    for block in re.findall(r"(?:^\|.*\n)+", md, flags=re.M):
        rows = block.strip().splitlines()
        assert len({_unescaped_pipes(row) for row in rows}) == 1, rows[0]
    assert "| accuracy |" in md and "-3.00 pts" in md
    assert "| max_accuracy_drop | **FAIL** | 1.00 pts | 3.00 pts |" in md
    assert re.search(r"\| onnxruntime \| 1 \| 1 \| [0-9.]+ / [0-9.]+ ms \| [0-9.]+ / [0-9.]+ ms \| 1\.0\d×", md)
    assert md_escape("evil|<script>") in md


def test_json_is_strict_and_complete(pair) -> None:
    base, cand = pair(to_wrong=40, to_right=10)
    result = compare_runs(base.folder, cand.folder, gates={"max_accuracy_drop": 1})
    data = json.loads(result.to_json())
    assert data["passed"] is False and data["gates"][0]["status"] == "failed"
    assert data["paired"]["baseline_only"] == 40 and data["paired"]["candidate_only"] == 10
    assert {row["key"] for row in data["metrics"]} >= {"accuracy", "f1_macro", "roc_auc", "size_bytes"}
    assert data["data"]["n_classes"] == 4 and data["baseline"]["predictions"] is True
