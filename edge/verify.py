"""Does this artifact, here, still give what it gave where it was made? (`edgeseg verify`, and the
start of `edgeseg run` / `Inspector(verify=True)`.)

`verify_artifact` runs the artifact on its golden frames (edgeseg.edge.golden) on the backend
that will run it and compares with its card's tolerance. A mismatch (a CPU of another ISA class
computing INT8 differently, another TensorRT / OpenVINO version, a DLA fallback, a corrupted or
swapped file) is one line naming the artifact, the frame, the difference and the fix; an
artifact without a golden set is a warning, not a failure. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from edgeseg.edge.card import Measured, ModelCard, read_card
from edgeseg.edge.golden import GoldenMissing, GoldenOutputs, measured_here, read_golden, run_golden
from edgeseg.edge.postprocess import NotFinite
from edgeseg.edge.registry import AUTO, BackendOptions
from edgeseg.edge.rle import decode
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

PASSED, FAILED, NO_GOLDEN = "passed", "failed", "no golden set"
SKIPPED = "skipped"  # what a run's header says when the check did not run
log = logging.getLogger("edgeseg")

__all__ = ["FAILED", "GoldenMismatch", "NO_GOLDEN", "PASSED", "SKIPPED", "VerifyResult", "verify_artifact", "verify_models"]


@dataclass
class VerifyResult:
    """One artifact checked against its golden set. status: PASSED, FAILED or NO_GOLDEN.
    probability / mask: the largest differences measured (probability; fraction of mask pixels)
    and `frame` the golden frame that came closest to (or past) the tolerance. measured: where
    the golden outputs were measured; here: where they were run now. message: one line; hint:
    the fix (failures)."""

    artifact: Path
    status: str
    message: str
    hint: str = ""
    frames: int = 0
    frame: Optional[str] = None
    probability: float = 0.0
    mask: float = 0.0
    tolerance: Dict[str, float] = field(default_factory=dict)
    measured: Optional[Measured] = None
    here: Optional[Measured] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Not a failure (a missing golden set is a warning)."""
        return self.status != FAILED

    def to_dict(self) -> Dict[str, Any]:
        return {
            "artifact": str(self.artifact),
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
            "frames": self.frames,
            "frame": self.frame,
            "probability_difference": round(self.probability, 6),
            "mask_difference": round(self.mask, 6),
            "tolerance": self.tolerance,
            "measured": self.measured.to_dict() if self.measured else None,
            "here": self.here.to_dict() if self.here else None,
            "seconds": round(self.seconds, 3),
        }


class GoldenMismatch(EdgesegError):
    """An artifact does not reproduce its golden set here; `result` holds the measurement."""

    def __init__(self, result: VerifyResult) -> None:
        super().__init__(result.message, hint=result.hint)
        self.result = result


def verify_artifact(artifact: PathLike, backend: str = AUTO, options: Optional[BackendOptions] = None) -> VerifyResult:
    """Run `artifact` on its golden frames on `backend` ("auto": the one `run` picks here; the
    model is opened for this check and closed again) and compare with its card's tolerance.
    Never raises for the artifact's sake: a file that cannot be read or run is a FAILED result
    with the reason."""
    path = Path(artifact)
    started = time.perf_counter()
    try:
        result = _verify(path, backend, options)
    except EdgesegError as exc:
        message = exc.message if str(path) in exc.message else f"{path}: {exc.message}"
        result = VerifyResult(path, FAILED, message, exc.hint or "")
    result.seconds = time.perf_counter() - started
    return result


