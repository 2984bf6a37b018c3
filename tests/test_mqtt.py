"""MQTT sink against a real Mosquitto broker and a real paho subscriber: every defective frame
arrives as its record, heartbeats and status flow, and a broker restart mid-run loses nothing
within the queue bound while the loss beyond it is counted."""
import json
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.edge.mqtt import MqttSink, MqttTarget, parse_mqtt_url
from edgeseg.edge.records import validate_record
from edgeseg.errors import EdgesegError, UsageError
from services import MOSQUITTO, Mosquitto, free_port, require

mqtt = pytest.importorskip("paho.mqtt.client")
TOPIC = "line1/defects"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("mqtt") / "clip.mp4", frames(30, height=64, width=320))


@pytest.fixture
def broker(tmp_path):
    require(MOSQUITTO, "mosquitto")
    service = Mosquitto(tmp_path)
    service.start()
    yield service
    service.stop()


class Subscriber:
    """A real paho client with a persistent session (the broker queues QoS-1 messages for it
    while it is away, across a broker restart) that keeps every message per topic."""

    def __init__(self, port: int, topics: List[str]) -> None:
        self.messages: Dict[str, List[Any]] = {}
        self._lock = threading.Lock()
        self._topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}", clean_session=False)
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in self._topics])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.wait(lambda: self.client.is_connected())
        time.sleep(0.2)  # SUBACK

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        payload = message.payload.decode()
        with self._lock:
            self.messages.setdefault(message.topic, []).append(json.loads(payload) if payload.startswith("{") else payload)

    def get(self, topic: str) -> List[Any]:
        with self._lock:
            return list(self.messages.get(topic, []))

    @staticmethod
    def wait(condition: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker):
    client = Subscriber(broker.port, [TOPIC, f"{TOPIC}/status", f"{TOPIC}/header"])
    yield client
    client.close()


def _models(tiny_models):
    return ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]


def _defective(jsonl) -> Dict[int, Dict[str, Any]]:
    """Frame index -> record of every defective frame the run wrote to its JSONL (complete lines
    only: the run may be writing the next one)."""
    text = jsonl.read_text() if jsonl.is_file() else ""
    records = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    frames = [r for r in records if r["type"] == "frame"]
    return {r["frame"]: r for r in frames if r["gated"] and any(c["area"] > 0 for c in r["classes"].values())}


def _by_frame(messages: List[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    for message in messages:
        validate_record(message)
    return {m["frame"]: m for m in messages}


# -- URL parsing ------------------------------------------------------------------------------
def test_urls_parse_with_defaults():
    assert parse_mqtt_url("mqtt://broker/line1/defects") == MqttTarget("broker", 1883, "line1/defects")
    target = parse_mqtt_url("mqtts://op:s%40cret@10.0.0.5:8884/a")
    assert (target.host, target.port, target.tls, target.username, target.password) == ("10.0.0.5", 8884, True, "op", "s@cret")
    assert parse_mqtt_url("mqtts://b/t").port == 8883
    assert target.url == "mqtts://10.0.0.5:8884/a"  # no credentials in reports


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://broker/t", "scheme"),
        ("mqtt:///t", "no broker host"),
        ("mqtt://broker", "no topic"),
        ("mqtt://broker/", "no topic"),
        ("mqtt://broker:99999/t", "out of range"),
        ("mqtt://broker:0/t", "port 0"),
        ("mqtt://broker:x/t", "bad MQTT URL"),
        ("mqtt://broker/line/#", "wildcard"),
        ("mqtt://broker/t?qos=2", "query"),
    ],
)
def test_bad_urls_are_refused(url, message):
    with pytest.raises(UsageError, match=message):
        parse_mqtt_url(url)


def test_bad_url_on_the_command_line_is_one_line_and_exit_2(tiny_models, clip):
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(tiny_models), "--mqtt", "mqtt://broker"])
    assert result.exit_code == 2, result.output
    assert "no topic" in result.stderr and "Traceback" not in result.output


