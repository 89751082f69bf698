"""One declaration per reported quantity: formats, deltas, directions, gates."""

from __future__ import annotations

import math

import pytest

from modelpress.errors import InputError
from modelpress.metric_schema import METRICS, gateable, metric, section, targets


@pytest.mark.parametrize("path, value, text", [
    ("metrics.accuracy", 0.99111, "99.11%"),
    ("footprint.size_bytes", 1_234_567, "1.18 MiB"),  # powers of 1024, as report.md has always printed sizes
    ("footprint.size_bytes", 102_400, "100 KiB"),
    ("footprint.size_bytes", 512, "512 B"),
    ("footprint.params", 23722, "23,722"),
    ("latency.median_ms", 0.1234, "0.123 ms"),
    ("fidelity.mean_kl", 0.000123456, "0.000123"),  # 3 significant digits, plain from 1e-4
    ("fidelity.max_abs_diff", 3.05e-6, "3.05e-06"),
    ("footprint.sparsity", 0.5, "50.0%"),  # declared with 1 decimal
    ("metrics.accuracy", None, "—"),
    ("metrics.accuracy", math.nan, "—"),
    ("metrics.accuracy", True, "—"),
    ("metrics.accuracy", "0.9", "—"),
])
def test_format(path, value, text):
    assert metric(path).format(value) == text


def test_deltas_read_in_the_metrics_unit():
    assert metric("metrics.accuracy").format_delta(0.9911, 0.96) == "-3.11 pts"
    assert metric("latency.median_ms").format_delta(2.0, 1.0) == "-1.00"
    assert metric("footprint.macs").format_delta(100, 40) == "-60 (0.400×)"  # sizes and counts: change and ratio
    assert metric("footprint.size_bytes").format_delta(40_960, 10_240) == "-30.0 KiB (0.250×)"
    assert metric("footprint.macs").format_delta(0, 40) == "+40.0"  # no ratio against zero
    assert metric("metrics.accuracy").format_delta(None, 0.5) == "—"


def test_direction():
    assert metric("metrics.accuracy").better(0.9, 0.95) is True
    assert metric("latency.median_ms").better(1.0, 2.0) is False
    assert metric("footprint.params").better(1, 2) is None


def test_every_gate_and_target_is_declared_once():
    gates = gateable()
    assert gates["max_accuracy_drop"].path == "metrics.accuracy"
    assert gates["max_f1_drop"].paired_test == "bootstrap" and gates["max_accuracy_drop"].paired_test == "mcnemar"
    assert {m.key for m in targets()} == {"accuracy", "balanced_accuracy", "f1_macro", "f1_weighted"}
    assert [m.key for m in section("fidelity")][:2] == ["top1_agreement", "max_abs_diff"]
    assert len(set(METRICS.names())) == len(METRICS.names())


def test_unknown_metric_suggests_the_closest():
    with pytest.raises(InputError, match=r"unknown metric 'metrics.acuracy'.*did you mean 'metrics.accuracy'"):
        metric("metrics.acuracy")


def test_declarations_drive_tables_and_tags():
    from modelpress.metric_schema import columns, compared, scalars

    assert [m.label for m in columns()] == ["accuracy", "F1 macro", "ROC-AUC", "size", "params", "sparsity",
                                            "top-1 agreement", "max abs diff"]
    assert "fidelity.mean_abs_diff" not in {m.path for m in compared()}
    assert metric("footprint.size_bytes").tag == "size/size_bytes"
    assert "metrics/precision_weighted" not in {m.tag for m in scalars()}
    assert metric("metrics.accuracy").vs_first and not metric("fidelity.top1_agreement").vs_first


def test_a_bad_declaration_is_refused():
    from modelpress.metric_schema import Metric

    with pytest.raises(ValueError, match="unit 'percent' is not one of"):
        Metric("x", "metrics", "x", "percent", True)
