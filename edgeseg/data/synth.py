"""Synthetic steel strips in the Severstal layout, for demos, tests and CI without the real data.

A strip is 256x1600 grayscale: a rolled-steel texture (streaks along the rolling direction, grain
noise, an illumination gradient) with up to three defect classes drawn on it. Every defect is first
drawn as a binary mask and then changes the image only inside that mask, so the masks are exactly
where the defect is: a segmenter can learn them to high Dice, which the demo models rely on.

Shapes per class (Severstal numbering): 1 clusters of small dark pits; 2 thin branching-free crack
lines across the strip; 3 long scratches and abrasion bands along it (the most frequent class, as in
Severstal); 4 large dark patches. About half the strips are clean.

Strip `i` of seed `s` comes from its own generator `strip_rng(s, i)`, so a data set is the same for
a given seed whatever its size, and a single strip can be rendered in memory (`make_strip`).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.data.severstal import CSV_NAME, IMAGE_DIR, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES
from edgeseg.edge.rle import encode
from edgeseg.errors import EdgesegError
from edgeseg.files import atomic_output, ensure_writable_dir

CLEAN_PROBABILITY = 0.5
# Relative frequency of each class among drawn defects: 3 (scratches) dominates, as in Severstal.
CLASS_WEIGHTS = (0.2, 0.15, 0.45, 0.2)
SHAPES = {1: "pits", 2: "crack", 3: "scratch", 4: "patch"}
JPEG_QUALITY = 95


def strip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of strip `index` in the data set of `seed` (independent of the set size)."""
    return np.random.default_rng([seed, index])


def sample_defect_classes(rng: np.random.Generator) -> Tuple[int, ...]:
    """Which classes a strip carries: () for about half, else 1-3 distinct classes (1-based)."""
    if rng.random() < CLEAN_PROBABILITY:
        return ()
    count = int(rng.choice([1, 2, 3], p=[0.7, 0.25, 0.05]))
    classes = rng.choice(np.arange(1, NUM_CLASSES + 1), size=count, replace=False, p=CLASS_WEIGHTS)
    return tuple(sorted(int(c) for c in classes))


