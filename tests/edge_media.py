"""Real media for the runtime tests: small encoded videos and image folders made on the spot."""
from pathlib import Path
from typing import List

import cv2
import numpy as np

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


def frames(count: int, height: int = 96, width: int = 480, seed: int = 0) -> List[np.ndarray]:
    """BGR frames with a texture, a brightness that varies frame to frame and a dark blob."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        level = 60 + (i * 37) % 140
        image = np.clip(rng.normal(level, 12, (height, width)), 0, 255).astype(np.uint8)
        cv2.circle(image, (int(rng.integers(20, width - 20)), height // 2), 12, 10, -1)
        cv2.putText(image, str(i), (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
        out.append(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    return out


def write_video(path: Path, images: List[np.ndarray], fps: float = 25.0) -> Path:
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix]), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for image in images:
        writer.write(image)
    writer.release()
    return path


def count_video_frames(path: Path) -> int:
    """Frames OpenCV decodes from `path` (0 when it cannot be opened)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.isOpened():
        ok, _ = capture.read()
        if not ok:
            break
        count += 1
    capture.release()
    return count
