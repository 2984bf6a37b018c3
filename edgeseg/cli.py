"""`edgeseg <verb>`: the command line. Imports nothing heavy, so `edgeseg --help` works anywhere."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from edgeseg import __version__

app = typer.Typer(
    name="edgeseg",
    help=(
        "Two-stage defect inspection (classifier gate -> ResUNet) from a trained PyTorch model "
        "to a measured TensorRT / ONNX Runtime deployment on Jetson and discrete GPUs.\n\n"
        "Typical flow: data synth -> train -> export -> calibrate -> build-engine -> run -> bench."
    ),
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
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """edgeseg: defect inspection at line speed."""


# Command modules import their heavy dependencies inside the commands: registering them is cheap.
from edgeseg.commands import bench as _bench  # noqa: E402
from edgeseg.commands import calibrate as _calibrate  # noqa: E402
from edgeseg.commands import data as _data  # noqa: E402
from edgeseg.commands import engine as _engine  # noqa: E402
from edgeseg.commands import export as _export  # noqa: E402
from edgeseg.commands import info as _info  # noqa: E402
from edgeseg.commands import run as _run  # noqa: E402
from edgeseg.commands import serve as _serve  # noqa: E402
from edgeseg.commands import train as _train  # noqa: E402

app.command("info")(_info.info)
app.command("run")(_run.run)
app.command("serve")(_serve.serve)
app.command("export")(_export.export)
app.command("calibrate")(_calibrate.calibrate)
app.command("build-engine")(_engine.build_engine)
app.command("bench")(_bench.bench)
app.add_typer(_data.app, name="data")
app.add_typer(_train.app, name="train")


def main() -> None:
    app()
