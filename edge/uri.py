"""Credentials out of sight: the one place a URI is made fit to print, record, publish or name a
file after (light: the CLI's error printer imports it)."""
from __future__ import annotations

import re

REDACTED = "***"
# The user info of a URI (`scheme://user:password@`): up to the netloc's last "@", as urlsplit
# reads it, so a password holding a raw "@" is covered too.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_uri(text: str) -> str:
    """`text` with the user info of every URI in it replaced: `rtsp://user:pass@cam/x` ->
    `rtsp://***@cam/x`. The user name goes too (it is half of a credential). A source's display
    name, and so every record, report, MQTT payload, file name and error line, derives from
    this, never from the URI the capture opens."""
    return _USERINFO.sub(r"\g<1>" + REDACTED + "@", text)
