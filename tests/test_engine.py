"""`edgeseg build-engine`: the ONNX Runtime path end to end, option checks and bad input.

The TensorRT path itself is exercised in test_trt_gpu.py (gpu marker); everything here runs on
any machine, on the tiny exported models (conftest.tiny_models) and on an ONNX edgeseg did not
write.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.backends import artifact_backend
from edgeseg.edge.card import Artifact, ModelCard, TensorSpec, read_card, write_card
from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.edge.artifacts import base_name, built_path
from edgeseg.export.engine import BuildOptions
from edgeseg.files import sha256
from edgeseg.lazy import available

runner = CliRunner()


def build(*args):
    return runner.invoke(app, ["build-engine", *map(str, args)])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert fragment in " ".join(result.stderr.split()), result.stderr


def assert_nothing_written(folder: Path):
    assert not folder.exists() or not any(folder.iterdir()), sorted(folder.iterdir())


def copy_model(model: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in (model, model.with_suffix(".json")):
        shutil.copy(path, folder / path.name)
    return folder / model.name


# -- the CPU artifact ------------------------------------------------------------------------------


def test_ort_build_writes_optimised_models_and_cards(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = build(tiny_models["classifier"], tiny_models["segmenter"], "--backend", "onnxruntime", "--precision", "fp32", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["task"] for r in rows] == ["classifier", "segmenter"]
    for row, task in zip(rows, ("classifier", "segmenter")):
        artifact = Path(row["artifact"])
        assert artifact == out / f"{task}.fp32.ort.onnx"
        card = read_card(artifact)  # verifies the artifact's sha256
        assert card.task == task
        assert card.artifact.optimized_by.startswith("onnxruntime ") and card.artifact.graph_optimization == "extended"
        assert card.source.onnx == f"{task}.onnx" and card.source.onnx_sha256 == sha256(tiny_models[task])
        assert artifact_backend(artifact, card) == "onnxruntime"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{t}.fp32.ort.{ext}" for t in ("classifier", "segmenter") for ext in ("onnx", "json", "golden.npz")
    )


def test_ort_artifact_matches_the_plain_model(tiny_models, tmp_path):
    """Polygraphy's Comparator: the ONNX Runtime-optimised graph computes what the exported one does."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    from edgeseg.export.engine import onnx_to_ort

    plain = tiny_models["segmenter"]
    result = onnx_to_ort(plain, tmp_path, BuildOptions(precision="fp32", ort_level="all"))
    feeds = [{"image": np.random.default_rng(seed).standard_normal((2, 1, 64, 320), dtype=np.float32)} for seed in range(2)]
    runners = [OnnxrtRunner(SessionFromOnnx(str(plain)), name="plain"), OnnxrtRunner(SessionFromOnnx(str(result.artifact)), name="optimised")]
    outputs = Comparator.run(runners, data_loader=feeds)
    assert bool(Comparator.compare_accuracy(outputs, compare_func=SimpleCompareFunc(atol=1e-4, rtol=1e-4)))
    assert read_card(result.artifact).artifact.graph_optimization == "all"


def test_ort_fp16_artifact_is_the_fp16_variant_optimised(tiny_models, tmp_path):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    from edgeseg.export.engine import onnx_to_ort

    fp32 = tiny_models["segmenter"]
    result = onnx_to_ort(fp32, tmp_path, BuildOptions(precision="fp16"))
    card = read_card(result.artifact)
    assert card.artifact.precision == "fp16" and card.source.onnx == "segmenter.onnx"
    assert result.artifact.stat().st_size < 0.7 * fp32.stat().st_size  # FP16 weights
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".edgeseg-build-*"))  # scratch removed
    feeds = [{"image": np.random.default_rng(3).standard_normal((1, 1, 64, 320), dtype=np.float32)}]
    runners = [OnnxrtRunner(SessionFromOnnx(str(fp32)), name="fp32"), OnnxrtRunner(SessionFromOnnx(str(result.artifact)), name="fp16")]
    outputs = Comparator.run(runners, data_loader=feeds)
    assert bool(Comparator.compare_accuracy(outputs, compare_func=SimpleCompareFunc(atol=3e-2, rtol=3e-2, check_error_stat="median")))


