"""A user's own models, as a third party would write them: plain torch, nothing from edgeseg.models.

`ResUNet` is a residual U-Net (4 mask channels), `DenseNet` a DenseNet-style classifier (one defect
logit). `train` fits them briefly on synthetic strips, fed by edgeseg's one `preprocess` at the
contract the tests deploy them with, so that they predict real masks and separate defect from
clean strips (weights that segment nothing would test nothing). `in_channels=3` and
`channels_last=True` make the 3-channel and NHWC variants the export tests adopt.

The factories `resunet` and `densenet` are what `--factory tests.thirdparty:resunet` imports.
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng
from edgeseg.edge.preprocess import Preprocess, preprocess

SIZE = (32, 160)  # (height, width): a 256x1600 strip at an eighth/tenth of its size (CPU training in seconds)
MEAN, STD = 0.5, 0.25
CLASSES = 4


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResUNet(nn.Module):
    """Encoder of residual blocks, transposed-convolution decoder with concatenated skips."""

    def __init__(self, in_channels: int = 1, width: int = 8, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        w = width
        self.enc = nn.ModuleList([_Residual(in_channels, w), _Residual(w, 2 * w), _Residual(2 * w, 4 * w)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), nn.ConvTranspose2d(2 * w, w, 2, stride=2)])
        self.dec = nn.ModuleList([_Residual(4 * w, 2 * w), _Residual(2 * w, w)])
        self.head = nn.Conv2d(w, CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(nn.Module):
    """Stem, two dense blocks joined by a transition (BN-ReLU-1x1 conv-avg pool), global pool, one logit."""

    def __init__(self, in_channels: int = 1, growth: int = 8) -> None:
        super().__init__()
        c = 2 * growth
        layers: List[nn.Module] = [nn.Conv2d(in_channels, c, 3, stride=2, padding=1, bias=False), nn.MaxPool2d(2)]
        for block in range(2):
            for _ in range(3):
                layers.append(_DenseLayer(c, growth))
                c += growth
            if block == 0:
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def resunet() -> nn.Module:
    return ResUNet()


def densenet() -> nn.Module:
    return DenseNet()


def rgb_resunet() -> nn.Module:
    return ResUNet(in_channels=3)


def spec(channels: int = 1, layout: str = "NCHW") -> Preprocess:
    return Preprocess(SIZE[0], SIZE[1], MEAN, STD, channels=channels, layout=layout)


def strips(count: int, seed: int, clean_every: int = 3) -> Tuple[List[np.ndarray], np.ndarray]:
    """(native 256x1600 frames, (N, 4, H, W) masks at SIZE); every `clean_every`-th strip has no defect."""
    frames, masks = [], []
    for i in range(count):
        rng = strip_rng(seed, i)
        classes = () if i % clean_every == 0 else (sample_defect_classes(rng) or (int(rng.integers(1, 5)),))
        image, mask = make_strip(rng, classes)
        frames.append(image)
        masks.append(np.stack([cv2.resize(m, SIZE[::-1], interpolation=cv2.INTER_NEAREST) for m in mask]))
    return frames, np.stack(masks).astype(np.float32)


def fit(task: str, seed: int = 0) -> nn.Module:
    """The task's model, initialised from `seed` and trained with the steps the tests use (a
    segmenter needs more steps per second of training than the classifier gets)."""
    torch.manual_seed(seed)
    model = resunet() if task == "segmenter" else densenet()
    train(model, task, 50 if task == "segmenter" else 80, seed)
    return model


def train(model: nn.Module, task: str, steps: int, seed: int = 0, channels: int = 1, layout: str = "NCHW") -> float:
    """`steps` of Adam on synthetic strips, inputs made by edgeseg's `preprocess`; returns the
    last loss. One thread: on a shared 2-core machine that is the fastest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    frames, masks = strips(64, seed + 1000)
    x = torch.from_numpy(np.concatenate([preprocess(f, spec(channels, layout)) for f in frames]))
    y = torch.from_numpy(masks) if task == "segmenter" else torch.from_numpy(masks.reshape(len(masks), -1).max(axis=1, keepdims=True))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = torch.from_numpy(rng.choice(len(x), 8, replace=False))
        out, truth = model(x[batch]), y[batch]
        loss = nn.functional.binary_cross_entropy_with_logits(out, truth, pos_weight=torch.tensor(4.0))
        if task == "segmenter":  # soft Dice per class on the defect pixels: BCE alone learns the empty mask
            p = torch.sigmoid(out)
            overlap, total = (p * truth).sum(dim=(0, 2, 3)), (p + truth).sum(dim=(0, 2, 3))
            loss = loss + (1 - (2 * overlap + 1) / (total + 1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    torch.set_num_threads(threads)
    return float(loss.detach())

