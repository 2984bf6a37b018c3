"""`--view [host:]port`: a read-only web page for operators beside the line.

What it shows: each camera's annotated stream (MJPEG, `multipart/x-mixed-replace`: any browser,
no plugin), its frame, gate and defect counts, frames per second and glass-to-glass latency,
and the latest defect crops. Endpoints: `/` the page, `/stats.json` (polled by the page),
`/stream.mjpg?camera=N`, `/frame.jpg?camera=N` (the newest frame once), `/crop/ID.jpg`.

It never slows inference: the sink's `write` (on the pipeline's output thread) only keeps a
reference to the newest frame and result per camera, bumps counters and copies the few small
crops of a defective frame. The server's threads (stdlib ThreadingHTTPServer, one per client)
annotate and JPEG-encode the newest frame, at most `fps` times a second per camera whatever the
number of clients; a slow or stalled client holds only its own thread (and is let go after
`_Handler.timeout`).

Binds 127.0.0.1 unless a host is given; `token` makes every request show it (`?token=` or an
`X-Edgeseg-Token` header), compared in constant time. GET only.
"""
from __future__ import annotations

import collections
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from edgeseg.edge.defects import crop_box
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import iso_utc
from edgeseg.edge.sinks import Sink, background_thread
from edgeseg.edge.sources import Frame
from edgeseg.edge.uri import listen_address
from edgeseg.errors import EdgesegError

_log = logging.getLogger("edgeseg")
TOKEN_HEADER = "X-Edgeseg-Token"
BOUNDARY = "edgeseg-frame"
LOOPBACK_PREFIXES = ("127.", "::1", "localhost")  # a bound address starting so is this machine only
JPEG_QUALITY = 80
RECENT = 50  # frames over which the latency mean and fps are taken


def parse_address(text: str) -> Tuple[str, int]:
    """(host, port) of a --view address (edgeseg.edge.uri.listen_address)."""
    return listen_address(text, "--view", 8080)


class _Camera:
    """What the page says about one camera; the newest frame and its encoded JPEG."""

    def __init__(self, index: int, source: str) -> None:
        self.index, self.source = index, source
        self.frames = self.gated = self.defects = self.errors = 0
        self.classes: Dict[str, int] = {}  # frames with a kept pixel of the class
        self.latency: Deque[float] = collections.deque(maxlen=RECENT)
        self.times: Deque[float] = collections.deque(maxlen=RECENT)
        self.newest: Optional[Tuple[Frame, FrameResult]] = None
        self.seq = 0  # frames seen; the encoded JPEG is of frame `jpeg_seq`
        self.jpeg: Optional[bytes] = None
        self.jpeg_seq = 0
        self.jpeg_at = -1e9
        self.encoding = threading.Lock()

    def stats(self) -> Dict[str, Any]:
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        frame = self.newest[0].index if self.newest else None
        return {
            "camera": self.index,
            "source": self.source,
            "frame": frame,
            "frames": self.frames,
            "gated": self.gated,
            "defects": self.defects,
            "errors": self.errors,
            "classes": dict(self.classes),
            "fps": round((len(self.times) - 1) / span, 2) if span > 0 else None,
            "latency_ms": {
                "last": round(self.latency[-1], 2) if self.latency else None,
                "mean": round(sum(self.latency) / len(self.latency), 2) if self.latency else None,
            },
        }


