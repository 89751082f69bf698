"""JUnit XML for ``compare``'s gates: one testcase per gate, so CI systems show each gate as a test.

The layout is the common denominator that GitHub (test-reporter actions), GitLab (``artifacts:reports:junit``) and
Jenkins (JUnit plugin) all read::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp>
        <properties><property name value/>...</properties>
        <testcase name classname time>  [<failure message type>details</failure> | <skipped message/>]
        <system-out>notes</system-out>
      </testsuite>
    </testsuites>

Built with :mod:`xml.etree.ElementTree`, which escapes markup; characters XML 1.0 cannot hold at all (most control
characters) are removed first, since a report from elsewhere may contain them and ElementTree would write them as is.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from ..io import write_text
from .compare import Comparison, GateResult

__all__ = ["JUNIT_CLASSNAME", "junit_xml", "write_junit"]

#: ``classname`` of every testcase; CI tools group tests by it.
JUNIT_CLASSNAME = "modelpress.compare"
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def junit_xml(comparison: Comparison, *, suite_name: str | None = None) -> str:
    """The comparison's gates as a JUnit XML document (a string with an XML declaration).

    Args:
        comparison: The result of :func:`~modelpress.reports.compare.compare_reports`.
        suite_name: The testsuite name; default ``"modelpress compare: BASELINE → CANDIDATE"`` (run and stage).

    Returns:
        UTF-8-ready XML text: a failed gate is a ``<failure>`` with its one-line message, a skipped gate (latency on
        different hardware) a ``<skipped>``; notes go to ``<system-out>``.
    """
    c = comparison
    name = suite_name or (f"modelpress compare: {c.baseline['run']} ({c.baseline['stage']}) → "
                          f"{c.candidate['run']} ({c.candidate['stage']})")
    counts = {
        "tests": str(len(c.gates)),
        "failures": str(sum(g.status == "failed" for g in c.gates)),
        "errors": "0",
        "skipped": str(sum(g.status == "skipped" for g in c.gates)),
        "time": f"{c.elapsed_s:.3f}",
    }
    root = ET.Element("testsuites", {"name": "modelpress compare", **counts})
    suite = ET.SubElement(root, "testsuite", {
        "name": _clean(name), **counts,
        "timestamp": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
    })
    properties = ET.SubElement(suite, "properties")
    for key, value in (("baseline", c.baseline["source"]), ("baseline_stage", c.baseline["stage"]),
                       ("candidate", c.candidate["source"]), ("candidate_stage", c.candidate["stage"]),
                       ("alpha", f"{c.alpha:g}"), ("latency_comparable", str(c.latency_comparable).lower())):
        ET.SubElement(properties, "property", {"name": key, "value": _clean(value)})
    for gate in c.gates:
        _testcase(suite, gate)
    if c.notes:
        ET.SubElement(suite, "system-out").text = _clean("\n".join(c.notes))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(comparison: Comparison, path: str | os.PathLike[str]) -> None:
    """Write :func:`junit_xml` to ``path`` atomically (the old file stays intact on failure)."""
    write_text(path, junit_xml(comparison))


def _testcase(suite: ET.Element, gate: GateResult) -> None:
    case = ET.SubElement(suite, "testcase", {"name": _clean(gate.name), "classname": JUNIT_CLASSNAME,
                                             "time": "0"})
    if gate.status == "failed":
        failure = ET.SubElement(case, "failure", {"message": _clean(gate.message), "type": "GateFailed"})
        failure.text = _clean(_details(gate))
    elif gate.status == "skipped":
        ET.SubElement(case, "skipped", {"message": _clean(gate.message)})
    else:
        ET.SubElement(case, "system-out").text = _clean(gate.message)


def _details(gate: GateResult) -> str:
    lines = [gate.message, f"limit: {_num(gate.threshold)} {gate.unit}", f"value: {_num(gate.value)} {gate.unit}"]
    if gate.test:
        lines.append(f"test: {gate.test}")
    if gate.p_value is not None:
        lines.append(f"p-value: {gate.p_value:.4g}")
    if gate.ci_low is not None:
        lines.append(f"CI: {gate.ci_low:.4g} to {gate.ci_high:.4g} {gate.unit}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def _clean(value: object) -> str:
    return _INVALID_XML.sub("", str(value))
