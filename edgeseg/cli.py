"""`edgeseg <verb>`: the command line. Imports nothing heavy, so `edgeseg --help` works anywhere."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from edgeseg import __version__
from edgeseg.commands.common import Command, Group, QuietOption, VerboseOption

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


# Command modules import their heavy dependencies inside the commands: registering them is cheap.
from edgeseg.commands import bench as _bench  # noqa: E402
from edgeseg.commands import calibrate as _calibrate  # noqa: E402
from edgeseg.commands import data as _data  # noqa: E402
from edgeseg.commands import deploy as _deploy  # noqa: E402
from edgeseg.commands import engine as _engine  # noqa: E402
from edgeseg.commands import export as _export  # noqa: E402
from edgeseg.commands import info as _info  # noqa: E402
from edgeseg.commands import run as _run  # noqa: E402
from edgeseg.commands import serve as _serve  # noqa: E402
from edgeseg.commands import train as _train  # noqa: E402

# Listed in `edgeseg --help` in the order a user runs them.
app.command("info", cls=Command)(_info.info)
app.add_typer(_data.app, name="data")
app.add_typer(_train.app, name="train")
app.command("export", cls=Command)(_export.export)
app.command("calibrate", cls=Command)(_calibrate.calibrate)
app.command("build-engine", cls=Command)(_engine.build_engine)
app.command("deploy", cls=Command)(_deploy.deploy)
app.command("run", cls=Command)(_run.run)
app.command("serve", cls=Command)(_serve.serve)
app.command("bench", cls=Command)(_bench.bench)


def main() -> None:
    app()