def make_strip(
    rng: np.random.Generator,
    defect_classes: Sequence[int],
    height: int = IMAGE_HEIGHT,
    width: int = IMAGE_WIDTH,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render one strip: (image uint8 HxW, masks uint8 (4, H, W) of 0/1) with the given classes."""
    for cls in defect_classes:
        if cls not in SHAPES:
            raise EdgesegError(f"unknown defect class {cls}", hint="classes are 1, 2, 3, 4")
    surface = _texture(rng, height, width)
    masks = np.zeros((NUM_CLASSES, height, width), dtype=np.uint8)
    for cls in sorted(set(defect_classes)):
        mask, shade = _DRAW[cls](rng, height, width)
        masks[cls - 1] = mask
        inside = mask.astype(bool)
        surface[inside] = surface[inside] * shade[inside, 0] + shade[inside, 1]
    image = np.clip(surface, 0, 255).astype(np.uint8)
    return image, masks


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], size: Tuple[int, int]) -> np.ndarray:
    """Zero-mean unit-ish noise at low resolution `shape`, stretched to `size` (h, w)."""
    coarse = rng.standard_normal(shape).astype(np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Rolled steel: row streaks along the strip, grain, and a smooth illumination gradient."""
    base = rng.uniform(105, 150)
    rows = cv2.GaussianBlur(rng.standard_normal((height, 1)).astype(np.float32), (1, 0), sigmaX=0, sigmaY=1.5)
    streaks = rows * rng.uniform(4, 8) + _smooth_noise(rng, (height, max(width // 64, 2)), (height, width)) * 3
    grain = rng.standard_normal((height, width)).astype(np.float32) * rng.uniform(3, 6)
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    light = rng.uniform(-15, 15) * x + rng.uniform(-10, 10) * y + rng.uniform(-12, 0) * x * x
    return base + streaks + grain + light


# Each drawer returns (mask uint8 HxW, shade float32 HxWx2): inside the mask a pixel v becomes
# v * shade[..., 0] + shade[..., 1]. Shades are built full-size for simplicity; masks are the truth.


def _shade(height: int, width: int, gain: float, offset: np.ndarray) -> np.ndarray:
    shade = np.empty((height, width, 2), dtype=np.float32)
    shade[..., 0] = gain
    shade[..., 1] = offset
    return shade


def _pits(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """1: one or two clusters of small round dark pits."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(40, width - 40), rng.uniform(30, height - 30)
        spread = rng.uniform(12, 30)
        for _ in range(int(rng.integers(6, 16))):
            px = int(np.clip(cx + rng.normal(0, spread), 4, width - 5))
            py = int(np.clip(cy + rng.normal(0, spread), 4, height - 5))
            cv2.circle(mask, (px, py), int(rng.integers(3, 7)), 1, thickness=-1)
    offset = -rng.uniform(45, 70) + rng.standard_normal((height, width)).astype(np.float32) * 4
    return mask, _shade(height, width, 0.6, offset)


def _crack(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """2: a thin jagged dark line running across the strip (transverse to the rolling direction)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x, y = rng.uniform(60, width - 60), rng.uniform(5, 40)
    heading = math.pi / 2 + rng.uniform(-0.6, 0.6)
    points = [(x, y)]
    while 0 <= y < height and 5 <= x < width - 5 and len(points) < 60:
        heading += rng.normal(0, 0.35)
        heading = float(np.clip(heading, math.pi / 2 - 0.9, math.pi / 2 + 0.9))
        step = rng.uniform(8, 16)
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    polyline = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [polyline], isClosed=False, color=1, thickness=int(rng.integers(3, 5)))
    offset = -rng.uniform(55, 80) + np.zeros((height, width), dtype=np.float32)
    return mask, _shade(height, width, 0.5, offset)


def _scratch(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """3: long bright scratches along the rolling direction, or a striated abrasion band."""
    mask = np.zeros((height, width), dtype=np.uint8)
    length = rng.uniform(300, 1100)
    cx, cy = rng.uniform(length / 2, width - length / 2), rng.uniform(30, height - 30)
    angle = rng.uniform(-4, 4)
    if rng.random() < 0.5:  # abrasion: a rotated band, striated inside
        band = rng.uniform(14, 40)
        box = cv2.boxPoints(((cx, cy), (length, band), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
        striation = _smooth_noise(rng, (max(int(band), 4), 6), (height, width)) * 12
        offset = rng.uniform(45, 65) + striation
        return mask, _shade(height, width, 0.8, offset)
    for _ in range(int(rng.integers(1, 4))):  # one to three near-parallel scratches
        dy = rng.uniform(-25, 25)
        half = length / 2 * rng.uniform(0.6, 1.0)
        theta = math.radians(angle + rng.uniform(-1.5, 1.5))
        start = (cx - half * math.cos(theta), cy + dy - half * math.sin(theta))
        end = (cx + half * math.cos(theta), cy + dy + half * math.sin(theta))
        cv2.line(mask, _point(start), _point(end), 1, thickness=int(rng.integers(4, 8)))
    offset = np.full((height, width), rng.uniform(55, 80), dtype=np.float32)
    return mask, _shade(height, width, 0.7, offset)


def _patch(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """4: a large dark irregular patch (a union of overlapping ellipses), mottled inside."""
    mask = np.zeros((height, width), dtype=np.uint8)
    cx, cy = rng.uniform(120, width - 120), rng.uniform(60, height - 60)
    for _ in range(int(rng.integers(3, 7))):
        centre = _point((cx + rng.normal(0, 45), cy + rng.normal(0, 20)))
        axes = (int(rng.uniform(35, 110)), int(rng.uniform(25, 70)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    mottling = _smooth_noise(rng, (8, 50), (height, width)) * 8
    offset = -rng.uniform(30, 50) + mottling
    return mask, _shade(height, width, 0.55, offset)


def _point(xy: Tuple[float, float]) -> Tuple[int, int]:
    return int(round(xy[0])), int(round(xy[1]))


_DRAW: Dict[int, Callable[[np.random.Generator, int, int], Tuple[np.ndarray, np.ndarray]]] = {
    1: _pits,
    2: _crack,
    3: _scratch,
    4: _patch,
}


@dataclass
class SynthSummary:
    """What `write_synthetic` produced."""

    root: Path
    count: int
    seed: int
    clean: int = 0
    class_counts: Dict[int, int] = field(default_factory=lambda: {c: 0 for c in SHAPES})

    def to_dict(self) -> Dict[str, object]:
        return {
            "root": str(self.root),
            "count": self.count,
            "seed": self.seed,
            "clean": self.clean,
            "class_counts": {str(k): v for k, v in self.class_counts.items()},
        }


def write_synthetic(
    root: Path,
    count: int,
    seed: int,
    progress: Optional[Callable[[int], None]] = None,
) -> SynthSummary:
    """Write `count` strips as root/train.csv (ImageId,ClassId,EncodedPixels) + root/train_images/*.jpg.

    `progress(1)` is called after each strip. The CSV is written last and atomically, so a folder
    with a train.csv is always complete.
    """
    if count < 1:
        raise EdgesegError(f"--count must be at least 1, got {count}")
    images = ensure_writable_dir(Path(root) / IMAGE_DIR)
    summary = SynthSummary(root=Path(root), count=count, seed=seed)
    rows: List[Tuple[str, int, str]] = []
    for index in range(count):
        rng = strip_rng(seed, index)
        classes = sample_defect_classes(rng)
        image, masks = make_strip(rng, classes)
        image_id = f"s{seed}_{index:06d}.jpg"
        with atomic_output(images / image_id) as tmp:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise EdgesegError(f"OpenCV could not encode {image_id} as JPEG")
            tmp.write_bytes(data.tobytes())
        summary.clean += not classes
        for cls in classes:
            summary.class_counts[cls] += 1
            rows.append((image_id, cls, encode(masks[cls - 1])))
        if progress is not None:
            progress(1)
    with atomic_output(Path(root) / CSV_NAME) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
            writer.writerows(rows)
    return summary
