"""The cheap defect / no-defect gate that decides which frames the ResUNet sees."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from edgeseg.models.blocks import check_divisible
from edgeseg.models.encoder import ResEncoder


class Classifier(nn.Module):
    """ResNet-style binary network: the shared residual encoder, global average pool, one linear logit.

    It runs at its own, smaller input (DEFAULT_INPUT["classifier"]) so it costs a small fraction of
    the ResUNet; `depth` (pooling levels), `blocks_per_stage` and `base_width` scale it.
    Output: (N, 1) logit of "this frame has a defect".
    """

    def __init__(self, in_channels: int = 1, base_width: int = 16, depth: int = 4, blocks_per_stage: int = 1) -> None:
        super().__init__()
        self.config: Dict[str, Any] = {
            "in_channels": in_channels, "base_width": base_width, "depth": depth, "blocks_per_stage": blocks_per_stage,
        }
        self.encoder = ResEncoder(in_channels, base_width, depth, blocks_per_stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.encoder.out_channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.encoder.reduction, "classifier")
        return self.fc(torch.flatten(self.pool(self.encoder(x)[-1]), 1))
