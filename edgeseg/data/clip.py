"""Synthetic strip videos: the bundled demo clip, and benchmark clips at a chosen defect rate.

Frames are synthetic strips (edgeseg.data.synth.make_strip), grayscale stored as BGR, encoded
with mp4v (.mp4) or MJPG (.avi). Exactly round(defect_rate * frames) frames carry defects, at
seeded positions, so a benchmark's prevalence is exact and a clip is the same for a given seed.

Regenerate the bundled demo clip with:  python -m edgeseg.data.clip edgeseg/assets/demo_clip.mp4
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
DEMO_FRAMES = 40
DEMO_DEFECT_RATE = 0.5
DEMO_SEED = 2024


def strip_frames(
    frames: int, defect_rate: float, seed: int, height: int = 256, width: int = 1600
) -> Tuple[List[np.ndarray], List[bool]]:
    """`frames` BGR strips and whether each carries a defect (exactly round(rate * frames) do)."""
    if frames < 1:
        raise EdgesegError(f"a clip needs at least 1 frame, got {frames}")
    if not 0.0 <= defect_rate <= 1.0:
        raise EdgesegError(f"defect rate must be within [0, 1], got {defect_rate}")
    picker = np.random.default_rng([seed, 0, 1])  # apart from strip_rng(seed, i) streams
    defective = np.zeros(frames, dtype=bool)
    defective[picker.permutation(frames)[: int(round(defect_rate * frames))]] = True
    images = []
    for index in range(frames):
        rng = strip_rng(seed, index)
        classes: Tuple[int, ...] = ()
        while defective[index] and not classes:
            classes = sample_defect_classes(rng)
        image, _ = make_strip(rng, classes, height=height, width=width)
        images.append(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    return images, defective.tolist()


def write_clip(images: List[np.ndarray], path: PathLike, fps: float = 10.0) -> Path:
    """Encode BGR frames of one size into `path` (.mp4 or .avi), atomically."""
    target = Path(path)
    if target.suffix.lower() not in FOURCC:
        raise EdgesegError(f"cannot tell the video format of {target}", hint="use .mp4 or .avi")
    height, width = images[0].shape[:2]
    with atomic_output(target) as tmp:  # the temporary file keeps the suffix OpenCV picks the container by
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*FOURCC[target.suffix.lower()]), fps, (width, height))
        if not writer.isOpened():
            raise EdgesegError(f"OpenCV cannot encode {target}")
        try:
            for image in images:
                writer.write(image)
        finally:
            writer.release()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic strip clip (default: the bundled demo clip).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=DEMO_FRAMES)
    parser.add_argument("--defect-rate", type=float, default=DEMO_DEFECT_RATE)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args()
    images, _ = strip_frames(args.frames, args.defect_rate, args.seed)
    print(write_clip(images, args.out, args.fps))


if __name__ == "__main__":
    main()
