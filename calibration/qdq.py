"""Explicit INT8: FP32 ONNX + calibration set -> QDQ ONNX (onnxruntime quantize_static), two flavours.

- "trt": what TensorRT's ONNX parser accepts and TensorRT 10.1+/11 require (implicit INT8 is
  deprecated in 10.1 and gone in 11): INT8 activations and weights, symmetric (every zero point 0:
  "TRT only supports symmetric quantization"), per-channel Conv weights (DequantizeLinear `axis`,
  opset >= 13), Q/DQ only on the inputs of Conv/ConvTranspose/Gemm/MatMul and pooling, never on
  outputs, no bias quantisation, float weights behind a Q/DQ pair, standard-domain ops only. These
  are NVIDIA ModelOpt's options for TensorRT (shared/TENSORRT_NOTES.md, INT8).
- "cpu": U8S8 (asymmetric uint8 activations, int8 per-channel weights) on every op ONNX Runtime's
  CPU kernels fuse, the fast form on x86 (ONNX Runtime's own CPU guidance in quantize_static),
  except the narrow layers at the network's float edges (`cpu_float_nodes`): a Conv with fewer
  than 16 output channels misses MLAS's x86 int8 convolution kernel (convsym.cpp packs 16 output
  channels) and falls back to im2col + GEMM, 1.4-3.7x slower than ONNX Runtime's float NCHWc
  Conv (width-8 demo ResUNet, full-resolution layers). Kept float where its input is float anyway,
  it costs no extra Q/DQ: the demo segmenter goes from 0.92x to 1.1x FP32 on a 2-core AVX2 EPYC
  (benchmarks/results/int8_cpu_demo.md; default-width models have no such layer).

Every extra_options key below is read by the installed onnxruntime (1.32: quantize.py,
qdq_quantizer.py, base_quantizer.py, calibrate.py) and listed in quantize_static's docstring,
except QuantizeBias, which qdq_quantizer.py reads (default True) and the documented
static_quantize_runner exposes as --disable_quantize_bias.

Weights are 8-bit, except the `cpu` flavour's on an x86 CPU whose int8 dot products saturate
(AVX2 without VNNI or AMX: `weight_bits`), where they take 7 bits (reduce_range) so that ONNX
Runtime's and OpenVINO's u8 x s8 kernels compute them exactly; the card records which.

BatchNormalization after a Conv is folded into it first (`fold_batchnorm`): quantize_static
neither folds it nor leaves it alone (the `cpu` flavour quantises it, rel L2 0.23 on a
DenseNet-style classifier). edgeseg's own export has folded it already (onnxslim); an outside
ONNX may not have. Not run: onnxruntime's quant_pre_process. On edgeseg's graphs (ORT 1.32) its
defaults fail ("Incomplete symbolic shape inference" on the dynamic batch), and its optimisation
step, even when it adds no node, declares com.microsoft, com.microsoft.nchwc, org.pytorch.aten...
opsets that TensorRT's parser has no use for. Shape inference happens inside quantize_static.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from edgeseg.calibration.calibration_set import CalibrationSet, load_calibration_set
from edgeseg.edge import artifacts
from edgeseg.edge.card import Artifact, ModelCard, read_card, write_card
from edgeseg.edge.registry import FLAVOURS
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output, sha256
from edgeseg.lazy import require

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
MIN_OPSET = 13  # per-channel DequantizeLinear needs the `axis` attribute
STANDARD_DOMAINS = ("", "ai.onnx")
# Ops whose inputs TensorRT wants quantised: weighted layers and pooling (commutes with Q).
TRT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool")
TRT_PER_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}  # output-channel axis of the weight
PERCENTILE = 99.999
# MLAS's symmetric int8 Conv kernel on x86 (AVX2/VNNI/AVX-512: FilterOutputChannelPackCount 16);
# narrower Convs take the im2col + GEMM fallback, slower than float NCHWc.
CPU_MIN_INT8_OUTPUT_CHANNELS = 16
REMOVABLE_ACTIVATIONS = ("Relu", "Clip")  # the QDQ quantizer folds them into the next Q's range


def qdq_path(onnx_path: PathLike, flavour: str) -> Path:
    """`model.onnx` -> `model.int8.trt.qdq.onnx` / `model.int8.cpu.qdq.onnx` (card: `... .qdq.json`)."""
    check_flavour(flavour)
    return artifacts.qdq_path(onnx_path, flavour)


def check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise EdgesegError(f"unknown INT8 flavour {flavour!r}", hint=f"use one of {', '.join(FLAVOURS)} (trt: TensorRT, cpu: ONNX Runtime on x86)")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise EdgesegError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(METHODS)}")


@dataclass
class QdqResult:
    """One quantised model: where it is, how it was made, and a first sanity figure."""

    path: Path
    card: Path
    flavour: str
    method: str
    calibration_sha256: str
    excluded: List[str]
    kept_float: List[str]  # nodes the flavour itself keeps in float (cpu: `cpu_float_nodes`)
    quantized: Dict[str, int]  # op type -> nodes with Q/DQ inputs
    first_batch_rel_l2: float  # QDQ vs FP32 on the first calibration batch (relative L2)
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": str(self.path),
            "card": str(self.card),
            "flavour": self.flavour,
            "method": self.method,
            "calibration_sha256": self.calibration_sha256,
            "excluded": list(self.excluded),
            "kept_float": list(self.kept_float),
            "quantized": dict(self.quantized),
            "first_batch_rel_l2": self.first_batch_rel_l2,
            "seconds": round(self.seconds, 2),
        }


class _BatchReader:
    """onnxruntime CalibrationDataReader over a calibration set, with `set_range` so that
    quantize_static collects one batch at a time (CalibStridedMinMax=1): the histogram methods
    then hold one batch of activations in memory, not the whole set's."""

    def __init__(self, batches: Iterator[np.ndarray], count: int, input_name: str) -> None:
        self._batches = batches
        self._count = count
        self._input_name = input_name
        self._left = count

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:  # consecutive ranges only
        self._left = end_index - start_index

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._left <= 0:
            return None
        self._left -= 1
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}

    def __iter__(self) -> "_BatchReader":
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def weight_bits(flavour: str) -> int:
    """The weight range for a flavour made on this machine: 8 bits, but 7 for the `cpu` flavour
    where x86 int8 dot products saturate (openvino.symmetric_int8_exact: AVX2 without VNNI/AMX).
    The `trt` flavour keeps 8 bits: it is TensorRT's, whose GPUs do not saturate, and OpenVINO
    refuses it on such a CPU (openvino.inexact_int8_reason)."""
    from edgeseg.edge.backends import openvino

    return 8 if flavour == "trt" or openvino.symmetric_int8_exact() else 7


