"""Shared fixtures.

Model fixtures (export helper): tiny random-init models made through the real export API, so
runtime, INT8 and benchmark tests run on genuine ONNX files with genuine cards in seconds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

# Typer prints usage errors in a rich box as wide as the terminal, wrapping a long temp path
# into the message; the tests read the message, so that box gets room for any line (before
# typer is imported: it reads the variable once). Tables still follow COLUMNS.
os.environ.setdefault("TERMINAL_WIDTH", "1000")
# Machine-independence check (tests/run.sh's second pass): text measured by OpenCV comes out
# this many times wider, as another OpenCV release's font may, so a test that depends on this
# OpenCV's glyph widths fails where it is written.
FONT_SCALE_ENV = "EDGESEG_TEST_FONT_SCALE"


@pytest.fixture(autouse=True, scope="session")
def _other_font_metrics():
    scale = float(os.environ.get(FONT_SCALE_ENV) or 1.0)
    if scale == 1.0:
        yield
        return
    import cv2

    measure = cv2.getTextSize

    def wider(text, font, font_scale, thickness):
        (width, height), baseline = measure(text, font, font_scale, thickness)
        return (int(round(width * scale)), height), baseline

    cv2.getTextSize = wider
    yield
    cv2.getTextSize = measure

# Tiny sizes: segmenter 64x320 (same 1:5 aspect as a 256x1600 strip), classifier 32x160.
TINY_INPUT = {"segmenter": (64, 320), "classifier": (32, 160)}
TINY_CLASSES = {"segmenter": ["1", "2", "3", "4"], "classifier": ["defect"]}
TINY_THRESHOLDS = {
    "segmenter": {"probability": [0.5] * 4, "min_area": [16] * 4},
    "classifier": {"defect": 0.5},
}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Dict[str, Path]:
    """{"classifier": Path, "segmenter": Path} to edgeseg checkpoints (.pt) of random-init
    width-4 models (seeded), preprocess mean 0.5 / std 0.25 at TINY_INPUT sizes.

    BatchNorm statistics are set from synthetic strips (one train-mode pass, no weight update), so
    activations have the scale of a trained model instead of fading layer by layer: outputs differ
    from frame to frame and INT8/FP16 checks see realistic ranges."""
    torch = pytest.importorskip("torch")
    from edgeseg.edge.preprocess import Preprocess
    from edgeseg.export.parity import parity_inputs
    from edgeseg.models import MODEL_FOR_TASK, create_model, save_checkpoint

    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    paths = {}
    for task in ("classifier", "segmenter"):
        torch.manual_seed(0)
        name = MODEL_FOR_TASK[task]
        model = create_model(name, base_width=4)
        spec = Preprocess(*TINY_INPUT[task], mean=0.5, std=0.25)
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.momentum = None  # cumulative average: one pass sets the statistics of that batch
        model.train()
        with torch.no_grad():
            model(torch.from_numpy(parity_inputs(spec, seed=1, strips=8, random=0)["strips"]))
        model.eval()
        paths[task] = save_checkpoint(
            folder / f"{task}.pt",
            model,
            task=task,
            model_config={"name": name, **model.config},
            preprocess=spec,
            classes=TINY_CLASSES[task],
            thresholds=TINY_THRESHOLDS[task],
        )
    return paths


@pytest.fixture(scope="session")
def tiny_models(tiny_checkpoints, tmp_path_factory) -> Dict[str, Path]:
    """{"classifier": Path, "segmenter": Path} to FP32 ONNX files (input "image" NCHW float32 with
    dynamic batch, output "logits"), each with its model card beside it (`read_card(path)`),
    exported with edgeseg.export.torch_onnx.torch_to_onnx, and its golden set (synthetic strips)
    as `edgeseg export` writes it, so runs verify them silently."""
    from edgeseg.export.golden import add_golden
    from edgeseg.export.torch_onnx import torch_to_onnx

    folder = tmp_path_factory.mktemp("tiny_models")
    models = {task: torch_to_onnx(path, folder / f"{task}.onnx").onnx for task, path in tiny_checkpoints.items()}
    for model in models.values():
        add_golden(model)
    return models


@pytest.fixture(scope="session")
def tiny_calibration(tiny_models, tmp_path_factory):
    """A CalibrationSet of 12 synthetic strips at the tiny segmenter's geometry (the classifier
    resizes from them), for the INT8 tests."""
    from edgeseg.calibration.calibration_set import fit_frame, save_calibration_set
    from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng
    from edgeseg.edge.card import read_card

    spec = read_card(tiny_models["segmenter"]).preprocess
    frames = []
    for i in range(12):
        rng = strip_rng(5, i)
        image, _ = make_strip(rng, sample_defect_classes(rng))
        frames.append(fit_frame(image, spec))
    return save_calibration_set(tmp_path_factory.mktemp("calib") / "c.npz", frames, [f"s{i}" for i in range(12)], "images", spec)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def run_benchmark(tmp_path) -> Callable[..., Dict[str, Any]]:
    """run(script, *args): run benchmarks/<script> as a user would, writing tmp_path/smoke.{json,md};
    fails the test on a non-zero exit (with the script's stderr) and returns the JSON it wrote."""

    def run(script: str, *args: Any) -> Dict[str, Any]:
        command = [sys.executable, str(BENCHMARKS / script), *map(str, args), "--out", str(tmp_path), "--name", "smoke"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads((tmp_path / "smoke.json").read_text())

    return run
