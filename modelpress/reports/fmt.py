"""Value helpers shared by the renderers: reports may come from elsewhere, so nothing is assumed about types."""

from __future__ import annotations

import math
import numbers
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
