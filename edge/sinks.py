"""Where results go: JSONL per frame, an annotated video, a window.

Each sink opens (or proves it can open) its output in the constructor, so a path that cannot be
written fails before the first frame; `close` finalises it (the video gets its index and stays
playable after Ctrl-C). JSONL is flushed line by line, so whatever was written survives a crash.
"""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import frame_record
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, ensure_writable_dir

# BGR colours per class, in class order (Severstal 1-4 first); cycled beyond.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (60, 60, 255),
    (0, 215, 255),
    (255, 120, 0),
    (80, 220, 80),
    (255, 0, 255),
    (255, 255, 0),
)
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


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
    """One record per line (edgeseg.edge.records), each line flushed as it is written.

    header: makes the header record, written as the first line before the first frame's
    (called then, once the backends are active, so the record names their providers).
    """

    def __init__(self, path: PathLike, header: Optional[Callable[[], Dict[str, Any]]] = None) -> None:
        self.path = Path(path)
        self._header = header
        self._handle: Any = _open_for_writing(self.path, "JSONL output")

    def write(self, frame: Frame, result: FrameResult) -> None:
        if self._header is not None:
            self._handle.write(json.dumps(self._header(), separators=(",", ":")) + "\n")
            self._header = None
        self._handle.write(json.dumps(frame_record(frame, result), separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def annotate(image: np.ndarray, result: FrameResult, classes: Sequence[str]) -> np.ndarray:
    """A BGR copy of `image` with each class's mask tinted in its colour and outlined, a box
    around each component, one label per class (name and total area, on its largest component)
    and a header line with the frame's probability and gate decision."""
    if image.ndim == 2:
        canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        canvas = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    else:
        canvas = image.copy()
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)}
    masks = result.segmentation.masks
    if masks:
        # Paint every class into one overlay, blend once, keep the blend only where a mask is:
        # whole-image arithmetic in OpenCV, no per-pixel gathers in numpy.
        overlay = canvas.copy()
        paint = np.empty_like(canvas)
        covered = np.zeros(canvas.shape[:2], dtype=np.uint8)
        for name, mask in masks.items():
            paint[:] = colours[name]
            cv2.copyTo(paint, mask, overlay)
            cv2.bitwise_or(covered, mask, dst=covered)
        cv2.copyTo(cv2.addWeighted(canvas, 0.55, overlay, 0.45, 0.0), covered, canvas)
        for name, mask in masks.items():
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colours[name], 1)
    largest: Dict[str, Dict[str, Any]] = {}
    for box in result.segmentation.boxes:
        x, y, w, h = box["box"]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colours[box["class"]], 1)
        if box["area"] > largest.get(box["class"], {"area": -1})["area"]:
            largest[box["class"]] = box
    for name, box in largest.items():  # one label per class, on its largest component
        x, y = box["box"][:2]
        _text(canvas, f"{name}: {result.segmentation.areas[name]}px", (x, max(y - 4, 12)), colours[name])
    state = "segmented" if result.gated else "clean (gated out)"
    _text(canvas, f"#{result.index}  p(defect)={result.defect_probability:.2f}  {state}", (6, 16), (255, 255, 255))
    return canvas


def _text(canvas: np.ndarray, text: str, origin: Tuple[int, int], colour: Tuple[int, int, int]) -> None:
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    x, y = origin
    cv2.rectangle(canvas, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)


class VideoSink(Sink):
    """Annotated frames into a video (.mp4 with mp4v, .avi/.mkv with MJPG), sized by the first
    frame; later frames of another size are scaled to it. Released on close, so it is playable."""

    def __init__(self, path: PathLike, classes: Sequence[str], fps: Optional[float] = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise EdgesegError(f"cannot tell the video format of {self.path}", hint=f"end the name with one of {', '.join(FOURCC)}")
        self.classes = list(classes)
        self.fps = fps if fps and fps > 0 else 10.0
        _open_for_writing(self.path, "video output").close()  # proves the path is writable now
        self._writer: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult) -> None:
        picture = annotate(frame.image, result, self.classes)
        if self._writer is None:
            self._size = (picture.shape[1], picture.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
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

    def __init__(self, classes: Sequence[str], on_quit: Callable[[], None], title: str = "edgeseg") -> None:
        self.classes = list(classes)
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
        cv2.imshow(self.title, annotate(frame.image, result, self.classes))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._on_quit()

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.title)
            self._open = False

