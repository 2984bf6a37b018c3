"""An ONNX model edgeseg did not write -> a copy of it with a model card beside it.

The graph keeps its own tensor names and input layout (the card records them; build-engine and
the runtime read them from the card, and `preprocess` feeds the card's channels and layout); what
the graph cannot say — task, preprocessing, classes, thresholds, output activation — comes from
flags or an existing card.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.edge.card import Source
from edgeseg.edge.preprocess import CHANNELS, LAYOUTS
from edgeseg.errors import EdgesegError
from edgeseg.export.contract import ExportReport, guard_card_path, user_contract, write_model_card
from edgeseg.export.graph import load_onnx, opset_of, tensor_spec
from edgeseg.export.parity import onnx_session, parity_inputs, run_session
from edgeseg.files import PathLike, atomic_output, ensure_writable_dir, sha256


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

    size (height, width) defaults to the graph's static input size and the channels (1: gray,
    3: RGB) are the graph's, on the axis `layout` says; classes default to "1".."C" for a
    segmenter with C output maps and ["defect"] for a classifier. The model is run on ONNX
    Runtime with strips and random frames through the card's preprocessing, and its output shape
    checked against the task, before anything is written.
    """
    started = time.perf_counter()
    source = Path(onnx_path)
    out = Path(out_path)
    ensure_writable_dir(out.parent)
    guard_card_path(out)
    if layout not in LAYOUTS:
        raise EdgesegError(f"unknown layout {layout!r}", hint=f"use --layout {' or '.join(LAYOUTS)}")
    model = load_onnx(source)
    inp = tensor_spec(model, input_name, "input")
    outp = tensor_spec(model, output_name, "output")
    if inp.dtype != "float32":
        raise EdgesegError(f"{source.name} input {inp.name!r} is {inp.dtype}; edgeseg feeds float32", hint="export the model with a float32 input")
    channels = _input_channels(inp.shape, layout, source.name)
    size = _input_size(inp.shape, layout, size, source.name)
    if classes is None:
        maps = outp.shape[1] if len(outp.shape) == 4 and isinstance(outp.shape[1], int) else 4
        classes = ["defect"] if task == "classifier" else [str(c + 1) for c in range(maps)]
    contract = user_contract(
        task, size, mean=mean, std=std, geometry=geometry, classes=classes, thresholds=thresholds, activation=activation,
        channels=channels, layout=layout,
    )

    session = onnx_session(model.SerializeToString())
    for name, batch in parity_inputs(contract.preprocess, seed=seed, images=images).items():
        result = run_session(session, inp.name, batch, outp.name)
        contract.check_output(result.shape, source.name)
        if not np.all(np.isfinite(result)):
            raise EdgesegError(f"{source.name} outputs NaN/inf on {name} inputs", hint="check the normalisation flags (--mean/--std)")
    if out.resolve() != source.resolve():
        with atomic_output(out) as tmp:
            tmp.write_bytes(source.read_bytes())
    card = write_model_card(
        out,
        model,
        contract,
        precision="fp32",
        source=Source(onnx=source.name, onnx_sha256=sha256(source)),
        input_name=inp.name,
        output_name=outp.name,
    )
    return ExportReport(task, out, card, "fp32", opset_of(model), time.perf_counter() - started)


def _input_channels(shape: List[Any], layout: str, where: str) -> int:
    """The image channels on `layout`'s axis (a dynamic one: 1), refusing counts edgeseg cannot feed
    with the option that fixes it."""
    if len(shape) != 4:
        raise EdgesegError(
            f"{where}: input has shape {shape}; edgeseg models take one 4-D image tensor (NCHW or NHWC)",
            hint="export the model with a single image input of 4 dimensions",
        )
    axis, other, other_axis = (3, "NCHW", 1) if layout == "NHWC" else (1, "NHWC", 3)
    channels = shape[axis]
    if not isinstance(channels, int):
        return 1
    if channels not in CHANNELS:
        fits_other = isinstance(shape[other_axis], int) and shape[other_axis] in CHANNELS
        raise EdgesegError(
            f"{where}: input {shape} read as {layout} takes {channels} channels; edgeseg feeds 1 (gray) or 3 (RGB)",
            hint=f"use --layout {other} (its channels are on axis {other_axis})" if fits_other
            else "export the model with a 1- or 3-channel image input",
        )
    return channels


def _input_size(shape: List[Any], layout: str, size: Optional[Tuple[int, int]], where: str) -> Tuple[int, int]:
    """(height, width) from the flags and the graph's input, refusing sizes the graph cannot take."""
    spatial = shape[1:3] if layout == "NHWC" else shape[2:]
    fixed = tuple(d if isinstance(d, int) and d > 0 else None for d in spatial)
    if size is None:
        if None in fixed:
            raise EdgesegError(f"{where}: input size is dynamic ({shape})", hint="give --height and --width")
        return fixed[0], fixed[1]  # type: ignore[return-value]
    for given, own, side in zip(size, fixed, ("height", "width")):
        if own is not None and given != own:
            raise EdgesegError(f"{where}: the model takes {side} {own}, not {given}", hint=f"drop --{side} or pass {own}")
    return size
