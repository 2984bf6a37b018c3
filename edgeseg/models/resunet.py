"""ResUNet: the expensive per-pixel segmenter (one logit map per defect class)."""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.blocks import ResidualBlock, check_divisible
from edgeseg.models.encoder import ResEncoder


class ResUNetDecoder(nn.Module):
    """Per level, coarsest first: 2x nearest upsample, concat with the encoder map of that scale,
    residual block halving the channels. Built from the encoder's `out_channels`.

    Nearest upsampling (ONNX Resize, mode nearest) instead of ConvTranspose keeps the graph plain
    for TensorRT 8.5 and for INT8 (no transposed-conv quantisation to worry about).
    """

    def __init__(self, encoder_channels: List[int]) -> None:
        super().__init__()
        chans = list(encoder_channels)
        self.blocks = nn.ModuleList(
            [ResidualBlock(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(len(chans) - 1))]
        )

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x


class ResUNet(nn.Module):
    """Encoder (4 contraction levels + bottleneck), decoder (4 expansion levels), 1x1 head.

    Output: (N, num_classes, H, W) logits; sigmoid per class (Severstal masks are multi-label).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, base_width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.config: Dict[str, Any] = {
            "in_channels": in_channels, "num_classes": num_classes, "base_width": base_width, "depth": depth,
        }
        self.encoder = ResEncoder(in_channels, base_width, depth)
        self.decoder = ResUNetDecoder(list(self.encoder.out_channels))
        self.head = nn.Conv2d(self.encoder.out_channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.encoder.reduction, "ResUNet")
        return self.head(self.decoder(self.encoder(x)))
