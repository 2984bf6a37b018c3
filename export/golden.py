"""Which frames a new artifact's golden set (edgeseg.edge.golden) is made from, and the one call
every export, calibration and build makes once its artifact and card are written.

Frames, best first: those given (the user's calibration or validation data, `export --images`),
else the golden frames of the model it was built from (so a build keeps the user's frames that
`calibrate` chose), else synthetic strips from the project's generator.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edgeseg.edge.card import Golden
from edgeseg.edge.golden import CANDIDATES, GOLDEN_FRAMES, golden_frames, record_golden
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

SYNTHETIC_SEED = 0
log = logging.getLogger("edgeseg")

__all__ = ["add_golden", "add_golden_from_images", "synthetic_frames"]


def synthetic_frames(count: int = CANDIDATES // 2, seed: int = SYNTHETIC_SEED) -> List[np.ndarray]:
    """`count` native-size synthetic strips (about half with defects)."""
    from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng
    from edgeseg.export.parity import STRIP_SHAPE

    strips = []
    for index in range(count):
        rng = strip_rng(seed, index)
        strips.append(make_strip(rng, sample_defect_classes(rng), *STRIP_SHAPE)[0])
    return strips


def add_golden(
    artifact: PathLike,
    frames: Optional[Sequence[np.ndarray]] = None,
    names: Optional[Sequence[str]] = None,
    source: Optional[PathLike] = None,
    count: int = GOLDEN_FRAMES,
) -> Optional[Golden]:
    """Record `artifact`'s golden set (see the module docstring for the frames) on the backend
    that runs it here. An artifact that cannot run here (a TensorRT engine without pycuda) keeps
    no golden set: a warning, and `edgeseg verify` says so on the target."""
    path = Path(artifact)
    if frames is None and source is not None:
        inherited = golden_frames(source)
        if inherited is not None:
            frames, names = list(inherited[0]), inherited[1]
    if frames is None:
        frames = synthetic_frames()
        names = [f"synthetic strip {i} (seed {SYNTHETIC_SEED})" for i in range(len(frames))]
    try:
        return record_golden(path, frames, names, count=count)
    except EdgesegError as exc:
        log.warning("warning: no golden set for %s (%s): `edgeseg verify` cannot check it", path.name, exc.message)
        return None


def add_golden_from_images(artifact: PathLike, images: Sequence[Path]) -> Optional[Golden]:
    """`add_golden` on export's --images strips (already read once by the parity check);
    synthetic strips when none are given."""
    import cv2

    chosen = list(images[:CANDIDATES])
    read = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in chosen]
    frames = [frame for frame in read if frame is not None]
    if not chosen or len(frames) != len(chosen):
        return add_golden(artifact)
    return add_golden(artifact, frames, [path.name for path in chosen])