def quantize_options(flavour: str, op_types: Sequence[str], bits: int = 7) -> Dict[str, Any]:
    """quantize_static keyword arguments (besides model, reader, method) for a flavour.

    op_types: every op type in the graph (the trt flavour quantises no op's output). bits: the
    `cpu` flavour's weight range (7: reduce_range), `weight_bits`; the trt flavour's is 8.
    """
    quant = require("onnxruntime.quantization", "INT8 quantisation")
    common: Dict[str, Any] = {"CalibStridedMinMax": 1}
    if flavour == "trt":
        return {
            "quant_format": quant.QuantFormat.QDQ,
            "op_types_to_quantize": list(TRT_OP_TYPES),
            "per_channel": True,
            "reduce_range": False,
            "activation_type": quant.QuantType.QInt8,
            "weight_type": quant.QuantType.QInt8,
            "extra_options": {
                **common,
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "AddQDQPairToWeight": True,
                "DedicatedQDQPair": False,
                "ForceQuantizeNoInputCheck": True,
                "OpTypesToExcludeOutputQuantization": sorted(set(op_types)),
                "QDQOpTypePerChannelSupportToAxis": dict(TRT_PER_CHANNEL_AXIS),
                "CalibTensorRangeSymmetric": True,
            },
        }
    return {
        "quant_format": quant.QuantFormat.QDQ,
        "op_types_to_quantize": None,  # every op ONNX Runtime can run quantised
        "per_channel": True,
        "reduce_range": bits == 7,
        "activation_type": quant.QuantType.QUInt8,
        "weight_type": quant.QuantType.QInt8,
        "extra_options": {**common, "ActivationSymmetric": False, "WeightSymmetric": True},
    }


