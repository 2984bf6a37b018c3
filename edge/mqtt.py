"""Defect records to the line over MQTT (paho-mqtt 2.x, QoS 1), without ever slowing inference.

`--mqtt mqtt://[user:password@]host[:port]/topic` (`mqtts://` for TLS, default ports 1883 / 8883).

Topics under `topic`:
  `topic`            one frame record (edgeseg.edge.records) per *defective* frame: the
                     segmenter ran (the gate passed) and kept at least one pixel of some class.
                     Gated frames whose masks came out empty are classifier false alarms; the
                     line has nothing to act on, and the JSONL still holds them.
  `topic/heartbeat`  every `heartbeat_s`, only while connected (one queued during an outage
                     would arrive stale): uptime, frames, fps since the last beat, gated and
                     defective counts, each source's counters and this sink's delivery counters;
                     a last one on close.
  `topic/header`     the run's header record (models' sha256, gate, ...), retained, before the
                     first defect, when the sink is given one (`start`).
  `topic/status`     "online" (retained) on connect; "offline" on close and, as the broker's
                     last will, when the process dies without closing.

Delivery: `write` hands the message to paho's queue and returns (tens of microseconds; it
never touches the socket). paho's network thread (`loop_start`) sends it, reconnects after an
outage with backoff, and resends what the broker had not acknowledged. The queue holds at most
`queue_limit` unacknowledged messages; beyond that new messages are dropped and counted, so a
broker outage costs memory up to the bound and never blocks the pipeline. QoS 1 is "at least
once": a message resent after a reconnect may arrive twice (the record's source + frame say
which). `close` waits up to `flush_timeout` for the queue to drain; what is still queued then
is counted as unsent. `stats()` holds the counters for the run report (`summary()`); `written`
is the broker URL once it acknowledged a record, `kept` the records it acknowledged, `warning`
what was dropped or left unsent.

A broker that refuses the connection (wrong user name or password, not authorised) is not
retried: the same credentials would be refused again every few seconds for the whole run. The
refusal is logged once, at once (the "edgeseg" logger), and in `stats()["refused"]`; the run
goes on without the broker, every record it publishes counts as unsent, and a broker never
reached is the sink's `problem`.
"""
from __future__ import annotations

import logging

import collections
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, Optional, Sequence
from urllib.parse import unquote, urlsplit

from edgeseg.edge.delivery import DeliveryStats
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.records import frame_record, iso_utc, to_json
from edgeseg.edge.sources import Frame, Source
from edgeseg.edge.uri import redact_uri
from edgeseg.errors import EdgesegError, UsageError

_log = logging.getLogger("edgeseg")
HEARTBEAT_SCHEMA = "edgeseg.heartbeat/1"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
URL_FORM = "mqtt://[user:password@]host[:port]/topic"
_DEFECT, _OTHER = "defect", "other"  # message kinds: only defect records are counted


