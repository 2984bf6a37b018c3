"""Credentials out of sight: the one place a URI is made fit to print, record, publish or name a
file after (light: the CLI's error printer imports it); and the one reading of the `[HOST:]PORT`
a run's own servers listen on (--metrics, --view)."""
from __future__ import annotations

import ipaddress
import re
from typing import Tuple

from edgeseg.errors import UsageError

REDACTED = "***"
LOOPBACK = "127.0.0.1"
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
# The user info of a URI (`scheme://user:password@`): up to the netloc's last "@", as urlsplit
# reads it, so a password holding a raw "@" is covered too.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_uri(text: str) -> str:
    """`text` with the user info of every URI in it replaced: `rtsp://user:pass@cam/x` ->
    `rtsp://***@cam/x`. The user name goes too (it is half of a credential). A source's display
    name, and so every record, report, MQTT payload, file name and error line, derives from
    this, never from the URI the capture opens."""
    return _USERINFO.sub(r"\g<1>" + REDACTED + "@", text)


def listen_address(text: str, option: str, example: int) -> Tuple[str, int]:
    """(host, port) of "HOST:PORT", "[IPv6]:PORT", ":PORT" or "PORT" for the server behind
    `option`; the host defaults to loopback, so an endpoint is reachable from elsewhere only when
    a host says so. Port 0: any free port. UsageError (naming `option`, with `example` as the
    port of its hint) when `text` is not one."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") if sep else ""
    hint = f"e.g. {option} {LOOPBACK}:{example}, or {option} 0.0.0.0:{example} to be reached from other hosts"
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{option} {text!r} is not [HOST:]PORT", hint=hint)
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_NAME.fullmatch(host):
                raise UsageError(f"{option} {text!r}: {host!r} is not a host name or address", hint=hint) from None
    return host or LOOPBACK, int(port)
