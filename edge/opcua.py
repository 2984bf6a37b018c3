"""Per-frame verdicts to a PLC over OPC UA (asyncua), without ever slowing inference.

`--opcua opc.tcp://[user:password@]host[:port][/path]` (default port 4840) writes, for every
frame, these variables of one object on the server (`--opcua-node NODEID`; default the object
whose browse name is `edgeseg` under Objects), all in one Write request so a PLC never reads
half a verdict:

  defect              Boolean  the segmenter ran and kept a pixel of some class (as MQTT's records)
  frame               integer  the frame's index in its source
  source              String   the camera (its display name, credentials redacted)
  captured_at         DateTime capture time (UTC)
  defect_probability  Double   the classifier's probability (NaN: the model output was not a number)
  area_<class>        integer  kept pixels of each class of the segmenter, e.g. area_1 .. area_4

The server defines the variables (a PLC's data block); each is written with the type the server
declares for it (Int16/Int32/UInt32/... or Float/Double), read once per session.

Delivery: `write` puts the verdict on a bounded queue and returns; a thread with its own asyncio
loop writes the queue in order, reconnecting with back-off when the server goes away. At the
bound the oldest verdict is dropped (a PLC wants the newest), counted like MQTT's
(edgeseg.edge.delivery). `close` waits up to `flush_timeout` for the queue to drain; what is left
is counted unsent. A PLC acts on every verdict, so any verdict lost is the sink's `problem`
(the run exits 1); a server never reached, or one that lacks a variable (then it is not retried),
too.
"""
from __future__ import annotations

import asyncio
import collections
import importlib
import importlib.util
import logging
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from edgeseg.edge.delivery import DeliveryStats
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink, background_thread
from edgeseg.edge.sources import Frame
from edgeseg.edge.uri import redact_uri
from edgeseg.errors import EdgesegError, UsageError

_log = logging.getLogger("edgeseg")
URL_FORM = "opc.tcp://host[:port][/path] (user:password@host for a login)"
DEFAULT_PORT = 4840
DEFAULT_OBJECT = "edgeseg"
FIXED = ("defect", "frame", "source", "captured_at", "defect_probability")
Verdict = Tuple[Any, ...]  # values in the order of `variables(classes)`


def variables(classes: Sequence[str]) -> List[str]:
    """The browse names of the variables written, in order."""
    return [*FIXED, *(f"area_{name}" for name in classes)]


@dataclass(frozen=True)
class OpcUaTarget:
    """A parsed `--opcua` URL."""

    host: str
    port: int
    path: str
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def url(self) -> str:
        """The endpoint URL without credentials: for reports, logs and the client."""
        return f"opc.tcp://{self.host}:{self.port}{self.path}"