def _verify(path: Path, backend: str, options: Optional[BackendOptions]) -> VerifyResult:
    from edgeseg.edge.backends import open_backend

    card = read_card(path)  # a changed artifact fails its sha256 here
    try:
        golden = read_golden(path, card)
    except GoldenMissing as exc:
        return VerifyResult(path, NO_GOLDEN, f"{exc.message}: not verified", exc.hint or "")
    if golden is None or card.golden is None:
        return VerifyResult(
            path, NO_GOLDEN, f"{path} has no golden set (made before edgeseg recorded one): not verified",
            "rebuild or re-export it to record one",
        )
    frames, expected = golden
    tolerance = dict(card.golden.tolerance)
    model = open_backend(path, backend, options)
    with model:
        here = measured_here(model)
        try:
            found = run_golden(model, list(frames))
        except NotFinite as exc:
            return _failed(path, card, f"{path}: {exc.message} on its golden frames", here, tolerance)
    worst, probability, mask = _compare(expected, found, card, (int(frames.shape[1]), int(frames.shape[2])))
    result = VerifyResult(
        path, PASSED, "", frames=len(frames), frame=card.golden.frames[worst], probability=probability, mask=mask,
        tolerance=tolerance, measured=card.measured, here=here,
    )
    if probability <= tolerance["probability"] and mask <= tolerance["mask"]:
        result.message = (
            f"{path}: {len(frames)} golden frames reproduced on {_where(here)} "
            f"(probability within {probability:.4f}, masks within {mask:.2%} of pixels)"
        )
        return result
    result.status = FAILED
    result.message = (
        f"{path}: golden frame {worst} ({result.frame}) differs by {probability:.4f} in probability (tolerance "
        f"{tolerance['probability']}) and {mask:.2%} of mask pixels (tolerance {tolerance['mask']:.2%}) on {_where(here)}"
        + (f"; measured on {_where(card.measured)}" if card.measured else "")
    )
    result.hint = _fix(path, card)
    return result


def _compare(expected: GoldenOutputs, found: GoldenOutputs, card: ModelCard, shape: Tuple[int, int]) -> Tuple[int, float, float]:
    """(worst frame index, largest probability difference, largest fraction of differing mask
    pixels); the worst frame is the one closest to (or furthest past) its tolerance."""
    tolerance = card.golden.tolerance if card.golden else {"probability": 1.0, "mask": 1.0}
    count = len(expected.probabilities)
    delta = np.abs(expected.probabilities.astype(np.float64) - found.probabilities.astype(np.float64))
    probability = delta.reshape(count, -1).max(axis=1)
    mask = np.zeros(count)
    if expected.masks is not None and found.masks is not None:
        for i, (want, got) in enumerate(zip(expected.masks, found.masks)):
            differing = [np.count_nonzero(decode(a, shape) != decode(b, shape)) for a, b in zip(want, got) if a != b]
            mask[i] = max(differing, default=0) / float(shape[0] * shape[1])
    ratio = np.maximum(probability / max(tolerance["probability"], 1e-12), mask / max(tolerance["mask"], 1e-12))
    return int(np.argmax(ratio)), float(probability.max()), float(mask.max())


def _failed(path: Path, card: ModelCard, message: str, here: Measured, tolerance: Dict[str, float]) -> VerifyResult:
    return VerifyResult(path, FAILED, message, _fix(path, card), tolerance=tolerance, measured=card.measured, here=here)


def _where(measured: Optional[Measured]) -> str:
    if measured is None:
        return "an unknown machine"
    return f"{measured.backend} {measured.version} / {measured.device}" + (f" ({measured.isa})" if measured.isa else "")


def _fix(path: Path, card: ModelCard) -> str:
    """The command that makes the artifact again on this machine."""
    art = card.artifact
    if art.format != "onnx" or art.ort_only:
        command = f"rebuild it on this machine: edgeseg build-engine {card.source.onnx or '<model>.onnx'} --precision {art.precision}"
    elif art.precision == "int8":
        command = f"recalibrate on this machine: edgeseg calibrate DATA -m {card.source.onnx or '<model>.onnx'} (or run the FP32 model)"
    else:
        command = f"re-export {path.name} (edgeseg export) and rebuild what was made from it"
    return f"{command}; --skip-verify runs it anyway"


def verify_models(models: Mapping[str, PathLike], backend: str = AUTO, options: Optional[BackendOptions] = None) -> Dict[str, str]:
    """Verify each model ({role: artifact}) before a run: {role: PASSED or NO_GOLDEN} (a warning
    on the "edgeseg" logger for the latter); GoldenMismatch for the first that fails."""
    statuses: Dict[str, str] = {}
    for role, artifact in models.items():
        result = verify_artifact(artifact, backend, options)
        if not result.ok:
            raise GoldenMismatch(result)
        if result.status == NO_GOLDEN:
            log.warning("warning: %s", result.message)
        statuses[role] = result.status
    return statuses

