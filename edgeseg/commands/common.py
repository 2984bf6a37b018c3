"""What every command shares: error reporting, consoles, output helpers, option aliases.

Results go to stdout (tables for people, `--json` for machines); logs and progress go to stderr.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.errors import EdgesegError, UsageError

# Results and logs. Off a terminal (CI logs, pipes) rich would fold tables to 80 columns: give
# them room for a whole row instead, unless COLUMNS says otherwise.
PIPE_WIDTH = 160


def _console(stderr: bool) -> Console:
    fits = Console(stderr=stderr).is_terminal or "COLUMNS" in os.environ
    return Console(stderr=stderr, width=None if fits else PIPE_WIDTH)


out = _console(stderr=False)
err = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Turn an EdgesegError into one red line on stderr and exit code 1 (2 for a UsageError),
    no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgesegError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None

    return wrapper  # type: ignore[return-value]


def progress_bar(quiet: bool = False, transient: bool = False) -> Any:
    """The one progress display of every command, on stderr: step, bar, done/total, elapsed and
    remaining time (a spinner while the total is unknown). quiet (--json) hides it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
        disable=quiet,
    )


def print_json(data: Any) -> None:
    """Machine output: one strict JSON document on stdout (NaN -> null)."""
    from edgeseg.files import json_ready

    typer.echo(json.dumps(json_ready(data), indent=2, default=str, allow_nan=False))


# Shared option aliases (fastapi-cli style): declare once, reuse in every command.
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of a table.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same result.")]
OutDirOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
