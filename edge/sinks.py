"""Where results go: JSONL per frame, an annotated video, a window.

Each sink opens (or proves it can open) its output in the constructor, so a path that cannot be
written fails before the first frame; `close` finalises it (the video gets its index and stays
playable after Ctrl-C). JSONL is flushed line by line, so whatever was written survives a crash.
"""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple

import cv2

from edgeseg.edge.annotate import Annotator
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sources import Frame
from edgeseg.edge.videocodec import choose_fourcc
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, ensure_writable_dir


class Sink(abc.ABC):
    """Receives every processed frame, in order, on the pipeline's output thread."""

    @abc.abstractmethod
    def write(self, frame: Frame, result: FrameResult) -> None:
        ...

    def close(self) -> None:
        """Finalise the output; safe to call twice."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_for_writing(path: Path, what: str) -> Any:
    ensure_writable_dir(path.parent)
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise EdgesegError(f"cannot write the {what} {path}: {exc.strerror}", hint="choose a writable path") from exc


class JsonlSink(Sink):
    """One JSON object per frame (FrameResult.to_json), each line flushed as it is written.

    t0: perf_counter origin of the records' `time_s` (default: the first frame's capture).
    """

    def __init__(self, path: PathLike, t0: Optional[float] = None) -> None:
        self.path = Path(path)
        self._t0 = t0
        self._handle: Any = _open_for_writing(self.path, "JSONL output")

    def write(self, frame: Frame, result: FrameResult) -> None:
        if self._t0 is None:
            self._t0 = frame.timestamp
        self._handle.write(json.dumps(result.to_json(self._t0), separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class VideoSink(Sink):
    """Annotated frames into a video (edge.videocodec: .mp4 mp4v or h264, .avi/.mkv MJPG, .webm
    VP8), sized by the first frame; later frames of another size are scaled to it. Released on
    close, so it is playable. `annotator` (default: plain class names) draws each frame."""

    def __init__(
        self,
        path: PathLike,
        classes: Sequence[str],
        fps: Optional[float] = None,
        annotator: Optional[Annotator] = None,
        codec: str = "auto",
    ) -> None:
        self.path = Path(path)
        self._fourcc = choose_fourcc(self.path, codec)  # refused before anything is written
        self.classes = list(classes)
        self._annotate = annotator or Annotator(self.classes)
        self.fps = fps if fps and fps > 0 else 10.0
        _open_for_writing(self.path, "video output").close()  # proves the path is writable now
        self._writer: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult) -> None:
        picture = self._annotate(frame.image, result)
        if self._writer is None:
            self._size = (picture.shape[1], picture.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*self._fourcc)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, float(self.fps), self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise EdgesegError(f"OpenCV cannot encode {self.path}", hint="try an .avi output (MJPG)")
        if (picture.shape[1], picture.shape[0]) != self._size:
            picture = cv2.resize(picture, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(picture)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        elif self.frames == 0 and self.path.is_file() and self.path.stat().st_size == 0:
            self.path.unlink()  # no frame ever came: leave no unplayable empty file


class WindowSink(Sink):
    """Shows annotated frames in a window; `q` or Esc calls `on_quit` (the pipeline's stop).

    Needs OpenCV with highgui (opencv-python); the headless wheel is refused up front.
    """

    def __init__(
        self, classes: Sequence[str], on_quit: Callable[[], None], title: str = "edgeseg", annotator: Optional[Annotator] = None
    ) -> None:
        self.classes = list(classes)
        self._annotate = annotator or Annotator(self.classes)
        self.title = title
        self._on_quit = on_quit
        try:  # probe: headless builds raise "The function is not implemented"
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            cv2.destroyWindow(title)
        except cv2.error as exc:
            raise EdgesegError(
                "--show needs OpenCV with GUI support, and this is a headless build",
                hint="pip uninstall -y opencv-python-headless && pip install opencv-python (on Jetson: JetPack's OpenCV)",
            ) from exc
        self._open = False

    def write(self, frame: Frame, result: FrameResult) -> None:
        if not self._open:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self._open = True
        cv2.imshow(self.title, self._annotate(frame.image, result))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._on_quit()

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.title)
            self._open = False

