"""The live view (`run --view`) in a real headless Chromium driven by selenium (Debian's
`chromium` + `chromium-driver`), against a real `edgeseg run` streaming tiny models: the page
loads, frames advance, defects are listed; the token keeps others out; a stalled client never
holds up the sink."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_media import frames, write_video
from edgeseg.edge.annotate import Annotator
from edgeseg.edge.view import ViewSink, parse_address
from edgeseg.errors import UsageError
from services import free_port, require

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "line-7-secret"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]


def _get(url, headers=None, timeout=10.0):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.headers, response.read()


@pytest.fixture
def live_run(tiny_models, tmp_path):
    """`edgeseg run --view` on a looping 64x320 clip at 10 frames/s (gate 0: every frame
    segmented), token-protected; yields the page URL; stopped with SIGTERM, which must exit 0."""
    clip = write_video(tmp_path / "clip.mp4", frames(40, height=64, width=320))
    port = free_port()
    command = [*EDGESEG, "run", "--source", str(clip), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--gate", "0", "--loop", "--rate", "10", "--max-frames", "3000", "--view", f"127.0.0.1:{port}", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, EDGESEG_VIEW_TOKEN=TOKEN))
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            if json.loads(_get(f"{base}stats.json?token={TOKEN}", timeout=2)[2])["cameras"]:
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no frame within 60 s"
        time.sleep(0.2)
    yield base
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["view"]["url"] == base and report["view"]["clients"] >= 1 and report["view"]["encoded"] >= 2


@pytest.fixture
def browser():
    require(CHROMIUM, "chromium")
    require(CHROMEDRIVER, "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=900,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # the system driver: nothing downloaded
    yield driver
    driver.quit()


def _wait(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


def test_the_page_streams_advancing_frames_and_lists_defects(live_run, browser, tmp_path):
    browser.get(f"{live_run}?token={TOKEN}")
    assert browser.title == "edgeseg · live"
    width = _wait(lambda: browser.execute_script("const i = document.getElementById('stream-0'); return i && i.complete && i.naturalWidth"))
    assert width == 320  # the annotated frame, at the frame's size
    frame_cell = "return document.querySelector('#counts tr.camera td:nth-child(4)').textContent"
    first = int(_wait(lambda: browser.execute_script(frame_cell)))
    assert _wait(lambda: int(browser.execute_script(frame_cell)) > first + 3), "the frame counter did not advance"
    before = browser.get_screenshot_as_png()
    assert _wait(lambda: browser.get_screenshot_as_png() != before), "the stream did not change"
    listed = _wait(lambda: browser.execute_script("const li = document.querySelector('#crops li.defect'); return li && li.textContent"))
    assert listed and "class" in listed and " px" in listed
    crop_loaded = "const i = document.querySelector('#crops li.defect img'); return i && i.complete && i.naturalWidth > 0"
    assert _wait(lambda: browser.execute_script(crop_loaded))
    stats = json.loads(_get(f"{live_run}stats.json", {"X-Edgeseg-Token": TOKEN})[2])
    camera = stats["cameras"][0]
    assert camera["defects"] >= 1 and sum(camera["classes"].values()) >= camera["defects"] and camera["latency_ms"]["mean"] > 0
    shot = Path(os.environ.get("EDGESEG_VIEW_SCREENSHOT") or tmp_path / "view.png")
    browser.save_screenshot(str(shot))
    assert cv2.imread(str(shot)) is not None


def test_the_token_is_required_and_the_stream_is_mjpeg(live_run):
    for url, headers in ((f"{live_run}", {}), (f"{live_run}stats.json?token=wrong", {}), (f"{live_run}stream.mjpg", {"X-Edgeseg-Token": "x"})):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(url, headers)
        assert refused.value.code == 401
    request = urllib.request.Request(f"{live_run}stream.mjpg?camera=0", headers={"X-Edgeseg-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
        images = []
        while len(images) < 2:
            assert response.readline().startswith(b"--")
            headers = dict(line.decode().strip().split(": ", 1) for line in iter(response.readline, b"\r\n"))
            assert headers["Content-Type"] == "image/jpeg"
            images.append(response.read(int(headers["Content-Length"])))
            response.readline()
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in images]
    assert all(image.shape == (64, 320, 3) for image in decoded)
    assert not np.array_equal(decoded[0], decoded[1])  # a newer frame each time


def test_addresses():
    assert parse_address("8080") == ("127.0.0.1", 8080)  # loopback unless told otherwise
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:8080") == ("::1", 8080) and parse_address(":80") == ("127.0.0.1", 80)
    for bad in ("", "host:", "host:http", "a b:80", "70000"):
        with pytest.raises(UsageError):
            parse_address(bad)


def test_a_stalled_client_never_holds_up_the_sink(tiny_models):
    """A client that asks for the stream and never reads: the sink takes 150 large frames at
    full speed regardless, and the server encodes no more than its rate allows."""
    from edgeseg.edge.sources import Frame
    from edgeseg.inspector import Inspector

    strips = [Frame(i, image, time.perf_counter(), "strip", captured_at=time.time()) for i, image in enumerate(frames(3, height=256, width=1600))]
    with Inspector(tiny_models["classifier"], tiny_models["segmenter"], gate=0.0) as inspector:
        results = list(zip(strips, inspector.cascade.results(strips)))
    sink = ViewSink("127.0.0.1:0", Annotator(["1", "2", "3", "4"]), fps=5.0)
    port = int(sink.url.rsplit(":", 1)[1].strip("/"))
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    done = threading.Event()
    started = time.monotonic()

    def feed():
        for i in range(150):
            frame, result = results[i % 3]
            frame.index = i
            sink.write(frame, result)
            time.sleep(0.01)
        done.set()

    threading.Thread(target=feed, daemon=True).start()
    assert done.wait(60), "the sink blocked behind a client that does not read"
    elapsed = time.monotonic() - started
    try:
        assert sink.frames == 150
        assert 1 <= sink.state.encoded <= elapsed * 5.0 + 2
    finally:
        stalled.close()
        sink.close()
