"""Torch datasets for the segmenter and the classifier, built only on edgeseg.edge.preprocess.

Every tensor a model trains on is made by the runtime's own preprocessing (`preprocess` for the
model-size frame, `normalize` for native-scale frames), so training and deployment cannot drift.
Augmentation happens before it, on the uint8 strip (brightness/contrast), or is geometric after it
(random crop, horizontal/vertical flips), which commutes with the per-pixel normalisation.

Randomness is per (seed, epoch, index) (`set_epoch`), so a run is reproducible and a resumed run
sees the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edgeseg.data.severstal import Sample, load_image
from edgeseg.edge.preprocess import Preprocess, normalize, preprocess
from edgeseg.errors import EdgesegError

BRIGHTNESS_SCALE = (0.8, 1.2)
BRIGHTNESS_SHIFT = (-20.0, 20.0)


class _StripDataset(Dataset):
    """Samples plus (optionally) their decoded images held in memory; shared augmentation helpers."""

    def __init__(
        self,
        samples: Sequence[Sample],
        images: Optional[Sequence[np.ndarray]],
        spec: Preprocess,
        augment: bool,
        seed: int,
    ) -> None:
        if images is not None and len(images) != len(samples):
            raise ValueError("images must match samples one to one")
        self.samples: List[Sample] = list(samples)
        self.images = images
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _gray(self, index: int, rng: np.random.Generator) -> np.ndarray:
        gray = self.images[index] if self.images is not None else load_image(self.samples[index].path)
        if self.augment:
            gain = rng.uniform(*BRIGHTNESS_SCALE)
            shift = rng.uniform(*BRIGHTNESS_SHIFT)
            gray = cv2.convertScaleAbs(gray, alpha=gain, beta=shift)  # saturating uint8 a*x+b
        return gray


def _flip(arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """Same random horizontal / vertical flip of every (..., H, W) array."""
    if rng.random() < 0.5:
        arrays = tuple(a[..., ::-1] for a in arrays)
    if rng.random() < 0.5:
        arrays = tuple(a[..., ::-1, :] for a in arrays)
    return tuple(np.ascontiguousarray(a) for a in arrays)


class SegmentationDataset(_StripDataset):
    """(x float32 (1, h, w), masks float32 (4, h, w)) at model resolution.

    The frame is brought to model resolution exactly as the runtime does: `preprocess` for geometry
    "resize" (masks follow with nearest-neighbour), `normalize` at native scale for "tile". With
    `crop` (h, w) training sees random windows of that frame (the ResUNet is fully convolutional;
    both sides must be multiples of 16), and with probability `defect_crop` the window is centred
    near a defect pixel so that rare small defects are seen often enough.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        images: Optional[Sequence[np.ndarray]],
        spec: Preprocess,
        *,
        crop: Optional[Tuple[int, int]] = None,
        defect_crop: float = 0.0,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(samples, images, spec, augment, seed)
        if crop is not None and (crop[0] % 16 or crop[1] % 16 or min(crop) <= 0):
            raise EdgesegError(f"crop {crop[0]}x{crop[1]} must be positive multiples of 16 (the ResUNet pools 4 times)")
        self.crop = crop
        self.defect_crop = defect_crop

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = self._rng(index)
        gray = self._gray(index, rng)
        masks = self.samples[index].masks(gray.shape)
        if self.spec.geometry == "resize":
            x = preprocess(gray, self.spec)[0]
            if masks.shape[1:] != x.shape[1:]:
                size = (self.spec.width, self.spec.height)
                masks = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks])
        else:
            x = normalize(gray, self.spec)
        if self.crop is not None:
            x, masks = self._random_crop(x, masks, rng)
        if self.augment:
            x, masks = _flip((x, masks), rng)
        return torch.from_numpy(x), torch.from_numpy(masks.astype(np.float32))

    def _random_crop(self, x: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        height, width = x.shape[1:]
        ch, cw = self.crop  # type: ignore[misc]
        if ch > height or cw > width:
            raise EdgesegError(f"crop {ch}x{cw} is larger than the {height}x{width} model frame")
        cy, cx = rng.integers(0, height - ch + 1), rng.integers(0, width - cw + 1)
        if self.defect_crop and rng.random() < self.defect_crop:
            ys, xs = np.nonzero(masks.any(axis=0))
            if ys.size:
                pick = rng.integers(ys.size)
                jitter_y, jitter_x = rng.integers(-ch // 3, ch // 3 + 1), rng.integers(-cw // 3, cw // 3 + 1)
                cy = int(np.clip(ys[pick] - ch // 2 + jitter_y, 0, height - ch))
                cx = int(np.clip(xs[pick] - cw // 2 + jitter_x, 0, width - cw))
        return x[:, cy : cy + ch, cx : cx + cw], masks[:, cy : cy + ch, cx : cx + cw]


class ClassificationDataset(_StripDataset):
    """(x float32 (1, h, w) via `preprocess` at the classifier's input, label float32 (1,): defect or not)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        images: Optional[Sequence[np.ndarray]],
        spec: Preprocess,
        *,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        if spec.geometry != "resize":
            raise EdgesegError("the classifier sees the whole strip: its preprocess geometry must be 'resize'")
        super().__init__(samples, images, spec, augment, seed)
        self.labels = np.array([s.has_defect for s in self.samples], dtype=np.float32)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = self._rng(index)
        x = preprocess(self._gray(index, rng), self.spec)[0]
        if self.augment:
            (x,) = _flip((x,), rng)
        return torch.from_numpy(x), torch.from_numpy(self.labels[index : index + 1])
