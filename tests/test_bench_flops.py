"""FLOPs counted from ONNX graphs agree with the torch count; the machine's matmul rate is measured."""
import math
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.bench.flops import FlopCount, matmul_rate, onnx_flops
from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path
from edgeseg.edge.card import read_card
from edgeseg.errors import EdgesegError


def _input_shape(model_path):
    spec = read_card(model_path).preprocess
    return (1, 1, spec.height, spec.width)


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_onnx_count_equals_torch_count(tiny_checkpoints, tiny_models, task):
    from edgeseg.models import count_flops, load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoints[task])
    counted = onnx_flops(tiny_models[task])
    assert counted.total == count_flops(model, _input_shape(tiny_models[task])) > 0
    assert counted.uncounted == []
    assert sum(counted.by_op.values()) == counted.total
    assert set(counted.by_op) == ({"Conv", "Gemm"} if task == "classifier" else {"Conv"})


def test_count_is_linear_in_batch(tiny_models):
    one, three = onnx_flops(tiny_models["segmenter"]), onnx_flops(tiny_models["segmenter"], batch=3)
    assert three.total == 3 * one.total
    explicit = onnx_flops(tiny_models["segmenter"], input_shapes={"image": (3, *_input_shape(tiny_models["segmenter"])[1:])})
    assert explicit.total == three.total


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_qdq_model_counts_as_its_fp32_source(tiny_models, tiny_calibration, tmp_path, task, flavour):
    source = tiny_models[task]
    result = onnx_to_qdq(source, tiny_calibration, tmp_path / qdq_path(source, flavour).name, flavour=flavour)
    quantized = onnx.load(str(result.path))
    weights_from_dq = [
        node for node in quantized.graph.node if node.op_type in ("Conv", "Gemm") and any(i.endswith("DequantizeLinear_Output") for i in node.input[1:2])
    ]
    assert weights_from_dq, "the QDQ model should feed its weights through DequantizeLinear"
    fp32, int8 = onnx_flops(source), onnx_flops(result.path)
    assert int8 == fp32
    assert onnx_flops(result.path, batch=2).total == 2 * fp32.total


def test_fp16_model_counts_as_its_fp32_source(tiny_models, tmp_path):
    from edgeseg.export.fp16 import onnx_to_fp16

    source = tiny_models["classifier"]
    report = onnx_to_fp16(source, tmp_path / "classifier.fp16.onnx")
    half = onnx.load(str(report.onnx))
    assert any(init.data_type == TensorProto.FLOAT16 for init in half.graph.initializer)
    assert onnx_flops(report.onnx) == onnx_flops(source)


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="hand.onnx"):
    graph = helper.make_graph(nodes, "hand", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)  # strict shape inference: declared outputs must be right
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _weight(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_hand_built_graph_counts_each_op_by_its_formula(tmp_path):
    nodes = [
        # MatMul with broadcast batch dims: (2, 3, 4, 5) x (5, 6) -> (2, 3, 4, 6), K = 5
        helper.make_node("MatMul", ["a", "w_mm"], ["mm"]),
        # Gemm with transposed A: A (5, 3) -> M = 3, K = 5; B (5, 7) -> N = 7
        helper.make_node("Gemm", ["g", "w_gemm"], ["gemm"], transA=1),
        # ConvTranspose, 2 groups: input (1, 4, 8, 8), weight (Cin 4, Cout/groups 2, 3, 3)
        helper.make_node("ConvTranspose", ["x", "w_ct"], ["ct"], group=2, strides=[2, 2]),
        # Conv1d (any spatial rank): input (2, 3, 10), weight (8, 3, 3), no padding -> (2, 8, 8)
        helper.make_node("Conv", ["s", "w_c1"], ["c1"]),
        # Integer matmul (no batch dims): (4, 6) x (6, 2)
        helper.make_node("MatMulInteger", ["qa", "w_int"], ["mi"]),
    ]
    path = _save(
        tmp_path,
        nodes,
        [_value("a", [2, 3, 4, 5]), _value("g", [5, 3]), _value("x", [1, 4, 8, 8]), _value("s", [2, 3, 10]), _value("qa", [4, 6], TensorProto.INT8)],
        [_value("mm", [2, 3, 4, 6]), _value("gemm", [3, 7]), _value("ct", [1, 4, 17, 17]), _value("c1", [2, 8, 8]), _value("mi", [4, 2], TensorProto.INT32)],
        [_weight("w_mm", (5, 6)), _weight("w_gemm", (5, 7)), _weight("w_ct", (4, 2, 3, 3)), _weight("w_c1", (8, 3, 3)), _weight("w_int", (6, 2), np.int8)],
    )
    expected = {
        "MatMul": 2 * (2 * 3 * 4 * 6) * 5,
        "Gemm": 2 * 3 * 7 * 5,
        "ConvTranspose": 2 * (1 * 4 * 8 * 8) * (2 * 3 * 3),
        "Conv": 2 * (2 * 8 * 8) * (3 * 3),
        "MatMulInteger": 2 * 4 * 2 * 6,
    }
    assert onnx_flops(path) == FlopCount(total=sum(expected.values()), by_op=expected, uncounted=[])


def test_ops_it_cannot_size_are_reported_not_guessed(tmp_path):
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),  # target shape known only at run time
        helper.make_node("MatMul", ["r", "w"], ["y"]),
        helper.make_node("Einsum", ["x", "x"], ["e"], equation="ij,ij->i"),
        helper.make_node("MatMul", ["x", "w"], ["z"]),  # (2, 6) x (6, 6): sized
    ]
    path = _save(
        tmp_path,
        nodes,
        [_value("x", [2, 6]), _value("shape", [2], TensorProto.INT64)],
        [_value("y", ["rows", 6]), _value("e", [2]), _value("z", [2, 6])],
        [_weight("w", (6, 6))],
    )
    counted = onnx_flops(path)
    assert counted.uncounted == ["MatMul", "Einsum"]
    assert counted.total == counted.by_op["MatMul"] == 2 * 2 * 6 * 6


