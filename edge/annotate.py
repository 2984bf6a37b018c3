"""Drawing one frame's result onto its image, for the annotated video and the window sinks.

What an operator needs to read at line speed: which class each tint is (a legend with names and
areas), why the frame was or was not segmented (`p=0.25 >= 0.05 -> segmented`), and labels that
never cover each other or the header. Components smaller than the class's minimum area (or a
speck of under SPECK_PX pixels) are tinted, not boxed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.edge.postprocess import FrameResult

# BGR colours per class, in class order (Severstal 1-4 first); cycled beyond.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (60, 60, 255),
    (0, 215, 255),
    (255, 120, 0),
    (80, 220, 80),
    (255, 0, 255),
    (255, 255, 0),
)
WHITE = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE = 0.45
SWATCH = 10
Rect = Tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
# Components under this many pixels are tinted but never boxed, even for a class whose min-area
# is 0: a box around each speck hides the strip it is on.
SPECK_PX = 16


def display_name(name: str) -> str:
    """Bare class ids ("1".."4", Severstal's) read as `class 1`; real names stay as they are."""
    return f"class {name}" if name.isdigit() else name


def gate_text(probability: float, gate: Optional[float], gated: bool) -> str:
    """The gate decision as the operator should read it: `p=0.25 >= 0.05 -> segmented`."""
    if gate is None:
        return f"p={probability:.2f} -> {'segmented' if gated else 'clean, not segmented'}"
    if gated:
        return f"p={probability:.2f} >= {gate:.2f} -> segmented"
    return f"p={probability:.2f} < {gate:.2f} -> clean, not segmented"


@dataclass
class Annotator:
    """Draws results for one segmenter: its class names and the per-class minimum area under
    which a component is not boxed (the gate comes with each result)."""

    classes: Sequence[str]
    min_area: Optional[Sequence[int]] = None

    def __call__(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
        return annotate(image, result, self.classes, min_area=self.min_area)


def annotate(
    image: np.ndarray,
    result: FrameResult,
    classes: Sequence[str],
    min_area: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """A BGR copy of `image`: each class's mask tinted in its colour and outlined, a box around
    each component of at least the class's `min_area`, one label per class on its largest box,
    a header with the frame index and gate decision, and a legend of classes with their areas."""
    if image.ndim == 2:
        canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        canvas = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    else:
        canvas = image.copy()
    colours = _colours(classes)
    floor = _floors(classes, min_area)
    masks = result.segmentation.masks
    if masks:
        # Paint every class into one overlay, blend once, keep the blend only where a mask is:
        # whole-image arithmetic in OpenCV, no per-pixel gathers in numpy.
        overlay = canvas.copy()
        paint = np.empty_like(canvas)
        covered = np.zeros(canvas.shape[:2], dtype=np.uint8)
        whole = (0, 0), (canvas.shape[1] - 1, canvas.shape[0] - 1)
        for name, mask in masks.items():
            cv2.rectangle(paint, *whole, colours[name], -1)  # 40x faster than numpy's broadcast fill
            cv2.copyTo(paint, mask, overlay)
            cv2.bitwise_or(covered, mask, dst=covered)
        cv2.copyTo(cv2.addWeighted(canvas, 0.55, overlay, 0.45, 0.0), covered, canvas)
        for name, mask in masks.items():
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colours[name], 1)
    for box in _boxed(result, floor):
        x, y, w, h = box["box"]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colours[box["class"]], 1)
    for label in labels(canvas.shape[:2], result, classes, min_area):
        cv2.rectangle(canvas, label.rect[:2], label.rect[2:], (0, 0, 0), -1)
        if label.swatch is not None:
            x0, y1 = label.rect[0], label.origin[1]
            cv2.rectangle(canvas, (x0 + 2, y1 - SWATCH + 1), (x0 + SWATCH + 1, y1), label.swatch, -1)
        cv2.putText(canvas, label.text, label.origin, FONT, SCALE, label.colour, 1, cv2.LINE_AA)
    return canvas


@dataclass
class Label:
    """One text drawn on the frame: its origin (baseline), the rectangle it covers, its colour
    and, for legend entries, the class colour swatch drawn at the rectangle's left."""

    text: str
    origin: Tuple[int, int]
    rect: Rect
    colour: Tuple[int, int, int]
    swatch: Optional[Tuple[int, int, int]] = None


def labels(
    shape: Tuple[int, int],
    result: FrameResult,
    classes: Sequence[str],
    min_area: Optional[Sequence[int]] = None,
) -> List[Label]:
    """Every text of a frame's annotation, none overlapping another: the header (index and gate
    decision) top left, on several lines when the frame is narrower than it, the legend (colour,
    class, area) top right or below the header when the frame is narrow, then one name per boxed class near its largest box (where a free spot remains)."""
    height, width = shape
    colours = _colours(classes)
    placed: List[Label] = []
    gate = None if math.isnan(result.gate) else result.gate  # NaN: a result made without a pipeline
    header = f"#{result.index}  {gate_text(result.defect_probability, gate, result.gated)}"
    line = _size("Ag")[1] + _size("Ag")[2] + 6
    y = 16
    for text in _wrap(header, width - 12):  # a frame narrower than the header gets it on several lines
        placed.append(Label(text, (6, y), _rect(text, (6, y)), WHITE))
        y += line
    entries = [f"{display_name(name)} {int(result.segmentation.areas.get(name, 0))}px" for name in classes]
    pad = SWATCH + 4
    total = sum(_size(text)[0] + pad + 12 for text in entries)
    x = width - total
    y = 16 if len(placed) == 1 and x > placed[0].rect[2] + 8 else y
    x = max(x, 6)
    for name, text in zip(classes, entries):
        if x + _size(text)[0] + pad > width and x > 6:  # wrap onto the next line
            x, y = 6, y + line
        origin = (x + pad, y)
        rect = _rect(text, origin)
        placed.append(Label(text, origin, (rect[0] - pad, rect[1], rect[2], rect[3]), WHITE, swatch=colours[name]))
        x = rect[2] + 12
    largest: Dict[str, List[int]] = {}
    for box in _boxed(result, _floors(classes, min_area)):
        if box["area"] > largest.get(box["class"], [0, 0, 0, 0, -1])[4]:
            largest[box["class"]] = list(box["box"]) + [int(box["area"])]
    for name in sorted(largest, key=lambda n: largest[n][1]):  # top to bottom: stable stacking
        text = display_name(name)
        spot = _free_spot(shape, text, tuple(largest[name][:4]), [label.rect for label in placed])
        if spot is not None:  # no free spot on a tiny frame: the legend still names the colour
            placed.append(Label(text, spot, _rect(text, spot), colours[name]))
    return placed


def _colours(classes: Sequence[str]) -> Dict[str, Tuple[int, int, int]]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)}


