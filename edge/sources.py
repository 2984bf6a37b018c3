"""Frame sources by URI (jetson-utils videoSource style): one `open_source(uri, options)`.

URIs: a camera index (`0`, V4L2 on Linux), `/dev/videoN`, `csi://N` (Jetson nvarguscamerasrc),
`rtsp://...` (low-latency options), a video file, an image folder, a glob (`strips/*.png`), or a
raw GStreamer pipeline (anything containing " ! ", ending in appsink).

Live sources (cameras, RTSP, GStreamer) run a capture thread that keeps only the newest frame,
so a slow consumer never lags behind the line: frames it could not take are counted as dropped.
Files and folders are read on demand and never drop; `loop` starts them again at the end, and
`rate` paces them like a camera (with `live=True` a paced file behaves exactly like one, which
is how tests exercise the live path without a camera).
"""
from __future__ import annotations

import abc
import glob
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np

from edgeseg.edge.uri import redact_uri
from edgeseg.errors import EdgesegError

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# RTSP through FFmpeg: TCP avoids UDP packet loss; no input buffering keeps the stream current.
RTSP_FFMPEG_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
_OPEN_LOCK = threading.Lock()  # captures open one at a time while FFmpeg's options are set
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# A video whose container announces no frame count has ended after this many failed reads in a
# row; one that announces a count is read up to it, however long a corrupt stretch is.
MAX_CONSECUTIVE_BAD = 50
# Reconnect back-off of a live source: the first reopen follows the timeout at once, each later
# one waits twice as long as the one before, up to the cap, times a random 50-100 % (jitter: many
# cameras behind one switch that came back do not all knock at once). The cap bounds the frames
# lost after a camera is back: a few seconds, against a reopen that costs one connection attempt.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 5.0


@dataclass
class SourceOptions:
    """Everything a source can be asked for; fields that do not apply to a source are ignored.

    live: None decides by URI (cameras, RTSP, GStreamer live; files and folders not).
    rate: pace files and folders at this many frames per second (None: as fast as read).
    width / height / fps: capture format requested from a camera (None: its default).
    timeout: live sources: seconds without a frame before reconnecting; for RTSP through
        FFmpeg also the limit on opening the stream and on each read.
    reconnects: live sources: reopen attempts in a row (exponential back-off, see
        BACKOFF_FIRST_S) before the stream ends with an error; None: forever, so an outage of
        any length costs its frames (counted as a gap) and never the run.
    rtsp_latency_ms: jitter buffer for RTSP through GStreamer (0 = lowest latency).
    """

    loop: bool = False
    live: Optional[bool] = None
    rate: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    timeout: float = 5.0
    reconnects: Optional[int] = None
    rtsp_latency_ms: int = 0

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise EdgesegError(f"source rate must be > 0 frames/s, got {self.rate}")
        if self.timeout <= 0:
            raise EdgesegError(f"source timeout must be > 0 s, got {self.timeout}")
        if self.reconnects is not None and self.reconnects < 0:
            raise EdgesegError(f"reconnect attempts must be >= 0, got {self.reconnects}")


@dataclass
class Frame:
    """One captured image. `timestamp` (time.perf_counter) is when it was captured: the start
    of its glass-to-glass latency; `decode` the seconds spent reading it ("capture" stage);
    `camera` which of a pipeline's sources it came from (its position among them, 0 for one).

    item: what in the source the image is: the file name for folders, globs and video files
    (so a record names its file even after unreadable ones were skipped); None for live streams.
    captured_at: wall-clock (time.time) of the same instant as `timestamp`.
    position_ms: for video files, the frame's position in the file (decoder timestamp, ms).
    camera: which of a pipeline's sources it came from (its position among them; 0 for one).
    """

    index: int
    image: np.ndarray
    timestamp: float
    source: str
    decode: float = 0.0
    item: Optional[str] = None
    captured_at: float = 0.0
    position_ms: Optional[float] = None
    camera: int = 0


@dataclass
class SourceStats:
    """frames: delivered; dropped: live frames replaced by a newer one before being read;
    corrupt: unreadable frames skipped (failed decodes, unreadable images, and frames a video
    container announced that never decoded, as in a truncated file); reconnects: live reopen
    attempts; gaps: outages of a live stream (no frame for `timeout`, so it was reopened);
    gap_s: their total length, from the last frame before each to the first after it (to
    the end of the stream, or while one lasts, to about now); down: a live stream is in such an outage now (or has not delivered
    since it failed to open at the start); error: why a live stream ended early."""

    frames: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0
    gaps: int = 0
    gap_s: float = 0.0
    down: bool = False
    error: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# -- readers: where images come from ----------------------------------------------------------------
