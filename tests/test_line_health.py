"""A run watched on the line: Prometheus metrics and probes over real HTTP (parsed with
prometheus_client's own parser), readiness that follows a camera's outage, and systemd's notify
protocol on a datagram socket the test owns, whose watchdog pings stop when inference hangs."""
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

from edge_media import frames, write_video
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.card import read_card
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.health import Health
from edgeseg.edge.metrics import MetricsSink, parse_address
from edgeseg.edge.outputs import OutputOptions, Outputs, open_outputs
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.records import RunHeader
from edgeseg.edge.sdnotify import ServiceNotifier, notify, watchdog_interval
from edgeseg.edge.sources import Reader, Source, SourceOptions, open_source
from edgeseg.errors import UsageError
from edgeseg.files import sha256
from edgeseg.inspector import Inspector

parser = pytest.importorskip("prometheus_client.parser")


def get(url: str) -> Tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def scrape(url: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of every sample at url/metrics."""
    status, text = get(url + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parser.text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> Optional[float]:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _Camera(Reader):
    """A real producer at ~50 fps while `flowing` is set; silent (a stalled camera) otherwise."""

    def __init__(self, flowing: threading.Event) -> None:
        self.name = "switchable"
        self.flowing = flowing

    def read(self) -> Optional[np.ndarray]:
        time.sleep(0.02)
        return np.full((96, 480, 3), 90, np.uint8) if self.flowing.is_set() else None

    def reopen(self) -> bool:
        return True


def test_metrics_and_readiness_follow_a_stalled_camera(tiny_models, tmp_path):
    steady = open_source(write_video(tmp_path / "steady.avi", frames(20)), SourceOptions(loop=True, live=True, rate=25.0))
    flowing = threading.Event()
    flowing.set()
    switchable = Source(_Camera(flowing), SourceOptions(timeout=0.3), live=True)
    sources = [steady, switchable]
    inspector = Inspector(tiny_models["classifier"], tiny_models["segmenter"], backend="onnxruntime")
    outputs = open_outputs(OutputOptions(metrics="127.0.0.1:0"), sources, inspector.cascade.segmenter_card, models_ready=lambda: inspector.cascade.is_active)
    url = next(sink for sink in outputs.sinks if isinstance(sink, MetricsSink)).url
    assert url.startswith("http://127.0.0.1:")
    assert get(url + "/readyz")[0] == 503  # models load with the first stream
    runner = threading.Thread(target=inspector.stream, args=(sources, [outputs]), daemon=True)
    runner.start()
    try:
        wait_for(lambda: get(url + "/readyz")[0] == 200, what="readiness")
        wait_for(lambda: (value(scrape(url), "edgeseg_frames_total", camera="1") or 0) >= 3, what="frames of camera 1")
        samples = scrape(url)
        assert value(samples, "edgeseg_frames_total", camera="0") >= 1
        assert value(samples, "edgeseg_camera_up", camera="1", uri="switchable") == 1.0
        assert value(samples, "edgeseg_ready") == 1.0 and value(samples, "edgeseg_live") == 1.0
        for role in ("classifier", "segmenter"):
            info = [labels for (name, labels), v in samples.items() if name == "edgeseg_model_info" and ("role", role) in labels]
            assert len(info) == 1 and ("sha256", sha256(tiny_models[role])) in info[0]
        assert value(samples, "edgeseg_stage_seconds_count", stage="classifier") >= 4
        assert value(samples, "edgeseg_stage_seconds_bucket", stage="classifier", le="+Inf") == value(samples, "edgeseg_stage_seconds_count", stage="classifier")
        assert value(samples, "edgeseg_glass_to_glass_seconds_count", camera="1") == value(samples, "edgeseg_frames_total", camera="1")
        assert value(samples, "edgeseg_source_dropped_total", camera="0") is not None

        flowing.clear()  # the camera stalls: after its 0.3 s timeout it is down and reconnecting
        wait_for(lambda: get(url + "/readyz")[0] == 503, what="readiness to flip")
        status, body = get(url + "/readyz")
        assert "camera 1 (switchable)" in body and "down" in body and "camera 0" not in body
        assert get(url + "/healthz") == (200, "ok\n")  # a camera outage is not a hung process
        samples = scrape(url)
        assert value(samples, "edgeseg_camera_up", camera="1", uri="switchable") == 0.0
        assert value(samples, "edgeseg_source_gaps_total", camera="1") >= 1 and value(samples, "edgeseg_ready") == 0.0

        flowing.set()  # back: ready again
        wait_for(lambda: get(url + "/readyz")[0] == 200, what="readiness to return")
        assert value(scrape(url), "edgeseg_source_reconnects_total", camera="1") >= 1
    finally:
        inspector.stop()
        runner.join(timeout=30)
        outputs.close()
        inspector.close()
        for source in sources:
            source.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/metrics", timeout=2)  # closed with the run


class _Hanging(OnnxRuntimeBackend):
    """The real ONNX Runtime backend, slow to activate, whose runs block while `hang` is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hang = threading.Event()
        self.release = threading.Event()
        self.activated_at: Optional[float] = None

    def _activate_impl(self):
        time.sleep(0.5)
        super()._activate_impl()
        self.activated_at = time.monotonic()

    def _infer_impl(self, feed):
        if self.hang.is_set():
            self.release.wait()
        return super()._infer_impl(feed)


class _Listener:
    """A notify socket of the test's own: every datagram with its arrival time."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: List[Tuple[float, str]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().split("\n"))

    def times(self, message: str) -> List[float]:
        return [t for t, m in list(self.messages) if m == message]

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self.sock.close()


def test_watchdog_pings_follow_inference_and_stop_when_it_hangs(tiny_models, tmp_path):
    listener = _Listener(f"@edgeseg-test-{os.getpid()}")  # abstract namespace, as systemd's own
    classifier = _Hanging(tiny_models["classifier"], read_card(tiny_models["classifier"]))
    cascade = LocalCascade(classifier, OnnxRuntimeBackend(tiny_models["segmenter"], read_card(tiny_models["segmenter"])))
    source = open_source(write_video(tmp_path / "line.avi", frames(20)), SourceOptions(loop=True, live=True, rate=25.0))
    health = Health([source], lambda: cascade.is_active, stall_s=1.0)
    metrics = MetricsSink("127.0.0.1:0", health)
    notifier = ServiceNotifier(health, address=f"@edgeseg-test-{os.getpid()}", watchdog_s=0.4)
    pipeline = Pipeline(source, cascade, [Outputs([metrics, notifier, health], RunHeader(cascade, source.uri))])
    runner = threading.Thread(target=pipeline.run, daemon=True)
    started = time.monotonic()
    runner.start()
    try:
        wait_for(lambda: listener.times("READY=1"), what="READY=1")
        assert listener.times("READY=1")[0] >= classifier.activated_at > started  # after activation
        wait_for(lambda: health.frames >= 5, what="frames")
        flowing = time.monotonic()
        wait_for(lambda: len([t for t in listener.times("WATCHDOG=1") if t > flowing]) >= 3, timeout=10, what="pings while frames flow")
        assert get(metrics.url + "/healthz") == (200, "ok\n")

        classifier.hang.set()  # inference blocks in the backend: frames wait, pings stop
        hung = time.monotonic()
        wait_for(lambda: get(metrics.url + "/healthz")[0] == 503, timeout=10, what="liveness to fail")
        assert "inference stalled" in get(metrics.url + "/healthz")[1]
        quiet_from = time.monotonic() + 0.3  # a ping decided just before the check may still arrive
        time.sleep(1.5)
        assert [t for t in listener.times("WATCHDOG=1") if t > quiet_from] == []
        assert time.monotonic() - hung < 15  # noticed well within a watchdog

        classifier.release.set()  # it recovers: pings resume
        resumed = time.monotonic()
        wait_for(lambda: [t for t in listener.times("WATCHDOG=1") if t > resumed], timeout=10, what="pings to resume")
    finally:
        classifier.hang.clear()
        classifier.release.set()
        pipeline.stop()
        runner.join(timeout=30)
        for sink in (metrics, notifier, health):
            sink.close()
        source.close()
    wait_for(lambda: listener.times("STOPPING=1"), timeout=5, what="STOPPING=1")
    assert listener.times("STOPPING=1")[0] > listener.times("WATCHDOG=1")[-1] - 0.01
    statuses = [m for _, m in listener.messages if m.startswith("STATUS=")]  # what `systemctl status` shows
    assert "STATUS=inspecting" in statuses and any(m.startswith("STATUS=inference stalled") for m in statuses)
    listener.close()


def test_notify_reaches_a_path_socket_and_reports_a_missing_one(tmp_path):
    listener = _Listener(str(tmp_path / "notify.sock"))
    try:
        assert notify("READY=1\nSTATUS=x", str(tmp_path / "notify.sock"))
        wait_for(lambda: listener.times("STATUS=x"), timeout=5, what="the datagram")
        assert listener.times("READY=1")
    finally:
        listener.close()
    assert not notify("READY=1", str(tmp_path / "gone.sock"))  # a warning, never an exception
    assert not notify("READY=1", "")  # not under systemd


def test_watchdog_interval_is_for_this_process_only():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None


@pytest.mark.parametrize(
    "text, expected",
    [("9108", ("127.0.0.1", 9108)), (":9108", ("127.0.0.1", 9108)), ("0.0.0.0:9108", ("0.0.0.0", 9108)), ("[::1]:9108", ("::1", 9108)), ("line-pc:80", ("line-pc", 80))],
)
def test_metrics_address_binds_loopback_unless_a_host_is_given(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "1.2.3.4:99999", "a b:80"])
def test_a_bad_metrics_address_is_a_usage_error(text):
    with pytest.raises(UsageError):
        OutputOptions(metrics=text)


def test_a_taken_port_is_one_error_naming_it(tiny_models, tmp_path):
    source = open_source(write_video(tmp_path / "c.avi", frames(2)))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(Exception, match=f"cannot serve --metrics on 127.0.0.1:{port}"):
            open_outputs(OutputOptions(metrics=f"127.0.0.1:{port}"), [source], read_card(tiny_models["segmenter"]))
    finally:
        taken.close()
        source.close()


def test_an_output_backlog_and_its_drops_are_scraped_while_the_broker_is_away():
    pytest.importorskip("paho.mqtt.client")
    from edgeseg.edge.mqtt import MqttSink
    from edgeseg.edge.postprocess import FrameResult, Segmentation
    from edgeseg.edge.sources import Frame
    from services import free_port

    mqtt = MqttSink(f"mqtt://127.0.0.1:{free_port()}/line1", queue_limit=3, heartbeat_s=0, flush_timeout=0)  # nothing listens there
    metrics = MetricsSink("127.0.0.1:0", Health([]), [mqtt])
    try:
        for index in range(5):  # defective frames: each one a record to publish
            frame = Frame(index=index, image=np.zeros((8, 40), np.uint8), timestamp=time.perf_counter(), source="line1")
            result = FrameResult(index, "line1", frame.timestamp, 8, 40, 0.9, True, Segmentation(areas={"1": 12}), gate=0.5)
            mqtt.write(frame, result)
            metrics.write(frame, result)
        samples = scrape(metrics.url)
        assert value(samples, "edgeseg_output_backlog", output="mqtt") == 3.0  # the queue bound
        assert value(samples, "edgeseg_output_dropped_total", output="mqtt") == 2.0
        assert value(samples, "edgeseg_defect_frames_total", camera="0", defect_class="1") == 5.0
    finally:
        metrics.close()
        mqtt.close()


def test_an_ipv6_address_is_served_on_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    metrics = MetricsSink("[::1]:0", Health([]))
    try:
        assert metrics.url.startswith("http://[::1]:") and get(metrics.url + "/healthz") == (200, "ok\n")
    finally:
        metrics.close()