def test_ort_int8_from_the_qdq_model(tiny_models, tmp_path):
    from edgeseg.calibration.calibration_set import save_calibration_set
    from edgeseg.calibration.qdq import onnx_to_qdq

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 160), dtype=np.uint8) for _ in range(8)]
    calib = save_calibration_set(tmp_path / "calib.npz", frames, [str(i) for i in range(8)], "images")
    qdq = onnx_to_qdq(tiny_models["classifier"], calib, tmp_path / "classifier.int8.cpu.qdq.onnx", flavour="cpu").path
    out = tmp_path / "out"
    result = build(qdq, "--backend", "onnxruntime", "--precision", "int8", "-o", out)
    assert result.exit_code == 0, result.output
    card = read_card(out / "classifier.int8.ort.onnx")
    assert card.artifact.precision == "int8" and card.artifact.calibration_sha256 == calib.sha256
    assert card.source.onnx == qdq.name and card.source.fp32_onnx == "classifier.onnx"


def test_checkpoint_is_exported_first(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    result = build(tiny_checkpoints["classifier"], "--backend", "onnxruntime", "--precision", "fp32", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "classifier.onnx").is_file() and (out / "classifier.fp32.ort.onnx").is_file()
    assert read_card(out / "classifier.fp32.ort.onnx").source.checkpoint_sha256 == sha256(tiny_checkpoints["classifier"])


def dynamic_spatial_model(folder: Path) -> Path:
    """An ONNX edgeseg did not write: dynamic H and W, pool then upsample then add, so it only
    takes even sizes; its card is written separately (as for any outside model)."""
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 1, "h", "w"])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1, "h", "w"])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph(
        [
            helper.make_node("MaxPool", ["pixels"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
            helper.make_node("Add", ["pixels", "up"], ["scores"]),
        ],
        "outside",
        [x],
        [y],
        [scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "outside.onnx"
    onnx.save(model, path)
    card = ModelCard(
        task="segmenter",
        input=TensorSpec("pixels", ["n", 1, "h", "w"]),
        output=TensorSpec("scores", ["n", 1, "h", "w"]),
        preprocess=Preprocess(32, 64),
        classes=["scratch"],
        thresholds={"probability": [0.5], "min_area": [0]},
        artifact=Artifact(format="onnx", opset=17, precision="fp32"),
    )
    write_card(path, card)
    return path


def test_outside_model_with_dynamic_size(tmp_path):
    model = dynamic_spatial_model(tmp_path / "in")
    out = tmp_path / "out"
    result = build(model, "--backend", "onnxruntime", "--precision", "fp32", "--size", "64x128", "-o", out)
    assert result.exit_code == 0, result.output
    card = read_card(out / "outside.fp32.ort.onnx")
    assert (card.preprocess.height, card.preprocess.width) == (64, 128)
    assert card.input.shape == ["n", 1, 64, 128] and card.output.shape == ["n", 1, 64, 128]


# -- bad input: one line, exit 1, nothing written ----------------------------------------------------


def test_size_the_model_cannot_take(tmp_path):
    model = dynamic_spatial_model(tmp_path / "in")
    out = tmp_path / "out"
    result = build(model, "--backend", "onnxruntime", "--precision", "fp32", "--size", "63x128", "-o", out)
    assert_one_line_error(result, "cannot take a 63x128 input")
    assert_nothing_written(out)


def test_size_fixed_in_the_graph(tiny_models, tmp_path):
    result = build(tiny_models["segmenter"], "--backend", "onnxruntime", "--precision", "fp32", "--size", "64x256", "-o", tmp_path / "out")
    assert_one_line_error(result, "takes 64x320 inputs only")
    assert_nothing_written(tmp_path / "out")


def test_truncated_onnx(tiny_models, tmp_path):
    model = copy_model(tiny_models["segmenter"], tmp_path / "in")
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    write_card(model, read_card(model, verify=False))  # a card that matches the damaged file
    result = build(model, "--backend", "onnxruntime", "--precision", "fp32", "-o", tmp_path / "out")
    assert_one_line_error(result, "cannot load")
    assert_nothing_written(tmp_path / "out")


def test_model_changed_after_its_card(tiny_models, tmp_path):
    model = copy_model(tiny_models["classifier"], tmp_path / "in")
    model.write_bytes(model.read_bytes() + b"\0")
    result = build(model, "--backend", "onnxruntime", "--precision", "fp32", "-o", tmp_path / "out")
    assert_one_line_error(result, "does not match its card")


def test_output_folder_not_writable(tiny_models, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = build(tiny_models["classifier"], "--backend", "onnxruntime", "--precision", "fp32", "-o", blocker / "out")
    assert_one_line_error(result, "cannot create output folder")


def test_int8_needs_a_qdq_model(tiny_models, tmp_path):
    """Given the FP32 ONNX with no calibrated model beside it: exit 2 with the calibrate command,
    and no TensorRT-only option (implicit calibration) suggested to an ONNX Runtime build."""
    result = build(tiny_models["classifier"], "--backend", "onnxruntime", "--precision", "int8", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "classifier.int8.cpu.qdq.onnx is not beside it" in result.stderr and "edgeseg calibrate" in result.stderr
    assert "implicit" not in result.stderr and "--workspace" not in result.stderr
    assert_nothing_written(tmp_path / "out")


@pytest.mark.skipif(available("tensorrt"), reason="TensorRT is installed here")
def test_tensorrt_missing_says_so_and_points_to_onnxruntime(tiny_models, tmp_path):
    result = build(tiny_models["classifier"], "--backend", "tensorrt", "--precision", "fp16", "-o", tmp_path / "out")
    assert_one_line_error(result, "TensorRT is not available")
    assert "--backend onnxruntime" in result.stderr
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--timing-cache", "t.cache"], "only apply to TensorRT engines"),
        (["--min-batch", "4", "--max-batch", "2"], "1 <= min <= opt <= max"),
        (["--size", "wide"], "HEIGHTxWIDTH"),
        (["--precision", "int8", "--calibration", "implicit"], "TensorRT 8.5-10 feature"),
    ],
)
def test_inconsistent_options(tiny_models, tmp_path, args, fragment):
    """Usage errors: exit 2, one line."""
    result = build(tiny_models["classifier"], "--backend", "onnxruntime", "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert_nothing_written(tmp_path / "out")


def test_unknown_precision_is_refused_by_the_parser_with_the_choices(tiny_models, tmp_path):
    result = build(tiny_models["classifier"], "--backend", "onnxruntime", "-o", tmp_path / "out", "--precision", "bf16")
    assert result.exit_code == 2 and "fp32" in result.output and "int8" in result.output
    assert_nothing_written(tmp_path / "out")


# -- pure pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, base",
    [("segmenter.onnx", "segmenter"), ("segmenter.int8.trt.qdq.onnx", "segmenter"), ("my.model.onnx", "my.model"), ("fp16.onnx", "fp16")],
)
def test_base_name(name, base):
    assert base_name(Path(name)) == base


def test_artifact_paths():
    assert built_path(Path("m/seg.int8.trt.qdq.onnx"), Path("o"), "int8", "tensorrt") == Path("o/seg.int8.engine")
    assert built_path(Path("m/seg.onnx"), Path("o"), "fp16", "onnxruntime") == Path("o/seg.fp16.ort.onnx")


def test_dla_needs_reduced_precision():
    with pytest.raises(EdgesegError, match="FP16 or INT8"):
        BuildOptions(precision="fp32", dla_core=0).check("tensorrt")
    BuildOptions(precision="fp16", dla_core=1, batch=(2, 2, 2)).check("tensorrt")


def test_dla_needs_one_batch_size():
    """DLA needs min = opt = max; with GPU fallback a dynamic profile would silently run on the GPU."""
    with pytest.raises(EdgesegError, match=r"min = opt = max\), got 1/1/8") as info:
        BuildOptions(precision="fp16", dla_core=0).check("tensorrt")
    assert "--min-batch 1 --opt-batch 1 --max-batch 1" in info.value.hint


def test_timing_cache_is_keyed_by_tensorrt_and_gpu():
    from edgeseg.edge.cuda_context import GpuIdentity
    from edgeseg.export.engine import keyed_timing_cache

    orin = GpuIdentity(0, "Orin (nvgpu)", "8.7", 8 << 30, 16, True)
    keyed = keyed_timing_cache(Path("c/timing.cache"), "10.3.0", orin)
    assert keyed == Path("c/timing.trt10.3.0.orin-nvgpu-cc8.7-sm16.cache")
    others = {keyed_timing_cache(Path("c/timing.cache"), v, g) for v, g in
              [("10.3.0", orin), ("10.7.0", orin), ("10.3.0", GpuIdentity(0, "Orin (nvgpu)", "8.7", 16 << 30, 8, True))]}
    assert len(others) == 3
