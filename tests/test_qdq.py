"""Explicit INT8: both QDQ flavours run on ONNX Runtime; the trt flavour follows TensorRT's rules."""
import inspect
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import quantize_static

from edgeseg.calibration.qdq import CPU_MIN_INT8_OUTPUT_CHANNELS, TRT_OP_TYPES, cpu_float_nodes, onnx_to_qdq, qdq_path, trt_qdq_problems
from edgeseg.edge.card import read_card
from edgeseg.errors import EdgesegError

HAS_RANGES_CACHE = "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _run(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def _consumers(model: onnx.ModelProto):
    found = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


@pytest.fixture(scope="module")
def quantized(tiny_models, tiny_calibration, tmp_path_factory):
    """{(task, flavour): QdqResult} for both models in both flavours (minmax)."""
    out = tmp_path_factory.mktemp("qdq")
    return {
        (task, flavour): onnx_to_qdq(path, tiny_calibration, out / qdq_path(path, flavour).name, flavour=flavour)
        for task, path in tiny_models.items()
        for flavour in ("trt", "cpu")
    }


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_qdq_model_is_valid_runs_and_tracks_fp32(tiny_models, tiny_calibration, quantized, task, flavour):
    result = quantized[(task, flavour)]
    assert result.path.name == f"{task}.int8.{flavour}.qdq.onnx"
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    card = read_card(result.path)  # verifies the sha256 stamped in the card
    assert card.artifact.precision == "int8" and card.artifact.flavour == flavour
    assert card.artifact.calibration_sha256 == tiny_calibration.sha256 and card.artifact.calibration_method == "minmax"
    assert card.source.onnx_sha256 == read_card(tiny_models[task]).artifact.sha256
    batch = np.concatenate(list(tiny_calibration.batches(4, card.preprocess))[:2])
    fp32, int8 = _run(tiny_models[task], batch), _run(result.path, batch)
    assert int8.shape == fp32.shape
    rel = np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32)
    # Quantised (not identical) yet tracking FP32. The tiny random models are harsh on INT8 (4
    # channels, BatchNorm statistics of 8 strips: activation maxima ~50x their std): ~0.3 for the
    # segmenter. Calibrating on unnormalised pixels instead gives ~1.9 (correlation 0.44).
    assert 0 < rel < 0.5, rel
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.9
    convs = [n.name for n in onnx.load(str(tiny_models[task])).graph.node if n.op_type == "Conv"]
    assert result.quantized.get("Conv", 0) == len(set(convs) - set(result.kept_float)) > 0


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_trt_flavour_follows_tensorrt_rules(quantized, task):
    model = onnx.load(str(quantized[(task, "trt")].path))
    assert trt_qdq_problems(model) == []
    # standard ops only, no com.microsoft anywhere
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert all(entry.domain in ("", "ai.onnx") for entry in model.opset_import)
    assert next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx")) >= 13
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers = _consumers(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:  # symmetric int8: every zero point is an int8 zero
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = producers[conv.input[1]]  # weight: float initializer -> Q -> DQ (AddQDQPairToWeight)
        assert dq.op_type == "DequantizeLinear" and producers[dq.input[0]].op_type == "QuantizeLinear"
        weight = inits[producers[dq.input[0]].input[0]]
        scales = inits[dq.input[1]]
        assert scales.shape == (weight.shape[0],)  # per output channel
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
        if len(conv.input) > 2:  # bias stays float
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":  # nothing quantises a Conv/Relu/Concat/Resize/Add OUTPUT for its own sake
            readers = {c.op_type for dq in consumers[node.output[0]] for c in consumers.get(dq.output[0], [])}
            assert readers & set(TRT_OP_TYPES), (node.name, readers)
            source = producers.get(node.input[0])
            assert source is None or source.op_type not in ("Conv", "Gemm", "MatMul"), node.name
    for node in model.graph.node:  # Relu / Resize / Add never read a dequantised tensor
        if node.op_type in ("Relu", "Resize", "Add"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), node.name


def test_cpu_flavour_is_u8s8(quantized):
    model = onnx.load(str(quantized[("segmenter", "cpu")].path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(inits[n.input[2]].dtype == np.uint8 for n in activations)
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weights and all(inits[n.input[0]].dtype == np.int8 for n in weights)
    assert trt_qdq_problems(model)  # asymmetric uint8: not for TensorRT


def test_cpu_flavour_keeps_narrow_edge_layers_float_and_ort_runs_the_rest_int8(tiny_models, quantized, tmp_path):
    """Narrow Convs (< 16 output channels: ONNX Runtime's x86 int8 kernel is slower than float there)
    stay float where their input is float anyway: in the width-4 ResUNet, the first two encoder
    stages, the last two decoder stages and the head. Every wider Conv runs as QLinearConv."""
    source = onnx.load(str(tiny_models["segmenter"]))
    result = quantized[("segmenter", "cpu")]
    assert result.kept_float == cpu_float_nodes(source)
    assert read_card(result.path).artifact.quantization["float_nodes"] == result.kept_float
    width = {i.name: i.dims[0] for i in source.graph.initializer}
    convs = {n.name: width[n.input[1]] for n in source.graph.node if n.op_type == "Conv"}
    float_convs = {name for name in result.kept_float if name in convs}
    assert {"/encoder/stages.0/stages.0.0/conv1/Conv", "/head/Conv"} <= float_convs
    assert all(convs[name] < CPU_MIN_INT8_OUTPUT_CHANNELS for name in float_convs)
    assert any(width >= CPU_MIN_INT8_OUTPUT_CHANNELS for width in convs.values())
    assert all(convs[name] >= CPU_MIN_INT8_OUTPUT_CHANNELS for name in set(convs) - float_convs)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == len(convs) - len(float_convs)
    assert ops.count("Conv") + ops.count("FusedConv") == len(float_convs)  # float (NCHWc on x86)
    trt = quantized[("segmenter", "trt")]
    assert trt.kept_float == [] and trt.quantized["Conv"] == len(convs)  # TensorRT: every Conv int8, as before


def test_excluded_reader_of_a_folded_relu_gets_the_relu_back(tiny_models, tiny_calibration, tmp_path):
    """The cpu flavour folds a Relu into the next Q (uint8 range starts at 0): its producer then
    writes the Relu's output name unclipped. An excluded reader must not see negative values."""
    source = onnx.load(str(tiny_models["segmenter"]))
    producers = {out: node for node in source.graph.node for out in node.output}
    resize = next(n for n in source.graph.node if n.op_type == "Resize")  # reads the deepest (int8) stage's Relu
    assert producers[resize.input[0]].op_type == "Relu"
    result = onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "x.onnx", flavour="cpu", exclude=[resize.name])
    model = onnx.load(str(result.path))
    producers = {out: node for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == resize.name)
    assert producers[node.input[0]].op_type == "Relu"
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(tiny_models, tiny_calibration, tmp_path, method):
    result = onnx_to_qdq(tiny_models["classifier"], tiny_calibration, tmp_path / "c.onnx", flavour="trt", method=method)
    assert read_card(result.path).artifact.calibration_method == method
    assert trt_qdq_problems(onnx.load(str(result.path))) == []


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_excluded_layer_stays_float_even_when_its_input_is_shared(tiny_models, tiny_calibration, tmp_path, flavour):
    source = onnx.load(str(tiny_models["segmenter"]))
    consumers = _consumers(source)
    # a Conv whose input also feeds another Conv (a residual block's conv1 next to its shortcut)
    shared = next(n for n in source.graph.node if n.op_type == "Conv" and sum(c.op_type == "Conv" for c in consumers[n.input[0]]) > 1)
    result = onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "x.onnx", flavour=flavour, exclude=[shared.name])
    model = onnx.load(str(result.path))
    producers = {out: node for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == shared.name)
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    others = [n for n in model.graph.node if n.op_type == "Conv" and n.name != shared.name and n.name not in result.kept_float]
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in others)
    assert result.excluded == [shared.name] and read_card(result.path).artifact.quantization["excluded_nodes"] == [shared.name]
    onnx.checker.check_model(model, full_check=True)


