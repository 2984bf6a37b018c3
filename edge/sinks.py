"""Where results go: JSONL per frame, an annotated video, a window.

File sinks write nothing before their first frame, and then only under a hidden temporary
name beside the target (edgeseg.files.StagedOutput); `close` puts it in place when at least one
frame was written, also after Ctrl-C, SIGTERM or a source error. So a run that fails to start
leaves the previous results byte for byte, and a target never holds a half-written file. JSONL
is flushed line by line and a line that did not fit on the disk is cut off, never kept half;
the video is released and read back at close, and `problem` says when it holds less than
what was written.
"""
from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import cv2

from edgeseg.edge.annotate import Annotator
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import frame_record
from edgeseg.edge.sources import Frame
from edgeseg.edge.videocodec import choose_fourcc
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, StagedOutput, disk_full_as_error, disk_full_error, free_space_text, nearly_full


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


class FileSink(Sink):
    """A sink whose output is one file or folder, staged until `close` (see the module doc).

    Subclasses count `frames` in `write` (writing to `self.staged.temp`) and release their
    handles in `_finish`, which returns False when the output is not worth putting in place.
    After `close`, `written` is the committed path (None: nothing was put in place), `kept`
    the frames it holds and `problem` says, in one line, why the output is missing or holds
    less than was written.
    """

    def __init__(self, path: PathLike, append: bool = False) -> None:
        self.staged = StagedOutput(path, append=append)
        self.path = self.staged.path
        self.frames = 0
        self.problem = ""
        self.written: Optional[Path] = None
        self._closed = False

    def _finish(self) -> bool:
        return True

    @property
    def kept(self) -> int:
        return self.frames if self.written is not None else 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._finish() and self.frames > 0 and self.written is None:
                self.written = self.staged.commit()
        except EdgesegError as exc:
            self.problem = self.problem or str(exc)
        finally:
            if self.written is None:
                self.staged.discard()


class JsonlSink(FileSink):
    """One record per line (edgeseg.edge.records), each line on disk as it is written.

    Staged only until its first line is complete: then it takes the target's name and the run
    goes on writing there, so a line's consumers (`tail -f`, a log shipper) see records as they
    come and a power loss keeps every complete line under the expected name. With `append`
    the first line opens the target itself for appending; nothing is touched before it.

    header: makes the header record, written as the first line, with the first frame's
    (called then, once the backends are active, so the record names their providers); with
    `append` every run's lines start with their own header.
    append: add this run's lines to an existing file instead of replacing it.
    """

    def __init__(self, path: PathLike, header: Optional[Callable[[], Dict[str, Any]]] = None, append: bool = False) -> None:
        super().__init__(path, append=append)
        self._header = header
        self._fd: Optional[int] = None
        self._base = 0  # bytes the file held before this run (append)
        self._size = 0  # bytes of complete lines this run wrote

    def write(self, frame: Frame, result: FrameResult) -> None:
        lines = [frame_record(frame, result)]
        if self._header is not None:
            lines.insert(0, self._header())
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode("utf-8")
        try:
            self._write(data)
        except OSError as exc:  # not a full disk (that is an EdgesegError already)
            raise EdgesegError(f"cannot write {self.path}: {exc.strerror}", hint="choose a writable path") from exc
        self._header = None  # written
        self._size += len(data)
        self.frames += 1
        if self.written is None:  # the first complete line: from now on under its own name
            self.written = self.path if self.staged.append else self.staged.commit()

    def _write(self, data: bytes) -> None:
        with disk_full_as_error(self.path):
            if self._fd is None:
                self._open()
            try:
                view = memoryview(data)
                while view:  # unbuffered: a line is on disk (page cache) once write returns
                    view = view[os.write(self._fd, view) :]
            except BaseException:
                if not self.staged.direct:
                    os.ftruncate(self._fd, self._base + self._size)  # no partial line
                raise

    def _open(self) -> None:
        if self.staged.append or self.staged.direct:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            self._base = os.fstat(self._fd).st_size if not self.staged.direct else 0
        else:
            self._fd = os.open(self.staged.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def _finish(self) -> bool:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return True


class VideoSink(FileSink):
    """Annotated frames into a video (edge.videocodec: .mp4 mp4v or h264, .avi/.mkv MJPG, .webm
    VP8), sized by the first frame; later frames of another size are scaled to it.
    `annotator` (default: plain class names) draws each frame.

    OpenCV's `write` reports nothing (a full disk only logs a warning), so `close` releases the
    writer and reads the file back: a video OpenCV cannot open is dropped, one that holds fewer
    frames than were written is kept and `problem` says so.
    """

    def __init__(
        self,
        path: PathLike,
        classes: Sequence[str],
        fps: Optional[float] = None,
        annotator: Optional[Annotator] = None,
        codec: str = "auto",
    ) -> None:
        self._fourcc = choose_fourcc(Path(path), codec)  # refused before anything is written
        super().__init__(path)
        self.classes = list(classes)
        self._annotate = annotator or Annotator(self.classes)
        self.fps = fps if fps and fps > 0 else 10.0
        self._writer: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self.readable = 0  # frames the finished file gives back

    def write(self, frame: Frame, result: FrameResult) -> None:
        picture = self._annotate(frame.image, result)
        if self._writer is None:
            self._size = (picture.shape[1], picture.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*self._fourcc)
            self._writer = cv2.VideoWriter(str(self.staged.temp), fourcc, float(self.fps), self._size)
            if not self._writer.isOpened():
                self._writer = None
                if nearly_full(self.staged.temp):
                    raise disk_full_error(self.path)
                raise EdgesegError(f"OpenCV cannot encode {self.path}", hint="try an .avi output (MJPG)")
        if (picture.shape[1], picture.shape[0]) != self._size:
            picture = cv2.resize(picture, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(picture)
        self.frames += 1

    def _finish(self) -> bool:
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        self.readable = _readable_frames(self.staged.temp)
        if self.readable == self.frames:
            return True
        why = f"disk full, {free_space_text(self.staged.temp)}" if nearly_full(self.staged.temp) else "OpenCV could not write them"
        if self.readable == 0:
            self.problem = f"{self.path} was not written: none of its {self.frames} frames can be read back ({why})"
            return False
        self.problem = f"{self.path} holds {self.readable} of the {self.frames} frames written ({why})"
        return True

    @property
    def kept(self) -> int:
        return self.readable if self.written is not None else 0


def _readable_frames(path: Path) -> int:
    """Frames a finished video gives back: the container's count when it has one (cheap),
    else decoded one by one; 0 when OpenCV cannot open it."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if announced > 0 and capture.set(cv2.CAP_PROP_POS_FRAMES, announced - 1) and capture.grab():
            return announced  # the last announced frame is there: so are the others
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


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

