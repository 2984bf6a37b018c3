"""RTSP for real: a clip served by gst-rtsp-server on 127.0.0.1 streams through `edgeseg run`
(OpenCV's FFmpeg backend, as pip's OpenCV has no GStreamer); the server stops mid-stream and
comes back: the source times out, reconnects and counts the gap; a server that never answers is
one line within the timeout."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.sources import SourceOptions, open_source
from edgeseg.errors import EdgesegError
from services import free_port, mjpeg_clip, rtsp_server

FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 s at 25 frames/s."""
    return mjpeg_clip(tmp_path_factory.mktemp("rtsp") / "clip.avi", 40, FPS)


@pytest.fixture
def server(clip, tmp_path):
    service = rtsp_server(clip, tmp_path)
    yield service
    service.stop()


def _models(tiny_models):
    return ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]


def test_rtsp_stream_runs_through_the_pipeline(tiny_models, server):
    result = CliRunner().invoke(app, ["run", "--source", server.url, *_models(tiny_models), "--max-frames", "15", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 15 and report["source"]["live"] and report["source"]["uri"] == server.url
    assert report["source"]["gaps"] == report["source"]["reconnects"] == 0


def test_server_outage_times_out_reconnects_and_counts_the_gap(tiny_models, server, tmp_path):
    jsonl = tmp_path / "run.jsonl"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", server.url, *_models(tiny_models)]
    command += ["--source-timeout", "1", "--jsonl", str(jsonl), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def frames():
        """The run's frame records so far: until it ends they are in the JSONL's staged file."""
        paths = [jsonl] if jsonl.is_file() else list(tmp_path.glob(".run.*.part.jsonl"))
        lines = paths[0].read_text().splitlines() if paths else []
        return [r for r in map(json.loads, lines) if r["type"] == "frame"]

    try:
        deadline = time.monotonic() + 60
        while len(frames()) < 10 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert len(frames()) >= 10, process.communicate(timeout=10)[1]
        stopped = time.perf_counter()  # CLOCK_MONOTONIC: the same clock as the records' monotonic_s
        server.stop()
        time.sleep(2.0)
        server.start()
        restarted = time.perf_counter()
        while not any(r["monotonic_s"] > restarted for r in frames()) and time.perf_counter() < restarted + 20:
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    source = json.loads(stdout)["source"]
    times = [r["monotonic_s"] for r in frames()]
    before = max(t for t in times if t < stopped + 0.5)  # the frames FFmpeg had buffered
    after = min(t for t in times if t > stopped + 0.5)
    assert after > restarted  # nothing came while the server was down
    assert source["gaps"] == 1 and source["reconnects"] >= 1 and not source["error"]
    assert source["gap_s"] == pytest.approx(after - before, abs=0.05)
    print(
        f"\nRTSP outage of {restarted - stopped:.2f} s: last frame {before - stopped:+.2f} s after the stop, "
        f"first frame {after - restarted:.2f} s after the restart, gap {source['gap_s']:.2f} s "
        f"(~{round(source['gap_s'] * FPS) - 1} frames at {FPS} fps), {source['reconnects']} reconnect(s)"
    )


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung camera)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen(4)
    yield f"rtsp://127.0.0.1:{listener.getsockname()[1]}/x"
    listener.close()


def test_source_that_never_answers_fails_within_the_timeout(silent_server, monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    started = time.perf_counter()
    with pytest.raises(EdgesegError, match=r"did not open \(refused, or no answer within 1 s\)"):
        open_source(silent_server, SourceOptions(timeout=1.0))
    assert time.perf_counter() - started < 3.0  # OpenCV's own default would wait 30 s
    # RTSP's FFmpeg options were set for that open only: a video opened next decodes as before
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


def test_source_that_never_answers_is_one_line_and_exit_1(tiny_models, silent_server):
    result = CliRunner().invoke(app, ["run", "--source", silent_server, *_models(tiny_models), "--source-timeout", "1"])
    assert result.exit_code == 1, result.output
    assert "did not open" in result.stderr and len(result.stderr.strip().splitlines()) == 1
