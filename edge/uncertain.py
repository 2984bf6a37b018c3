"""`--save-uncertain DIR`: the frames the models were least sure about, kept for relabelling.

A frame is uncertain when its defect probability lies within `band` of the gate (the classifier
could have gone either way), or when, for some class, at least `share` of the pixels the
segmenter put near or above the class threshold lie within `band` of it (a blurred, low-confidence
mask; also a defect it almost found) and they cover at least the class's minimum area. At most
`per_minute` such frames are kept (by capture time; 0: all), so a drifting line fills the folder
slowly rather than the disk at once.

The folder is in the Severstal layout that `edgeseg train --data DIR` reads: the frame as a
lossless DIR/train_images/<item>_f<frame>_<time>.png (edgeseg.files.atomic_output) and one
`ImageId,ClassId,EncodedPixels` row per class the model segmented, appended to DIR/train.csv as
whole lines (edgeseg.files.LineFile), the model's own masks in the project's RLE: a person
corrects them and trains on the folder. A frame the model called clean has no row (clean, in
that layout). Written as the run goes, like --save-defects: a crash keeps what was kept, and a
later run adds to the same folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgeseg.edge.card import ModelCard
from edgeseg.edge.defects import frame_stem
from edgeseg.edge.postprocess import FrameResult
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.files import LineFile, PathLike, atomic_output, ensure_writable_dir

CSV_HEADER = "ImageId,ClassId,EncodedPixels"
CSV_NAME = "train.csv"  # the names edgeseg.data.severstal reads (not imported: it is training code)
IMAGE_DIR = "train_images"
SEVERSTAL_CLASSES = 4  # class ids the layout holds (1-4)
STRIP_SHAPE = (256, 1600)  # what `edgeseg train` reads


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1.0 - 1e-7)
    return math.log(p / (1.0 - p))


class UncertainSink(Sink):
    """Keeps uncertain frames in the Severstal layout (see the module docstring).

    card: the segmenter's card (classes, probability thresholds, minimum areas, activation).
    band: probability distance from the gate or a class threshold that counts as unsure.
    share: fraction of a class's candidate pixels within the band that makes its mask unsure.
    per_minute: most frames kept per minute of capture time (0: no limit).
    `reasons` counts why the kept frames were kept ("gate", "mask").
    """

    kind = "uncertain"

    def __init__(self, folder: PathLike, card: ModelCard, band: float = 0.1, share: float = 0.25, per_minute: float = 6.0) -> None:
        if not 0 < band < 0.5:
            raise UsageError(f"--uncertain-band {band} must lie between 0 and 0.5 (a probability distance)")
        if not 0 < share <= 1:
            raise UsageError(f"--uncertain-pixels {share} must lie in (0, 1] (a fraction of a class's pixels)")
        if per_minute < 0:
            raise UsageError(f"--uncertain-rate {per_minute} must be >= 0 frames per minute (0: every uncertain frame)")
        if len(card.classes) > SEVERSTAL_CLASSES:
            raise UsageError(
                f"--save-uncertain writes the Severstal layout (classes 1-{SEVERSTAL_CLASSES}); this segmenter has {len(card.classes)} classes"
            )
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise EdgesegError(f"--save-uncertain {self.folder} is a file, not a folder", hint="give a folder (it is created)")
        csv_path = self.folder / CSV_NAME
        self._new_csv = not csv_path.is_file() or csv_path.stat().st_size == 0
        if not self._new_csv:
            with open(csv_path, encoding="utf-8-sig", errors="replace") as handle:
                header = handle.readline().strip()
            if header != CSV_HEADER:
                raise EdgesegError(
                    f"{csv_path} starts with {header!r}, not {CSV_HEADER!r}", hint="give --save-uncertain a folder of its own"
                )
        self._csv = LineFile(csv_path, append=True)
        self.band, self.share, self.per_minute = band, share, per_minute
        self.classes = list(card.classes)
        probability = card.thresholds.get("probability", [0.5] * len(self.classes))
        self._min_area = [max(1, int(a)) for a in card.thresholds.get("min_area", [0] * len(self.classes))]
        if card.output_activation == "sigmoid":  # compare logits: no per-pixel sigmoid
            self._bands = [(_logit(p - band), _logit(p + band)) for p in probability]
        else:
            self._bands = [(p - band, p + band) for p in probability]
        self._next_due = -math.inf  # capture time from which the next frame may be kept
        self.reasons: Dict[str, int] = {"gate": 0, "mask": 0}
        self.off_size = 0  # kept frames of another size than the strips `edgeseg train` reads

    def write(self, frame: Frame, result: FrameResult) -> None:
        if result.error or frame.timestamp < self._next_due:
            return
        why = self.reason(result)
        if why is None:
            return
        self._keep(frame, result)
        self.reasons[why] += 1
        self.frames += 1
        self.off_size += frame.image.shape[:2] != STRIP_SHAPE
        self.written = self.folder
        if self.per_minute:
            self._next_due = frame.timestamp + 60.0 / self.per_minute

    def reason(self, result: FrameResult) -> Optional[str]:
        """"gate", "mask" or None (sure enough): why the frame is worth relabelling."""
        if abs(result.defect_probability - result.gate) <= self.band:
            return "gate"
        if result.maps is not None and self._unsure_mask(result.maps, result.height * result.width):
            return "mask"
        return None

    def _unsure_mask(self, maps: np.ndarray, frame_pixels: int) -> bool:
        scale = frame_pixels / float(maps.shape[0] * maps.shape[2] * maps.shape[3])  # model pixels -> frame pixels
        for c, (low, high) in enumerate(self._bands):
            values = maps[:, c]
            candidates = int(np.count_nonzero(values > low))
            if candidates == 0:
                continue
            near = candidates - int(np.count_nonzero(values >= high))
            if near * scale >= self._min_area[c] and near >= self.share * candidates:
                return True
        return False

    def _keep(self, frame: Frame, result: FrameResult) -> None:
        """The frame's PNG, then its rows; the PNG goes again when the rows cannot be written."""
        import cv2

        ensure_writable_dir(self.folder / IMAGE_DIR)
        name = f"{frame_stem(frame)}.png"
        ok, data = cv2.imencode(".png", frame.image)
        if not ok:
            raise EdgesegError(f"OpenCV could not encode {name} as PNG")
        path = self.folder / IMAGE_DIR / name
        with atomic_output(path) as temp:
            temp.write_bytes(data.tobytes())
        rows: List[str] = [CSV_HEADER] if self._new_csv else []
        rows += [f"{name},{c + 1},{result.segmentation.rle[cls]}" for c, cls in enumerate(self.classes) if result.segmentation.rle.get(cls)]
        try:
            if rows:
                self._csv.write("".join(row + "\n" for row in rows).encode("utf-8"))
        except BaseException:
            path.unlink()
            raise
        self._new_csv = False

    def close(self) -> None:
        self._csv.close()
        if self.off_size:
            height, width = STRIP_SHAPE
            self.warning = f"{self.off_size} frame(s) in {self.folder} are not {width}x{height} strips, the size `edgeseg train` reads"

    def summary(self) -> Dict[str, Any]:
        return {"folder": str(self.folder), "kept": self.frames, "reasons": dict(self.reasons), "per_minute": self.per_minute}

    def describe(self) -> Optional[str]:
        if not self.frames:
            return None
        return f"uncertain: {self.folder} ({self.frames} frames to relabel: {self.reasons['gate']} near the gate, {self.reasons['mask']} unsure masks)"
