"""Value helpers shared by the renderers: reports may come from elsewhere, so nothing is assumed about types.

The number formatters themselves are :mod:`modelpress.metric_schema`'s (one place for how a number reads); this
module re-exports them with the "—" for anything that is not a finite number, and adds the text-only helpers and
the compact forms of report.html's latency and memory cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..metric_schema import NONE, binary_bytes, finite_number, format_value, significant
from ..metric_schema import integer as _integer
from ..metric_schema import percent as _percent

__all__ = ["NONE", "binary_bytes", "compact_bytes", "compact_ms", "compact_s", "finite_number", "format_value",
           "general", "integer", "number_or_dash", "percent", "plain_text", "sig", "significant"]


def plain_text(value: Any) -> str:
    """``str(value)``, or :data:`NONE` for None and the empty string. Not escaped: each renderer escapes."""
    return NONE if value is None or value == "" else str(value)


def number_or_dash(value: Any, render: Callable[[float], str]) -> str:
    """``render(number)`` for a finite number, :data:`NONE` for anything else (None, NaN, a string, a bool)."""
    number = finite_number(value)
    return NONE if number is None else render(number)


def percent(value: Any, decimals: int = 2) -> str:
    """A fraction as a percentage: 0.9911 → ``99.11%``."""
    return number_or_dash(value, lambda n: _percent(n, decimals))


def integer(value: Any) -> str:
    """With thousands separators: 23722 → ``23,722``."""
    return number_or_dash(value, _integer)


def sig(value: Any, digits: int = 3) -> str:
    """``digits`` significant digits (see :func:`~modelpress.metric_schema.significant`), or —."""
    return number_or_dash(value, lambda n: significant(n, digits))


def general(value: Any) -> str:
    """Gate thresholds and values have no fixed unit: 4 significant digits, trailing zeros dropped."""
    return number_or_dash(value, lambda n: f"{n:.4g}")


def compact_ms(value: Any) -> str:
    """report.html's latency cells: 3 significant digits without trailing zeros (``0.8 ms``), whole from 100 ms."""
    return number_or_dash(value, lambda n: f"{n:.3g} ms" if n < 100 else f"{n:,.0f} ms")


def compact_s(value: Any) -> str:
    """Seconds like :func:`compact_ms`: ``1.5 s``, ``1,234 s``."""
    return number_or_dash(value, lambda n: f"{n:.3g} s" if n < 100 else f"{n:,.0f} s")


def compact_bytes(value: Any) -> str:
    """Bytes in powers of 1024 without trailing zeros (``1.5 KiB``), for the measurement tables."""

    def render(number: float) -> str:
        for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if abs(number) >= scale:
                return f"{number / scale:.3g} {unit}"
        return f"{int(number)} B"

    return number_or_dash(value, render)


_MD_ESCAPES = {
    "\\": "\\\\",
    "|": "\\|",
    "`": "\\`",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "\r\n": " ",
    "\r": " ",
    "\n": " ",
}


def md_escape(value: object) -> str:
    """Make any value safe inside a Markdown table cell, heading or list item.

    Backslashes, ``|`` and backticks are backslash-escaped (so a cell keeps its column and no code span opens),
    ``&``, ``<`` and ``>`` become HTML entities (so no tag or entity reaches the viewer), and line breaks become
    spaces (a newline would end the table row).

    Args:
        value: Anything; it is converted with ``str()`` first.

    Returns:
        The escaped text, which renders as the original characters.
    """
    text = str(value)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\r\n", i):
            out.append(" ")
            i += 2
            continue
        char = text[i]
        out.append(_MD_ESCAPES.get(char, char))
        i += 1
    return "".join(out)
