"""The CLI's one error type: a line for the user and an exit code."""

from __future__ import annotations


class CLIError(Exception):
    """A user-facing failure: one line, and the exit code to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
