"""Severstal run-length encoding, the competition's convention.

Pixels are numbered from 1, top to bottom then left to right (column-major); the string is
"start length start length ...". Torch-free: the data reader and the runtime share it.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from edgeseg.errors import EdgesegError


def encode(mask: np.ndarray) -> str:
    """Binary HxW mask -> RLE string ("" for an empty mask)."""
    if mask.ndim != 2:
        raise ValueError(f"encode needs a 2-D mask, got shape {mask.shape}")
    flat = np.ascontiguousarray(mask.T).reshape(-1).astype(bool)
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(starts.size * 2, dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = ends - starts
    return " ".join(map(str, runs.tolist()))


def decode(rle: str, shape: Tuple[int, int]) -> np.ndarray:
    """RLE string -> uint8 HxW mask of 0/1. Raises EdgesegError on a malformed string."""
    height, width = shape
    mask = np.zeros(height * width, dtype=np.uint8)
    text = rle.strip() if isinstance(rle, str) else ""
    if not text:
        return mask.reshape(width, height).T.copy()
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise EdgesegError(f"RLE has a non-integer token ({exc})") from exc
    if numbers.size % 2:
        raise EdgesegError(f"RLE has an odd number of values ({numbers.size}): starts and lengths must pair")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any() or (lengths <= 0).any():
        raise EdgesegError("RLE has a start below 1 or a length below 1")
    ends = starts + lengths
    if ends.max() > mask.size:
        raise EdgesegError(f"RLE runs past the image end ({int(ends.max())} > {height}x{width}={mask.size} pixels)")
    for start, end in zip(starts.tolist(), ends.tolist()):
        mask[start:end] = 1
    return mask.reshape(width, height).T.copy()