def cpu_float_nodes(model: Any) -> List[str]:
    """Names of the nodes the cpu flavour keeps in float: the narrow layers at the float edges.

    A Conv stays float when it has fewer than CPU_MIN_INT8_OUTPUT_CHANNELS output channels (ONNX
    Runtime's int8 kernel is slower than its float one there) and its input is float anyway (the
    graph input, or a float node's output): quantising it would add a Q where the graph has none
    and still run slower. Every other Conv is int8. Other ops follow their inputs: int8 only when
    every data input comes from an int8 node (Relu goes with its producer). Repeats until nothing
    changes, as a float node can make its readers float. In a U-Net this keeps the full-resolution
    encoder stage, the last decoder stage (its Concat reads that stage through the skip) and the
    head float when they are narrow. An int8 node read by a float one is dequantised after its
    int8 kernel; a Resize there runs float on its dequantised input (the demo's last upsampling:
    7 ms, against 15 ms for ONNX Runtime's NHWC uint8 Resize before a DequantizeLinear of its 4x
    larger output).
    """
    from onnx import numpy_helper

    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}

    def source(name: str) -> Optional[Any]:  # the node behind any Relu chain; None: a graph input
        node = producers.get(name)
        while node is not None and node.op_type in REMOVABLE_ACTIVATIONS:
            node = producers.get(node.input[0])
        return node

    decided = [node for node in model.graph.node if node.op_type not in REMOVABLE_ACTIVATIONS]
    int8 = {node.name: True for node in decided}
    changed = True
    while changed:
        changed = False
        for node in decided:
            if not int8[node.name]:
                continue
            inputs = [source(name) for name in node.input if name and name not in weights]
            float_input = any(p is None or not int8.get(p.name, False) for p in inputs)
            if node.op_type == "Conv":
                narrow = node.input[1] in weights and weights[node.input[1]].shape[0] < CPU_MIN_INT8_OUTPUT_CHANNELS
                keep = not (narrow and float_input)
            else:
                keep = not float_input
            if not keep:
                int8[node.name] = False
                changed = True
    return [node.name for node in decided if not int8[node.name]]


