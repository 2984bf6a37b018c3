"""The bundled demo (README.md here): two small trained models as FP32 ONNX and INT8 QDQ ONNX of
both flavours, with cards and checkpoints, and a short clip of synthetic strips. The demo
commands use them when no model or source is given; Python reaches them the same way:

    from edgeseg import Inspector, assets
    inspector = Inspector(assets.CLASSIFIER, assets.SEGMENTER)        # the paths
    assets.classifier_onnx(), assets.segmenter_onnx(), assets.demo_clip()  # checked: missing is one error
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from edgeseg.errors import EdgesegError

FOLDER = Path(__file__).resolve().parent
CLASSIFIER = FOLDER / "classifier.onnx"
SEGMENTER = FOLDER / "segmenter.onnx"
CLIP = FOLDER / "demo_clip.mp4"


def existing(path: Path, flag: str = "") -> Path:
    """`path` when it is there; an EdgesegError naming the option that replaces it otherwise."""
    if not path.is_file():
        instead = f"pass {flag} yourself, or reinstall edgeseg" if flag else "reinstall edgeseg"
        raise EdgesegError(f"the bundled demo file {path} is missing", hint=instead)
    return path


def classifier_onnx() -> Path:
    """The demo classifier, FP32 ONNX (card beside it)."""
    return existing(CLASSIFIER, "--classifier")


def segmenter_onnx() -> Path:
    """The demo ResUNet, FP32 ONNX (card beside it)."""
    return existing(SEGMENTER, "--segmenter")


def demo_clip() -> Path:
    """The demo clip: synthetic 256x1600 strips, about half with defects."""
    return existing(CLIP, "--source")


def models(flavour: Optional[str] = None) -> List[Path]:
    """The demo classifier and segmenter: FP32 ONNX, or with `flavour` ("trt", "cpu") their INT8
    QDQ models of that flavour (`edgeseg calibrate` names)."""
    from edgeseg.calibration.qdq import qdq_path

    return [existing(qdq_path(path, flavour) if flavour else path) for path in (CLASSIFIER, SEGMENTER)]
