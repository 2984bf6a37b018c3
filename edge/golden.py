"""The golden set: a few frames with the outputs an artifact gave on them where it was made.

An artifact that computes differently on the target (another CPU ISA class, another TensorRT
or OpenVINO version, a DLA fallback, a corrupted or swapped file) still loads and runs; only its
outputs say so. So every artifact keeps, in `<artifact stem>.golden.npz` beside it (named by its
card's `golden`, with the sha256), up to GOLDEN_FRAMES frames from the user's data and what it
gave on them: the classifier's defect probability, or the segmenter's probability maps (pooled
to at most MAP_VALUES values each, stored as 1/255 steps) and masks (RLE, after the card's
thresholds); the card's `measured` says on which backend, version and device. edgeseg.edge.verify
runs the artifact on them again and compares within the card's tolerance (TOLERANCES).

Frames are stored as the model sees them (gray, at its input size; "tile" models: native size),
compressed; the whole file stays under MAX_GOLDEN_BYTES (fewer frames where frames are large).
Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import importlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.edge.artifacts import golden_path
from edgeseg.edge.backends import open_backend
from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import Golden, Measured, ModelCard, read_card, write_card
from edgeseg.edge.postprocess import MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import preprocess, resize_to_model, to_gray
from edgeseg.edge.registry import AUTO, BackendOptions
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256

GOLDEN_FRAMES = 4
CANDIDATES = 12  # frames run to choose the golden ones from (the most and the least defective)
MAX_GOLDEN_BYTES = 1 << 20
MAP_VALUES = 4096  # pooled probability values kept per segmenter output map
# Largest probability difference and fraction of differing mask pixels on any golden frame. FP32
# on another CPU or runtime differs by ~1e-5; a wrong INT8 kernel, a perturbed weight or a
# swapped model by 0.1 and more.
TOLERANCES: Dict[str, Dict[str, float]] = {
    "fp32": {"probability": 0.01, "mask": 0.005},
    "fp16": {"probability": 0.02, "mask": 0.01},
    "int8": {"probability": 0.03, "mask": 0.01},
}
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}

__all__ = [
    "GoldenMissing", "GoldenOutputs", "MAX_GOLDEN_BYTES", "TOLERANCES", "golden_frames", "measured_here", "model_frame", "read_golden", "record_golden",
    "run_golden",
]


@dataclass
class GoldenOutputs:
    """What an artifact gave on N frames. probabilities: classifier (N,) defect probabilities;
    segmenter (N, maps, h, w) pooled probability maps. masks: segmenter (N, classes) RLE, else None."""

    probabilities: np.ndarray
    masks: Optional[List[List[str]]] = None


def run_golden(backend: Backend, frames: Sequence[np.ndarray]) -> GoldenOutputs:
    """The outputs of the active `backend` on `frames`, one call per frame, through the runtime's
    own preprocessing and post-processing (edgeseg.edge.preprocess / postprocess)."""
    card = backend.card
    post = MaskPostprocess(card) if card.task == "segmenter" else None
    probabilities: List[np.ndarray] = []
    masks: List[List[str]] = []
    for frame in frames:
        output = backend.infer({card.input.name: preprocess(frame, card.preprocess)})[card.output.name]
        if post is None:
            probabilities.append(np.asarray(defect_probability(output, card.output_activation), dtype=np.float32))
            continue
        probabilities.append(_pooled(output, card.output_activation))
        rle = post(output, frame.shape[:2]).rle  # raises NotFinite on NaN maps
        masks.append([rle.get(name, "") for name in card.classes])
    return GoldenOutputs(np.stack(probabilities), masks if post is not None else None)


def _pooled(output: np.ndarray, activation: str) -> np.ndarray:
    """(tiles, C, h, w) logits -> float32 (tiles*C, h', w') probabilities, area-pooled to at most
    MAP_VALUES values per map."""
    maps = output.reshape(-1, *output.shape[-2:]).astype(np.float32)
    probabilities = 1.0 / (1.0 + np.exp(-maps)) if activation == "sigmoid" else np.clip(maps, 0.0, 1.0)
    height, width = maps.shape[-2:]
    factor = max(1, math.ceil(math.sqrt(height * width / MAP_VALUES)))
    size = (math.ceil(width / factor), math.ceil(height / factor))
    return np.stack([cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in probabilities])


def measured_here(backend: Backend) -> Measured:
    """Where the active `backend` computes: its runtime and version, and the CPU (model, ISA
    class) or GPU."""
    from edgeseg.envinfo import cpu_info, isa_class

    version = str(importlib.import_module(_MODULES[backend.kind]).__version__).split("-")[0]
    if backend.runs_on == "cpu":
        cpu = cpu_info()
        return Measured(backend.kind, version, str(cpu["model"]), isa_class(cpu["simd"]))
    return Measured(backend.kind, version, str(getattr(backend, "gpu_name", None) or backend.runs_on))


def model_frame(frame: np.ndarray, card: ModelCard) -> np.ndarray:
    """A frame as the golden set stores it: gray, at the model's input size ("tile": native)."""
    gray = to_gray(frame)
    return np.ascontiguousarray(gray if card.preprocess.geometry == "tile" else resize_to_model(gray, card.preprocess))