def test_dynamic_non_batch_dim_needs_its_shape(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = _save(tmp_path, nodes, [_value("x", ["batch", "rows", 6])], [_value("y", ["batch", "rows", 4])], [_weight("w", (6, 4))])
    with pytest.raises(EdgesegError, match=r"hand\.onnx.*input x|input x.*hand\.onnx"):
        onnx_flops(path)
    assert onnx_flops(path, input_shapes={"x": [2, 5, 6]}).total == 2 * (2 * 5 * 4) * 6
    with pytest.raises(EdgesegError, match="no input y"):
        onnx_flops(path, input_shapes={"y": [1, 1, 6]})
    with pytest.raises(EdgesegError, match="fixed at 6"):
        onnx_flops(path, input_shapes={"x": [1, 5, 7]})


def test_input_shapes_that_do_not_fit_the_graph_are_refused(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = _save(tmp_path, nodes, [_value("x", ["batch", "rows", "k"])], [_value("y", ["batch", "rows", 4])], [_weight("w", (6, 4))])
    assert onnx_flops(path, input_shapes={"x": [1, 5, 6]}).total == 2 * (5 * 4) * 6
    with pytest.raises(EdgesegError, match="do not fit"):
        onnx_flops(path, input_shapes={"x": [1, 5, 7]})  # K 7 against a (6, 4) weight


def test_custom_domain_compute_is_reported_uncounted(tmp_path):
    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "scale"], ["w_dq"], domain="com.microsoft"),  # no MACs: not reported
        helper.make_node("Conv", ["x", "w_dq"], ["c"], kernel_shape=[3, 3]),  # weight shape unknown to onnx
        helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes, "custom", [_value("x", ["batch", 3, 10, 10])], [_value("c", ["batch", 8, 8, 8]), _value("y", ["batch", 3, 10, 10])], [weight, scale]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    assert onnx_flops(tmp_path / "custom.onnx") == FlopCount(total=0, by_op={}, uncounted=["Conv", "com.microsoft:FusedMatMul"])


def test_corrupt_or_missing_onnx_is_named(tmp_path):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07 definitely not protobuf \xff\xff")
    with pytest.raises(EdgesegError, match="broken.onnx"):
        onnx_flops(corrupt)
    with pytest.raises(EdgesegError, match="missing.onnx"):
        onnx_flops(tmp_path / "missing.onnx")


def test_missing_onnx_package_gives_install_advice(tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(EdgesegError) as caught:
        onnx_flops(tiny_models["classifier"])
    from edgeseg.lazy import ONNX_ADVICE

    assert ONNX_ADVICE in str(caught.value)  # onnx alone: the export extra would pull an unpinned torch


def test_cpu_matmul_rate_is_measured():
    rate = matmul_rate("cpu", seconds=0.2)
    assert math.isfinite(rate.gflops) and rate.gflops > 0
    assert rate.size >= 256 and rate.device == "cpu" and rate.dtype == "float32"
    assert "numpy.matmul" in rate.method


def test_matmul_rate_rejects_what_it_cannot_measure():
    with pytest.raises(EdgesegError, match="float16"):
        matmul_rate("cpu", dtype="float16")
    with pytest.raises(EdgesegError, match="device"):
        matmul_rate("tpu")


def _cuda_visible():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_visible(), reason="a CUDA GPU is visible")
def test_cuda_rate_without_a_gpu_says_why():
    with pytest.raises(EdgesegError, match="CUDA"):
        matmul_rate("cuda", seconds=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_visible(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_matmul_rate_is_measured(dtype):
    rate = matmul_rate("cuda", dtype=dtype, seconds=0.5)
    assert math.isfinite(rate.gflops) and rate.gflops > 100 and rate.dtype == dtype