class ViewState:
    """Shared by the sink (writer) and the server threads (readers), under one condition."""

    def __init__(self, annotate: Callable[[np.ndarray, FrameResult], np.ndarray], fps: float, crops: int) -> None:
        self.annotate = annotate
        self.interval = 1.0 / fps
        self.cameras: Dict[int, _Camera] = {}
        self.crops: Deque[Dict[str, Any]] = collections.deque(maxlen=crops)
        self.crop_count = 0
        self.encoded = 0  # frames annotated and encoded for the page
        self.clients = 0  # stream connections served
        self.closed = False
        self.changed = threading.Condition()

    def add(self, frame: Frame, result: FrameResult) -> None:
        """The newest frame of its camera (called by the sink: only references and counters)."""
        crops = _crops(frame, result) if result.gated else []
        with self.changed:
            camera = self.cameras.get(frame.camera)
            if camera is None:
                camera = self.cameras[frame.camera] = _Camera(frame.camera, frame.source)
            camera.frames += 1
            camera.gated += result.gated
            camera.errors += bool(result.error)
            present = [name for name, area in result.segmentation.areas.items() if area > 0]
            camera.defects += bool(present)
            for name in present:
                camera.classes[name] = camera.classes.get(name, 0) + 1
            camera.latency.append((result.completed - frame.timestamp) * 1000.0)
            camera.times.append(frame.timestamp)
            camera.newest = (frame, result)
            camera.seq += 1
            for crop in crops:
                self.crop_count += 1
                self.crops.appendleft(dict(crop, id=self.crop_count))
            self.changed.notify_all()

    def jpeg(self, index: int, after: int, timeout: float) -> Tuple[Optional[bytes], int]:
        """The newest frame of camera `index` as JPEG once it is newer than frame `after` (waits
        up to `timeout`; (None, after) when none came). Encodes at most once per interval: a
        client asking sooner gets the last encoded frame if it has not seen it, else waits for
        the interval to pass."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.closed:
                camera = self.cameras.get(index)
                if camera is not None and camera.seq > after:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, after
                self.changed.wait(left)
            else:
                return None, after
        with camera.encoding:  # one encoder per camera: its clients share the work
            fresh = camera.seq > camera.jpeg_seq and time.monotonic() - camera.jpeg_at >= self.interval
            if fresh or camera.jpeg_seq <= after:  # the client has seen the last one: make the next, on time
                time.sleep(max(0.0, camera.jpeg_at + self.interval - time.monotonic()))
                with self.changed:
                    frame, result = camera.newest  # type: ignore[misc]
                    seq = camera.seq
                ok, data = cv2.imencode(".jpg", self.annotate(frame.image, result), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if ok:
                    camera.jpeg, camera.jpeg_seq, camera.jpeg_at = data.tobytes(), seq, time.monotonic()
                    self.encoded += 1
            return camera.jpeg, camera.jpeg_seq

    def stats(self) -> Dict[str, Any]:
        with self.changed:
            return {
                "cameras": [camera.stats() for _, camera in sorted(self.cameras.items())],
                "crops": [{key: value for key, value in crop.items() if key != "image"} for crop in self.crops],
                "encoded": self.encoded,
            }

    def crop(self, ident: int) -> Optional[bytes]:
        with self.changed:
            found = next((crop for crop in self.crops if crop["id"] == ident), None)
        if found is None:
            return None
        ok, data = cv2.imencode(".jpg", found["image"], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return data.tobytes() if ok else None

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


def _crops(frame: Frame, result: FrameResult) -> List[Dict[str, Any]]:
    """The largest box of each class of a defective frame, cut out (copies: a few KiB)."""
    largest: Dict[str, Dict[str, Any]] = {}
    for box in result.segmentation.boxes:
        if box["area"] > largest.get(box["class"], {"area": -1})["area"]:
            largest[box["class"]] = box
    crops = []
    for name, box in sorted(largest.items()):
        x, y, w, h = crop_box(frame.image.shape, box["box"])
        crops.append({
            "camera": frame.camera, "source": frame.source, "frame": frame.index, "class": name, "area": int(box["area"]),
            "captured_at": iso_utc(frame.captured_at), "image": frame.image[y : y + h, x : x + w].copy(),
        })
    return crops


class ViewSink(Sink):
    """Serves the live view (see the module docstring) from construction to `close`.

    address: `[host:]port` (port 0: any free one; `url` says which). annotate: draws a frame's
    result (edgeseg.edge.annotate.Annotator). fps: most frames encoded per second per camera.
    crops: how many of the latest defect crops the page lists.
    """

    kind = "view"

    def __init__(self, address: str, annotate: Callable[[np.ndarray, FrameResult], np.ndarray], token: Optional[str] = None,
                 fps: float = 10.0, crops: int = 12) -> None:
        host, port = parse_address(address)
        self.state = ViewState(annotate, fps, crops)
        handler = type("Handler", (_Handler,), {"state": self.state, "token": token or None})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise EdgesegError(f"--view cannot listen on {host}:{port}: {exc.strerror}", hint="choose another port, or stop what uses it") from exc
        # close() joins every client's thread: none is left encoding while the process exits
        # (OpenCV aborts then); a stalled client's write gives up after the handler's timeout.
        self._server.daemon_threads = False
        self._server.block_on_close = True
        bound_host, bound_port = str(self._server.server_address[0]), self._server.server_address[1]
        self.url = f"http://{'[%s]' % bound_host if ':' in bound_host else bound_host}:{bound_port}/"
        if not token and not bound_host.startswith(LOOPBACK_PREFIXES):
            self.warning = f"the live view {self.url} was open to the network without --view-token"
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgeseg-view", daemon=True)
        self._thread.start()
        _log.info("live view at %s", self.url)
        self._closed = False

    def write(self, frame: Frame, result: FrameResult) -> None:
        self.state.add(frame, result)
        self.frames += 1
        self.written = self.url

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.state.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def summary(self) -> Dict[str, Any]:
        return {"url": self.url, "encoded": self.state.encoded, "clients": self.state.clients}

    def describe(self) -> Optional[str]:
        return f"view: {self.url} ({self.frames} frames, {self.state.encoded} shown to {self.state.clients} stream client(s))"


class _Handler(BaseHTTPRequestHandler):
    state: ViewState
    token: Optional[str]
    server_version = "edgeseg-view"
    timeout = 5.0  # seconds a client may leave a read or write of ours hanging

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        background_thread()  # the request's own thread: it annotates and encodes
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if self.token is not None:
            given = query.get("token") or self.headers.get(TOKEN_HEADER) or ""
            if not hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
                self._send(401, b"a token is needed: ?token=... or an X-Edgeseg-Token header\n", "text/plain")
                return
        camera = int(query["camera"]) if query.get("camera", "").isdigit() else 0
        if parts.path == "/":
            self._send(200, _page(self.token), "text/html; charset=utf-8")
        elif parts.path == "/stats.json":
            self._send(200, json.dumps(self.state.stats(), allow_nan=False).encode("utf-8"), "application/json")
        elif parts.path == "/frame.jpg":
            self._image(self.state.jpeg(camera, 0, timeout=5.0)[0], "no frame yet")
        elif parts.path == "/stream.mjpg":
            self._stream(camera)
        elif parts.path.startswith("/crop/") and parts.path.endswith(".jpg") and parts.path[6:-4].isdigit():
            self._image(self.state.crop(int(parts.path[6:-4])), "no such crop (only the latest are kept)")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _image(self, jpeg: Optional[bytes], missing: str) -> None:
        if jpeg:
            self._send(200, jpeg, "image/jpeg")
        else:
            self._send(404, f"{missing}\n".encode("utf-8"), "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, camera: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with self.state.changed:
            self.state.clients += 1
        seq = 0
        try:
            while not self.state.closed:
                sent = time.monotonic()
                jpeg, seq = self.state.jpeg(camera, seq, timeout=1.0)
                if jpeg is None:
                    continue
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
                self.wfile.write(head + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(max(0.0, self.state.interval - (time.monotonic() - sent)))
        except OSError:
            pass  # the page went away, or stopped reading for `timeout`

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        _log.debug("view: " + format, *args)


def _page(token: Optional[str]) -> bytes:
    """The page: a stream per camera, a table of counts and latency, the latest crops."""
    suffix = json.dumps(f"token={token}" if token else "").replace("<", "\\u003c")
    return (_PAGE.replace("__TOKEN__", suffix)).encode("utf-8")


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeseg · live</title>
<style>
body{font:14px system-ui,sans-serif;margin:12px;background:#111;color:#eee}
img.stream{max-width:100%;border:1px solid #444;display:block}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #444;padding:3px 8px;text-align:right}
#crops{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:8px}#crops li{background:#222;padding:4px;max-width:260px}
#crops img{max-width:250px;max-height:120px;display:block}
</style></head><body>
<h1>edgeseg · live</h1>
<div id="streams"></div>
<table id="counts"><thead><tr><th>camera</th><th>source</th><th>frame</th><th>frames</th><th>fps</th><th>gated</th>
<th>defects</th><th>per class</th><th>latency ms (last / mean)</th></tr></thead><tbody></tbody></table>
<h2>Latest defects</h2><ul id="crops"></ul>
<script>
const TOKEN = __TOKEN__;
const q = (path, sep) => TOKEN ? path + sep + TOKEN : path;
const text = (value) => value === null || value === undefined ? "–" : String(value);
function cell(row, value) { const td = row.insertCell(); td.textContent = text(value); }
async function poll() {
  try {
    const stats = await (await fetch(q("stats.json", "?"), {cache: "no-store"})).json();
    const streams = document.getElementById("streams");
    const body = document.querySelector("#counts tbody");
    body.textContent = "";
    for (const cam of stats.cameras) {
      if (!document.getElementById("stream-" + cam.camera)) {
        const img = document.createElement("img");
        img.id = "stream-" + cam.camera; img.className = "stream"; img.alt = cam.source;
        img.src = q("stream.mjpg?camera=" + cam.camera, "&");
        streams.appendChild(img);
      }
      const row = body.insertRow(); row.className = "camera";
      [cam.camera, cam.source, cam.frame, cam.frames, cam.fps, cam.gated, cam.defects,
       Object.entries(cam.classes).map(([k, v]) => k + ": " + v).join(", "),
       text(cam.latency_ms.last) + " / " + text(cam.latency_ms.mean)].forEach((v) => cell(row, v));
    }
    const list = document.getElementById("crops");
    const shown = Array.from(list.children).map((li) => li.dataset.id).join(",");
    if (shown !== stats.crops.map((c) => String(c.id)).join(",")) {
      list.textContent = "";
      for (const crop of stats.crops) {
        const li = document.createElement("li"); li.dataset.id = crop.id; li.className = "defect";
        const img = document.createElement("img"); img.src = q("crop/" + crop.id + ".jpg", "?");
        const caption = document.createElement("div");
        caption.textContent = "camera " + crop.camera + " · frame " + crop.frame + " · class " + crop["class"] + " · " + crop.area + " px · " + crop.captured_at;
        li.append(img, caption); list.appendChild(li);
      }
    }
  } catch (e) { /* the run ended or the network blinked: try again */ }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