def fold_batchnorm(model: Any) -> int:
    """Fold every BatchNormalization that reads a Conv's output (read by nothing else) into that
    Conv's weights and bias, in place; returns how many were folded. Conv(x, W, b) then BN(scale,
    bias, mean, var, eps) is Conv(x, W * s, (b - mean) * s + bias) with s = scale / sqrt(var + eps)."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: Dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {out.name for out in model.graph.output}
    folded = []
    for bn in model.graph.node:
        conv = producers.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if (
            conv is None or conv.op_type != "Conv" or readers.get(conv.output[0]) != 1 or conv.output[0] in outputs
            or len(bn.output) != 1 or not all(name in initializers for name in [*conv.input[1:], *bn.input[1:5]])
        ):
            continue
        scale, beta, mean, var = (numpy_helper.to_array(initializers[name]).astype(np.float64) for name in bn.input[1:5])
        epsilon = next((attr.f for attr in bn.attribute if attr.name == "epsilon"), 1e-5)
        factor = scale / np.sqrt(var + epsilon)
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        bias = numpy_helper.to_array(initializers[conv.input[2]]) if len(conv.input) > 2 and conv.input[2] else np.zeros(weight.shape[0])
        shape = (-1,) + (1,) * (weight.ndim - 1)
        names = (f"{conv.name}_bn_folded_weight", f"{conv.name}_bn_folded_bias")  # new names: a shared initializer stays intact
        model.graph.initializer.extend([
            numpy_helper.from_array((weight * factor.reshape(shape)).astype(weight.dtype), names[0]),
            numpy_helper.from_array(((bias - mean) * factor + beta).astype(weight.dtype), names[1]),
        ])
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        folded.append(bn)
    for bn in folded:
        model.graph.node.remove(bn)
    if folded:
        _drop_dead_nodes(model)
    return len(folded)


@contextlib.contextmanager
def _removed_after(path: Optional[Path]) -> Iterator[None]:
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def onnx_to_qdq(
    onnx_path: PathLike,
    calibration: Union[CalibrationSet, PathLike],
    out_path: Optional[PathLike] = None,
    *,
    flavour: str = "trt",
    method: str = DEFAULT_METHOD,
    exclude: Sequence[str] = (),
    batch_size: int = 1,
    ranges_cache: Optional[PathLike] = None,
    progress: Optional[Callable[[int], None]] = None,
    tweaks: Optional[Dict[str, Any]] = None,
) -> QdqResult:
    """Quantise `onnx_path` (an FP32 ONNX with its card) to an INT8 QDQ ONNX + card.

    calibration: a loaded CalibrationSet or its .npz; its frames go through the model card's
    preprocess. exclude: node names kept in float (see `edgeseg calibrate --validation` for which
    layers hurt most). batch_size: frames per calibration run (1 keeps the entropy/percentile
    histograms' memory to one frame's activations). progress(1) after each calibration batch.
    ranges_cache (minmax only): onnxruntime's calibration cache file for this model and set,
    written when missing and reused when present, so both flavours calibrate once; make it with
    the cpu flavour first (it records every tensor's range, a superset of what trt needs).
    tweaks: quantize_static arguments (and "extra_options" keys) replacing the flavour's, to
    measure the quantiser's options (benchmarks/bench_openvino_qdq.py); the card records them.
    Nothing is written unless the quantised model passes onnx.checker, loads in ONNX Runtime
    and (trt) passes `trt_qdq_problems`.
    """
    onnx = require("onnx", "INT8 quantisation")
    quant = require("onnxruntime.quantization", "INT8 quantisation")
    check_flavour(flavour)
    check_method(method)
    started = time.perf_counter()
    source = Path(onnx_path)
    out = Path(out_path) if out_path is not None else qdq_path(source, flavour)
    if out.resolve() == source.resolve():
        raise EdgesegError(f"the INT8 model would overwrite its source {source}", hint="choose another output path")
    card = read_card(source)
    calib = calibration if isinstance(calibration, CalibrationSet) else load_calibration_set(calibration)
    if not calib.sha256:
        raise EdgesegError("the calibration set has no file hash", hint="save it with save_calibration_set / load it from its .npz")

    from edgeseg.export.graph import load_onnx, opset_of

    model = load_onnx(source)
    folded = fold_batchnorm(model)
    opset = opset_of(model)
    if opset < MIN_OPSET:
        raise EdgesegError(f"{source} is opset {opset}; per-channel INT8 needs opset >= {MIN_OPSET}", hint="re-export with `edgeseg export` (opset 17)")
    nodes = {node.name for node in model.graph.node}
    unknown = [name for name in exclude if name not in nodes]
    if unknown:
        sample = ", ".join(sorted(nodes)[:6])
        raise EdgesegError(f"--exclude names no node of {source.name}: {', '.join(unknown)}", hint=f"node names look like: {sample}, ...")
    options = _tweaked(quantize_options(flavour, [node.op_type for node in model.graph.node], weight_bits(flavour)), tweaks or {})
    bits = 7 if options["reduce_range"] else 8  # what was asked for, tweaks included
    kept_float = [name for name in cpu_float_nodes(model) if name not in exclude] if flavour == "cpu" else []
    floats = list(exclude) + kept_float
    spec = card.preprocess
    count = calib.batch_count(batch_size, spec)
    batches = _counted(calib.batches(batch_size, spec), progress)
    reader = _BatchReader(batches, count, card.input.name)
    with atomic_output(out) as tmp:
        unquantised = source
        if folded:  # quantize_static reads a path: the folded model goes to a file beside the output
            unquantised = tmp.with_name(f"{tmp.stem}.folded.onnx")
            onnx.save(model, str(unquantised))
        with _quiet_quantizer(), _removed_after(unquantised if folded else None):
            quant.quantize_static(
                str(unquantised),  # a path: given a ModelProto, quantize_static turns its weights into external-data references
                str(tmp),
                reader,
                calibrate_method=_method(quant, method),
                nodes_to_exclude=floats,
                **_with_percentile(options, method),
                **_cache_argument(quant, ranges_cache, method),
            )
        quantized = onnx.load(str(tmp))
        _restore_excluded(quantized, model, floats)
        _strip_unused_domains(quantized)
        onnx.checker.check_model(quantized)
        if flavour == "trt":
            problems = trt_qdq_problems(quantized)
            if problems:
                raise RuntimeError(f"trt-flavour QDQ graph breaks TensorRT rules: {'; '.join(problems[:5])}")
        onnx.save(quantized, str(tmp))
        first = next(calib.batches(batch_size, spec))
        rel = _relative_l2(_run(source, card.input.name, first), _run(tmp, card.input.name, first))
    new_card = _qdq_card(card, source, flavour, method, calib, list(exclude), kept_float, opset, bits)
    if tweaks:
        assert new_card.artifact.quantization is not None  # _qdq_card sets it
        new_card.artifact.quantization["tweaks"] = {k: str(v) for k, v in tweaks.items()}
    card_file = write_card(out, new_card)
    return QdqResult(
        path=out,
        card=card_file,
        flavour=flavour,
        method=method,
        calibration_sha256=calib.sha256,
        excluded=list(exclude),
        kept_float=kept_float,
        quantized=quantized_op_counts(quantized),
        first_batch_rel_l2=rel,
        seconds=time.perf_counter() - started,
    )


def _tweaked(options: Dict[str, Any], tweaks: Dict[str, Any]) -> Dict[str, Any]:
    extra = dict(options["extra_options"], **tweaks.get("extra_options", {}))
    return dict(options, **{k: v for k, v in tweaks.items() if k != "extra_options"}, extra_options=extra)


def _cache_argument(quant: Any, ranges_cache: Optional[PathLike], method: str) -> Dict[str, Any]:
    """quantize_static's calibration_cache_path (added in 2026, onnxruntime PR #28221); {} on an
    older onnxruntime, which then calibrates again (slower, same result)."""
    if ranges_cache is None:
        return {}
    if method != "minmax":
        raise ValueError("ranges_cache holds min/max ranges: use it with method 'minmax' only")
    if "calibration_cache_path" not in inspect.signature(quant.quantize_static).parameters:
        return {}
    return {"calibration_cache_path": str(ranges_cache)}


def _counted(batches: Iterator[np.ndarray], progress: Optional[Callable[[int], None]]) -> Iterator[np.ndarray]:
    for batch in batches:
        if progress is not None:
            progress(1)
        yield batch


def _method(quant: Any, method: str) -> Any:
    return {
        "minmax": quant.CalibrationMethod.MinMax,
        "entropy": quant.CalibrationMethod.Entropy,
        "percentile": quant.CalibrationMethod.Percentile,
    }[method]


def _with_percentile(options: Dict[str, Any], method: str) -> Dict[str, Any]:
    if method != "percentile":
        return options
    extra = dict(options["extra_options"], CalibPercentile=PERCENTILE)
    return dict(options, extra_options=extra)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """quantize_static logs "consider pre-processing" on the root logger and prints per-batch
    histogram notes; edgeseg shows its own progress instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(None):
            yield
    finally:
        root.setLevel(level)


def _restore_excluded(quantized: Any, source: Any, exclude: Sequence[str]) -> None:
    """Feed excluded nodes float tensors again.

    onnxruntime rewires EVERY reader of a quantised tensor to its DequantizeLinear output (and
    onnxslim shares identical initializers, e.g. zero biases, between layers), so an excluded node
    whose input also feeds a quantised node would still read fake-quantised values. Its inputs go
    back to the float tensor before the Q/DQ (or the FP32 initializer), and Q/DQ nodes nobody reads
    any more are dropped. A Relu/Clip the quantizer folded into that Q's range (its producer now
    writes the activation's output name, unclipped) is put back in front of the excluded node.
    """
    if not exclude:
        return
    from onnx import numpy_helper

    producers = {out: node for node in quantized.graph.node for out in node.output}
    initializers = {init.name for init in quantized.graph.initializer}
    originals = {init.name: init for init in source.graph.initializer}
    added: Dict[str, Any] = {}
    for node in quantized.graph.node:
        if node.name not in exclude:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                node.input[i] = _unfolded(quantized, source, name, producers, added)
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = _unfolded(quantized, source, q.input[0], producers, added)
                continue
            float_name = dq.input[0][: -len("_quantized")] if dq.input[0].endswith("_quantized") else dq.input[0]
            if float_name not in originals:
                raise RuntimeError(f"cannot find the float initializer behind {dq.input[0]} for excluded node {node.name}")
            # a quantised bias's DequantizeLinear output keeps the float name: use a new one then
            restored = float_name if float_name not in producers else f"{float_name}_float"
            if restored not in initializers:
                quantized.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(originals[float_name]), restored))
                initializers.add(restored)
            node.input[i] = restored
    _insert_before_readers(quantized, added)
    _drop_dead_nodes(quantized)


