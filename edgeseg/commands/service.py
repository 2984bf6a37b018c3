"""`edgeseg service`: run `edgeseg run` under systemd (edgeseg.service)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from edgeseg.commands.common import Command, Group, QuietOption, VerboseOption, cli_errors, err
from edgeseg.service import WATCHDOG_S

app = typer.Typer(help="Run `edgeseg run` as a systemd service (Type=notify, watchdog, restart on failure).", cls=Group, no_args_is_help=True)

RunArgs = Annotated[
    List[str], typer.Argument(help="The `edgeseg run` options, after `--`: e.g. -- --source rtsp://cam/stream --metrics 9108", show_default=False)
]
WatchdogOption = Annotated[
    int, typer.Option("--watchdog", min=1, help="Seconds without a watchdog ping (inference stalled or hung) before systemd restarts the run.")
]
DescriptionOption = Annotated[str, typer.Option("--description", help="The unit's Description=.")]
UserOption = Annotated[Optional[str], typer.Option("--run-as", help="Account the service runs as (User=; system units).")]


@app.command("unit", cls=Command)
@cli_errors
def unit(
    run_args: RunArgs,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the unit here instead of printing it.")] = None,
    watchdog: WatchdogOption = WATCHDOG_S,
    description: DescriptionOption = "edgeseg inspection",
    run_as: UserOption = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Print (or write) a systemd unit that runs `edgeseg run` with these options.

    Relative paths in the options resolve from the current directory (the unit's
    WorkingDirectory).\n
      edgeseg service unit -- --source rtsp://cam/stream --jsonl line.jsonl --metrics 9108
    """
    from edgeseg.service import systemd_unit

    text = systemd_unit(run_args, watchdog_s=watchdog, description=description, user=run_as)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {escape(str(output))}", highlight=False)


@app.command("install", cls=Command)
@cli_errors
def install(
    run_args: RunArgs,
    name: Annotated[str, typer.Option("--name", help="Unit name (NAME.service).")] = "edgeseg",
    user: Annotated[bool, typer.Option("--user", help="A unit of the current user (~/.config/systemd/user) instead of a system unit.")] = False,
    watchdog: WatchdogOption = WATCHDOG_S,
    description: DescriptionOption = "edgeseg inspection",
    run_as: UserOption = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Write the unit of `edgeseg service unit` where systemd reads it and say how to start it.

      sudo edgeseg service install --name edgeseg-line1 -- --source rtsp://cam/stream --metrics 9108
    """
    from edgeseg.service import install_unit, systemd_unit

    if user and run_as:
        raise typer.BadParameter("a --user unit runs as you: drop --run-as, or install a system unit")
    path = install_unit(name, systemd_unit(run_args, watchdog_s=watchdog, description=description, user=run_as, user_unit=user), user=user)
    scope = "systemctl --user" if user else "systemctl"
    err.print(f"wrote {escape(str(path))}; start it with: {scope} daemon-reload && {scope} enable --now {path.name}", highlight=False, soft_wrap=True)
