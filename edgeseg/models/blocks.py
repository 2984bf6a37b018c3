"""Building blocks shared by every edgeseg network.

One residual block serves the ResUNet encoder and decoder and the classifier, so both models are
the same family (and one INT8/TensorRT behaviour to reason about): Conv, BatchNorm, ReLU, Add,
MaxPool, nearest Resize and Concat only — every one of them parses on TensorRT 8.5 to 11.
"""
from __future__ import annotations

import torch
from torch import nn

from edgeseg.errors import EdgesegError


def exporting() -> bool:
    """True while torch.onnx / torch.jit / torch.export trace the model: Python shape checks are skipped
    then, so the exported graph carries no data-dependent branches."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def check_divisible(x: torch.Tensor, factor: int, model: str) -> None:
    """Eager-mode guard: every 2x2 max pool must see an even side, or skip maps would not line up."""
    if exporting():
        return
    height, width = x.shape[-2:]
    if height % factor or width % factor:
        raise EdgesegError(
            f"{model} input {height}x{width} is not divisible by {factor}",
            hint=f"resize or pad to a multiple of {factor}, e.g. {height - height % factor or factor}x{width - width % factor or factor}",
        )


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN (+ReLU) with a 1x1 conv + BN projection shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def stage(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    """`blocks` residual blocks; the first one changes the width."""
    layers = [ResidualBlock(in_channels, out_channels)]
    layers += [ResidualBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
