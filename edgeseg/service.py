"""A systemd unit that runs `edgeseg run` as a service: `systemd_unit` writes the text,
`install_unit` puts it where systemd reads units.

The unit is `Type=notify` with `WatchdogSec=`: `edgeseg run` sends READY=1 once its models are
active and WATCHDOG=1 while inference makes progress (edgeseg.edge.sdnotify), so systemd
restarts a run whose inference hung (`Restart=on-failure` covers the watchdog) and a run that
failed, while SIGTERM, systemd's ordinary stop, finishes the queued frames and exits 0.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from edgeseg.errors import EdgesegError, UsageError

WATCHDOG_S = 30  # a hung inference is restarted within this (plus edgeseg.edge.health.STALL_S)
START_S = 300  # model loading: a TensorRT engine on a Jetson takes a while to deserialise
SYSTEM_UNITS = Path("/etc/systemd/system")
USER_UNITS = Path("~/.config/systemd/user")
_NAME = re.compile(r"^[A-Za-z0-9:_.\\-]+$")
_INTERACTIVE = ("--show",)  # a service has no display


def systemd_unit(
    run_args: Sequence[str],
    watchdog_s: int = WATCHDOG_S,
    description: str = "",
    working_directory: Optional[Path] = None,
    user: Optional[str] = None,
    executable: Optional[str] = None,
    user_unit: bool = False,
) -> str:
    """The unit text running `edgeseg run <run_args>` (e.g. ["--source", "rtsp://cam/stream",
    "--metrics", "9108"]). working_directory: where relative paths in run_args resolve (default:
    the current directory); user: the account it runs as (system units only); executable: the
    edgeseg command (default: the one of this Python environment); user_unit: for a user's
    own systemd (started with their session: default.target) instead of the system's."""
    if watchdog_s < 1:
        raise UsageError(f"the watchdog needs at least 1 s, got {watchdog_s}")
    for arg in run_args:
        if arg in _INTERACTIVE:
            raise UsageError(f"{arg} needs a display, and a service has none", hint="drop it; --metrics or --jsonl watch a service")
    command = [executable or edgeseg_executable(), "run", *run_args]
    lines = [
        "[Unit]",
        f"Description={description or 'edgeseg inspection'}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={' '.join(_quote(word) for word in command)}",
        f"WorkingDirectory={str(working_directory or Path.cwd()).replace('%', '%%')}",
        *([f"User={user}"] if user else []),
        "Environment=PYTHONUNBUFFERED=1",
        f"WatchdogSec={watchdog_s}",
        f"TimeoutStartSec={START_S}",
        "TimeoutStopSec=30",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_unit else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def install_unit(name: str, text: str, user: bool = False) -> Path:
    """Write `text` as unit `name` (".service" added) where systemd reads system units, or the
    current user's with `user`; return its path."""
    if not _NAME.match(name):
        raise UsageError(f"{name!r} is not a unit name", hint="use letters, digits and -_.: e.g. edgeseg-line1")
    folder = USER_UNITS.expanduser() if user else SYSTEM_UNITS
    path = folder / (name if name.endswith(".service") else f"{name}.service")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EdgesegError(f"cannot write {path}: {exc.strerror}", hint="run it with sudo, or pass --user for a unit of your own") from exc
    return path


def edgeseg_executable() -> str:
    """The `edgeseg` command of this environment (a venv's, beside its python), absolute: a
    unit does not search PATH the way a shell does."""
    beside = Path(sys.executable).parent / "edgeseg"
    found = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("edgeseg")
    if not found:
        raise EdgesegError("the edgeseg command is not installed in this environment", hint="pip install edgeseg, then run this again")
    return str(Path(found).absolute())


def _quote(word: str) -> str:
    """`word` as one systemd command-line word: "%" and "$" escaped (specifiers, variables),
    double-quoted when it holds space, quotes or backslashes."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