@dataclass(frozen=True)
class MqttTarget:
    """A parsed `--mqtt` URL."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def url(self) -> str:
        """The URL without credentials, for reports and logs."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt[s]://[user:password@]host[:port]/topic` -> MqttTarget, or EdgesegError naming what
    is wrong (UsageError: the CLI exits 2), quoting the URL without its credentials. Needs no paho."""
    shown = redact_uri(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # e.g. a port that is not a number or out of range
        raise UsageError(f"bad MQTT URL {shown!r}: {exc}", hint=f"use {URL_FORM}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"bad MQTT URL {shown!r}: the scheme must be mqtt:// or mqtts://", hint=f"use {URL_FORM}")
    if not parts.hostname:
        raise UsageError(f"bad MQTT URL {shown!r}: no broker host", hint=f"use {URL_FORM}")
    if parts.query:
        raise UsageError(f"bad MQTT URL {shown!r}: it takes no ?query", hint=f"use {URL_FORM}")
    if port == 0:
        raise UsageError(f"bad MQTT URL {shown!r}: port 0 is no broker's port", hint=f"use {URL_FORM}; the default port is {DEFAULT_PORTS[scheme]}")
    topic = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if "#" in url or any(ch in topic for ch in "+#\0"):  # a literal # would end the URL's path
        raise UsageError(f"bad MQTT URL {shown!r}: a topic to publish to cannot hold a wildcard (+ or #)", hint="publish to a plain topic")
    if not topic:
        raise UsageError(f"bad MQTT URL {shown!r}: no topic", hint=f"use {URL_FORM}, e.g. mqtt://broker:1883/line1/defects")
    return MqttTarget(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        topic=topic,
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise EdgesegError("--mqtt needs paho-mqtt, which is not installed", hint="pip install edgeseg[mqtt]") from exc
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise EdgesegError("--mqtt needs paho-mqtt 2.0 or later", hint="pip install -U edgeseg[mqtt]")
    return mqtt


@dataclass
class MqttStats(DeliveryStats):
    """DeliveryStats of the defect messages (published: handed to paho's queue; acknowledged:
    PUBACKs received; dropped: refused because `queue_limit` were unacknowledged; refused: the
    broker's reason for refusing the connection); heartbeats: heartbeats sent."""

    heartbeats: int = 0


class MqttSink(Sink):
    """Publish the defective frames' records to an MQTT broker (see the module docstring).

    target: a URL string or MqttTarget. queue_limit: unacknowledged messages kept while the
    broker is slow or away. heartbeat_s: seconds between heartbeats (0: none). sources: the
    run's sources, whose live counters each heartbeat copies. The run's header record (`start`)
    is published retained on `topic/header` before the first defect.
    """

    kind = "mqtt"

    def __init__(
        self,
        target: Any,
        queue_limit: int = 1000,
        heartbeat_s: float = 10.0,
        flush_timeout: float = 5.0,
        keepalive: int = 30,
        sources: Sequence[Source] = (),
        client_id: Optional[str] = None,
    ) -> None:
        mqtt = _paho()
        self.target = target if isinstance(target, MqttTarget) else parse_mqtt_url(str(target))
        if queue_limit < 1:
            raise EdgesegError(f"MQTT queue limit must be >= 1 message, got {queue_limit}")
        if heartbeat_s < 0:
            raise EdgesegError(f"MQTT heartbeat interval must be >= 0 s, got {heartbeat_s}")
        try:  # a typo in the host fails now, not silently in the background for the whole run
            socket.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise EdgesegError(f"MQTT broker host {self.target.host!r} cannot be resolved: {exc.strerror}", hint="check --mqtt") from exc
        self.queue_limit = queue_limit
        self.flush_timeout = flush_timeout
        self.counters = MqttStats()
        self._mqtt = mqtt
        self._sources = list(sources)
        self._started = time.monotonic()
        self._last_beat = (0, self._started)  # frames and time of the previous heartbeat
        self._frames = self._gated = self._defects = 0
        self._lock = threading.Lock()  # counters, shared with paho's network thread
        self._kinds: Dict[int, str] = {}  # mid -> kind of each queued, unacknowledged message
        self._acks: Deque[int] = collections.deque()  # mids paho reported acknowledged
        self._closed = threading.Event()

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edgeseg-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        client.max_queued_messages_set(queue_limit)
        client.max_inflight_messages_set(min(20, queue_limit))
        client.reconnect_delay_set(min_delay=1, max_delay=4)  # back on the line within 4 s of the broker
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set()
        client.will_set(self._status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.target.host, self.target.port, keepalive=keepalive)
        client.loop_start()
        self._heartbeat: Optional[threading.Thread] = None
        if heartbeat_s > 0:
            self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_s,), name="edgeseg-mqtt-heartbeat", daemon=True)
            self._heartbeat.start()

    @property
    def connected(self) -> bool:
        """Whether a broker session is up now (paho reconnects in the background when not)."""
        return bool(self._client.is_connected())

    @property
    def _status_topic(self) -> str:
        return f"{self.target.topic}/status"

    # -- Sink -----------------------------------------------------------------------------------
    def write(self, frame: Frame, result: FrameResult) -> None:
        self._frames += 1
        if not result.gated:
            return
        self._gated += 1
        if not any(area > 0 for area in result.segmentation.areas.values()):
            return
        self._defects += 1
        for header in self.take_header():
            self._publish(f"{self.target.topic}/header", header, _OTHER, retain=True)
        self._publish(self.target.topic, frame_record(frame, result), _DEFECT)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._send_heartbeat()  # the final counts
        deadline = time.monotonic() + (0.0 if self.counters.refused else self.flush_timeout)
        while self._unacknowledged() > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        unsent = self._unacknowledged()
        with self._lock:
            self.counters.unsent = unsent
        if self.connected:
            self._client.publish(self._status_topic, "offline", qos=1, retain=True).wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
        counters = self.counters
        self.frames = counters.acknowledged
        self.written = self.target.url if counters.acknowledged else None
        if not counters.connects:
            self.problem = counters.never_reached(f"MQTT broker {self.target.url}", "defect record(s)")
        if counters.lost:
            self.warning = counters.loss_line("MQTT record(s)", "--mqtt-queue", self.queue_limit)

    @property
    def backlog(self) -> int:
        return self._unacknowledged()

    @property
    def dropped(self) -> int:
        return self.counters.dropped

    def summary(self) -> Dict[str, Any]:
        return self.stats()

    def describe(self) -> Optional[str]:
        m = self.stats()
        return f"mqtt: {m['url']} ({m['published']} defect records, {m['acknowledged']} acknowledged, {m['dropped']} dropped)"

    def stats(self) -> Dict[str, Any]:
        """The counters and target for the run report."""
        with self._lock:
            self._settle()
            return dict(asdict(self.counters), url=self.target.url, queue_limit=self.queue_limit)

    # -- internals ------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: Any, kind: str, retain: bool = False) -> bool:
        """Queue one QoS-1 message; False when refused because the queue is full."""
        if not isinstance(payload, str):
            payload = to_json(payload)
        # publish only queues (loop_start's thread writes the socket); it refuses beyond the bound
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        queued = info.rc != self._mqtt.MQTT_ERR_QUEUE_SIZE
        with self._lock:
            if queued:
                self._kinds[info.mid] = kind
            if kind == _DEFECT:
                self.counters.published += 1
                self.counters.dropped += not queued
            self._settle()
        return queued

    def _settle(self) -> None:
        """Match the PUBACKs paho reported to what was published (under self._lock). An ack can
        arrive before publish() returned its mid to us: it waits for the next call."""
        for _ in range(len(self._acks)):
            mid = self._acks.popleft()
            kind = self._kinds.pop(mid, None)
            if kind is None:
                self._acks.append(mid)
            elif kind == _DEFECT:
                self.counters.acknowledged += 1

    def _unacknowledged(self) -> int:
        with self._lock:
            self._settle()
            return self.counters.pending

    def _beat(self, interval: float) -> None:
        while not self._closed.wait(interval):
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
        if not self.connected:
            return  # a heartbeat queued during an outage would arrive stale
        now, frames = time.monotonic(), self._frames
        last_frames, last_time = self._last_beat
        beat = {
            "schema": HEARTBEAT_SCHEMA,
            "type": "heartbeat",
            "sent_at": iso_utc(time.time()),
            "uptime_s": round(now - self._started, 3),
            "frames": frames,
            "fps": round((frames - last_frames) / max(now - last_time, 1e-9), 3),
            "gated": self._gated,
            "defects": self._defects,
            "sources": [dict(source.stats.to_dict(), uri=source.uri) for source in self._sources],
            "mqtt": self.stats(),
        }
        self._last_beat = (frames, now)
        if self._publish(f"{self.target.topic}/heartbeat", beat, _OTHER):
            with self._lock:
                self.counters.heartbeats += 1

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            with self._lock:
                self.counters.refused = str(reason_code)
            client.disconnect()  # no retry: the same credentials would be refused again
            _log.error(
                "error: MQTT broker %s refused the connection (%s): inspecting on, no record will reach it"
                " — check the user name and password in --mqtt", self.target.url, reason_code,
            )
            return
        with self._lock:
            self.counters.connects += 1
        # On the network thread: its PUBACK cannot be handled before this returns and records it.
        self._publish(self._status_topic, "online", _OTHER, retain=True)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, _reason_code: Any, _properties: Any) -> None:
        with self._lock:
            self.counters.disconnects += 1

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason_code: Any, _properties: Any) -> None:
        # The PUBACK can come before publish() has returned this mid to _publish: only note it
        # here (a deque append is atomic) and let _settle match it.
        self._acks.append(mid)
