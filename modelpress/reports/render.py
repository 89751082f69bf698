"""Deprecated home of the Markdown renderer and the report folder writer, kept as re-exports.

The code moved to :mod:`modelpress.reports.markdown` (rendering) and :mod:`modelpress.reports.storage` (writing
report.json/md/npz, loading predictions). Still imported as ``modelpress.reports.render`` by
tests/breadth/test_breadth_pipeline.py and tests/diagnose/test_explain.py; remove this module once they import
from ``modelpress.reports``.
"""

from __future__ import annotations

from .markdown import md_escape, render_markdown
from .storage import MARKDOWN_FILENAME, PREDICTIONS_FILENAME, write_report

__all__ = ["MARKDOWN_FILENAME", "PREDICTIONS_FILENAME", "md_escape", "render_markdown", "write_report"]
