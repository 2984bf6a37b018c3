"""Segmentation losses on logits (N, C, H, W) against binary targets.

Defect pixels are a tiny fraction of a strip, so plain BCE learns "all background": both losses
add an overlap term that is insensitive to that imbalance.
- "bce-dice": BCE + (1 - soft Dice) per class, summed over the batch.
- "focal-tversky": (1 - Tversky)^gamma with alpha > beta, which weights missed defect pixels
  more than false alarms and focuses on the classes that are still poorly segmented.
The classifier uses plain BCE on its single logit.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F

from edgeseg.errors import EdgesegError

_EPS = 1.0


def _overlap_terms(logits: torch.Tensor, targets: torch.Tensor):
    """Per-class true positives, false positives, false negatives over the batch."""
    probs = torch.sigmoid(logits)
    dims = (0, 2, 3)
    tp = (probs * targets).sum(dims)
    fp = (probs * (1 - targets)).sum(dims)
    fn = ((1 - probs) * targets).sum(dims)
    return tp, fp, fn


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = _overlap_terms(logits, targets)
    dice = (2 * tp + _EPS) / (2 * tp + fp + fn + _EPS)
    return F.binary_cross_entropy_with_logits(logits, targets) + (1 - dice).mean()


def focal_tversky_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.7, beta: float = 0.3, gamma: float = 0.75
) -> torch.Tensor:
    tp, fp, fn = _overlap_terms(logits, targets)
    tversky = (tp + _EPS) / (tp + alpha * fn + beta * fp + _EPS)
    return torch.pow(1 - tversky, gamma).mean()


SEGMENTATION_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bce-dice": bce_dice_loss,
    "focal-tversky": focal_tversky_loss,
}


def segmentation_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in SEGMENTATION_LOSSES:
        raise EdgesegError(f"unknown loss {name!r}", hint=f"use one of {', '.join(SEGMENTATION_LOSSES)}")
    return SEGMENTATION_LOSSES[name]
