"""The one progress helper. Bars go to stderr, only on a TTY and never with ``--quiet``.

Library code never prints; it asks for a bar here. The CLI sets :data:`QUIET` from ``--quiet``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

QUIET = False


def set_quiet(quiet: bool) -> None:
    global QUIET
    QUIET = quiet


def enabled() -> bool:
    if QUIET or os.environ.get("MODELPRESS_QUIET"):
        return False
    return sys.stderr.isatty()


class _Null:
    def update(self, n: int = 1) -> None:
        """No-op."""

    def set_postfix_str(self, s: str) -> None:
        """No-op."""

    def set_description_str(self, s: str) -> None:
        """No-op."""


@contextlib.contextmanager
def bar(total: int | None, desc: str, *, unit: str = "it", leave: bool = False) -> Iterator[Any]:
    """A tqdm bar, or a no-op object with the same methods when progress is off."""
    if not enabled():
        yield _Null()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True) as handle:
        yield handle
