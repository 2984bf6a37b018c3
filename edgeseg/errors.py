"""The one error type a user can act on.

Raised for bad input and missing tools; the CLI prints it as a single red line and exits with
its `exit_code` (1; UsageError: 2). Programming errors stay ordinary exceptions so that they keep
their traceback.
"""
from __future__ import annotations

from typing import Optional


class EdgesegError(Exception):
    """A failure the user can fix: says what went wrong and, where known, how to fix it."""

    exit_code = 1  # what the CLI exits with (cli_errors)

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(EdgesegError):
    """The command line or its input cannot be used at all (an output that is the input, a gate
    that is not a probability, a file of the wrong kind, a missing key): exit 2, like a bad
    option, so scripts can tell it from a failure of the work itself."""

    exit_code = 2
