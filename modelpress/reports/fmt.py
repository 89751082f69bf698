"""Value helpers shared by the renderers: reports may come from elsewhere, so nothing is assumed about types."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

NONE = "—"  # what a missing or undefined value shows as in every rendered table


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def plain_text(value: Any) -> str:
    """``str(value)``, or :data:`NONE` for None and the empty string. Not escaped: each renderer escapes."""
    return NONE if value is None or value == "" else str(value)


def number_or_dash(value: Any, render: Callable[[float], str]) -> str:
    """``render(number)`` for a finite number, :data:`NONE` for anything else (None, NaN, a string, a bool)."""
    number = finite_number(value)
    return NONE if number is None else render(number)


def percent(value: Any, decimals: int = 2) -> str:
    """A fraction as a percentage: 0.9911 → ``99.11%``."""
    return number_or_dash(value, lambda n: f"{n * 100:.{decimals}f}%")


def integer(value: Any) -> str:
    """With thousands separators: 23722 → ``23,722``."""
    return number_or_dash(value, lambda n: f"{int(n):,}")
