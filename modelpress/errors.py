"""Exception classes. Exit codes live here, so the CLI maps errors without branching on types.

Only ``cli.py`` catches broadly; everything below raises one of these with a one-line message that says what is
wrong and, where it helps, what to do instead.
"""

from __future__ import annotations


class ModelpressError(Exception):
    """Base class. ``exit_code`` 1 means a failed gate or check (a regression, a verification over tolerance)."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format_message(self) -> str:
        """One line: the message, and the hint after a semicolon when there is one."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text}; {' '.join(self.hint.split())}"
        return text

    def __str__(self) -> str:
        return self.format_message()


class InputError(ModelpressError):
    """Bad usage or bad input: a file, a model reference, data, a config value. Exit code 2."""

    exit_code = 2


class GateFailed(ModelpressError):
    """A quality gate or verification did not hold (e.g. ONNX outputs over tolerance). Exit code 1."""

    exit_code = 1


class BackendUnavailable(ModelpressError):
    """An optional backend (TensorRT, CUDA, transformers) was asked for explicitly but is not installed. Exit 3."""

    exit_code = 3
