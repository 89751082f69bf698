"""Reports: the report.json schema, Markdown rendering (``markdown``) and the report folder (``storage``).

``reports`` reads results; it never runs models.
"""

from __future__ import annotations

from .compare import Comparison, GateConfig, GateResult, Threshold, compare_reports, compare_runs
from .compare_md import render_comparison_markdown, write_comparison_markdown
from .junit import junit_xml, write_junit
from .markdown import md_escape, render_markdown
from .schema import (
    REPORT_FILENAME,
    SCHEMA_VERSION,
    load_report,
    new_report,
    run_info,
    validate_report,
)
from .storage import MARKDOWN_FILENAME, PREDICTIONS_FILENAME, load_predictions, write_report

__all__ = [
    "Comparison",
    "GateConfig",
    "GateResult",
    "MARKDOWN_FILENAME",
    "PREDICTIONS_FILENAME",
    "REPORT_FILENAME",
    "SCHEMA_VERSION",
    "Threshold",
    "compare_reports",
    "compare_runs",
    "junit_xml",
    "load_predictions",
    "load_report",
    "md_escape",
    "new_report",
    "render_comparison_markdown",
    "render_markdown",
    "run_info",
    "validate_report",
    "write_comparison_markdown",
    "write_junit",
    "write_report",
]
