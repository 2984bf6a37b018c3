"""The Severstal layout: DIR/train.csv + DIR/train_images/*.jpg (1600x256 grayscale strips).

train.csv comes in the two published forms, both read here:
- 2019 competition: `ImageId_ClassId,EncodedPixels`, four rows per image ("x.jpg_3"), empty RLE = clean;
- later release:    `ImageId,ClassId,EncodedPixels`, one row per defect; unlisted images are clean.
Masks use the competition RLE (edgeseg.edge.rle, the same code the runtime uses).

Bad rows and bad images are never fatal while scanning: each becomes a one-line `problem` naming the
row or file, and the sample is left out, so training can skip, count and report them. An image with
a malformed row (bad RLE, a class id that is not 1-4 or not a number, the wrong number of fields)
is left out whole (`SeverstalData.left_out`): kept, it would teach its defect as clean strip. A missing train.csv or an unknown header is fatal (nothing sensible can be read).
A UTF-8 byte order mark (Excel's "CSV UTF-8") is accepted.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import cv2
import numpy as np

from edgeseg.edge.rle import decode
from edgeseg.errors import EdgesegError

IMAGE_HEIGHT, IMAGE_WIDTH = 256, 1600
NUM_CLASSES = 4
CLASS_NAMES = ("1", "2", "3", "4")
CSV_NAME = "train.csv"
IMAGE_DIR = "train_images"
_HEADER_COMBINED = ["ImageId_ClassId", "EncodedPixels"]
_HEADER_SPLIT = ["ImageId", "ClassId", "EncodedPixels"]
_LAYOUT_HINT = f"expected DIR/{CSV_NAME} and DIR/{IMAGE_DIR}/*.jpg (Severstal layout); make one with `edgeseg data synth --out DIR`"


@dataclass(frozen=True)
class Sample:
    """One strip: its file and one RLE per class ("" = no defect of that class)."""

    image_id: str
    path: Path
    rles: Tuple[str, ...]

    @property
    def has_defect(self) -> bool:
        return any(self.rles)

    @property
    def classes(self) -> Tuple[int, ...]:
        """1-based class ids present in the strip."""
        return tuple(i + 1 for i, rle in enumerate(self.rles) if rle)

    def masks(self, shape: Tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)) -> np.ndarray:
        """uint8 (4, H, W) of 0/1."""
        return np.stack([decode(rle, shape) for rle in self.rles])


@dataclass
class SeverstalData:
    """Readable samples of a data folder, and a one-line description of everything left out."""

    root: Path
    samples: List[Sample]
    problems: List[str] = field(default_factory=list)
    left_out: List[str] = field(default_factory=list)  # images dropped for a malformed train.csv row


def read_annotations(csv_path: Path) -> Tuple[Dict[str, Dict[int, str]], List[str], Set[str]]:
    """train.csv (either form) -> ({image_id: {class 1-4: rle}}, problems, images with a
    malformed row). Validates each RLE."""
    if not csv_path.is_file():
        raise EdgesegError(f"no {CSV_NAME} in {csv_path.parent}", hint=_LAYOUT_HINT)
    annotations: Dict[str, Dict[int, str]] = {}
    problems: List[str] = []
    malformed: Set[str] = set()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header not in (_HEADER_COMBINED, _HEADER_SPLIT):
                raise EdgesegError(
                    f"{csv_path}: unknown header {','.join(header) or '(empty file)'}",
                    hint=f"use {','.join(_HEADER_SPLIT)} or {','.join(_HEADER_COMBINED)}",
                )
            for line, row in enumerate(reader, start=2):
                where = f"{csv_path.name} row {line}"
                try:
                    image_id, cls, rle = _parse_row(row, header == _HEADER_COMBINED)
                except EdgesegError as exc:
                    named = _row_image(row, header == _HEADER_COMBINED)
                    if named:  # whatever the row said about it is unknown: so is the image
                        malformed.add(named)
                    problems.append(f"{where}: {exc}" + ("; the image is left out" if named else ""))
                    continue
                try:
                    if rle:
                        decode(rle, (IMAGE_HEIGHT, IMAGE_WIDTH))  # validates; raises on malformed
                except EdgesegError as exc:
                    problems.append(f"{where}: {image_id} class {cls}: {exc}; the image is left out")
                    malformed.add(image_id)
                    continue
                classes = annotations.setdefault(image_id, {})
                if rle and classes.get(cls):
                    problems.append(f"{where}: {image_id} class {cls} appears twice; keeping the first")
                    continue
                if rle:
                    classes[cls] = rle
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgesegError(f"cannot read {csv_path}: {exc}") from exc
    return annotations, problems, malformed


def _row_image(row: List[str], combined: bool) -> str:
    """The image a row names, read as far as a malformed row allows ("" when it names none)."""
    first = row[0].strip() if row else ""
    return first.rpartition("_")[0] if combined else first


def _parse_row(row: List[str], combined: bool) -> Tuple[str, int, str]:
    expected = 2 if combined else 3
    if len(row) != expected:
        raise EdgesegError(f"expected {expected} fields, got {len(row)}")
    if combined:
        image_id, _, cls_text = row[0].rpartition("_")
        rle = row[1]
    else:
        image_id, cls_text, rle = row
    try:
        cls = int(cls_text)
    except ValueError:
        raise EdgesegError(f"class {cls_text!r} is not a number") from None
    if not image_id or not 1 <= cls <= NUM_CLASSES:
        raise EdgesegError(f"bad image id {image_id!r} or class {cls} (classes are 1-{NUM_CLASSES})")
    return image_id, cls, rle.strip()


def scan(root: Path) -> SeverstalData:
    """Index a data folder: every image in train_images/ joined with its annotations.

    Images that train.csv does not mention are clean (the later release lists defects only);
    annotations for a missing image are a problem, not a sample; an image with a malformed row
    is left out (its defects are unknown, not absent).
    """
    root = Path(root)
    annotations, problems, malformed = read_annotations(root / CSV_NAME)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise EdgesegError(f"no {IMAGE_DIR}/ folder in {root}", hint=_LAYOUT_HINT)
    files = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    for image_id in sorted(set(annotations) - set(files)):
        problems.append(f"{CSV_NAME}: {image_id} has annotations but no file in {IMAGE_DIR}/")
    samples = [
        Sample(name, files[name], tuple(annotations.get(name, {}).get(c, "") for c in range(1, NUM_CLASSES + 1)))
        for name in sorted(files)
        if name not in malformed
    ]
    if not samples:
        raise EdgesegError(f"no usable images in {image_dir}", hint=_LAYOUT_HINT if not malformed else f"fix the malformed rows of {CSV_NAME}")
    return SeverstalData(root=root, samples=samples, problems=problems, left_out=sorted(malformed & set(files)))


def load_image(path: Path, shape: Optional[Tuple[int, int]] = (IMAGE_HEIGHT, IMAGE_WIDTH)) -> np.ndarray:
    """Grayscale uint8 HxW, or EdgesegError naming the file if unreadable or not `shape` (H, W)."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data is not None and data.size else None
    if image is None:
        raise EdgesegError(f"{path}: unreadable image (missing, empty or not an image)")
    if shape is not None and image.shape != tuple(shape):
        raise EdgesegError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {shape[1]}x{shape[0]}")
    return image


def load_images(
    data: SeverstalData,
    progress: Optional[Callable[[int], None]] = None,
) -> Iterator[Tuple[Sample, np.ndarray]]:
    """Decode every sample once; a bad image is recorded in `data.problems` and skipped."""
    for sample in data.samples:
        try:
            image = load_image(sample.path)
        except EdgesegError as exc:
            data.problems.append(str(exc))
            image = None
        if progress is not None:
            progress(1)
        if image is not None:
            yield sample, image
