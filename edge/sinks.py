"""Where results go: JSONL per frame, an annotated video, a window.

File sinks write nothing before their first frame, and then only under a hidden temporary
name beside the target (edgeseg.files.StagedOutput); `close` puts it in place when at least one
frame was written, also after Ctrl-C, SIGTERM or a source error. So a run that fails to start
leaves the previous results byte for byte, and a target never holds a half-written file. JSONL
is flushed line by line and a line that did not fit on the disk is cut off, never kept half;
the video is released and read back at close, and `problem` says when it holds less than
what was written. Every output implements one protocol (`Sink`); edgeseg.edge.outputs opens a
run's set of them.
"""
from __future__ import annotations

import abc
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import cv2

from edgeseg.edge.annotate import Annotator
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import frame_record, to_json
from edgeseg.edge.sources import Frame
from edgeseg.edge.videocodec import choose_fourcc
from edgeseg.errors import EdgesegError
from edgeseg.files import LineFile, PathLike, StagedOutput, disk_full_error, free_space_text, nearly_full

SinkT = TypeVar("SinkT", bound="Sink")
# How far an output's own worker threads (live-view encoding, OPC UA writes) stand back from
# inference. On a machine the models keep busy, an output thread that wakes preempts one of the
# inference library's workers, and the others then wait for it at their next barrier: the output
# costs the run a multiple of its own CPU time. At +10 a thread gets about a tenth of the share of
# one at 0, so the outputs' work fills the gaps inference leaves and still runs when it does not.
BACKGROUND_NICE = 10


def background_thread() -> None:
    """Lower the calling thread's CPU priority by BACKGROUND_NICE. On Linux a nice value belongs
    to a thread; elsewhere it would move the whole process, so nothing is done there."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE))
    except OSError:
        pass  # not allowed here (a seccomp profile): the thread runs at the run's priority


class Sink(abc.ABC):
    """One output of a run: receives every processed frame, in order, on the pipeline's output
    thread; a context manager (`close` on exit).

    The run's header record comes as a value (`start`, before the first frame); a sink that
    records it writes it with its own first output, so nothing is written before a frame.
    After `close` every sink says the same things for the run report: `written` where the
    output is (a path; a broker URL; None: nothing was put in place), `kept` the frames it
    holds, `problem` one line when it is missing or holds less than was written (the run
    fails), `warning` one line worth telling that does not fail the run, `summary()` extra
    figures and `describe()` the line a person reads.
    """

    kind = "output"  # its name in the run report
    frames = 0  # frames it wrote or sent
    written: Optional[Any] = None
    problem = ""
    warning = ""
    _header: Optional[Dict[str, Any]] = None

    def start(self, header: Dict[str, Any]) -> None:
        """The run's header record, given before the first frame."""
        self._header = header

    def take_header(self) -> List[Dict[str, Any]]:
        """[the header record] the first time it is asked for after `start`, then []."""
        header, self._header = self._header, None
        return [header] if header is not None else []

    @abc.abstractmethod
    def write(self, frame: Frame, result: FrameResult) -> None:
        ...

    def close(self) -> None:
        """Finalise the output; safe to call twice."""

    @property
    def kept(self) -> int:
        return self.frames if self.written is not None else 0

    @property
    def backlog(self) -> int:
        """Records taken and not delivered yet (e.g. a broker's unacknowledged queue); read
        by other threads while the run goes on (edgeseg.edge.metrics)."""
        return 0

    @property
    def dropped(self) -> int:
        """Records this output could not keep (its bounded queue was full)."""
        return 0

    def summary(self) -> Dict[str, Any]:
        """Figures for the run report beyond where it went and how many frames it kept."""
        return {}

    def describe(self) -> Optional[str]:
        """One line for the run's summary (None: nothing to say)."""
        return f"{self.kind}: {self.written} ({self.kept} frames)" if self.written is not None else None

    def __enter__(self: SinkT) -> SinkT:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FileSink(Sink):
    """A sink whose output is one file, staged until `close` (see the module doc).

    Subclasses count `frames` in `write` (writing to `self.staged.temp`, or through `line_file()`)
    and release their handles in `_finish`, which returns False when the output is not worth
    putting in place. append: add whole lines to the target itself instead of replacing it.
    """

    def __init__(self, path: PathLike, append: bool = False) -> None:
        self.staged = StagedOutput(path)
        self.path = self.staged.path
        self.append = append
        if append and self.path.is_dir():
            raise EdgesegError(f"{self.path} is a folder: only files can be appended to")
        self._lines: Optional[LineFile] = None
        self._closed = False

    def line_file(self) -> LineFile:
        """The output as a file of whole lines (edgeseg.files.LineFile), made at the first call:
        the staged file, or the target itself when appending or writing a device."""
        if self._lines is None:
            direct = self.append or self.staged.direct
            self._lines = LineFile(self.path if direct else self.staged.temp, append=direct, name=self.path)
        return self._lines

    def _finish(self) -> bool:
        if self._lines is not None:
            self._lines.close()
        return True

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
    """One record per line (edgeseg.edge.records), each line on disk as it is written, the
    run's header record (`start`) first.

    Staged only until its first line is complete: then it takes the target's name and the run
    goes on writing there, so a line's consumers (`tail -f`, a log shipper) see records as they
    come and a power loss keeps every complete line under the expected name. With `append`
    the first line goes to the end of the target itself (on a fresh line if its last one was
    cut off); nothing is touched before it, and each run's lines start with their own header.
    """

    kind = "jsonl"

    def write(self, frame: Frame, result: FrameResult) -> None:
        records = self.take_header() + [frame_record(frame, result)]
        lines = self.line_file()
        lines.write("".join(to_json(record) + "\n" for record in records).encode("utf-8"))
        self.frames += 1
        if self.written is None:  # the first complete line: from now on under its own name
            self.written = self.path if lines.append else self.staged.commit()


class VideoSink(FileSink):
    """Annotated frames into a video (edge.videocodec: .mp4 mp4v or h264, .avi/.mkv MJPG, .webm
    VP8), sized by the first frame; later frames of another size are scaled to it.
    `annotator` (default: plain class names) draws each frame.

    OpenCV's `write` reports nothing (a full disk only logs a warning), so `close` releases the
    writer and reads the file back: a video OpenCV cannot open is dropped, one that holds fewer
    frames than were written is kept and `problem` says so.
    """

    kind = "video"

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
            fourcc = cv2.VideoWriter.fourcc(*self._fourcc)
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

    kind = "window"

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
        self.frames += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._on_quit()

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.title)
            self._open = False