def test_unresolvable_host_fails_before_the_run(tiny_models, clip):
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(tiny_models), "--mqtt", "mqtt://no-such-host.invalid/t"])
    assert result.exit_code == 1 and "cannot be resolved" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_paho_gives_install_advice(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # what `import` sees without the package
    with pytest.raises(EdgesegError, match=r"pip install edgeseg\[mqtt\]"):
        MqttSink("mqtt://127.0.0.1/t")


# -- against the broker -----------------------------------------------------------------------
def test_every_defective_frame_arrives_as_its_record(tiny_models, clip, broker, subscriber, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    url = f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"
    args = ["run", "--source", str(clip), *_models(tiny_models), "--gate", "0", "--jsonl", str(jsonl), "--mqtt", url, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = _defective(jsonl)
    assert 0 < len(expected) <= 30  # the tiny random segmenter marks pixels on some frames
    assert subscriber.wait(lambda: len(subscriber.get(TOPIC)) >= len(expected), timeout=5)
    received = _by_frame(subscriber.get(TOPIC))
    assert received == expected  # one message per defective frame, each the JSONL record
    report = json.loads(result.stdout)["mqtt"]
    assert report["published"] == report["acknowledged"] == len(expected)
    assert report["dropped"] == report["unsent"] == 0 and report["url"] == url
    assert subscriber.get(f"{TOPIC}/status")[-1] == "offline"  # closed cleanly
    header = json.loads(jsonl.read_text().splitlines()[0])
    assert subscriber.get(f"{TOPIC}/header") == [header]  # the same models, sha256 and gate


def test_heartbeat_reports_progress_and_status_follows_the_sink(tiny_models, clip, broker):
    from edgeseg.edge.backends import open_backend
    from edgeseg.edge.cascade import LocalCascade
    from edgeseg.edge.pipeline import Pipeline
    from edgeseg.edge.sources import SourceOptions, open_source

    watcher = Subscriber(broker.port, [f"{TOPIC}/heartbeat", f"{TOPIC}/status"])
    try:
        with open_source(clip, SourceOptions(rate=20.0, live=True)) as source:
            sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", heartbeat_s=0.3, sources=[source])
            with sink:
                assert watcher.wait(lambda: "online" in watcher.get(f"{TOPIC}/status"), timeout=5)
                classifier, segmenter = (open_backend(tiny_models[t], "onnxruntime") for t in ("classifier", "segmenter"))
                report = Pipeline(source, LocalCascade(classifier, segmenter, gate=0.0), [sink]).run()
        beats = watcher.get(f"{TOPIC}/heartbeat")
        assert watcher.get(f"{TOPIC}/status")[-1] == "offline"
    finally:
        watcher.close()
    assert len(beats) >= 3  # ~1.5 s of run at 0.3 s per beat
    last = beats[-1]
    assert last["schema"] == "edgeseg.heartbeat/1" and last["frames"] == report["frames"]
    assert last["gated"] == report["frames"]  # gate 0
    assert last["sources"] == [dict(source.stats.to_dict(), uri=source.uri)]  # the source's final counters
    assert any(beat["fps"] > 5 for beat in beats) and last["mqtt"]["dropped"] == 0
    assert [b["uptime_s"] for b in beats] == sorted(b["uptime_s"] for b in beats)


def _run_through_restart(tiny_models, clip, broker, subscriber, tmp_path, queue: int, outage_records: int):
    """`edgeseg run` paced at 10 frames/s (3 s) as a subprocess; the broker stops (SIGTERM)
    once a few records arrived and restarts when the run has written `outage_records` more
    defective frames: counted in its JSONL, not timed, so a loaded machine sees the same outage.
    Returns (expected, report)."""
    jsonl = tmp_path / "run.jsonl"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", str(clip), *_models(tiny_models)]
    command += ["--gate", "0", "--rate", "10", "--jsonl", str(jsonl), "--json"]
    command += ["--mqtt", f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", "--mqtt-queue", str(queue)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert subscriber.wait(lambda: len(subscriber.get(TOPIC)) >= 2, timeout=30), process.stderr
        broker.stop(signal.SIGTERM)
        before = len(_defective(jsonl))
        deadline = time.monotonic() + 30
        while len(_defective(jsonl)) < before + outage_records and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_defective(jsonl)) >= before + outage_records, "the run ended before the outage was long enough"
        broker.start()
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["frames"] + report["source"]["dropped"] == 30  # every frame processed or counted as dropped
    expected, acknowledged = _defective(jsonl), report["mqtt"]["acknowledged"]
    subscriber.wait(lambda: len(_by_frame(subscriber.get(TOPIC))) >= acknowledged, timeout=10)  # what the broker took
    return expected, report["mqtt"]


def test_broker_restart_mid_run_loses_nothing_within_the_queue_bound(tiny_models, clip, broker, subscriber, tmp_path):
    expected, report = _run_through_restart(tiny_models, clip, broker, subscriber, tmp_path, queue=1000, outage_records=3)
    received = _by_frame(subscriber.get(TOPIC))  # QoS 1: a resent message may come twice, same record
    assert received == expected
    assert report["published"] == report["acknowledged"] == len(expected)
    assert report["dropped"] == report["unsent"] == 0
    assert report["disconnects"] >= 1 and report["connects"] >= 2
    print(f"\nbroker restart: published {report['published']}, received {len(received)} distinct "
          f"({len(subscriber.get(TOPIC))} with duplicates), dropped {report['dropped']}")


def test_loss_beyond_a_tiny_queue_bound_is_counted(tiny_models, clip, broker, subscriber, tmp_path):
    expected, report = _run_through_restart(tiny_models, clip, broker, subscriber, tmp_path, queue=2, outage_records=3)
    received = _by_frame(subscriber.get(TOPIC))
    assert set(received) <= set(expected) and all(received[f] == expected[f] for f in received)
    lost = len(expected) - len(received)
    assert report["dropped"] >= 1  # 3 records while the broker was away, 2 may wait
    assert report["dropped"] == lost and report["unsent"] == 0
    assert report["published"] == report["acknowledged"] + report["dropped"] == len(expected)
    print(f"\ntiny bound: published {report['published']}, received {len(received)}, dropped (counted) {report['dropped']}")


# -- a broker that refuses us -----------------------------------------------------------------
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]


@pytest.fixture
def locked_broker(tmp_path):
    require(MOSQUITTO, "mosquitto")
    service = Mosquitto(tmp_path, users={"line1": "right-password"})
    service.start()
    yield service
    service.stop()


def _paced_run(tiny_models, clip, url, jsonl):
    """`edgeseg run` at 10 frames/s (3 s) in a process, and its stderr lines as they came, each
    with whether the run was still going when it came."""
    command = [*EDGESEG, "run", "--source", str(clip), *_models(tiny_models), "--gate", "0", "--rate", "10", "--jsonl", str(jsonl)]
    process = subprocess.Popen([*command, "--mqtt", url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append((line.strip(), process.poll() is None))
    stdout = process.stdout.read()
    process.wait(timeout=60)
    return process.returncode, json.loads(stdout), lines


def test_a_wrong_password_is_one_line_at_once_and_the_run_inspects_on(tiny_models, clip, locked_broker, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    url = f"mqtt://line1:wrong-password@127.0.0.1:{locked_broker.port}/{TOPIC}"
    code, report, lines = _paced_run(tiny_models, clip, url, jsonl)
    assert code == 1  # the results did not reach the broker
    refusals = [(line, running) for line, running in lines if "refused the connection (Not authorized)" in line]
    assert len(refusals) == 1 and refusals[0][1]  # once, while the run was still inspecting
    written = sum(r["type"] == "frame" for r in map(json.loads, jsonl.read_text().splitlines()))
    assert written == report["frames"] > 0 and report["frames"] + report["source"]["dropped"] == 30  # every frame inspected or counted
    assert report["mqtt"]["refused"] == "Not authorized" and report["mqtt"]["connects"] == 0
    assert any("never reached" in e and "Not authorized" in e for e in report["errors"])
    assert "wrong-password" not in "".join(line for line, _ in lines)


def test_the_right_password_delivers(tiny_models, clip, locked_broker, tmp_path):
    url = f"mqtt://line1:right-password@127.0.0.1:{locked_broker.port}/{TOPIC}"
    code, report, lines = _paced_run(tiny_models, clip, url, tmp_path / "run.jsonl")
    assert code == 0, lines
    assert report["mqtt"]["connects"] == 1 and not report["mqtt"]["refused"] and report["mqtt"]["unsent"] == 0


def test_a_broker_never_reached_is_stated_and_exit_1(tiny_models, clip, tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}/{TOPIC}"
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(tiny_models), "--gate", "0", "--mqtt", url, "--json"])
    assert result.exit_code == 1, result.output
    assert f"MQTT broker {url} never reached (no connection)" in result.stderr
