"""JUnit XML of compare's gates: parsed by junitparser and checked against the common testsuites layout."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from junitparser import Failure, JUnitXml, Skipped

from modelpress.reports import compare_runs, junit_xml, write_junit


def _lat(median: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), 0.05, size=200)


@pytest.fixture
def comparison(pair):
    """Three gates: accuracy fails, size passes, latency skipped (candidate ran on another CPU)."""
    base, cand = pair(to_wrong=40, to_right=10, baseline_latency_ms=_lat(2.0, 1), latency_ms=_lat(2.6, 2),
                      run={"cpu": "Other CPU\x01 <&>"}, name="cand\x0bidate <run>")
    return compare_runs(base.folder, cand.folder,
                        gates={"max_accuracy_drop": 1, "max_size_ratio": 1.0, "max_latency_ratio": 1.1})


def test_junitparser_reads_one_testcase_per_gate(comparison, tmp_path: Path) -> None:
    path = tmp_path / "out" / "gates.xml"
    write_junit(comparison, path)
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 1, 0, 1)
    cases = {case.name: case for case in suite}
    assert set(cases) == {"max_accuracy_drop", "max_size_ratio", "max_latency_ratio[onnxruntime b=1]"}
    failed = cases["max_accuracy_drop"].result
    assert len(failed) == 1 and isinstance(failed[0], Failure)
    assert failed[0].message.startswith("accuracy ") and "McNemar exact p = " in failed[0].message
    assert failed[0].type == "GateFailed" and "test: mcnemar-exact" in failed[0].text
    skipped = cases["max_latency_ratio[onnxruntime b=1]"].result
    assert len(skipped) == 1 and isinstance(skipped[0], Skipped) and "not comparable" in skipped[0].message
    assert cases["max_size_ratio"].is_passed and cases["max_size_ratio"].classname == "modelpress.compare"
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_common_junit_structure(comparison) -> None:
    text = junit_xml(comparison)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "3", "failures": "1", "errors": "0", "skipped": "1"}
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name").startswith("modelpress compare: baseline (02-quantize) → candidate <run>")
    float(suite.get("time"))
    assert "T" in suite.get("timestamp") and "+" not in suite.get("timestamp")
    props = {p.get("name"): p.get("value") for p in suite.find("properties").findall("property")}
    assert props["baseline_stage"] == "02-quantize" and props["latency_comparable"] == "false"
    cases = suite.findall("testcase")
    assert [c.tag for c in suite if c.tag not in ("properties", "system-out")] == ["testcase"] * 3
    for case in cases:
        assert case.get("name") and case.get("classname") == "modelpress.compare"
        float(case.get("time"))
        outcomes = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        assert len(outcomes) <= 1
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("message") and failure.get("type") == "GateFailed"
    assert "latency is not comparable" in suite.find("system-out").text


def test_control_characters_are_removed(comparison) -> None:
    text = junit_xml(comparison)
    assert "\x01" not in text and "\x0b" not in text
    assert 'name="modelpress compare: baseline (02-quantize) → candidate &lt;run&gt; (02-quantize)"' in text
    ET.fromstring(text.encode("utf-8"))


def test_no_gates_gives_an_empty_valid_suite(pair) -> None:
    base, cand = pair()
    root = ET.fromstring(junit_xml(compare_runs(base.folder, cand.folder)).encode("utf-8"))
    assert root.get("tests") == "0" and root.find("testsuite").findall("testcase") == []
