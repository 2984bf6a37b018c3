"""`--save-defects DIR`: what the model flagged, kept for an operator to review.

For every gated frame (the classifier said "defect", so the segmenter ran) the raw frame as a
lossless PNG and one crop per defect box (with a small margin), plus a line in DIR/index.jsonl
holding the frame's record (edgeseg.edge.records) and the names of its files; the run's header
record goes before its first entry. File names say where and when the frame came from:
`<item>_f<frame>_<capture time UTC>[_<class>-<n>].png`, the item and class parts made safe for
every filesystem and shortened (with a hash of the whole, so they stay unique) to keep names
well under the 255-byte limit: a long input file name never stops the line.

Unlike the run's JSONL this folder is written as the run goes (each PNG through
edgeseg.files.atomic_output, the index through edgeseg.files.LineFile): an operator can look
while the line runs, a crash keeps everything flagged so far, and files are never overwritten
(names are unique per frame), so earlier runs' files stay as they were. Nothing at all is
written before the first gated frame.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np

from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.records import frame_record, to_json
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.files import LineFile, PathLike, atomic_output, ensure_writable_dir

INDEX_NAME = "index.jsonl"
CROP_MARGIN = 8  # pixels of context around a box, clipped to the frame
ITEM_CHARS = 96  # longest item part of a file name; with the frame, time, class and staging suffix well under 255 bytes
CLASS_CHARS = 40  # longest class part
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str, limit: int) -> str:
    """A file-name part that is safe on every filesystem (no separators, spaces or colons) and at
    most `limit` characters: a longer one keeps its start and ends in `~` + 8 hex digits of the
    whole text's hash, so two long names that share a start stay apart."""
    safe = _UNSAFE.sub("_", text).strip("._") or "frame"
    if len(safe) <= limit:
        return safe
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe[: limit - 9]}~{digest}"


def frame_stem(frame: Frame) -> str:
    """`<item without suffix>_f<frame index>_<capture time, UTC, ms>`: unique per frame."""
    item = Path(frame.item).stem if frame.item else frame.source
    stamp = datetime.fromtimestamp(frame.captured_at, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    return f"{_safe(item, ITEM_CHARS)}_f{frame.index:06d}_{stamp}"


def crop_box(shape: Any, box: List[int], margin: int = CROP_MARGIN) -> List[int]:
    """[x, y, w, h] grown by `margin` on each side, clipped to an image of `shape` (h, w, ...)."""
    height, width = shape[:2]
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
    return [x0, y0, x1 - x0, y1 - y0]


class DefectSink(Sink):
    """Saves every gated frame, its defect crops and an index line (see the module docstring);
    `written` is the folder once it holds a frame, `crops` the crops saved."""

    kind = "defects"

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise EdgesegError(f"--save-defects {self.folder} is a file, not a folder", hint="give a folder (it is created)")
        self._index = LineFile(self.folder / INDEX_NAME, append=True)
        self.crops = 0

    def write(self, frame: Frame, result: FrameResult) -> None:
        if not result.gated:
            return
        ensure_writable_dir(self.folder)
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
                crop_name = f"{stem}_{_safe(name, CLASS_CHARS)}-{counts[name]}.png"
                self._save(crop_name, frame.image[y : y + h, x : x + w], saved)
                crops.append({"class": name, "box": list(box["box"]), "crop": [x, y, w, h], "file": crop_name})
            entries = self.take_header() + [{"image": image_name, "crops": crops, "record": frame_record(frame, result)}]
            self._index.write("".join(to_json(entry) + "\n" for entry in entries).encode("utf-8"))
        except BaseException:
            for name in saved:
                (self.folder / name).unlink()
            raise
        self.frames += 1
        self.crops += len(crops)
        self.written = self.folder

    def close(self) -> None:
        self._index.close()

    def _save(self, name: str, image: np.ndarray, saved: List[str]) -> None:
        """A complete PNG under `name` or none (edgeseg.files.atomic_output); its name is added
        to `saved`."""
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise EdgesegError(f"OpenCV could not encode {name} as PNG")
        path = self.folder / name
        try:
            with atomic_output(path) as temp:
                temp.write_bytes(data.tobytes())
        except OSError as exc:  # a full disk is the one disk-full line already
            raise EdgesegError(f"cannot write {path}: {exc.strerror}", hint="choose another --save-defects folder") from exc
        saved.append(name)
