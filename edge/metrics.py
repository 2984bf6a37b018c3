"""Prometheus metrics and health probes of a streaming run over HTTP (`edgeseg run --metrics`).

`MetricsSink` is a sink of the run (edgeseg.edge.sinks): it counts every frame result into a
registry of its own (so several runs, or tests, in one process never share series) and serves

    /metrics  the Prometheus text format: per camera frames, gated frames, frames with a
              defect of each class, errors, glass-to-glass latency; per stage latency
              histograms; per camera the source counters (drops, gaps, reconnects, corrupt);
              per output its backlog and drops (e.g. MQTT while the broker is away); the
              models' sha256 and backend in an info metric; `edgeseg_ready` / `edgeseg_live`
    /healthz  200 while the run is live, else 503 (edgeseg.edge.health)
    /readyz   200 once models are active and every camera delivers, else 503 with the reasons

from a thread of its own, listening from construction (so probes answer while the models load)
until `close`. FPS is `rate(edgeseg_frames_total[1m])`. Torch-free, Python 3.8-compatible;
needs prometheus_client.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, Sequence, Tuple

from edgeseg.edge.health import Health, Status, not_delivering
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame
from edgeseg.edge.uri import listen_address
from edgeseg.errors import EdgesegError
from edgeseg.lazy import require

_log = logging.getLogger(__name__)
# Seconds; the line budget is 12-50 ms a strip end to end, so the buckets resolve around it.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))
_SOURCE_COUNTERS = (
    ("dropped", "live frames replaced by a newer one before the pipeline took them"),
    ("corrupt", "unreadable frames skipped"),
    ("reconnects", "reopen attempts of a live source"),
    ("gaps", "outages of a live source (no frame for its timeout)"),
)


def parse_address(text: str) -> Tuple[str, int]:
    """(host, port) of a --metrics address (edgeseg.edge.uri.listen_address)."""
    return listen_address(text, "--metrics", 9108)


class MetricsSink(Sink):
    """Counts every frame into Prometheus metrics and serves them with the probes (module doc).

    address: where to listen ("HOST:PORT", parse_address). health: the run's Health (its
    sources are the cameras). outputs: the run's other sinks, whose `backlog` and `dropped`
    are read at each scrape.
    """

    kind = "metrics"

    def __init__(self, address: str, health: Health, outputs: Sequence[Sink] = ()) -> None:
        host, port = parse_address(address)
        prometheus = require("prometheus_client", "--metrics", extra="metrics")
        self.health = health
        self.outputs = outputs
        self.registry = prometheus.CollectorRegistry()
        cameras, registry = ["camera"], self.registry
        self._frames = prometheus.Counter("edgeseg_frames", "Frames inspected", cameras, registry=registry)
        self._gated = prometheus.Counter("edgeseg_frames_gated", "Frames the classifier sent to the segmenter", cameras, registry=registry)
        self._errors = prometheus.Counter("edgeseg_frame_errors", "Frames whose model output was not a number", cameras, registry=registry)
        self._defects = prometheus.Counter("edgeseg_defect_frames", "Frames with a kept defect of the class", ["camera", "defect_class"], registry=registry)
        self._glass = prometheus.Histogram(
            "edgeseg_glass_to_glass_seconds", "From capture to the end of the outputs", cameras, registry=registry, buckets=BUCKETS
        )
        self._stages = prometheus.Histogram("edgeseg_stage_seconds", "Time per frame in each stage", ["stage"], registry=registry, buckets=BUCKETS)
        self._models = prometheus.Info("edgeseg_model", "The models the run uses", ["role"], registry=registry)
        registry.register(_Live(self, prometheus.metrics_core))
        self._children: Dict[Any, Any] = {}  # label values -> metric child, made once
        try:
            server = _IPv6Server if ":" in host else ThreadingHTTPServer
            self._server = server((host, port), _handler(self, prometheus))
        except OSError as exc:
            raise EdgesegError(f"cannot serve --metrics on {host}:{port}: {exc.strerror}", hint="pick another port, e.g. --metrics 127.0.0.1:9109") from exc
        self._server.daemon_threads = True
        bound_host, bound_port = str(self._server.server_address[0]), self._server.server_address[1]
        self.url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
        self.written = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgeseg-metrics", daemon=True)
        self._thread.start()
        _log.info("metrics: %s/metrics, health: /healthz, /readyz", self.url)

    def start(self, header: Dict[str, Any]) -> None:
        """The header record (again at a model swap): its models go into edgeseg_model_info."""
        for role, model in header.get("models", {}).items():
            self._models.labels(role).info({key: str(value) for key, value in model.items()})

    def write(self, frame: Frame, result: FrameResult) -> None:
        camera = str(frame.camera)
        self._child(self._frames, camera).inc()
        if result.gated:
            self._child(self._gated, camera).inc()
        if result.error:
            self._child(self._errors, camera).inc()
        for name, area in result.segmentation.areas.items():
            if area > 0:
                self._child(self._defects, camera, name).inc()
        for stage, seconds in result.latency.items():
            self._child(self._stages, stage).observe(seconds)
        self._child(self._glass, camera).observe(time.perf_counter() - frame.timestamp)
        self.frames += 1

    def close(self) -> None:
        """Stop serving; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def describe(self) -> str:
        return f"metrics: {self.url}/metrics ({self.frames} frames counted)"

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Live:
    """The figures read at each scrape: source counters, output backlogs, health."""

    def __init__(self, sink: MetricsSink, core: Any) -> None:
        self.sink = sink
        self.core = core  # prometheus_client.metrics_core

    def collect(self) -> Iterator[Any]:
        core = self.core
        health = self.sink.health
        up = core.GaugeMetricFamily("edgeseg_camera_up", "1 while the camera delivers frames (uri: which camera)", labels=["camera", "uri"])
        counters = {name: core.CounterMetricFamily(f"edgeseg_source_{name}", text, labels=["camera"]) for name, text in _SOURCE_COUNTERS}
        gap_s = core.CounterMetricFamily("edgeseg_source_gap_seconds", "Total length of the outages of a live source", labels=["camera"])
        for index, source in enumerate(health.sources):
            camera, stats = str(index), source.stats
            up.add_metric([camera, source.uri], 0.0 if not_delivering(source) else 1.0)
            for name, family in counters.items():
                family.add_metric([camera], float(getattr(stats, name)))
            gap_s.add_metric([camera], stats.gap_s)
        yield from [up, *counters.values(), gap_s]
        backlog = core.GaugeMetricFamily("edgeseg_output_backlog", "Records an output took and has not delivered yet", labels=["output"])
        dropped = core.CounterMetricFamily("edgeseg_output_dropped", "Records an output could not keep (its queue was full)", labels=["output"])
        for sink in self.sink.outputs:
            backlog.add_metric([sink.kind], float(sink.backlog))
            dropped.add_metric([sink.kind], float(sink.dropped))
        yield from [backlog, dropped]
        yield core.GaugeMetricFamily("edgeseg_ready", "1 once the models are active and every camera delivers", value=float(health.ready().ok))
        yield core.GaugeMetricFamily("edgeseg_live", "1 while no frame waits longer than the stall limit", value=float(health.live().ok))


def _handler(sink: MetricsSink, prometheus: Any) -> Any:
    """The request handler class serving `sink`'s registry (`prometheus`: the module) and its health."""
    probes = {"/healthz": sink.health.live, "/readyz": sink.health.ready}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, prometheus.CONTENT_TYPE_LATEST, prometheus.generate_latest(sink.registry))
            elif path in probes:
                status: Status = probes[path]()
                self._send(200 if status.ok else 503, "text/plain; charset=utf-8", status.text().encode("utf-8"))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /readyz\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - a scrape is not worth a log line
            pass

    return Handler


__all__ = ["BUCKETS", "MetricsSink", "parse_address"]
