"""The one preprocessing contract: frame -> model input tensor, and model output -> frame.

Training, calibration, export parity checks and the runtime all call this module, and a model's
parameters travel in its card (`Preprocess.to_dict`), so the tensor a deployed engine sees is
the tensor the model was trained on, by construction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgeseg.errors import EdgesegError

GEOMETRIES = ("resize", "tile")


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes an NCHW float32 batch for one model.

    geometry "resize" scales the whole frame to (height, width): one tensor per frame.
    geometry "tile" keeps native scale and cuts the frame into (height, width) tiles, the last
    row/column flush with the frame edge, batched together: for frames wider than the model.
    Normalisation: x = (pixel / 255 - mean) / std, grayscale, one channel.
    """

    height: int
    width: int
    mean: float = 0.0
    std: float = 1.0
    geometry: str = "resize"

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise EdgesegError(f"preprocess size must be positive, got {self.height}x{self.width}")
        if self.std <= 0:
            raise EdgesegError(f"preprocess std must be > 0, got {self.std}")
        if self.geometry not in GEOMETRIES:
            raise EdgesegError(f"unknown geometry {self.geometry!r}", hint=f"use one of {', '.join(GEOMETRIES)}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Preprocess":
        return cls(
            height=int(data["height"]),
            width=int(data["width"]),
            mean=float(data.get("mean", 0.0)),
            std=float(data.get("std", 1.0)),
            geometry=str(data.get("geometry", "resize")),
        )

    def tile_origins(self, frame_height: int, frame_width: int) -> List[Tuple[int, int]]:
        """(y, x) of each model-sized window over a frame; one window for "resize"."""
        if self.geometry == "resize":
            return [(0, 0)]
        return [(y, x) for y in _starts(frame_height, self.height) for x in _starts(frame_width, self.width)]


def _starts(length: int, window: int) -> List[int]:
    if length < window:
        raise EdgesegError(
            f"frame side {length}px is smaller than the model's tile {window}px",
            hint="use geometry 'resize' for frames smaller than the model input",
        )
    count = -(-length // window)
    if count == 1:
        return [0]
    step = (length - window) / (count - 1)
    return [int(round(i * step)) for i in range(count)]


def to_gray(frame: np.ndarray) -> np.ndarray:
    """HxW uint8 from a grayscale, single-channel or BGR/BGRA frame (OpenCV's order)."""
    if frame.dtype != np.uint8:
        raise EdgesegError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    raise EdgesegError(f"cannot read a frame of shape {frame.shape} as an image")


def normalize(gray: np.ndarray, spec: Preprocess, out: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 HxW already at model size -> float32 (1, H, W), written into `out` when given."""
    if out is None:
        out = np.empty((1,) + gray.shape, dtype=np.float32)
    scale = np.float32(1.0 / (255.0 * spec.std))
    shift = np.float32(spec.mean / spec.std)
    np.multiply(gray, scale, out=out[0], casting="unsafe")
    out[0] -= shift
    return out


def resize_to_model(gray: np.ndarray, spec: Preprocess) -> np.ndarray:
    """The "resize" geometry alone: uint8 HxW -> uint8 at the model size (area down, linear up)."""
    if gray.shape == (spec.height, spec.width):
        return gray
    smaller = gray.shape[0] * gray.shape[1] > spec.height * spec.width
    interp = cv2.INTER_AREA if smaller else cv2.INTER_LINEAR
    return cv2.resize(gray, (spec.width, spec.height), interpolation=interp)


def preprocess(frame: np.ndarray, spec: Preprocess, out: Optional[np.ndarray] = None) -> np.ndarray:
    """One frame -> float32 NCHW batch: N=1 for "resize", N=tiles for "tile".

    Pass `out` (e.g. a pinned host buffer view) to avoid an allocation per frame.
    """
    gray = to_gray(frame)
    origins = spec.tile_origins(*gray.shape)
    if out is None:
        out = np.empty((len(origins), 1, spec.height, spec.width), dtype=np.float32)
    elif out.shape != (len(origins), 1, spec.height, spec.width):
        raise EdgesegError(f"preprocess buffer has shape {out.shape}, frame needs {(len(origins), 1, spec.height, spec.width)}")
    if spec.geometry == "resize":
        normalize(resize_to_model(gray, spec), spec, out[0])
        return out
    for i, (y, x) in enumerate(origins):
        normalize(gray[y : y + spec.height, x : x + spec.width], spec, out[i])
    return out


def to_frame(maps: np.ndarray, spec: Preprocess, frame_shape: Tuple[int, int]) -> np.ndarray:
    """Model outputs (N, C, h, w) for one frame -> (C, H, W) in frame pixels.

    "resize": bilinear back to the frame size; "tile": stitched, overlaps take the maximum.
    """
    height, width = frame_shape
    origins = spec.tile_origins(height, width)
    if maps.ndim != 4 or maps.shape[0] != len(origins):
        raise EdgesegError(f"model output shape {maps.shape} does not match {len(origins)} tile(s) of this frame")
    channels = maps.shape[1]
    if spec.geometry == "resize":
        if maps.shape[2:] == (height, width):
            return maps[0]
        return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps[0]])
    canvas = np.full((channels, height, width), -np.inf, dtype=maps.dtype)
    for tile, (y, x) in zip(maps, origins):
        view = canvas[:, y : y + spec.height, x : x + spec.width]
        np.maximum(view, tile, out=view)
    return canvas
