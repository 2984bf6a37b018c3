"""Work per inference and the machine's reference rate: the two halves of "achieved GFLOP/s".

`onnx_flops` counts the FLOPs of one run straight from an ONNX graph, so every backend and
precision variant (FP32, FP16, QDQ INT8) of a model is charged the same work, and a model
without its torch source (a user's ONNX) can still be counted. Its convention is
edgeseg.models.flops.count_flops's: 2 x multiply-accumulates of the weighted layers (Conv,
ConvTranspose, Gemm, MatMul and their integer/QLinear forms), element-wise ops and bias ignored.

`matmul_rate` measures the dense GEMM rate the machine actually reaches through its BLAS (numpy
on the CPU, torch on CUDA): a roofline-style ceiling to set achieved GFLOP/s against.

onnx and torch are imported inside the functions (`edgeseg --help` stays fast without them).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import require

_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}  # op type -> index of its weight
_MATMULS = ("MatMul", "MatMulInteger", "QLinearMatMul")  # left operand first in each
# Standard ops that do multiply-accumulates this counter cannot size: reported, never guessed.
_UNSIZED_COMPUTE = ("Einsum", "DeformConv", "Attention", "LSTM", "GRU", "RNN")
# Q/DQ also exist in com.microsoft: data movement, not unknown compute.
_QDQ = ("DequantizeLinear", "QuantizeLinear")
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class FlopCount:
    """FLOPs of one run. `uncounted` lists the op types of compute nodes that could not be sized
    (unknown shapes, control flow, custom domains): when it is not empty, `total` is a lower bound."""

    total: int
    by_op: Dict[str, int] = field(default_factory=dict)
    uncounted: List[str] = field(default_factory=list)


def onnx_flops(model: PathLike, input_shapes: Optional[Dict[str, Sequence[int]]] = None, batch: int = 1) -> FlopCount:
    """FLOPs of one run of the ONNX file `model` at concrete input shapes.

    A dynamic dim 0 becomes `batch`; any other dynamic dim must be given in `input_shapes`
    ({input name: full shape}), which also overrides an input's shape entirely. Weight shapes
    of QDQ graphs come through DequantizeLinear by shape inference, so an INT8 QDQ model counts
    exactly as its FP32 source.
    """
    onnx = require("onnx", "counting ONNX FLOPs")
    from edgeseg.export.graph import load_onnx

    if batch < 1:
        raise EdgesegError(f"batch must be >= 1, got {batch}")
    path = Path(model)
    proto = load_onnx(path)
    _make_inputs_concrete(proto, path, dict(input_shapes or {}), batch)
    inferred = _infer_shapes(onnx, proto, path)
    shapes = _known_shapes(inferred)
    count = FlopCount(total=0)
    for node in inferred.graph.node:
        flops = _node_flops(node, shapes)
        if flops is None:
            count.uncounted.append(node.op_type if node.domain in _STANDARD_DOMAINS else f"{node.domain}:{node.op_type}")
        elif flops:
            count.by_op[node.op_type] = count.by_op.get(node.op_type, 0) + flops
            count.total += flops
    return count


def _make_inputs_concrete(proto: Any, path: Path, given: Dict[str, Sequence[int]], batch: int) -> None:
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    unknown = sorted(set(given) - {value.name for value in inputs})
    if unknown:
        names = ", ".join(value.name for value in inputs)
        raise EdgesegError(f"{path.name} has no input {', '.join(unknown)}", hint=f"its inputs are: {names}")
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if value.name in given:
            wanted = [int(d) for d in given[value.name]]
            if len(wanted) != len(dims) or any(d < 1 for d in wanted):
                raise EdgesegError(f"input {value.name} of {path.name} has rank {len(dims)}; shape {wanted} does not fit it")
            for axis, (dim, size) in enumerate(zip(dims, wanted)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise EdgesegError(f"input {value.name} of {path.name} is fixed at {dim.dim_value} on axis {axis}, not {size}")
                dim.dim_value = size
            continue
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if axis != 0:
                raise EdgesegError(
                    f"input {value.name} of {path.name} has a dynamic axis {axis} ({dim.dim_param or '?'})",
                    hint=f"give its shape: input_shapes={{'{value.name}': [...]}}",
                )
            dim.dim_value = batch
    # Shapes recorded at export hold the symbolic batch; inference rebuilds them from the inputs.
    del proto.graph.value_info[:]
    for value in proto.graph.output:
        value.type.tensor_type.ClearField("shape")


def _infer_shapes(onnx: Any, proto: Any, path: Path) -> Any:
    """Strict shape inference: load_onnx already passed it with symbolic dims, so a failure here
    means the concrete input shapes do not fit the model. Ops onnx has no schema for (custom
    domains) are skipped by it; the nodes left without shapes are reported uncounted."""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise EdgesegError(f"the input shapes do not fit {path}: {first}", hint="check input_shapes / batch") from exc


def _known_shapes(proto: Any) -> Dict[str, Tuple[int, ...]]:
    shapes: Dict[str, Tuple[int, ...]] = {}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _node_flops(node: Any, shapes: Dict[str, Tuple[int, ...]]) -> Optional[int]:
    """2 x MACs of one node, 0 for ops without MACs, None for a compute op that cannot be sized."""
    op = node.op_type
    shape_of = shapes.get
    if node.domain not in _STANDARD_DOMAINS:
        return 0 if op in _QDQ else None
    if op in _CONVS:
        weight = shape_of(node.input[_CONVS[op]])
        # Conv: every output element sums Cin/groups x kernel products (weight (Cout, Cin/g, k...)).
        # ConvTranspose: every input element scatters into Cout/groups x kernel outputs (weight (Cin, Cout/g, k...)).
        data = shape_of(node.output[0] if op != "ConvTranspose" else node.input[0])
        if weight is None or data is None:
            return None
        return 2 * math.prod(data) * math.prod(weight[1:])
    if op in _MATMULS:
        left, out = shape_of(node.input[0]), shape_of(node.output[0])
        if left is None or out is None:
            return None
        return 2 * math.prod(out) * left[-1]  # out carries the broadcast batch dims, M and N
    if op == "Gemm":
        left, out = shape_of(node.input[0]), shape_of(node.output[0])
        if left is None or out is None:
            return None
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return 2 * math.prod(out) * (left[0] if trans_a else left[1])
    if op in _UNSIZED_COMPUTE or _has_subgraph(node):
        return None
    return 0


def _has_subgraph(node: Any) -> bool:
    """If/Loop/Scan bodies are not walked: their work is reported uncounted, not assumed zero."""
    return any(attr.HasField("g") or len(attr.graphs) for attr in node.attribute)


# --------------------------------------------------------------------------- machine rate

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "fp64": "float64"}
_DTYPES = {"cpu": ("float32", "float64"), "cuda": ("float32", "float16")}
_CPU_SIZES = (256, 512, 1024, 2048, 4096)
_CUDA_SIZES = (1024, 2048, 4096, 8192)


@dataclass
class MatmulRate:
    """Best dense square matmul rate measured: `gflops` at `size` x `size` x `size`."""

    gflops: float
    size: int
    dtype: str
    device: str
    method: str


def matmul_rate(device: str = "cpu", dtype: str = "float32", seconds: float = 1.0) -> MatmulRate:
    """The dense GEMM rate this machine reaches: the reference for "achieved GFLOP/s vs the machine".

    CPU: numpy square matmul through numpy's BLAS with all its threads (float32 or float64).
    CUDA ("cuda" or "cuda:N"): torch.matmul on that GPU, float32 or float16, timed with CUDA
    events after a warm-up. Square sizes grow while a run still fits in the `seconds` budget
    (large matrices are compute-bound); the rest of the budget repeats the largest one; the best
    run is reported.

    Limits: this is a BLAS peak, not the chip's theoretical FMA peak (usually 70-95 % of it on
    large GEMMs). Convolutions through other kernels (oneDNN, cuDNN, TensorRT tactics, INT8
    tensor cores) can exceed it; small or memory-bound layers reach far less. CUDA float32 runs
    with torch's current TF32 setting (stated in `method`; torch's default is strict FP32). TensorRT's
    builder allows TF32 by default, but polygraphy's CreateConfig clears BuilderFlag.TF32 unless
    asked (tf32=True) and build-engine never asks, so edgeseg's FP32 engines are strict FP32 too
    and compare with this figure like for like. A busy machine measures low.
    """
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
    kind = "cuda" if device == "cuda" or device.startswith("cuda:") else device
    if kind not in _DTYPES:
        raise EdgesegError(f"unknown device {device!r} for the matmul rate", hint="use cpu, cuda or cuda:N")
    if dtype not in _DTYPES[kind]:
        raise EdgesegError(f"the {kind} matmul rate is measured in {' or '.join(_DTYPES[kind])}, not {dtype}")
    if not seconds > 0:
        raise EdgesegError(f"the matmul rate needs a positive time budget, got {seconds} s")
    if kind == "cpu":
        return _cpu_rate(dtype, seconds)
    return _cuda_rate(device, dtype, seconds)


def _best_rate(seconds: float, sizes: Sequence[int], timed_run: Callable[[int], float]) -> Tuple[float, int, int]:
    """(best GFLOP/s, its size, timed runs) for `timed_run(size) -> seconds per matmul`, each size
    warmed up by the caller's first call; sizes grow while the next one's run still fits."""
    deadline = time.perf_counter() + seconds
    best, best_size, runs, size_index = 0.0, sizes[0], 0, 0
    while True:
        size = sizes[size_index]
        elapsed = timed_run(size)
        runs += 1
        rate = 2.0 * size**3 / elapsed / 1e9
        if rate > best:
            best, best_size = rate, size
        left = deadline - time.perf_counter()
        # The next size does 8x the work: step up only if its warm-up and one run fit what is left.
        if size_index + 1 < len(sizes) and 2 * 8 * elapsed < left:
            size_index += 1
        elif left <= elapsed:
            return best, best_size, runs


def _cpu_rate(dtype: str, seconds: float) -> MatmulRate:
    import numpy as np

    cache: Dict[int, Tuple[Any, Any, Any]] = {}

    def timed_run(size: int) -> float:
        if size not in cache:
            rng = np.random.default_rng(0)
            a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
            cache.clear()  # one size's buffers at a time
            cache[size] = (a, b, np.empty((size, size), dtype=dtype))
            np.matmul(*cache[size][:2], out=cache[size][2])  # warm-up: BLAS threads, page faults
        a, b, out = cache[size]
        started = time.perf_counter()
        np.matmul(a, b, out=out)
        return time.perf_counter() - started

    best, size, runs = _best_rate(seconds, _CPU_SIZES, timed_run)
    return MatmulRate(gflops=best, size=size, dtype=dtype, device="cpu", method=f"numpy.matmul via {_blas_name(np)}, best of {runs} runs")


def _blas_name(np: Any) -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # numpy < 1.25 has no mode="dicts"; the name is a courtesy, not a result
        return "numpy's BLAS"


def _cuda_rate(device: str, dtype: str, seconds: float) -> MatmulRate:
    torch = require("torch", "the CUDA matmul rate")
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = f"torch {torch.__version__} is a CPU-only build" if built is None else f"torch (CUDA {built}) sees no GPU"
        raise EdgesegError(f"cannot measure the CUDA matmul rate: {why}", hint="use a CUDA build of torch on a machine with an NVIDIA GPU")
    target = torch.device(device)
    cache: Dict[int, Tuple[Any, Any, Any]] = {}
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed_run(size: int) -> float:
        if size not in cache:
            cache.clear()
            generator = torch.Generator(device=target).manual_seed(0)
            a, b = (torch.randn(size, size, device=target, dtype=getattr(torch, dtype), generator=generator) for _ in range(2))
            cache[size] = (a, b, torch.empty_like(a))
            torch.matmul(a, b, out=cache[size][2])  # warm-up: cuBLAS handle, kernel selection
            torch.cuda.synchronize(target)
        a, b, out = cache[size]
        with torch.cuda.device(target):
            start.record()
            torch.matmul(a, b, out=out)
            stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3

    best, size, runs = _best_rate(seconds, _CUDA_SIZES, timed_run)
    tf32 = " (TF32 allowed)" if dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else ""
    name = torch.cuda.get_device_name(target)
    return MatmulRate(gflops=best, size=size, dtype=dtype, device=device, method=f"torch.matmul on {name}{tf32}, CUDA events, best of {runs} runs")