def parse_opcua_url(url: str) -> OpcUaTarget:
    """`opc.tcp://[user:password@]host[:port][/path]` -> OpcUaTarget, or UsageError quoting the
    URL without its credentials. Needs no asyncua."""
    shown = redact_uri(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad OPC UA URL {shown!r}: {exc}", hint=f"use {URL_FORM}") from exc
    if parts.scheme.lower() != "opc.tcp":
        raise UsageError(f"bad OPC UA URL {shown!r}: the scheme must be opc.tcp://", hint=f"use {URL_FORM}")
    if not parts.hostname:
        raise UsageError(f"bad OPC UA URL {shown!r}: no server host", hint=f"use {URL_FORM}")
    if port == 0 or parts.query or parts.fragment:
        raise UsageError(f"bad OPC UA URL {shown!r}: {'port 0' if port == 0 else 'a ?query or #fragment'} is not an endpoint", hint=f"use {URL_FORM}")
    return OpcUaTarget(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        path=parts.path,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _require_asyncua() -> None:
    """Refuse up front without asyncua; the import itself (a second or more) happens on the
    writer thread, so the run's sources are not kept waiting for it."""
    if importlib.util.find_spec("asyncua") is None:
        raise EdgesegError("--opcua needs asyncua, which is not installed", hint="pip install asyncua")


class _Refused(Exception):
    """The server answers but cannot take verdicts as configured: not retried."""


class OpcUaSink(Sink):
    """Writes every frame's verdict to OPC UA variables (see the module docstring).

    target: a URL string or OpcUaTarget. classes: the segmenter's class names (one area variable
    each). node: NodeId string of the object holding the variables (None: `edgeseg` under
    Objects). queue_limit: verdicts kept while the server is slow or away. request_timeout:
    seconds a connect or write may take before the server counts as away.
    """

    kind = "opcua"

    def __init__(
        self,
        target: Any,
        classes: Sequence[str],
        node: Optional[str] = None,
        queue_limit: int = 1000,
        flush_timeout: float = 5.0,
        request_timeout: float = 2.0,
    ) -> None:
        _require_asyncua()
        self._ua: Any = None  # the asyncua module, imported by the writer thread
        self.target = target if isinstance(target, OpcUaTarget) else parse_opcua_url(str(target))
        if queue_limit < 1:
            raise EdgesegError(f"OPC UA queue limit must be >= 1 verdict, got {queue_limit}")
        try:  # a typo in the host fails now, not silently in the background for the whole run
            socket.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise EdgesegError(f"OPC UA server host {self.target.host!r} cannot be resolved: {exc.strerror}", hint="check --opcua") from exc
        self.names = variables(classes)
        self.classes = list(classes)
        self.node = node
        self.queue_limit = queue_limit
        self.flush_timeout = flush_timeout
        self.request_timeout = request_timeout
        self.counters = DeliveryStats()
        self._queue: Deque[Verdict] = collections.deque()
        self._inflight = 0  # verdicts taken off the queue and being written (0 or 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = False
        self._ready = threading.Event()  # the loop exists: write may wake it
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._last_error = ""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="edgeseg-opcua", daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- Sink -------------------------------------------------------------------------------------
    def write(self, frame: Frame, result: FrameResult) -> None:
        areas = result.segmentation.areas
        defect = bool(result.gated and any(area > 0 for area in areas.values()))
        captured = datetime.fromtimestamp(frame.captured_at, timezone.utc)
        verdict = (defect, frame.index, frame.source, captured, float(result.defect_probability), *(int(areas.get(c, 0)) for c in self.classes))
        with self._lock:
            if len(self._queue) >= self.queue_limit:
                self._queue.popleft()
                self.counters.dropped += 1
            self._queue.append(verdict)
            self.counters.published += 1
        self._kick()
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.flush_timeout
        while self._thread.is_alive() and self._waiting() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._kick()
        self._thread.join(self.request_timeout + 5.0)
        counters = self.counters
        with self._lock:
            counters.unsent = len(self._queue) + self._inflight
        self.frames = counters.acknowledged
        self.written = self.target.url if counters.acknowledged else None
        if not counters.connects:
            self.problem = counters.never_reached(f"OPC UA server {self.target.url}", "verdict(s)")
        elif counters.lost:
            self.problem = f"OPC UA server {self.target.url}: {counters.loss_line('verdict(s)', '--opcua-queue', self.queue_limit)}"

    def summary(self) -> Dict[str, Any]:
        with self._lock:
            return dict(asdict(self.counters), url=self.target.url, queue_limit=self.queue_limit, connected=self._connected)

    def describe(self) -> Optional[str]:
        c = self.counters
        return f"opcua: {self.target.url} ({c.published} verdicts, {c.acknowledged} written, {c.dropped} dropped, {c.unsent} unsent)"

    # -- the writer thread ------------------------------------------------------------------------
    def _waiting(self) -> bool:
        """Verdicts still to write, while the server could still take them."""
        with self._lock:
            return bool(self._queue or self._inflight) and not self.counters.refused

    def _kick(self) -> None:
        """Wake the writer, unless its loop has ended (a refusing server)."""
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._wake.set)  # type: ignore[union-attr]

    def _run(self) -> None:
        background_thread()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # before the Event: Python < 3.10 binds it to this thread's loop
        self._loop = loop
        self._wake = asyncio.Event()
        self._ready.set()
        try:
            self._ua = importlib.import_module("asyncua")
            library_log = logging.getLogger("asyncua")
            if library_log.level == logging.NOTSET:  # its session-timeout notes are not the operator's business
                library_log.setLevel(logging.ERROR)
            loop.run_until_complete(self._serve())
        finally:
            with self._lock:
                loop.close()

    async def _serve(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            client = self._ua.Client(self.target.url, timeout=self.request_timeout)
            if self.target.username is not None:
                client.set_user(self.target.username)
                client.set_password(self.target.password or "")
            try:
                await asyncio.wait_for(client.connect(), self.request_timeout * 2)
                nodes, types = await self._resolve(client)
                with self._lock:
                    self.counters.connects += 1
                self._connected, backoff = True, 0.25
                await self._drain(client, nodes, types)
            except _Refused as exc:
                with self._lock:
                    self.counters.refused = str(exc)
                _log.error("error: OPC UA server %s: %s — inspecting on, no verdict will reach it", self.target.url, exc)
                return
            except Exception as exc:  # noqa: BLE001 - any failure is the server being away: retry
                self._note(exc)
            finally:
                if self._connected:
                    self._connected = False
                    with self._lock:
                        self.counters.disconnects += 1
                try:
                    await asyncio.wait_for(client.disconnect(), self.request_timeout)
                except Exception:  # noqa: BLE001 - the session is gone either way
                    pass
            await self._pause(backoff)
            backoff = min(backoff * 2, 4.0)

    async def _resolve(self, client: Any) -> Tuple[List[Any], List[Any]]:
        """The variable nodes under the object, in `self.names` order, and their types."""
        if self.node is not None:
            parent = client.get_node(self.node)
        else:
            parent = None
            for child in await client.nodes.objects.get_children():
                if (await child.read_browse_name()).Name == DEFAULT_OBJECT:
                    parent = child
                    break
            if parent is None:
                raise _Refused(f"no object named {DEFAULT_OBJECT!r} under Objects (give --opcua-node)")
        try:
            found = {(await child.read_browse_name()).Name: child for child in await parent.get_children()}
        except self._ua.ua.UaStatusCodeError as exc:
            raise _Refused(f"node {self.node} cannot be browsed: {exc}") from exc
        missing = [name for name in self.names if name not in found]
        if missing:
            raise _Refused(f"the object {self.node or DEFAULT_OBJECT} has no variable(s) {', '.join(missing)}")
        nodes = [found[name] for name in self.names]
        types = [await node.read_data_type_as_variant_type() for node in nodes]
        return nodes, types

    async def _drain(self, client: Any, nodes: List[Any], types: List[Any]) -> None:
        """Write queued verdicts in order until stopped; a failed write puts its verdict back
        at the front (when the bound allows) and raises."""
        wake = self._wake
        assert wake is not None
        while True:
            with self._lock:
                verdict = self._queue.popleft() if self._queue else None
                self._inflight = int(verdict is not None)
            if verdict is None:
                if self._stop.is_set():
                    return
                wake.clear()
                with self._lock:
                    empty = not self._queue
                if empty:
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
                continue
            try:
                values = [self._variant(value, kind) for value, kind in zip(verdict, types)]
                await client.write_values(nodes, values)  # bounded by the client's own request timeout
            except BaseException:
                with self._lock:
                    self._inflight = 0
                    if len(self._queue) < self.queue_limit:
                        self._queue.appendleft(verdict)
                    else:
                        self.counters.dropped += 1
                raise
            with self._lock:
                self._inflight = 0
                self.counters.acknowledged += 1

    def _variant(self, value: Any, kind: Any) -> Any:
        """`value` as a Variant of the type the server declared for its variable."""
        types = self._ua.ua.VariantType
        if kind == types.String:
            value = value.isoformat() if isinstance(value, datetime) else str(value)
        elif kind == types.Boolean:
            value = bool(value)
        elif kind in (types.Float, types.Double):
            value = float(value)
        elif kind != types.DateTime:
            value = int(value) if not (isinstance(value, float) and math.isnan(value)) else 0
        return self._ua.ua.Variant(value, kind)

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _note(self, exc: BaseException) -> None:
        """Log a connection failure once per distinct reason (the back-off retries quietly)."""
        reason = f"{type(exc).__name__}: {exc}".strip()
        if reason != self._last_error:
            self._last_error = reason
            _log.warning("warning: OPC UA server %s away (%s); retrying", self.target.url, redact_uri(reason))
