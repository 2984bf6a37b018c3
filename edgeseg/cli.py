"""`edgeseg <verb>`: the command line. Imports nothing heavy, so `edgeseg --help` works anywhere."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator, Optional


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    """Ctrl-C while the command modules load (nothing has run yet): one line and exit 130, not a
    KeyboardInterrupt traceback from deep inside an import. Once a command runs, typer answers
    Ctrl-C with 130 itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: Any) -> None:
        sys.stderr.write("interrupted while starting: nothing was run\n")
        raise SystemExit(130)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


with _quiet_interrupt():
    import typer
    from typing_extensions import Annotated

    from edgeseg import __version__
    from edgeseg.commands.common import Command, Group, QuietOption, VerboseOption
    # Command modules import their heavy dependencies inside the commands: registering them is cheap.
    from edgeseg.commands import bench as _bench
    from edgeseg.commands import calibrate as _calibrate
    from edgeseg.commands import data as _data
    from edgeseg.commands import deploy as _deploy
    from edgeseg.commands import engine as _engine
    from edgeseg.commands import export as _export
    from edgeseg.commands import info as _info
    from edgeseg.commands import run as _run
    from edgeseg.commands import serve as _serve
    from edgeseg.commands import service as _service
    from edgeseg.commands import train as _train
    from edgeseg.commands import verify as _verify

app = typer.Typer(
    name="edgeseg",
    help=(
        "Two-stage defect inspection (classifier gate -> ResUNet) from a trained PyTorch model "
        "to a measured TensorRT / ONNX Runtime deployment on Jetson and discrete GPUs.\n\n"
        "Typical flow: data synth -> train -> export -> calibrate -> build-engine -> run -> bench; "
        "`deploy` does export -> calibrate -> build-engine in one step."
    ),
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """edgeseg: defect inspection at line speed."""


# Listed in `edgeseg --help` in the order a user runs them.
app.command("info", cls=Command)(_info.info)
app.add_typer(_data.app, name="data")
app.add_typer(_train.app, name="train")
app.command("export", cls=Command)(_export.export)
app.command("calibrate", cls=Command)(_calibrate.calibrate)
app.command("build-engine", cls=Command)(_engine.build_engine)
app.command("deploy", cls=Command)(_deploy.deploy)
app.command("verify", cls=Command)(_verify.verify)
app.command("run", cls=Command)(_run.run)
app.command("serve", cls=Command)(_serve.serve)
app.add_typer(_service.app, name="service")
app.command("bench", cls=Command)(_bench.bench)


def main() -> None:
    app()
