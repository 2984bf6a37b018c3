"""The standard-matrix script runs end to end and checks the targets from the figures it measured
(figures are not asserted: benchmarks are not timed tests)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeseg.calibration.calibration_set import severstal_to_calibration_set
from edgeseg.calibration.qdq import onnx_to_qdq
from edgeseg.data.synth import write_synthetic
from edgeseg.edge.card import card_path, read_card

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_matrix.py"


@pytest.fixture(scope="module")
def models(tiny_models, tiny_checkpoints, tmp_path_factory):
    """Tiny FP32 models with their checkpoints and a `cpu` QDQ segmenter beside them."""
    folder = tmp_path_factory.mktemp("matrix")
    for task, onnx in tiny_models.items():
        for src in (onnx, card_path(onnx), tiny_checkpoints[task]):
            shutil.copy(src, folder / Path(src).name)
    strips = write_synthetic(folder / "calib", 8, seed=3).root
    calib = severstal_to_calibration_set(strips, folder / "calib.npz", read_card(folder / "segmenter.onnx").preprocess, count=8)
    onnx_to_qdq(folder / "segmenter.onnx", calib, folder / "segmenter.int8.cpu.qdq.onnx", flavour="cpu")
    return folder


def test_bench_matrix_writes_results_and_checks_targets(models, tmp_path):
    command = [sys.executable, str(SCRIPT), str(models / "classifier.onnx"), str(models / "segmenter.onnx")]
    command += ["--warmup", "0", "--duration", "0", "--iterations", "2", "--repeats", "2", "--frames", "4", "--validation-strips", "4"]
    command += ["--out", str(tmp_path), "--name", "smoke"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    rows = {(r["name"], r["backend"], r["precision"]): r for r in data["results"] if "throughput" in r}
    assert ("segmenter", "onnxruntime", "int8") in rows and ("segmenter", "pytorch", "fp32") in rows
    assert ("classifier", "onnxruntime", "int8") not in rows  # no QDQ classifier was made: listed as not run
    targets = {t["target"]: t for t in data["targets"]}
    fp32, int8, eager = rows[("segmenter", "onnxruntime", "fp32")], rows[("segmenter", "onnxruntime", "int8")], rows[("segmenter", "pytorch", "fp32")]
    ratios = data["ratios"]["segmenter b1"]  # medians of the paired interleaved rounds
    assert len(int8["throughput_rounds"]) == len(fp32["throughput_rounds"]) == 2
    assert targets["int8_cpu_vs_fp32"]["figure"] == ratios["onnxruntime int8"]
    assert targets["onnxruntime_vs_pytorch"]["figure"] == pytest.approx(1 / ratios["pytorch fp32"])
    assert ratios["pytorch fp32"] == pytest.approx(sum(e / f for e, f in zip(eager["throughput_rounds"], fp32["throughput_rounds"])) / 2)
    assert targets["int8_mean_dice_drop"]["figure"] == fp32["accuracy"]["mean_dice"] - int8["accuracy"]["mean_dice"]
    assert targets["fp32_share_of_gemm"]["figure"] == fp32["efficiency"] > 0
    assert all(isinstance(t["met"], bool) for t in targets.values())
    text = (tmp_path / "smoke.md").read_text()
    assert set(data["profiles_ms_by_op"]) == {"onnxruntime fp32", "onnxruntime fp16", "onnxruntime int8", "pytorch fp32"}
    assert "Conv" in data["profiles_ms_by_op"]["onnxruntime fp32"] and "aten::mkldnn_convolution" in data["profiles_ms_by_op"]["pytorch fp32"]
    assert "## Targets" in text and "tensorrt" in text  # TensorRT cells are listed with why they did not run
    assert (tmp_path / "smoke.png").is_file()
