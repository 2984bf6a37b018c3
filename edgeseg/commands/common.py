"""What every command shares: error reporting, consoles, output helpers, option aliases.

Results go to stdout (tables for people, `--json` for machines); logs and progress go to stderr.
One name per concept across commands (README "Option names"): the aliases below are declared once
and reused, and choices are `Literal`s built from the tuple that defines them, so the parser lists
and checks them (a bad value exits 2 before any work).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup
from typing_extensions import Annotated

from edgeseg.edge.registry import BACKENDS, FLAVOURS, MODEL_BACKENDS, PRECISIONS
from edgeseg.edge.preprocess import GEOMETRIES, LAYOUTS
from edgeseg.edge.videocodec import CODEC_CHOICES
from edgeseg.edge.uri import redact_uri
from edgeseg.errors import EdgesegError
from edgeseg.layout import BENCH_DIR, DATA_DIR, MODELS_DIR, RUNS_DIR  # noqa: F401  (re-exported for the commands)

# Results and logs. Off a terminal (CI logs, pipes) rich would fold tables to 80 columns: give
# them room for a whole row instead, unless COLUMNS says otherwise.
PIPE_WIDTH = 160


def _console(stderr: bool) -> Console:
    fits = Console(stderr=stderr).is_terminal or "COLUMNS" in os.environ
    return Console(stderr=stderr, width=None if fits else PIPE_WIDTH)


out = _console(stderr=False)
err = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Verbosity:
    """-v / -q of the command being run: verbose adds tracebacks to errors and debug lines,
    quiet hides progress and notes (errors and results always print)."""

    verbose: bool = False
    quiet: bool = False


VERBOSITY = Verbosity()


def _set_verbose(value: bool) -> None:
    VERBOSITY.verbose = VERBOSITY.verbose or bool(value)


def _set_quiet(value: bool) -> None:
    VERBOSITY.quiet = VERBOSITY.quiet or bool(value)


def note(message: str) -> None:
    """A log line for people on stderr (hidden by -q)."""
    if not VERBOSITY.quiet:
        err.print(message, highlight=False, soft_wrap=True)


class _NoBoolMetavar:
    """Flags take no value: show none (typer's rich help would print `<bool>` beside each)."""

    def get_params(self, ctx: Any) -> List[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
                param.metavar = ""
        return params


class Command(_NoBoolMetavar, TyperCommand):
    """Every edgeseg command: `app.command(name, cls=Command)`."""


# `edgeseg --help` lists commands in the order a user runs them (typer puts groups last).
FLOW = ("info", "data", "train", "export", "calibrate", "build-engine", "deploy", "run", "bench", "serve")


class Group(_NoBoolMetavar, TyperGroup):
    """Every edgeseg command group (the root app, `data`, `train`)."""

    def list_commands(self, ctx: Any) -> List[str]:
        names = list(super().list_commands(ctx))
        return sorted(names, key=lambda name: FLOW.index(name) if name in FLOW else len(FLOW) + names.index(name))


def cli_errors(func: F) -> F:
    """Turn an EdgesegError into one red line on stderr and its exit code (1, or 2 for a
    UsageError), no traceback (-v adds it)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgesegError as exc:
            if VERBOSITY.verbose:
                err.print_exception()
            err.print(f"[bold red]error:[/] {escape(redact_uri(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        finally:  # the next command in this process (tests) starts afresh
            VERBOSITY.verbose = VERBOSITY.quiet = False

    return wrapper  # type: ignore[return-value]


class _ConsoleLog(logging.Handler):
    """The library's notes (the "edgeseg" logger) on stderr: info hidden by -q, warnings always."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            err.print(f"[yellow]{escape(record.getMessage())}[/]", highlight=False, soft_wrap=True)
        elif not VERBOSITY.quiet:
            note(escape(record.getMessage()))


_library_log = logging.getLogger("edgeseg")
_library_log.setLevel(logging.INFO)
_library_log.addHandler(_ConsoleLog())


def progress_bar(quiet: bool = False, transient: bool = False) -> Any:
    """The one progress display of every command, on stderr: step, bar, done/total, elapsed and
    remaining time (a spinner while the total is unknown). Hidden by quiet (--json), by -q, and
    off a terminal, where a live display would leave its frames in the log."""
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
        disable=quiet or VERBOSITY.quiet or not err.is_terminal,
    )


def progress_steps(quiet: bool = False) -> Callable[[str, Optional[int]], Any]:
    """The `progress` hook of edgeseg.steps for a command: a bar per step of known length, a
    spinner otherwise; nothing with quiet (--json) or -q, or off a terminal."""

    @contextlib.contextmanager
    def step(description: str, total: Optional[int]) -> Iterator[Callable[[int], None]]:
        if total is None:
            with status(description) if not quiet else contextlib.nullcontext():
                yield lambda _n: None
            return
        with progress_bar(quiet) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    return step


def status(message: str) -> Any:
    """A spinner with `message` on a terminal; off one (or with -q) nothing, not spinner frames."""
    if VERBOSITY.quiet or not err.is_terminal:
        return contextlib.nullcontext()
    return err.status(message)


def number(value: Any, digits: int = 4) -> str:
    """A table cell for a metric: fixed digits, never `-0.0000`, `n/a` for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def print_json(data: Any) -> None:
    """Machine output: one strict JSON document on stdout (NaN -> null)."""
    from edgeseg.files import json_ready

    typer.echo(json.dumps(json_ready(data), indent=2, default=str, allow_nan=False))


# Shared option aliases (fastapi-cli style): declare once, reuse in every command.
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of a table.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same result.")]
OutDirOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", callback=_set_verbose, expose_value=True, help="More detail: tracebacks with errors.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", callback=_set_quiet, help="No progress or notes: results and errors only.")]
ThreadsOption = Annotated[
    int, typer.Option("--threads", min=0, help="CPU threads per model (0 = one per core: ONNX Runtime's, OpenVINO's and PyTorch's own choice).")
]
DataOption = Annotated[Path, typer.Option("--data", "-d", help="Severstal-layout folder: train.csv + train_images/ (`edgeseg data synth` makes one).")]
LimitOption = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N images of the folder (quick runs).")]

def one_of(choices: Sequence[str]) -> Callable[[Optional[List[str]]], Optional[List[str]]]:
    """Parse-time check of a repeatable choice option (typer takes no List[Literal]): a value
    outside `choices` is a usage error (exit 2) that lists them. Pair with metavar=metavar(choices)."""

    def check(values: Optional[List[str]]) -> Optional[List[str]]:
        for value in values or []:
            if value not in choices:
                raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return values

    return check


def metavar(choices: Sequence[str]) -> str:
    return "[" + "|".join(choices) + "]"


# Choices, each from the one tuple that defines it.
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
Backend = Literal[MODEL_BACKENDS]  # type: ignore[valid-type]  # all from edgeseg.edge.registry
RunBackend = Literal[BACKENDS]  # type: ignore[valid-type]  # run alone also offers triton (the cascade on a server)
Geometry = Literal[GEOMETRIES]  # type: ignore[valid-type]
Codec = Literal[CODEC_CHOICES]  # type: ignore[valid-type]
# The contract of a model from elsewhere (export --onnx/--factory, deploy): what its graph cannot say.
HeightOption = Annotated[Optional[int], typer.Option("--height", min=1, help="Input height of --factory or a dynamic-size ONNX (export -c: overrides the checkpoint's).")]
WidthOption = Annotated[Optional[int], typer.Option("--width", min=1, help="Input width of --factory or a dynamic-size ONNX (export -c: overrides the checkpoint's).")]
MeanOption = Annotated[float, typer.Option("--mean", help="Contract: x = (pixel/255 - mean) / std.")]
StdOption = Annotated[float, typer.Option("--std", help="Contract: x = (pixel/255 - mean) / std.")]
GeometryOption = Annotated[Geometry, typer.Option("--geometry", help="Contract: 'resize' the frame to the input, or cut it in 'tile's.")]
ActivationOption = Annotated[
    Literal["sigmoid", "none"], typer.Option("--activation", help="Contract: 'sigmoid' for logits, 'none' if it outputs probabilities.")
]
LayoutOption = Annotated[
    Optional[Literal[LAYOUTS]],  # type: ignore[valid-type]
    typer.Option("--layout", help="Contract: input layout, channels second (NCHW) or last (NHWC); default: --card's, else NCHW."),
]
ChannelsOption = Annotated[
    Optional[int], typer.Option("--channels", min=1, max=3, help="--factory: image channels, 1 (gray) or 3 (RGB; gray frames replicated). An ONNX's come from its graph.")
]
# edgeseg.calibration.qdq defines this (a test checks they agree); importing it here would make
# `edgeseg --help` load the quantiser.
METHODS = ("minmax", "entropy", "percentile")



# One stop and exit-code policy for every long-running command (run, serve).
EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[str], None], received: List[int], first: str = "stopping", again: str = "stopping") -> Iterator[None]:
    """SIGINT / SIGTERM call stop(reason) and print `first` (`again` on a later signal) instead of
    killing the command, which finishes cleanly; the signals are appended to `received` for
    `exit_after_signals`."""
    previous: Dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        received.append(signum)
        err.print(f"{name}: {first if len(received) == 1 else again}")
        stop(f"stopped by {name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def exit_after_signals(received: List[int]) -> None:
    """The exit code of a command a signal stopped cleanly: 130 after SIGINT (as the shell reports
    Ctrl-C); 0 after SIGTERM alone, a service manager's ordinary stop."""
    if signal.SIGINT in received:
        raise typer.Exit(EXIT_INTERRUPTED)


def interrupt_exits_130(func: F) -> F:
    """Ctrl-C before the signal handlers are in place (loading models, opening the source) is a
    stop too: one line and exit 130, not a traceback; nothing was written yet."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("interrupted before the first frame: nothing was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
