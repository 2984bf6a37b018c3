"""The residual encoder shared by the ResUNet and the classifier (segmentation_models_pytorch style:
the encoder exposes `out_channels`, decoders and heads are built from them)."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from edgeseg.models.blocks import stage


class ResEncoder(nn.Module):
    """A full-resolution residual stage, then `depth` times (2x2 max pool, residual stage with twice
    the channels).

    forward returns every stage's map, finest first: widths base_width * 2**i at stride 2**i for
    i = 0..depth. With depth 4 and base_width 16 the last map (the ResUNet bottleneck) has 256
    channels at 1/16 of the input size, so inputs must be divisible by 2**depth.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 16, depth: int = 4, blocks_per_stage: int = 1) -> None:
        super().__init__()
        if depth < 1 or base_width < 1 or blocks_per_stage < 1 or in_channels < 1:
            raise ValueError("depth, base_width, blocks_per_stage and in_channels must be >= 1")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.out_channels: Tuple[int, ...] = tuple(widths)
        self.reduction = 2**depth
        self.pool = nn.MaxPool2d(2)
        self.stages = nn.ModuleList(
            [stage(in_channels, widths[0], blocks_per_stage)]
            + [stage(widths[i - 1], widths[i], blocks_per_stage) for i in range(1, depth + 1)]
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = [self.stages[0](x)]
        for block in self.stages[1:]:
            features.append(block(self.pool(features[-1])))
        return features
