"""``python -m modelpress.cli``: the console script, for subprocess tests and environments without it."""

from . import entry

if __name__ == "__main__":
    entry()
