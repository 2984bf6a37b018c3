"""systemd's service notification protocol (sd_notify(3)) for a run under `Type=notify`.

systemd hands the service a datagram socket in $NOTIFY_SOCKET (a path, or an abstract name
written with a leading "@") and, with `WatchdogSec=`, the interval in $WATCHDOG_USEC. The
protocol is one `KEY=value` datagram per message, so it is written here rather than taken
from a package (sdnotify 0.3.2, unmaintained since 2017, hides every send error): nothing to
install on a Jetson image, and a message that cannot be sent is reported.

`ServiceNotifier` is a sink of the run (edgeseg.edge.sinks) so the run's output set starts and
stops it: READY=1 once the models are verified and active, WATCHDOG=1 every half interval
while the run is live (edgeseg.edge.health: a hung inference stops the pings and systemd
restarts the service), STATUS= with what is not ready, STOPPING=1 when the run closes its
outputs. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Mapping, Optional

from edgeseg.edge.health import Health
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame

_log = logging.getLogger(__name__)
_POLL_S = 0.1  # how soon READY=1 follows the models' activation


def notify(message: str, address: Optional[str] = None) -> bool:
    """Send `message` (e.g. "READY=1", lines joined by newlines) to `address` (default
    $NOTIFY_SOCKET); False when there is no socket to send to or the send failed."""
    address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), target)
    except OSError as exc:
        _log.warning("warning: systemd notification %r to %s failed: %s", message.split("\n")[0], address, exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> Optional[float]:
    """Seconds of systemd's watchdog for this process ($WATCHDOG_USEC, when $WATCHDOG_PID is
    unset or names this process); None when no watchdog is asked for."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class ServiceNotifier(Sink):
    """Tells systemd how the run stands (see the module doc), from a thread of its own that
    reads `health`; `close` sends STOPPING=1. address: the notify socket (default
    $NOTIFY_SOCKET); watchdog_s: the watchdog interval (default from $WATCHDOG_USEC; None: no
    pings)."""

    kind = "systemd"

    def __init__(self, health: Health, address: Optional[str] = None, watchdog_s: Optional[float] = None) -> None:
        self.health = health
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.watchdog_s = watchdog_s if watchdog_s is not None else watchdog_interval()
        self.ready_sent = False
        self.pings = 0
        self._status = ""
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgeseg-sdnotify", daemon=True)
        self._thread.start()

    def write(self, frame: Frame, result: FrameResult) -> None:
        """Nothing per frame: `health` sees the frames."""

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join()
        notify("STOPPING=1", self.address)

    def _loop(self) -> None:
        half = self.watchdog_s / 2.0 if self.watchdog_s else None
        next_ping = time.monotonic()
        while not self._closed.wait(_POLL_S):
            now = time.monotonic()
            live, ready = self.health.live(), self.health.ready()
            messages = []
            if not self.ready_sent and self.health.models_ready():
                messages.append("READY=1")
                self.ready_sent = True
            status = "inspecting" if live.ok and ready.ok else "; ".join(live.reasons + ready.reasons)
            if status != self._status:
                messages.append(f"STATUS={status}")
                self._status = status
            if half is not None and now >= next_ping and live.ok:
                messages.append("WATCHDOG=1")
                next_ping = now + half
                self.pings += 1
            if messages:
                notify("\n".join(messages), self.address)
