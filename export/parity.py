"""Numerical parity checks: PyTorch vs ONNX Runtime, FP32 ONNX vs FP16 ONNX.

Inputs are real frames (synthetic steel strips, or the user's images) and fresh random frames,
turned into tensors by the one preprocessing (edgeseg.edge.preprocess) exactly as the runtime will.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from edgeseg.edge.preprocess import Preprocess, preprocess
from edgeseg.errors import EdgesegError

# A comparison passes when the relative L2 error is under the tolerance, or when no output moved by
# more than the absolute limit (in logits): relative error means nothing for outputs near zero, e.g.
# a classifier scoring noise frames at logit ~0.001, and a logit error of 0.01 moves a sigmoid
# probability by at most 0.0025.
FP32_TOLERANCE, FP32_ATOL = 1e-4, 1e-5  # export must not change the model beyond float rounding
FP16_TOLERANCE, FP16_ATOL = 1e-2, 1e-2  # FP16 keeps ~3 significant digits, errors grow through ~30 layers
STRIP_SHAPE = (256, 1600)  # native Severstal strip: frames are made at this size and preprocessed down


@dataclass(frozen=True)
class Parity:
    """One comparison: `candidate` against `reference` on `samples` input tensors."""

    check: str  # what is compared: "torch-onnx", "fp32-fp16", "nhwc-wrapper"
    inputs: str  # "random", "strips", "images"
    samples: int
    max_abs: float
    rel_l2: float
    tolerance: float  # on rel_l2
    atol: float  # on max_abs

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs) and (self.rel_l2 <= self.tolerance or self.max_abs <= self.atol))

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def compare(
    check: str, inputs: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float, atol: float
) -> Parity:
    """max |a - b| and ||a - b|| / ||a||; NaN/inf in the candidate (FP16 overflow) counts as failure."""
    if reference.shape != candidate.shape:
        raise EdgesegError(f"{check}: output shapes differ ({reference.shape} vs {candidate.shape})")
    ref = reference.astype(np.float64)
    diff = candidate.astype(np.float64) - ref
    if not np.all(np.isfinite(candidate)):
        return Parity(check, inputs, len(reference), float("inf"), float("inf"), tolerance, atol)
    rel = float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-12))
    return Parity(check, inputs, len(reference), float(np.abs(diff).max()), rel, tolerance, atol)


def parity_inputs(
    spec: Preprocess, *, seed: int = 0, strips: int = 4, random: int = 2, images: Sequence[Path] = ()
) -> Dict[str, np.ndarray]:
    """{"strips"|"images"|"random": float32 batch in the model's layout} from frames run through `preprocess`.

    Strips come from the synthetic generator (defect shapes and steel texture, i.e. realistic
    activations); random frames are uniform noise; `images` are the user's own strips.
    """
    from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng

    height = max(STRIP_SHAPE[0], spec.height)
    width = max(STRIP_SHAPE[1], spec.width)
    frames: Dict[str, List[np.ndarray]] = {}
    if strips:
        frames["strips"] = []
        for index in range(strips):
            rng = strip_rng(seed, index)
            frames["strips"].append(make_strip(rng, sample_defect_classes(rng), height, width)[0])
    if images:
        frames["images"] = [_read_image(path, spec.channels) for path in images]
    if random:
        rng = np.random.default_rng([seed, 1 << 20])
        frames["random"] = [rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(random)]
    return {name: np.concatenate([preprocess(f, spec) for f in batch]) for name, batch in frames.items()}


def _read_image(path: Path, channels: int) -> np.ndarray:
    """Gray for a 1-channel model; colour (BGR, as OpenCV reads it) for a 3-channel one."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise EdgesegError(f"cannot read image {path}", hint="pass PNG/JPEG strips to --images")
    return image


def onnx_session(model: Union[bytes, Path], threads: Optional[int] = None) -> Any:
    """A quiet CPU ONNX Runtime session (from bytes, so a model can be checked before it is written)."""
    from edgeseg.edge.backends.onnxruntime import ort_session

    return ort_session(model, providers=["CPUExecutionProvider"], intra_op_threads=threads or 0, log_severity=3)


def run_session(session: Any, input_name: str, batch: np.ndarray, output_name: Optional[str] = None) -> np.ndarray:
    """Run a batch through the named input; the named (else first) output. A model with a fixed
    batch size (an outside ONNX exported at batch 1) is run in chunks of that size."""
    fixed = next((i.shape[0] for i in session.get_inputs() if i.name == input_name), None)
    step = fixed if isinstance(fixed, int) and fixed > 0 else len(batch)
    if len(batch) % step:
        raise EdgesegError(f"the model's fixed batch size {step} does not divide {len(batch)} inputs")
    outputs = [output_name] if output_name else None
    try:
        chunks = [session.run(outputs, {input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise EdgesegError(f"ONNX Runtime failed on a {tuple(batch.shape)} input: {first}") from exc
    return np.concatenate([np.asarray(c) for c in chunks])


def require_parity(results: Sequence[Parity], what: str, hint: str) -> None:
    """EdgesegError naming the worst failing comparison, if any."""
    failed = [r for r in results if not r.ok]
    if failed:
        worst = max(failed, key=lambda r: r.rel_l2)
        raise EdgesegError(
            f"{what}: {worst.check} parity failed on {worst.inputs} inputs "
            f"(relative L2 {worst.rel_l2:.3g} > {worst.tolerance:g} and max abs {worst.max_abs:.3g} > {worst.atol:g}); nothing written",
            hint=hint,
        )
