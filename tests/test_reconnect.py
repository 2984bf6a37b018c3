"""The line keeps running: a live source reconnects for as long as an outage lasts, with a
growing, capped, jittered back-off, counting the gap; `--reconnect N` bounds it; of several
cameras (a real gst-rtsp-server and a dead port on 127.0.0.1) one that is dead at the start does
not stop the others unless `--require-all`."""
import json
import signal
import subprocess
import sys
import time
from typing import List, Optional

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.sources import BACKOFF_CAP_S, BACKOFF_FIRST_S, Reader, Source, SourceOptions, backoff_s, open_source
from edgeseg.errors import EdgesegError
from services import free_port, mjpeg_clip, rtsp_server

EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]


class _Outage(Reader):
    """A real producer: `good` frames, then an outage during which `failures` reopens fail,
    then frames again. Records when each reopen came."""

    def __init__(self, good: int, failures: int) -> None:
        self.name = "outage"
        self.good = good
        self.failures = failures
        self.reopens: List[float] = []
        self.back = False

    def read(self) -> Optional[np.ndarray]:
        if self.good > 0 or self.back:
            self.good -= 1
            time.sleep(0.01)
            return np.zeros((8, 8), np.uint8)
        time.sleep(0.01)
        return None

    def reopen(self) -> bool:
        self.reopens.append(time.perf_counter())
        self.back = len(self.reopens) > self.failures
        return self.back


def test_backoff_doubles_with_jitter_up_to_the_cap():
    for attempt in range(1, 30):
        nominal = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
        assert all(0.5 * nominal <= backoff_s(attempt) <= nominal for _ in range(20))
    assert len({backoff_s(3) for _ in range(20)}) > 1  # jittered


def test_an_outage_longer_than_any_retry_count_costs_frames_not_the_stream():
    reader = _Outage(good=3, failures=4)
    source = Source(reader, SourceOptions(timeout=0.1), live=True)  # no reconnect limit: the default
    try:
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 6 and time.monotonic() < deadline:
            frame = source.read(timeout=0.5)
            if frame is not None:
                got.append(frame)
        assert len(got) == 6 and not source.ended  # frames again after 5 reopens: more than the old 3 tries
    finally:
        source.close()
    assert source.stats.reconnects == 5 and source.stats.gaps == 1 and source.stats.gap_s > 0
    assert not source.stats.error and not source.stats.down
    waits = np.diff(reader.reopens)
    # each wait at least half its nominal back-off (the jitter floor); upper bounds would measure the machine
    assert all(wait >= 0.5 * BACKOFF_FIRST_S * 2 ** i for i, wait in enumerate(waits))


def test_reconnect_bounds_the_attempts():
    reader = _Outage(good=2, failures=100)
    source = Source(reader, SourceOptions(timeout=0.1, reconnects=2), live=True)
    list(source)
    source.close()
    assert len(reader.reopens) == 2 and "2 reconnect attempt(s) failed" in source.stats.error


def test_a_stream_that_does_not_open_is_kept_trying_when_not_required():
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    with pytest.raises(EdgesegError, match="did not open"):
        open_source(dead, SourceOptions(timeout=0.5))
    with open_source(dead, SourceOptions(timeout=0.3), required=False) as source:
        assert source.live and source.stats.down
        deadline = time.monotonic() + 10
        while source.stats.reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.stats.reconnects >= 2 and source.stats.down and not source.ended


@pytest.fixture
def camera(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera")
    service = rtsp_server(mjpeg_clip(folder / "clip.avi", 30), folder)
    yield service
    service.stop()


def _models(tiny_models) -> List[str]:
    return ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]


def test_a_camera_dead_at_the_start_does_not_stop_the_others(tiny_models, camera, tmp_path):
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    jsonl = tmp_path / "line.jsonl"
    command = [*EDGESEG, "run", "--source", camera.url, "--source", dead, *_models(tiny_models), "--source-timeout", "0.5"]
    process = subprocess.Popen([*command, "--jsonl", str(jsonl), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def frames() -> int:
        paths = [jsonl] if jsonl.is_file() else list(tmp_path.glob(".line.*.part.jsonl"))
        return sum('"type": "frame"' in line or '"type":"frame"' in line for line in paths[0].read_text().splitlines()) if paths else 0

    try:
        deadline = time.monotonic() + 60
        while frames() < 20 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]  # still running: the dead camera did not stop it
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    live, down = json.loads(stdout)["cameras"]
    assert live["frames"] >= 20 and not live["source"]["down"]
    assert down["frames"] == 0 and down["source"]["down"] and down["source"]["reconnects"] >= 1 and not down["source"]["error"]
    assert f"camera 1 ({dead}) is down" in stderr
    header = json.loads(jsonl.read_text().splitlines()[0])  # the line's own record says it too
    assert [(c["camera"], c["uri"], c["down"]) for c in header["cameras"]] == [(0, camera.url, False), (1, dead, True)]


def test_require_all_stops_at_a_dead_camera(tiny_models, camera):
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    args = ["run", "--source", camera.url, "--source", dead, *_models(tiny_models), "--source-timeout", "0.5", "--require-all"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "did not open" in result.stderr


def test_reconnect_n_ends_the_dead_camera_with_its_error_and_the_others_run(tiny_models, camera):
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    args = ["run", "--source", camera.url, "--source", dead, *_models(tiny_models), "--source-timeout", "0.5", "--reconnect", "1"]
    result = CliRunner().invoke(app, [*args, "--max-frames", "10", "--json"])
    assert result.exit_code == 1, result.output
    live, down = json.loads(result.stdout)["cameras"]
    assert live["frames"] == 10 and down["frames"] == 0
    assert "1 reconnect attempt(s) failed" in down["source"]["error"]
