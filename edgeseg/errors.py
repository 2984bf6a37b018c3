"""The one error type a user can act on.

Raised for bad input and missing tools; the CLI prints it as a single red line and exits 1
(2 for a UsageError: the command line itself asks for something that cannot be done).
Programming errors stay ordinary exceptions so that they keep their traceback.
"""
from __future__ import annotations

from typing import Optional


class EdgesegError(Exception):
    """A failure the user can fix: says what went wrong and, where known, how to fix it."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(EdgesegError):
    """The arguments contradict themselves or the machine (an output that is the input, a gate
    that is not a probability): exit code 2, like any other usage error."""
