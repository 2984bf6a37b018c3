"""FP32 ONNX -> FP16 ONNX (weights and compute FP16, inputs and outputs FP32).

Strongly typed TensorRT (always on 11.x, optional on 10.x) takes precision from the graph instead of
builder flags, so FP16 engines there are built from this file. Converted with ONNX Runtime's float16
tool (the same converter as onnxconverter-common, already installed with onnxruntime, so no extra
dependency); `keep_io_types` puts one Cast at each end, so the runtime feeds and reads float32 as
for the FP32 model, and Resize's scales stay FP32 as the ONNX spec requires.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from dataclasses import replace
from typing import Optional, Sequence

import onnx

from edgeseg.edge.artifacts import fp16_path
from edgeseg.edge.card import read_card
from edgeseg.errors import EdgesegError
from edgeseg.export.contract import ExportReport, guard_card_path, write_model_card
from edgeseg.export.graph import clean, load_onnx, opset_of, save_onnx, validate
from edgeseg.export.parity import FP16_ATOL, FP16_TOLERANCE, compare, onnx_session, parity_inputs, require_parity, run_session
from edgeseg.files import PathLike, sha256
from edgeseg.lazy import require


def onnx_to_fp16(
    onnx_path: PathLike, out_path: Optional[PathLike] = None, *, seed: int = 0, images: Sequence[Path] = ()
) -> ExportReport:
    """Write the FP16 variant of a carded FP32 ONNX (default name: fp16_path) with its card, after
    checking it against the FP32 model on ONNX Runtime within FP16_TOLERANCE.

    ONNX Runtime's CPU provider has no FP16 Conv on x86: it runs such nodes in FP32 between Casts,
    so on CPU the check covers FP16 weights and FP16 tensors between layers, not FP16 accumulation
    (TensorRT's own FP16 numbers come from build-engine's GPU comparison).
    """
    started = time.perf_counter()
    source_path = Path(onnx_path)
    out = Path(out_path) if out_path is not None else fp16_path(source_path)
    card = read_card(source_path)
    guard_card_path(out)
    model = load_onnx(source_path)
    if card.input.dtype != "float32" or any(
        init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer
    ):
        raise EdgesegError(f"{source_path} is not an FP32 model", hint="convert the FP32 export, e.g. model.onnx")
    float16 = require("onnxruntime.transformers.float16", "FP16 conversion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # per-tensor "values clipped/truncated" notices
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    # The converter appends its input Casts at the end of the node list; clean() sorts the graph.
    half = validate(clean(half), out.name)

    reference = onnx_session(source_path)
    candidate = onnx_session(half.SerializeToString())
    inputs = parity_inputs(card.preprocess, seed=seed, images=images)
    results = [
        compare(
            "fp32-fp16",
            name,
            run_session(reference, card.input.name, batch, card.output.name),
            run_session(candidate, card.input.name, batch, card.output.name),
            FP16_TOLERANCE,
            FP16_ATOL,
        )
        for name, batch in inputs.items()
    ]
    require_parity(
        results, f"FP16 conversion of {source_path}",
        "FP16 loses too much for this model (large activations or overflow): deploy the FP32 model, or INT8 with calibration",
    )
    save_onnx(half, out)
    contract = card.contract
    source = replace(card.source, onnx=source_path.name, onnx_sha256=sha256(source_path))
    written = write_model_card(
        out, half, contract, precision="fp16", source=source, input_name=card.input.name, output_name=card.output.name
    )
    return ExportReport(card.task, out, written, "fp16", opset_of(half), time.perf_counter() - started, results)