def test_bad_requests_are_one_clear_error(tiny_models, tiny_calibration, tmp_path):
    with pytest.raises(EdgesegError, match="no node"):
        onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "a.onnx", exclude=["nope"])
    with pytest.raises(EdgesegError, match="flavour"):
        onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "a.onnx", flavour="gpu")
    with pytest.raises(EdgesegError, match="method"):
        onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "a.onnx", method="mse")
    with pytest.raises(EdgesegError, match="overwrite"):
        onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tiny_models["segmenter"])
    assert not (tmp_path / "a.onnx").exists()


@pytest.mark.skipif(not HAS_RANGES_CACHE, reason="this onnxruntime's quantize_static has no calibration_cache_path")
def test_ranges_cache_calibrates_once_with_the_same_result(tiny_models, tiny_calibration, quantized, tmp_path):
    cache = tmp_path / "ranges.json"
    calls = []
    onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "c.onnx", flavour="cpu", ranges_cache=cache, progress=calls.append)
    assert cache.is_file() and len(calls) == len(tiny_calibration)
    calls.clear()
    reused = onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / "t.onnx", flavour="trt", ranges_cache=cache, progress=calls.append)
    assert calls == []  # no second calibration pass
    alone = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(quantized[("segmenter", "trt")].path)).graph.initializer}
    shared = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(reused.path)).graph.initializer}
    assert alone.keys() == shared.keys()
    assert all(np.array_equal(alone[k], shared[k]) for k in alone)
