"""`--save-defects DIR`: what the model flagged, kept for an operator to review.

For every gated frame (the classifier said "defect", so the segmenter ran) the raw frame as a
lossless PNG and one crop per defect box (with a small margin), plus a line in DIR/index.jsonl
holding the frame's record (edgeseg.edge.records) and the names of its files. File names say
where and when the frame came from: `<item>_f<frame>_<capture time UTC>[_<class>-<n>].png`.

Unlike the run's JSONL this folder is written as the run goes (each PNG under a hidden name,
renamed when complete; the index appended and flushed per line): an operator can look while
the line runs, a crash keeps everything flagged so far, and files are never overwritten (names
are unique per frame), so earlier runs' files stay as they were. Nothing at all is written
before the first gated frame.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np

from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import frame_record
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, disk_full_as_error, ensure_writable_dir, is_disk_full

INDEX_NAME = "index.jsonl"
CROP_MARGIN = 8  # pixels of context around a box, clipped to the frame
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    """A file-name part that is safe on every filesystem (no separators, spaces or colons)."""
    return _UNSAFE.sub("_", text).strip("._") or "frame"


def frame_stem(frame: Frame) -> str:
    """`<item without suffix>_f<frame index>_<capture time, UTC, ms>`: unique per frame."""
    item = Path(frame.item).stem if frame.item else frame.source
    stamp = datetime.fromtimestamp(frame.captured_at, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    return f"{_safe(item)}_f{frame.index:06d}_{stamp}"


def crop_box(shape: Any, box: List[int], margin: int = CROP_MARGIN) -> List[int]:
    """[x, y, w, h] grown by `margin` on each side, clipped to an image of `shape` (h, w, ...)."""
    height, width = shape[:2]
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
    return [x0, y0, x1 - x0, y1 - y0]


class DefectSink(Sink):
    """Saves every gated frame, its defect crops and an index line (see the module docstring).

    header: makes the run's header record, written to the index before its first entry.
    """

    def __init__(self, folder: PathLike, header: Optional[Callable[[], Dict[str, Any]]] = None) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise EdgesegError(f"--save-defects {self.folder} is a file, not a folder", hint="give a folder (it is created)")
        self._header = header
        self._index: Optional[int] = None  # file descriptor of the index, opened at the first gated frame
        self.frames = 0
        self.crops = 0

    def write(self, frame: Frame, result: FrameResult) -> None:
        if not result.gated:
            return
        if self._index is None:
            ensure_writable_dir(self.folder)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            self._index = self._guard(lambda: os.open(self.folder / INDEX_NAME, flags, 0o666), INDEX_NAME)
            if self._header is not None:
                self._append(self._header())
        stem = frame_stem(frame)
        image_name = f"{stem}.png"
        saved: List[str] = []  # a frame is saved whole, with its index line, or not at all
        try:
            self._save(image_name, frame.image, saved)
            crops = []
            counts: Dict[str, int] = {}
            for box in result.segmentation.boxes:
                name = box["class"]
                counts[name] = counts.get(name, 0) + 1
                x, y, w, h = crop_box(frame.image.shape, box["box"])
                crop_name = f"{stem}_{_safe(name)}-{counts[name]}.png"
                self._save(crop_name, frame.image[y : y + h, x : x + w], saved)
                crops.append({"class": name, "box": list(box["box"]), "crop": [x, y, w, h], "file": crop_name})
            self._append({"image": image_name, "crops": crops, "record": frame_record(frame, result)})
        except BaseException:
            for name in saved:
                (self.folder / name).unlink()
            raise
        self.frames += 1
        self.crops += len(crops)

    def close(self) -> None:
        if self._index is not None:
            os.close(self._index)
            self._index = None

    def _save(self, name: str, image: np.ndarray, saved: List[str]) -> None:
        """A complete PNG under `name` or none: encoded in memory, written under a hidden name,
        renamed into place; its name is added to `saved`."""
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise EdgesegError(f"OpenCV could not encode {name} as PNG")
        target = self.folder / name
        temp = self.folder / f".{name}.part"

        def write() -> None:
            try:
                with open(temp, "wb") as handle:
                    handle.write(data.tobytes())
                os.replace(temp, target)
            finally:
                if temp.exists():
                    temp.unlink()

        self._guard(write, name)
        saved.append(name)

    def _append(self, entry: Dict[str, Any]) -> None:
        """One whole index line, flushed; a failed write is cut back so no partial line stays."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")

        def write() -> None:
            size = os.fstat(self._index).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._index, view) :]
            except OSError:
                os.ftruncate(self._index, size)
                raise

        self._guard(write, INDEX_NAME)

    def _guard(self, action: Callable[[], Any], name: str) -> Any:
        """Run a write; a full disk or any other OSError becomes one line naming the file."""
        path = self.folder / name
        with disk_full_as_error(path):
            try:
                return action()
            except OSError as exc:
                if is_disk_full(exc):
                    raise  # disk_full_as_error's message: the file and the space left
                raise EdgesegError(f"cannot write {path}: {exc.strerror}", hint="choose another --save-defects folder") from exc
