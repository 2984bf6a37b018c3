"""Drawing one frame's result onto its image, for the annotated video and the window sinks."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

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
