"""The bundled demo models and clip (README.md here says how they were made).

    from edgeseg import Inspector, assets
    inspector = Inspector(assets.CLASSIFIER, assets.SEGMENTER)
"""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
CLASSIFIER = FOLDER / "classifier.onnx"
SEGMENTER = FOLDER / "segmenter.onnx"
CLIP = FOLDER / "demo_clip.mp4"