def _floors(classes: Sequence[str], min_area: Optional[Sequence[int]]) -> Dict[str, int]:
    return {name: max(SPECK_PX, int(min_area[i]) if min_area is not None and i < len(min_area) else 0) for i, name in enumerate(classes)}


def _boxed(result: FrameResult, floor: Dict[str, int]) -> List[Dict[str, Any]]:
    return [box for box in result.segmentation.boxes if int(box["area"]) >= floor.get(box["class"], SPECK_PX)]


def _size(text: str) -> Tuple[int, int, int]:
    (w, h), base = cv2.getTextSize(text, FONT, SCALE, 1)
    return w, h, base


def _wrap(text: str, width: int) -> List[str]:
    """`text` broken at spaces into lines at most `width` pixels wide (measured in this
    OpenCV's font: glyph widths differ between OpenCV releases); a word wider than `width` stays
    whole on its own line."""
    lines: List[str] = []
    for word in text.split(" "):
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and _size(joined)[0] <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return [line.strip() for line in lines]


def _rect(text: str, origin: Tuple[int, int]) -> Rect:
    w, h, base = _size(text)
    x, y = origin
    return (x - 2, y - h - 3, x + w + 2, y + base)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _free_spot(shape: Tuple[int, int], text: str, box: Tuple[int, ...], taken: List[Rect]) -> Optional[Tuple[int, int]]:
    """A text origin near `box` whose label rectangle touches no label already placed: above
    the box, below it, then stepping down the image one line at a time, then other columns;
    None when the frame is full."""
    height, width = shape
    w, h, base = _size(text)
    x, y, _, bh = box
    x = min(max(x, 2), max(width - w - 3, 2))
    line = h + base + 4
    candidates = [max(y - 4, h + 3), min(y + bh + h + 3, height - base - 1)]
    candidates += list(range(h + 3, height - base, line))
    for top in candidates:
        if not any(_overlaps(_rect(text, (x, top)), other) for other in taken):
            return (x, top)
    for left in range(2, max(width - w - 3, 3), w + 8):  # every row full: try other columns
        for top in range(h + 3, height - base, line):
            if not any(_overlaps(_rect(text, (left, top)), other) for other in taken):
                return (left, top)
    return None