def record_golden(
    artifact: PathLike,
    frames: Sequence[np.ndarray],
    names: Optional[Sequence[str]] = None,
    backend: str = AUTO,
    options: Optional[BackendOptions] = None,
    count: int = GOLDEN_FRAMES,
) -> Golden:
    """Choose `count` golden frames among the first CANDIDATES of `frames` (uint8, gray or BGR)
    by running `artifact` on `backend` (default: the one `run` picks here): the most and the
    least defective alternately, as many as fit in MAX_GOLDEN_BYTES; write them with the outputs
    to `<artifact stem>.golden.npz` and the card's `golden` and `measured`. Returns `golden`."""
    path = Path(artifact)
    card = read_card(path)
    if not len(frames):
        raise EdgesegError(f"no frames to make {path.name}'s golden set from")
    labels = list(names) if names is not None else [f"frame {i}" for i in range(len(frames))]
    candidates = [model_frame(frame, card) for frame in frames[:CANDIDATES]]
    model = open_backend(path, backend, options)
    with model:
        outputs = run_golden(model, candidates)
        here = measured_here(model)
    scores = outputs.probabilities.reshape(len(candidates), -1).mean(axis=1)
    ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
    chosen: List[int] = []
    for high, low in zip(ranked, reversed(ranked)):  # most defective, cleanest, next most...
        chosen += [i for i in (high, low) if i not in chosen]
    chosen = chosen[: max(1, count)]
    while True:
        payload = _pack([candidates[i] for i in chosen], _subset(outputs, chosen))
        if len(payload) <= MAX_GOLDEN_BYTES or len(chosen) == 1:
            break
        chosen.pop()
    if len(payload) > MAX_GOLDEN_BYTES:
        raise EdgesegError(f"one {candidates[0].shape[1]}x{candidates[0].shape[0]} frame alone makes a golden set over {MAX_GOLDEN_BYTES >> 20} MB")
    target = golden_path(path)
    with atomic_output(target) as tmp:
        tmp.write_bytes(payload)
    card.golden = Golden(target.name, sha256(target), [labels[i] for i in chosen], dict(TOLERANCES[card.artifact.precision]))
    card.measured = here
    write_card(path, card)
    return card.golden


def _subset(outputs: GoldenOutputs, chosen: List[int]) -> GoldenOutputs:
    masks = [outputs.masks[i] for i in chosen] if outputs.masks is not None else None
    return GoldenOutputs(outputs.probabilities[chosen], masks)


def _pack(frames: List[np.ndarray], outputs: GoldenOutputs) -> bytes:
    arrays: Dict[str, np.ndarray] = {"frames": np.stack(frames)}
    if outputs.masks is None:
        arrays["probabilities"] = outputs.probabilities.astype(np.float32)
    else:  # 1/255 steps: 4x smaller, and an error far below any tolerance
        arrays["maps"] = np.round(outputs.probabilities * 255.0).astype(np.uint8)
        arrays["masks"] = np.array(outputs.masks, dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle
    return buffer.getvalue()


class GoldenMissing(EdgesegError):
    """The card names a golden set that is not beside the artifact (copied without it)."""


def read_golden(artifact: PathLike, card: ModelCard) -> Optional[Tuple[np.ndarray, GoldenOutputs]]:
    """(frames uint8 (N, H, W), GoldenOutputs) of `artifact`'s golden set; None when its card
    has none. GoldenMissing when its file is not there; EdgesegError when it changed after the
    card was written."""
    if card.golden is None:
        return None
    path = Path(artifact).with_name(card.golden.file)
    if not path.is_file():
        raise GoldenMissing(f"{Path(artifact).name}'s golden set {path} is missing", hint=f"copy {path.name} beside {Path(artifact).name}")
    if sha256(path) != card.golden.sha256:
        raise EdgesegError(
            f"{path} does not match {Path(artifact).name}'s card (sha256 differs: the golden set changed after the card was written)",
            hint="rebuild the artifact (its golden set is written with it)",
        )
    with np.load(path, allow_pickle=False) as data:
        if "maps" in data:
            outputs = GoldenOutputs(data["maps"].astype(np.float32) / 255.0, [[str(r) for r in row] for row in data["masks"]])
        else:
            outputs = GoldenOutputs(data["probabilities"])
        return data["frames"], outputs


def golden_frames(artifact: PathLike) -> Optional[Tuple[np.ndarray, List[str]]]:
    """(frames, names) of `artifact`'s golden set, to make the golden set of what is built from
    it; None when it has none or it is unreadable."""
    try:
        card = read_card(artifact)
        found = read_golden(artifact, card)
    except (OSError, EdgesegError, ValueError):
        return None
    return None if found is None or card.golden is None else (found[0], list(card.golden.frames))
