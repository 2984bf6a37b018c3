"""The standard-matrix script runs end to end and checks the targets from the figures it measured
(figures are not asserted: benchmarks are not timed tests)."""
import shutil
from pathlib import Path

import pytest

from edgeseg.calibration.qdq import onnx_to_qdq
from edgeseg.edge.card import card_path


@pytest.fixture(scope="module")
def models(tiny_models, tiny_checkpoints, tiny_calibration, tmp_path_factory):
    """Tiny FP32 models with their checkpoints and a `cpu` QDQ segmenter beside them."""
    folder = tmp_path_factory.mktemp("matrix")
    for task, onnx in tiny_models.items():
        for src in (onnx, card_path(onnx), tiny_checkpoints[task]):
            shutil.copy(src, folder / Path(src).name)
    onnx_to_qdq(folder / "segmenter.onnx", tiny_calibration, folder / "segmenter.int8.cpu.qdq.onnx", flavour="cpu")
    return folder


def test_bench_matrix_writes_results_and_checks_targets(models, run_benchmark, tmp_path):
    flags = ["--warmup", 0, "--duration", 0, "--iterations", 2, "--repeats", 2, "--frames", 4, "--validation-strips", 4]
    data = run_benchmark("bench_matrix.py", models / "classifier.onnx", models / "segmenter.onnx", *flags)
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
    issue6 = ("int8_cpu_vs_fp32", "int8_mean_dice_drop", "onnxruntime_vs_pytorch", "fp32_share_of_gemm")
    assert all(isinstance(targets[name]["met"], bool) for name in issue6)
    ov_int8 = rows[("segmenter", "openvino", "int8")]  # OpenVINO runs the same QDQ file
    assert ov_int8["artifact"] == int8["artifact"] and ov_int8["describe"].startswith("openvino")
    assert targets["openvino_best_int8_demo"]["figure"] == max(ratios["onnxruntime int8"], ratios["openvino int8"])
    assert targets["openvino_int8_mean_dice_drop"]["figure"] == fp32["accuracy"]["mean_dice"] - ov_int8["accuracy"]["mean_dice"]
    # no default-width model, no INT8 classifier (so no INT8 cascade) in this run: not measured
    assert targets["openvino_best_int8_default_width"]["met"] is targets["openvino_cascade_int8_vs_ort_fp32"]["met"] is None
    text = (tmp_path / "smoke.md").read_text()
    assert set(data["profiles_ms_by_op"]) == {f"{b} {p}" for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")} | {"pytorch fp32"}
    assert any(layer.startswith("Convolution") for layer in data["profiles_ms_by_op"]["openvino int8"])
    assert "Conv" in data["profiles_ms_by_op"]["onnxruntime fp32"] and "aten::mkldnn_convolution" in data["profiles_ms_by_op"]["pytorch fp32"]
    assert "## Targets" in text and "tensorrt" in text  # TensorRT cells are listed with why they did not run
    assert (tmp_path / "smoke.png").is_file()
