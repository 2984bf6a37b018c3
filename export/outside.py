"""An ONNX model edgeseg did not write -> a copy of it with a model card beside it.

The graph keeps its own tensor names (the card records them, build-engine and the runtime read
them from the card); what the graph cannot say — task, preprocessing, classes, thresholds, output
activation — comes from flags or an existing card. An NHWC model gets one Transpose in front so
every edgeseg model takes the NCHW tensor `preprocess` produces.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgeseg.edge.card import Source
from edgeseg.errors import EdgesegError
from edgeseg.export.contract import ExportReport, guard_card_path, user_contract, write_model_card
from edgeseg.export.graph import load_onnx, opset_of, save_onnx, tensor_spec, validate
from edgeseg.export.parity import FP32_ATOL, FP32_TOLERANCE, compare, onnx_session, parity_inputs, require_parity, run_session
from edgeseg.files import PathLike, atomic_output, ensure_writable_dir, sha256

LAYOUTS = ("NCHW", "NHWC")


def adopt_onnx(
    onnx_path: PathLike,
    out_path: PathLike,
    *,
    task: str,
    size: Optional[Tuple[int, int]] = None,
    mean: float = 0.0,
    std: float = 1.0,
    geometry: str = "resize",
    classes: Optional[Sequence[str]] = None,
    thresholds: Optional[Dict[str, Any]] = None,
    activation: str = "sigmoid",
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
    layout: str = "NCHW",
    seed: int = 0,
    images: Sequence[Path] = (),
) -> ExportReport:
    """Copy `onnx_path` to `out_path` (in place when equal) and write its card.

    size (height, width) defaults to the graph's static input size; classes default to "1".."C"
    for a segmenter with C output maps and ["defect"] for a classifier. The model is run on ONNX
    Runtime with strips and random frames through the card's preprocessing, and its output shape
    checked against the task, before anything is written.
    """
    started = time.perf_counter()
    source = Path(onnx_path)
    out = Path(out_path)
    ensure_writable_dir(out.parent)
    guard_card_path(out)
    if layout not in LAYOUTS:
        raise EdgesegError(f"unknown layout {layout!r}", hint=f"use one of {', '.join(LAYOUTS)}")
    original = load_onnx(source)
    inp = tensor_spec(original, input_name, "input")
    outp = tensor_spec(original, output_name, "output")
    if inp.dtype != "float32":
        raise EdgesegError(f"{source.name} input {inp.name!r} is {inp.dtype}; edgeseg feeds float32", hint="export the model with a float32 input")
    model = _to_nchw(original, inp.name, source.name) if layout == "NHWC" else original
    size = _input_size(tensor_spec(model, inp.name, "input").shape, size, source.name)
    if classes is None:
        channels = outp.shape[1] if len(outp.shape) == 4 and isinstance(outp.shape[1], int) else 4
        classes = ["defect"] if task == "classifier" else [str(c + 1) for c in range(channels)]
    contract = user_contract(task, size, mean=mean, std=std, geometry=geometry, classes=classes, thresholds=thresholds, activation=activation)

    inputs = parity_inputs(contract.preprocess, seed=seed, images=images)
    session = onnx_session(model.SerializeToString())
    outputs = {name: run_session(session, inp.name, batch, outp.name) for name, batch in inputs.items()}
    for name, result in outputs.items():
        contract.check_output(result.shape, source.name)
        if not np.all(np.isfinite(result)):
            raise EdgesegError(f"{source.name} outputs NaN/inf on {name} inputs", hint="check the normalisation flags (--mean/--std)")
    results: List = []
    if model is not original:  # the Transpose wrapper must compute what the original does on NHWC input
        raw = onnx_session(source)
        results = [
            compare("nhwc-wrapper", name, run_session(raw, inp.name, batch.transpose(0, 2, 3, 1).copy(), outp.name), outputs[name], FP32_TOLERANCE, FP32_ATOL)
            for name, batch in inputs.items()
        ]
        require_parity(results, f"layout conversion of {source}", "report this model: the NHWC wrapper should be exact")
        save_onnx(model, out)
    elif out.resolve() != source.resolve():
        with atomic_output(out) as tmp:
            tmp.write_bytes(source.read_bytes())
    card = write_model_card(
        out,
        model,
        contract,
        precision="fp32",
        source=Source(onnx=source.name, onnx_sha256=sha256(source), layout=layout),
        input_name=inp.name,
        output_name=outp.name,
    )
    return ExportReport(task, out, card, "fp32", opset_of(model), time.perf_counter() - started, results)


def _input_size(shape: List[Any], size: Optional[Tuple[int, int]], where: str) -> Tuple[int, int]:
    """(height, width) from the flags and the graph's NCHW input, refusing sizes the graph cannot take."""
    if len(shape) != 4:
        raise EdgesegError(f"{where}: input has shape {shape}; edgeseg models take one image tensor (N, C, H, W)")
    if isinstance(shape[1], int) and shape[1] != 1:
        raise EdgesegError(
            f"{where}: input takes {shape[1]} channels; edgeseg feeds grayscale (1 channel)",
            hint="use --layout NHWC if the channels come last",
        )
    fixed = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[2:])
    if size is None:
        if None in fixed:
            raise EdgesegError(f"{where}: input size is dynamic ({shape})", hint="give --height and --width")
        return fixed[0], fixed[1]  # type: ignore[return-value]
    for given, own, side in zip(size, fixed, ("height", "width")):
        if own is not None and given != own:
            raise EdgesegError(f"{where}: the model takes {side} {own}, not {given}", hint=f"drop --{side} or pass {own}")
    return size


def _to_nchw(model: onnx.ModelProto, name: str, where: str) -> onnx.ModelProto:
    """Put Transpose(NCHW -> NHWC) in front of an NHWC graph input, keeping its name."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    value = next(v for v in graph.input if v.name == name)
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise EdgesegError(f"{where}: NHWC input {name!r} must have 4 dimensions, has {len(dims)}")
    inner = f"{name}__nhwc"
    for node in graph.node:
        node.input[:] = [inner if i == name else i for i in node.input]
    for out in graph.output:
        if out.name == name:
            raise EdgesegError(f"{where}: input {name!r} is also an output")
    n, h, w, c = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
    for target, source in zip((n, h, w, c), dims):
        target.CopyFrom(source)
    del dims[:]
    dims.extend([n, c, h, w])
    graph.node.insert(0, onnx.helper.make_node("Transpose", [name], [inner], perm=[0, 2, 3, 1], name=f"{name}__to_nhwc"))
    return validate(converted, where)
