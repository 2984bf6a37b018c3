"""OPC UA verdicts against a real asyncua server on 127.0.0.1 (its own thread and loop, variables
typed as a PLC's data block would be): every frame's verdict arrives; a server stopped mid-run
never stops the run, and the verdicts lost are counted and fail it."""
import json
import subprocess
import sys
import time

import pytest

from edge_media import frames, write_video
from edgeseg.edge.opcua import parse_opcua_url
from edgeseg.errors import UsageError
from services import OpcUaServer

pytest.importorskip("asyncua")
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]
CLASSES = ["1", "2", "3", "4"]


@pytest.fixture
def server():
    service = OpcUaServer(CLASSES)
    yield service
    service.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("opcua") / "clip.mp4", frames(50, height=64, width=320))


def _command(tiny_models, clip, url, jsonl, *extra):
    return [*EDGESEG, "run", "--source", str(clip), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"]),
            "--gate", "0", "--rate", "10", "--jsonl", str(jsonl), "--opcua", url, "--json", *extra]


def test_urls():
    target = parse_opcua_url("opc.tcp://line:s3cret@plc.local/objects/")
    assert (target.host, target.port, target.path, target.username, target.password) == ("plc.local", 4840, "/objects/", "line", "s3cret")
    assert "s3cret" not in target.url
    for bad in ("http://plc:4840", "opc.tcp://:4840", "opc.tcp://plc:0", "opc.tcp://plc?x=1"):
        with pytest.raises(UsageError):
            parse_opcua_url(bad)
    with pytest.raises(UsageError) as refused:
        parse_opcua_url("opc.tcp://user:pw@plc:99999")
    assert "pw" not in str(refused.value)


def test_every_verdict_arrives_with_the_server_types(tiny_models, clip, server, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    process = subprocess.Popen(_command(tiny_models, clip, server.url, jsonl), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    while process.poll() is None:  # the PLC's view while the run goes
        seen.add(server.values()["frame"])
        time.sleep(0.1)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["opcua"]["published"] == report["opcua"]["acknowledged"] == report["frames"] > 0
    assert report["opcua"]["dropped"] == report["opcua"]["unsent"] == 0 and report["outputs"]["opcua"] == server.url
    assert len(seen) > 3  # the frame variable advanced during the run
    last = [r for r in map(json.loads, jsonl.read_text().splitlines()) if r["type"] == "frame"][-1]
    values = server.values()
    assert values["frame"] == last["frame"] and values["source"] == last["source"]
    assert values["defect"] == (last["gated"] and any(c["area"] > 0 for c in last["classes"].values()))
    assert [values[f"area_{c}"] for c in CLASSES] == [last["classes"][c]["area"] for c in CLASSES]
    assert abs(values["defect_probability"] - last["defect_probability"]) < 1e-6
    assert values["captured_at"].isoformat(timespec="milliseconds") == last["captured_at"]


def test_a_server_lost_mid_run_never_stops_it_and_the_loss_is_counted(tiny_models, clip, server, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    process = subprocess.Popen(_command(tiny_models, clip, server.url, jsonl, "--opcua-queue", "3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while server.values()["frame"] < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 1, stderr  # not every verdict reached the PLC
    report = json.loads(stdout)
    written = sum(r["type"] == "frame" for r in map(json.loads, jsonl.read_text().splitlines()))
    assert written == report["frames"] and report["frames"] + report["source"]["dropped"] == 50  # the run went on to the end
    stats = report["opcua"]
    # frame ids skip what --rate dropped: a frame id of 3 at the server means at least one verdict, not three
    assert stats["acknowledged"] >= 1 and stats["dropped"] + stats["unsent"] >= 1
    assert stats["acknowledged"] + stats["dropped"] + stats["unsent"] == stats["published"] == report["frames"]
    assert stats["disconnects"] >= 1
    assert any(f"OPC UA server {server.url}" in e and "dropped beyond --opcua-queue 3" in e for e in report["errors"])


def test_a_server_without_the_variables_is_one_line_and_exit_1(tiny_models, clip, server, tmp_path):
    command = _command(tiny_models, clip, server.url, tmp_path / "run.jsonl", "--opcua-node", "ns=0;i=85")  # Objects: no verdict variables
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["frames"] > 0 and report["opcua"]["acknowledged"] == 0
    assert any("has no variable(s) defect, frame" in e for e in report["errors"]), report["errors"]
