"""The one preprocessing contract: frame -> model input tensor, and model output -> frame.

Training, calibration, export parity checks and the runtime all call this module, and a model's
parameters travel in its card (`Preprocess.to_dict`), so the tensor a deployed engine sees is
the tensor the model was trained on, by construction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from edgeseg.errors import EdgesegError

GEOMETRIES = ("resize", "tile")
CHANNELS = (1, 3)  # grayscale, or RGB (gray frames replicated, colour frames kept)
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes a float32 batch for one model.

    geometry "resize" scales the whole frame to (height, width): one tensor per frame.
    geometry "tile" keeps native scale and cuts the frame into (height, width) tiles, the last
    row/column flush with the frame edge, batched together: for frames wider than the model.
    Normalisation: x = (pixel / 255 - mean) / std on every channel.
    channels: 1 (grayscale) or 3 (RGB: a gray frame is replicated, a colour frame kept, BGR
    from OpenCV turned into RGB, the order torch and ONNX models are trained on).
    layout: where the channels go, "NCHW" (torch) or "NHWC" (e.g. models from TensorFlow).
    """

    height: int
    width: int
    mean: float = 0.0
    std: float = 1.0
    geometry: str = "resize"
    channels: int = 1
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise EdgesegError(f"preprocess size must be positive, got {self.height}x{self.width}")
        if self.std <= 0:
            raise EdgesegError(f"preprocess std must be > 0, got {self.std}")
        if self.geometry not in GEOMETRIES:
            raise EdgesegError(f"unknown geometry {self.geometry!r}", hint=f"use one of {', '.join(GEOMETRIES)}")
        if self.channels not in CHANNELS:
            raise EdgesegError(f"preprocess channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        if self.layout not in LAYOUTS:
            raise EdgesegError(f"unknown layout {self.layout!r}", hint=f"use one of {', '.join(LAYOUTS)}")

    @property
    def item_shape(self) -> Tuple[int, int, int]:
        """The shape of one image in the model's input: (C, H, W) or (H, W, C)."""
        if self.layout == "NHWC":
            return (self.height, self.width, self.channels)
        return (self.channels, self.height, self.width)

    def input_shape(self, batch: Union[int, str]) -> List[Union[int, str]]:
        """The model input's shape for `batch` images (a str: a dynamic batch)."""
        return [batch, *self.item_shape]

    @property
    def channel_axis(self) -> int:
        """The channel axis of the batched input (1 for NCHW, 3 for NHWC)."""
        return 3 if self.layout == "NHWC" else 1

    def to_dict(self) -> Dict[str, Any]:
        """The card's `preprocess`; channels and layout only when they are not the gray NCHW that
        cards written before them (and every edgeseg-trained model) mean."""
        data = asdict(self)
        if (self.channels, self.layout) == (1, "NCHW"):
            del data["channels"], data["layout"]
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Preprocess":
        return cls(
            height=int(data["height"]),
            width=int(data["width"]),
            mean=float(data.get("mean", 0.0)),
            std=float(data.get("std", 1.0)),
            geometry=str(data.get("geometry", "resize")),
            channels=int(data.get("channels", 1)),
            layout=str(data.get("layout", "NCHW")),
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


def to_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """The frame as the model's channels see it: HxW uint8 gray (channels 1), or HxWx3 uint8 RGB
    (channels 3: a gray frame replicated, a BGR/BGRA frame converted)."""
    if channels == 1:
        return to_gray(frame)
    if frame.dtype != np.uint8:
        raise EdgesegError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise EdgesegError(f"cannot read a frame of shape {frame.shape} as an image")


def normalize(image: np.ndarray, spec: Preprocess, out: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 HxW (gray) or HxWxC already at model size -> float32 `spec.item_shape`, written into
    `out` when given."""
    if out is None:
        out = np.empty(spec.item_shape, dtype=np.float32)
    pixels = image.reshape(image.shape[0], image.shape[1], -1)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    scale = np.float32(1.0 / (255.0 * spec.std))
    shift = np.float32(spec.mean / spec.std)
    np.multiply(pixels, scale, out=out, casting="unsafe")
    out -= shift
    return out


def resize_to_model(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """The "resize" geometry alone: uint8 HxW (or HxWxC) -> uint8 at the model size (area down, linear up)."""
    if image.shape[:2] == (spec.height, spec.width):
        return image
    smaller = image.shape[0] * image.shape[1] > spec.height * spec.width
    interp = cv2.INTER_AREA if smaller else cv2.INTER_LINEAR
    return cv2.resize(image, (spec.width, spec.height), interpolation=interp)


def preprocess(frame: np.ndarray, spec: Preprocess, out: Optional[np.ndarray] = None) -> np.ndarray:
    """One frame -> float32 batch in the model's layout: N=1 for "resize", N=tiles for "tile".

    Pass `out` (e.g. a pinned host buffer view) to avoid an allocation per frame.
    """
    image = to_channels(frame, spec.channels)
    origins = spec.tile_origins(*image.shape[:2])
    shape = (len(origins),) + spec.item_shape
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape:
        raise EdgesegError(f"preprocess buffer has shape {out.shape}, frame needs {shape}")
    if spec.geometry == "resize":
        normalize(resize_to_model(image, spec), spec, out[0])
        return out
    for i, (y, x) in enumerate(origins):
        normalize(image[y : y + spec.height, x : x + spec.width], spec, out[i])
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