class Reader(abc.ABC):
    """A blocking image producer: what `Source` wraps. Subclass it for a device OpenCV cannot
    open (e.g. a vendor camera SDK) and pass it to `Source(reader, options, live=True)`.

    `read` returns an image, or None on failure; `ended` tells a finished file from a failed
    read of a live device (which the Source answers with timeouts and `reopen`). After a good
    read, `item` and `position_ms` describe that image (see Frame).
    """

    name: str = ""
    fps: Optional[float] = None
    ended: bool = False
    corrupt: int = 0
    item: Optional[str] = None
    position_ms: Optional[float] = None
    files: Sequence[Path] = ()  # the local files it reads (outputs must not overwrite them)

    @property
    def opened(self) -> bool:
        """False: the device did not open (a live Source keeps reopening it)."""
        return True

    @abc.abstractmethod
    def read(self) -> Optional[np.ndarray]:
        ...

    def rewind(self) -> bool:
        """Start again from the first frame (files); False where impossible."""
        return False

    def reopen(self) -> bool:
        """Reconnect a live device; False when it cannot be opened."""
        return False

    def close(self) -> None:
        """Release the device or file."""


class _CaptureReader(Reader):
    """cv2.VideoCapture over a file, device, RTSP URL or GStreamer pipeline. `params` are
    open-time properties (cv2.VideoCapture's third argument, e.g. FFmpeg's timeouts), `props`
    are set once it is open. `ffmpeg_options` is OPENCV_FFMPEG_CAPTURE_OPTIONS for this capture
    only: FFmpeg reads it from the environment at each open, so it is set around the open (under
    a lock) and never left there for the next file another source opens."""

    def __init__(
        self,
        name: str,
        target: Union[int, str],
        api: int,
        is_file: bool,
        props: Dict[int, float],
        params: Sequence[int] = (),
        ffmpeg_options: Optional[str] = None,
    ) -> None:
        self.name = name
        self._target = target
        self._api = api
        self._props = props
        self._params = list(params)
        self._ffmpeg_options = ffmpeg_options
        self.is_file = is_file
        self.files = (Path(str(target)),) if is_file else ()
        self._cap = self._open()
        self._pending: Optional[np.ndarray] = None
        self._pending_ms: Optional[float] = None
        self.item = name if is_file else None
        self._decoded = 0  # good frames in this pass over the file
        self._skipped = 0  # corrupt frames in this pass
        self._position = 0  # frames of the file consumed in this pass, decoded or not
        fps = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0.0
        self.fps = float(fps) if fps and 0 < fps < 1000 else None

    def _open(self) -> Any:
        with _OPEN_LOCK:
            saved = os.environ.get(FFMPEG_OPTIONS_ENV)
            if self._ffmpeg_options is not None:
                os.environ[FFMPEG_OPTIONS_ENV] = self._ffmpeg_options
            try:
                cap = cv2.VideoCapture(self._target, self._api, self._params) if self._params else cv2.VideoCapture(self._target, self._api)
            finally:
                if saved is None:
                    os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[FFMPEG_OPTIONS_ENV] = saved
        if not cap.isOpened():
            cap.release()
            return None
        for prop, value in self._props.items():
            cap.set(prop, value)
        return cap

    @property
    def opened(self) -> bool:
        return self._cap is not None

    def peek(self) -> bool:
        """Decode the first frame now (kept for the first `read`): proves the source delivers."""
        self._pending = self.read()
        self._pending_ms = self.position_ms
        return self._pending is not None

    def read(self) -> Optional[np.ndarray]:
        if self._pending is not None:
            image, self._pending = self._pending, None
            self.position_ms = self._pending_ms
            return image
        if self._cap is None or self.ended:
            return None
        if not self.is_file:
            ok, image = self._cap.read()
            return image if ok and image is not None else None
        # A corrupt stretch is read through, not seeked over: each failed read consumes one frame
        # of the file, and OpenCV's FFmpeg seek lands past good frames when its target lies in
        # the stretch (measured: frames 140-159 of a 200-frame AVI with 60-139 destroyed lost).
        # So the file has ended when its announced frame count is consumed; past the real end a
        # failed read costs ~30 us, so a truncated file ends quickly too.
        bad = 0
        total = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        while True:
            ok, image = self._cap.read()
            self._position += 1
            if ok and image is not None:
                self.corrupt += bad  # failures followed by a good frame were corrupt frames
                self._skipped += bad
                self._decoded += 1
                self.position_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
                return image
            bad += 1
            if (self._position >= total) if total > 0 else (bad >= MAX_CONSECUTIVE_BAD):
                break
        self.ended = True
        if total > 0:  # frames the container announced that never decoded (a corrupt or missing tail)
            self.corrupt += max(0, total - self._decoded - self._skipped)
        return None

    def rewind(self) -> bool:
        if not self.is_file or self._cap is None:
            return False
        self._cap.release()
        self._cap = self._open()
        self.ended = False
        self._decoded = self._skipped = self._position = 0
        return self._cap is not None

    def reopen(self) -> bool:
        if self._cap is not None:
            self._cap.release()
        self._cap = self._open()
        return self._cap is not None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def read_image(path: Path) -> Optional[np.ndarray]:
    """An 8-bit image file as OpenCV decodes it (gray, BGR or BGRA); None when unreadable."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3):
        return None
    return image


class _ImageReader(Reader):
    """Sorted image files; an unreadable one is skipped and counted as corrupt."""

    def __init__(self, name: str, paths: List[Path]) -> None:
        self.name = name
        self._paths = paths
        self.files = tuple(paths)
        self._next = 0

    def read(self) -> Optional[np.ndarray]:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = read_image(path)
            if image is not None:
                self.item = path.name
                return image
            self.corrupt += 1
        self.ended = True
        return None

    def rewind(self) -> bool:
        self._next = 0
        self.ended = False
        return True


# -- the source the pipeline reads ------------------------------------------------------------
class Source:
    """Frames from one reader: on demand (files) or from a newest-only capture thread (live).

    `read(timeout)` returns the next Frame, or None when none came within `timeout` seconds or
    the stream has ended (`ended` tells which). Iterating yields frames until the end.
    """

    def __init__(self, reader: Reader, options: SourceOptions, live: bool) -> None:
        self.uri = redact_uri(reader.name)  # a Reader subclass may name itself by its URL
        self.live = live
        self.options = options
        self.stats = SourceStats()
        self._reader = reader
        self._index = 0
        self._next_due: Optional[float] = None
        self._closed = False
        self._finished = False
        self._cond = threading.Condition()
        self._slot: Optional[Frame] = None
        self._thread: Optional[threading.Thread] = None
        self.stats.down = live and not reader.opened
        if live:
            self._thread = threading.Thread(target=self._capture_loop, name=f"capture:{self.uri}", daemon=True)
            self._thread.start()

    @property
    def fps(self) -> Optional[float]:
        """Nominal frame rate: the pacing rate, else what the container or device reports."""
        return self.options.rate or self._reader.fps

    @property
    def files(self) -> Sequence[Path]:
        """The local files this source reads (a video, or a folder's or glob's images)."""
        return self._reader.files

    @property
    def images(self) -> bool:
        """True when each frame is one image file (folder, glob, single image), named by its
        `item`: what a per-image output such as a Kaggle submission needs."""
        return isinstance(self._reader, _ImageReader)

    @property
    def ended(self) -> bool:
        """True once no further frame will come."""
        with self._cond:
            return self._finished and self._slot is None

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        if not self.live:
            return None if self._finished else self._read_now()
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._finished, timeout)
            frame, self._slot = self._slot, None
            if frame is not None:
                self.stats.frames += 1
            return frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(timeout=0.5)
            if frame is not None:
                yield frame
            elif self.ended:
                return

    def close(self) -> None:
        """Stop the capture thread and release the device; safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.options.timeout + 1.0)
            if self._thread.is_alive():
                return  # stuck in a device read: releasing the device under it could crash OpenCV
        self._reader.close()
        self._sync_reader_stats()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _pace(self) -> None:
        if self.options.rate is None:
            return
        now = time.perf_counter()
        if self._next_due is not None and now < self._next_due:
            time.sleep(self._next_due - now)
            now = self._next_due
        self._next_due = now + 1.0 / self.options.rate

    def _grab(self) -> Optional[np.ndarray]:
        """Next image from the reader, starting the file again when looping."""
        image = self._reader.read()
        if image is None and self._reader.ended and self.options.loop and self._index > 0:
            if self._reader.rewind():
                image = self._reader.read()
        return image

    def _make_frame(self, image: np.ndarray, started: float) -> Frame:
        now, wall = time.perf_counter(), time.time()
        reader = self._reader
        frame = Frame(
            index=self._index, image=image, timestamp=now, source=self.uri, decode=now - started,
            item=reader.item, captured_at=wall, position_ms=reader.position_ms,
        )
        self._index += 1
        return frame

    def _sync_reader_stats(self) -> None:
        self.stats.corrupt = self._reader.corrupt

    def _read_now(self) -> Optional[Frame]:
        self._pace()
        started = time.perf_counter()
        image = self._grab()
        self._sync_reader_stats()
        if image is None:
            self._finished = True
            return None
        self.stats.frames += 1
        return self._make_frame(image, started)

    def _capture_loop(self) -> None:
        last_good = time.perf_counter()
        attempts = 0  # reopens since the last frame
        gap_from: Optional[float] = None  # the last frame before the current outage
        gaps_before = 0.0  # gap_s of the outages before it (gap_s includes the current one so far)
        limit = self.options.reconnects
        try:
            while not self._closed:
                self._pace()
                started = time.perf_counter()
                image = self._grab()
                self._sync_reader_stats()
                if image is not None:
                    last_good, attempts = time.perf_counter(), 0
                    if gap_from is not None:
                        self.stats.gap_s = gaps_before + last_good - gap_from
                        gap_from = None
                    frame = self._make_frame(image, started)
                    with self._cond:
                        self.stats.down = False
                        if self._slot is not None:
                            self.stats.dropped += 1
                        self._slot = frame
                        self._cond.notify_all()
                    continue
                if self._reader.ended:
                    return
                if time.perf_counter() - last_good < self.options.timeout:
                    time.sleep(0.01)
                    continue
                if gap_from is None:
                    gap_from, gaps_before = last_good, self.stats.gap_s
                    self.stats.gaps += 1
                    self.stats.down = True
                self.stats.gap_s = gaps_before + time.perf_counter() - gap_from  # a report now sees it
                if limit is not None and attempts >= limit:
                    self.stats.error = (
                        f"{self.uri} delivered no frame for {self.options.timeout:g} s "
                        f"and {attempts} reconnect attempt(s) failed"
                    )
                    return
                if attempts and self._wait_closed(backoff_s(attempts)):
                    return
                attempts += 1
                self.stats.reconnects += 1
                if self._reader.reopen():
                    last_good = time.perf_counter()  # it has `timeout` to deliver
        finally:
            if gap_from is not None:  # ended (or closed) inside an outage
                self.stats.gap_s = gaps_before + time.perf_counter() - gap_from
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _wait_closed(self, seconds: float) -> bool:
        """Sleep `seconds` unless closed first; True when closed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, seconds)


def backoff_s(attempt: int) -> float:
    """Seconds before reopen number `attempt` + 1 of an outage (see BACKOFF_FIRST_S)."""
    return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)


# -- URI dispatch -----------------------------------------------------------------------------
class _NotOpened(EdgesegError):
    """A live device or stream that exists but did not open now (it may later): the reader
    travels with the error, for a Source that keeps reopening it."""

    def __init__(self, reader: Reader, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.reader = reader


def open_source(uri: Union[str, int, Path], options: Optional[SourceOptions] = None, required: bool = True) -> Source:
    """Open `uri` (see the module docstring) or raise one EdgesegError naming it and the fix.

    required=False: a camera or stream that does not open now is returned anyway, `stats.down`,
    its capture thread reopening it with back-off (so one dead camera of several does not stop
    the line); a bad URI or a missing file still raises."""
    options = options or SourceOptions()
    try:
        return _open(str(uri).strip(), options)
    except _NotOpened as exc:
        if required:
            raise
        return Source(exc.reader, options, live=True)


def _open(text: str, options: SourceOptions) -> Source:
    if text.isdigit():
        reader, live = _camera(int(text), options), True
    elif text.startswith("csi://"):
        reader, live = _gstreamer(text, _csi_pipeline(text, options)), True
    elif text.startswith(("rtsp://", "rtsps://")):
        reader, live = _rtsp(text, options), True
    elif " ! " in text:
        reader, live = _gstreamer("gstreamer", text), True
    else:
        path_text = text[len("file://") :] if text.startswith("file://") else text
        if path_text.startswith("/dev/video"):
            reader, live = _device(path_text, options), True
        else:
            reader, live = _files(path_text), False
    if options.live is not None:
        live = options.live
    return Source(reader, options, live)


def _camera_props(options: SourceOptions) -> Dict[int, float]:
    props = {cv2.CAP_PROP_BUFFERSIZE: 1.0}  # the driver's queue adds latency: keep one buffer
    if options.width:
        props[cv2.CAP_PROP_FRAME_WIDTH] = float(options.width)
    if options.height:
        props[cv2.CAP_PROP_FRAME_HEIGHT] = float(options.height)
    if options.fps:
        props[cv2.CAP_PROP_FPS] = float(options.fps)
    return props


def _camera(index: int, options: SourceOptions) -> Reader:
    if sys.platform.startswith("linux"):
        return _device(f"/dev/video{index}", options, name=f"camera:{index}", target=index, label=f"index {index}")
    reader = _CaptureReader(f"camera:{index}", index, cv2.CAP_ANY, False, _camera_props(options))
    if not reader.opened:
        raise EdgesegError(f"no camera at index {index}", hint="connect a camera, try another --camera index, or pass --source FILE")
    return reader


def _device(
    path: str, options: SourceOptions, name: str = "", target: Union[int, str, None] = None, label: str = ""
) -> Reader:
    name = name or path
    if not os.path.exists(path):
        present = sorted(glob.glob("/dev/video*"))
        found = f"present: {', '.join(present)}" if present else "no /dev/video* device exists"
        where = f"{label} ({path} does not exist; {found})" if label else f"{path} ({found})"
        raise EdgesegError(f"no camera at {where}", hint="connect a camera, try another index, or pass --source FILE")
    reader = _CaptureReader(name, target if target is not None else path, cv2.CAP_V4L2, False, _camera_props(options))
    if not reader.opened:
        raise _NotOpened(reader, f"camera {name} ({path}) could not be opened", hint="it may be busy (another program) or not a capture device")
    return reader


def has_gstreamer() -> bool:
    """Whether this OpenCV build can run GStreamer pipelines (JetPack's can; pip wheels cannot)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def _csi_pipeline(uri: str, options: SourceOptions) -> str:
    sensor = uri[len("csi://") :] or "0"
    if not sensor.isdigit():
        raise EdgesegError(f"bad CSI camera URI {uri!r}", hint="use csi://N with the sensor id, e.g. csi://0")
    width, height, fps = options.width or 1920, options.height or 1080, int(options.fps or 30)
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def _gstreamer(name: str, pipeline: str) -> Reader:
    if not has_gstreamer():
        raise EdgesegError(
            f"{name} needs OpenCV built with GStreamer, and this one is not",
            hint="on Jetson use JetPack's OpenCV (python3-opencv) instead of the opencv-python wheel",
        )
    if "appsink" not in pipeline:
        pipeline += " ! videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    reader = _CaptureReader(name, pipeline, cv2.CAP_GSTREAMER, False, {})
    if not reader.opened:
        raise _NotOpened(reader, f"GStreamer pipeline for {name} did not start: {redact_uri(pipeline)}", hint="test it with gst-launch-1.0")
    return reader


def _rtsp(url: str, options: SourceOptions) -> Reader:
    name = redact_uri(url)  # the URL itself only reaches the capture
    if has_gstreamer():
        return _gstreamer(
            name,
            f"rtspsrc location={url} latency={options.rtsp_latency_ms} ! decodebin ! videoconvert ! "
            "video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false",
        )
    ffmpeg_options = os.environ.get(FFMPEG_OPTIONS_ENV, RTSP_FFMPEG_OPTIONS)  # a user's own setting wins
    # Without limits OpenCV waits 30 s on a camera that accepts the connection but never answers
    # (and on a read from a stalled stream); OpenCV >= 4.5.2 takes them at open.
    limit_ms = int(options.timeout * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, limit_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, limit_ms]
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its "can't be used" warning
    try:
        reader = _CaptureReader(name, url, cv2.CAP_FFMPEG, False, {cv2.CAP_PROP_BUFFERSIZE: 1.0}, params, ffmpeg_options)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not reader.opened:
        raise _NotOpened(
            reader,
            f"the RTSP stream {name} did not open (refused, or no answer within {options.timeout:g} s)",
            hint="check the URL, credentials and that the camera is reachable",
        )
    return reader


def _files(text: str) -> Reader:
    path = Path(text).expanduser()
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EdgesegError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})", hint="pass a video, a glob or a folder of images")
        return _ImageReader(str(path), images)
    if not path.exists() and any(ch in text for ch in "*?["):
        images = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EdgesegError(f"no images match {redact_uri(text)!r}", hint="check the pattern (quote it so the shell does not expand it)")
        return _ImageReader(text, images)
    if not path.is_file():
        raise EdgesegError(f"source {redact_uri(text)!r} not found", hint="pass a camera index, /dev/videoN, csi://N, rtsp://..., a video, a folder or a glob")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _ImageReader(str(path), [path])
    reader = _CaptureReader(path.name, str(path), cv2.CAP_ANY, True, {})
    if not reader.opened or not reader.peek():
        reader.close()
        raise EdgesegError(f"{path} is not a video OpenCV can read", hint="pass a video (mp4, avi, mkv), an image folder or a glob")
    return reader
