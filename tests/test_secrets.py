"""No credential in any output: a camera password planted in an RTSP URL (served by a real
gst-rtsp-server, which ignores it) and an MQTT password (real Mosquitto) appear in no file name,
no file, no stdout/stderr line and no MQTT payload of `edgeseg run`."""
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.uri import redact_uri
from services import MOSQUITTO, Mosquitto, free_port, mjpeg_clip, require, rtsp_server

mqtt = pytest.importorskip("paho.mqtt.client")
SECRET = "CamPa55w0rd"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]


@pytest.mark.parametrize(
    "text, shown",
    [
        ("rtsp://camuser:CamPa55w0rd@10.0.0.7:554/x", "rtsp://***@10.0.0.7:554/x"),
        ("rtsp://camuser@cam/x", "rtsp://***@cam/x"),
        ("rtsp://u:p@ss@cam/x?q=1", "rtsp://***@cam/x?q=1"),  # a raw "@" in the password
        ("rtspsrc location=rtsp://u:pw@cam/x latency=0 ! decodebin", "rtspsrc location=rtsp://***@cam/x latency=0 ! decodebin"),
        ("rtsp://cam/x@2", "rtsp://cam/x@2"),  # an "@" in the path is no user info
        ("/data/strips/a@b.png", "/data/strips/a@b.png"),
    ],
)
def test_user_info_is_redacted_from_every_uri_in_a_text(text, shown):
    assert redact_uri(text) == shown


def _everything_written(folder: Path) -> List[str]:
    """Every file name under `folder` and every file's text."""
    found = []
    for path in sorted(folder.rglob("*")):
        found.append(str(path.relative_to(folder)))
        if path.is_file():
            found.append(path.read_bytes().decode("latin-1"))
    return found


def test_a_camera_password_reaches_no_output(tiny_models, tmp_path):
    require(MOSQUITTO, "mosquitto")
    server = rtsp_server(mjpeg_clip(tmp_path / "clip.avi", 10), tmp_path)
    broker = Mosquitto(tmp_path)
    broker.start()
    messages: List[bytes] = []
    lock = threading.Lock()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="secrets-test")
    subscriber.on_connect = lambda client, *_: client.subscribe("#", 1)

    def keep(_client, _userdata, message):
        with lock:
            messages.append(message.topic.encode() + b" " + message.payload)

    subscriber.on_message = keep
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    out = tmp_path / "out"
    out.mkdir()
    source = server.url.replace("rtsp://", f"rtsp://camuser:{SECRET}@")
    command = [*EDGESEG, "run", "--source", source, "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--gate", "0", "--max-frames", "20", "--jsonl", str(out / "run.jsonl"), "--save-defects", str(out / "defects")]
    command += ["--mqtt", f"mqtt://127.0.0.1:{broker.port}/line1/defects", "--json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        table = subprocess.run(command[:-1], capture_output=True, text=True, timeout=120)  # the people's table too
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
        server.stop()
    assert result.returncode == 0, result.stderr
    assert table.returncode == 0, table.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 20 and report["source"]["uri"] == server.url.replace("rtsp://", "rtsp://***@")
    written = _everything_written(out)
    assert any(name.startswith("defects/rtsp_") for name in written)  # crops named after the source
    assert any('"type": "frame"' in text or '"type":"frame"' in text for text in written)
    with lock:
        published = list(messages)
    assert any(m.startswith(b"line1/defects/header ") for m in published)  # retained header
    assert any(m.startswith(b"line1/defects/heartbeat ") for m in published)  # each source's counters
    outputs = [result.stdout, result.stderr, table.stdout, table.stderr, *written, *(m.decode() for m in published)]
    assert not [text for text in outputs if SECRET in text or "camuser" in text]


def test_a_camera_that_refuses_names_it_without_its_password(tiny_models):
    dead = f"rtsp://camuser:{SECRET}@127.0.0.1:{free_port()}/x"
    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    result = subprocess.run([*EDGESEG, "run", "--source", dead, *models, "--source-timeout", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "did not open" in result.stderr
    assert SECRET not in result.stdout + result.stderr and "rtsp://***@127.0.0.1" in result.stderr


@pytest.mark.parametrize("url", [f"mqtt://op:{SECRET}@broker:99999/t", f"mqtt://op:{SECRET}@broker/t/#", f"mqtt://op:{SECRET}@broker"])
def test_a_bad_mqtt_url_is_quoted_without_its_password(tiny_models, url):
    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    result = CliRunner().invoke(app, ["run", *models, "--mqtt", url])
    assert result.exit_code == 2 and "bad MQTT URL 'mqtt://***@broker" in result.stderr
    assert SECRET not in result.output
