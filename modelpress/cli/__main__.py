"""``python -m modelpress.cli``: the console script, for subprocess tests and environments without it."""

from . import entry

entry()