def _unfolded(quantized: Any, source: Any, name: str, producers: Dict[str, Any], added: Dict[str, Any]) -> str:
    """`name`, or the output of a copy of the Relu/Clip that wrote it in the source model when the
    quantizer removed that activation (`name`'s producer is then the activation's input's producer).
    added: the copies made so far, by output name."""
    activation = next((node for node in source.graph.node if name in node.output), None)
    producer = producers.get(name)
    if activation is None or producer is None or activation.op_type not in REMOVABLE_ACTIVATIONS or producer.op_type == activation.op_type:
        return name
    restored = f"{name}_unfolded"
    if restored not in added:
        helper = require("onnx", "INT8 quantisation").helper
        copy = helper.make_node(activation.op_type, [name, *activation.input[1:]], [restored], name=f"{activation.name}_unfolded")
        copy.attribute.extend(activation.attribute)
        added[restored] = copy
        present = {init.name for init in quantized.graph.initializer}
        quantized.graph.initializer.extend(  # a Clip's min/max, which the quantizer dropped with it
            init for init in source.graph.initializer if init.name in activation.input[1:] and init.name not in present
        )
    return restored


def _insert_before_readers(model: Any, added: Dict[str, Any]) -> None:
    """Put each new node just before its first reader: the graph stays topologically sorted."""
    nodes = []
    for node in model.graph.node:
        for name in node.input:
            if name in added:
                nodes.append(added.pop(name))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _drop_dead_nodes(model: Any) -> None:
    outputs = {out.name for out in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node if not any(out in read for out in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {name for node in model.graph.node for name in node.input}
    unused = [init for init in model.graph.initializer if init.name not in read]
    for init in unused:
        model.graph.initializer.remove(init)


def _strip_unused_domains(model: Any) -> None:
    """Drop opset imports of domains no node uses: TensorRT's parser has no use for them."""
    used = {node.domain for node in model.graph.node}
    keep = [entry for entry in model.opset_import if entry.domain in STANDARD_DOMAINS or entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _run(model: Union[PathLike, bytes], input_name: str, batch: np.ndarray) -> np.ndarray:
    from edgeseg.edge.backends.onnxruntime import ort_session

    return ort_session(model, providers=["CPUExecutionProvider"], log_severity=3).run(None, {input_name: batch})[0]


def _relative_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / max(float(np.linalg.norm(reference)), 1e-12))


def _qdq_card(
    card: ModelCard, source: Path, flavour: str, method: str, calib: CalibrationSet, exclude: List[str], kept_float: List[str], opset: int,
    bits: int,
) -> ModelCard:
    artifact = Artifact(
        format="onnx",
        opset=opset,
        precision="int8",
        flavour=flavour,
        calibration_sha256=calib.sha256,
        calibration_frames=len(calib),
        calibration_method=method,
        weight_bits=bits,
        float_layers=list(exclude) or None,
        quantization={
            "activations": "int8 symmetric" if flavour == "trt" else "uint8 asymmetric",
            "weights": f"int8 symmetric per-channel{', 7-bit range' if bits == 7 else ''}",
            "excluded_nodes": exclude,
            "float_nodes": kept_float,
        },
    )
    origin = replace(card.source, onnx=source.name, onnx_sha256=card.artifact.sha256 or sha256(source))
    return replace(card, classes=list(card.classes), thresholds=dict(card.thresholds), artifact=artifact, source=origin)


# -- graph facts (tests, build-engine and reports use them) -------------------------------------
def quantized_op_counts(model: Any) -> Dict[str, int]:
    """op type -> how many nodes of it read at least one DequantizeLinear output."""
    dq_outputs = {node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(name in dq_outputs for name in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def trt_qdq_problems(model: Any) -> List[str]:
    """Why TensorRT would reject or mis-run this QDQ graph; [] when it follows the trt rules.

    Checks: only standard-domain nodes; every zero point 0 (int8); per-channel Conv weights have
    one scale per output channel and the axis attribute; every Q/DQ pair feeds at least one op
    TensorRT quantises (none exists only for a Relu, Concat, Resize or Add); no quantised bias.
    """
    from onnx import numpy_helper

    problems: List[str] = []
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: Dict[str, List[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS:
            problems.append(f"node {node.name} is {node.domain}::{node.op_type}")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2] in initializers:
            zero = numpy_helper.to_array(initializers[node.input[2]])
            if zero.dtype != np.int8 or np.any(zero != 0):
                problems.append(f"{node.name}: zero point {zero.dtype} {zero.ravel()[:4]} (TensorRT needs int8, 0)")
        if node.op_type != "DequantizeLinear":
            continue
        users = consumers.get(node.output[0], [])
        if not any(user.op_type in TRT_OP_TYPES for user in users):
            problems.append(f"{node.name} feeds only {sorted({u.op_type for u in users})}, which TensorRT keeps in float")
        for user in users:
            if user.op_type in ("Conv", "ConvTranspose", "Gemm") and len(user.input) > 2 and user.input[2] == node.output[0]:
                problems.append(f"{user.name}: bias is quantised")
            if user.op_type in TRT_PER_CHANNEL_AXIS and len(user.input) > 1 and user.input[1] == node.output[0]:
                problems.extend(_per_channel_problems(node, user, producers, initializers))
    return problems


def _per_channel_problems(dq: Any, conv: Any, producers: Dict[str, Any], initializers: Dict[str, Any]) -> List[str]:
    from onnx import numpy_helper

    weight_name = _weight_source(dq, producers)
    if weight_name not in initializers or dq.input[1] not in initializers:
        return [f"{conv.name}: weight is not a constant behind Q/DQ"]
    channels = numpy_helper.to_array(initializers[weight_name]).shape[TRT_PER_CHANNEL_AXIS[conv.op_type]]
    scales = numpy_helper.to_array(initializers[dq.input[1]])
    axis = next((attr.i for attr in dq.attribute if attr.name == "axis"), None)
    if scales.size != channels or (channels > 1 and axis != TRT_PER_CHANNEL_AXIS[conv.op_type]):
        return [f"{conv.name}: {scales.size} weight scale(s) on axis {axis} for {channels} output channels (want per-channel)"]
    return []


def _weight_source(dq: Any, producers: Dict[str, Any]) -> str:
    """The float initializer behind DQ(Q(W)) (AddQDQPairToWeight) or the int8 one behind DQ(W)."""
    q = producers.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
