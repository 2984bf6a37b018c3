"""PyTorch -> ONNX: an edgeseg checkpoint, a user's `module:factory` + state dict, or any module.

The graph TensorRT 8.5 (JetPack 5) to 11 all parse: opset 17 (onnx/onnx-tensorrt, branch
release/8.5-GA, docs/operators.md: "TensorRT 8.5 supports operators up to Opset 17"), dynamic batch
only, input `image`, output `logits`, BatchNorm folded and constants folded (onnxslim), weights
inline. The ONNX is written only after it matched PyTorch on real and random frames.
"""
from __future__ import annotations

import importlib
import io
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edgeseg.edge.card import Contract, Source
from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.export.contract import ExportReport, guard_card_path, write_model_card
from edgeseg.export.graph import clean, save_onnx, validate
from edgeseg.export.parity import FP32_ATOL, FP32_TOLERANCE, compare, onnx_session, parity_inputs, require_parity, run_session
from edgeseg.files import PathLike, ensure_writable_dir, sha256
from edgeseg.lazy import require

DEFAULT_OPSET = 17  # the highest TensorRT 8.5/8.6 (JetPack 5 / 6.0) parse
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def torch_to_onnx(
    checkpoint: PathLike,
    out_path: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    size: Optional[Tuple[int, int]] = None,
    seed: int = 0,
    images: Sequence[Path] = (),
    classes: Optional[Sequence[str]] = None,
) -> ExportReport:
    """Export an edgeseg checkpoint to `out_path` (+ model card beside it).

    `size` (height, width) overrides the checkpoint's input size, e.g. to run the fully
    convolutional segmenter on tiles; the card records the size actually exported. `classes`
    renames the output maps in the card (one name per map), so records and video labels carry
    names instead of the checkpoint's "1".."4".
    """
    from edgeseg.models import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    spec = meta.preprocess
    if size is not None:
        spec = replace(spec, height=size[0], width=size[1])
    if classes is not None and len(classes) != len(meta.classes):
        raise EdgesegError(
            f"{Path(str(checkpoint)).name} has {len(meta.classes)} output map(s) ({', '.join(meta.classes)}); got {len(classes)} class names",
            hint=f"give {len(meta.classes)} comma-separated names",
        )
    contract = Contract(meta.task, spec, list(classes) if classes is not None else meta.classes, meta.thresholds)
    # The name is what a deployment folder holds; the path is where it was, for hints that copy it.
    source = Source(checkpoint=meta.path.name, checkpoint_path=str(meta.path.resolve()), checkpoint_sha256=meta.sha256, architecture=meta.model)
    return module_to_onnx(model, out_path, contract, source=source, opset=opset, seed=seed, images=images)


def factory_to_onnx(
    factory: str,
    weights: Optional[PathLike],
    out_path: PathLike,
    contract: Contract,
    *,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    images: Sequence[Path] = (),
) -> ExportReport:
    """Export a user's model: `package.module:function` returns the nn.Module, `weights` is its
    state dict (a bare dict, or a dict with a "state_dict" entry)."""
    model, source = load_factory(factory, weights)
    return module_to_onnx(model, out_path, contract, source=source, opset=opset, seed=seed, images=images)


def load_factory(factory: str, weights: Optional[PathLike]) -> Tuple[Any, Source]:
    """The nn.Module `factory` returns, with `weights` loaded (checked against it first), and the
    card's record of where it came from."""
    from edgeseg.models import check_state_dict
    from edgeseg.models.checkpoint import read_payload

    model = _build(factory)
    source = Source(factory=factory, architecture=type(model).__name__)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise EdgesegError(f"weights file {weights} not found")
        state = read_payload(weights)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise EdgesegError(f"{weights} holds a {type(state).__name__}, not a state dict")
        check_state_dict(model, state, str(weights))
        model.load_state_dict(state)
        source = replace(source, weights=weights.name, checkpoint_sha256=sha256(weights))
    return model.eval(), source


def output_shape(model: Any, spec: Preprocess) -> Tuple[int, ...]:
    """The shape `model` outputs for one image of `spec` (e.g. to tell a classifier from a segmenter)."""
    torch = require("torch", "export")
    return tuple(_forward(model, np.zeros((1,) + spec.item_shape, np.float32), torch).shape)


def module_to_onnx(
    model: Any,
    out_path: PathLike,
    contract: Contract,
    *,
    source: Source,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    images: Sequence[Path] = (),
) -> ExportReport:
    """Trace `model` (an nn.Module taking float32 in the contract's channels and layout) to a checked, cleaned ONNX whose outputs
    match PyTorch within FP32_TOLERANCE on every input set, then write it and its card."""
    torch = require("torch", "export")
    started = time.perf_counter()
    out = Path(out_path)
    ensure_writable_dir(out.parent)
    guard_card_path(out)
    model.eval()
    inputs = parity_inputs(contract.preprocess, seed=seed, images=images)
    references = {name: _forward(model, batch, torch) for name, batch in inputs.items()}
    contract.check_output(next(iter(references.values())).shape, f"model for {out.name}")
    example = torch.from_numpy(next(iter(inputs.values()))[:1])
    graph = validate(clean(_trace(model, example, opset, torch)), out.name)
    session = onnx_session(graph.SerializeToString())
    results = [
        compare("torch-onnx", name, references[name], run_session(session, INPUT_NAME, batch), FP32_TOLERANCE, FP32_ATOL)
        for name, batch in inputs.items()
    ]
    require_parity(
        results, f"export of {out}", "the traced graph computes something else than eager PyTorch: look for Python "
        "branches on tensor values or on torch.jit.is_tracing() in the model's forward",
    )
    save_onnx(graph, out)
    card = write_model_card(out, graph, contract, precision="fp32", source=source)
    return ExportReport(contract.task, out, card, "fp32", opset, time.perf_counter() - started, results)


def _forward(model: Any, batch: np.ndarray, torch: Any) -> np.ndarray:
    """Eager reference output; a model that cannot take this input size fails here, with its reason."""
    try:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).float().numpy()
    except EdgesegError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise EdgesegError(
            f"the model cannot take a {tuple(batch.shape)} input: {first}",
            hint=f"give the channels it takes: --channels {3 if batch.shape[1] == 1 else 1}" if "channels" in first
            else "choose an input size the architecture supports (--height/--width)",
        ) from exc


def _trace(model: Any, example: Any, opset: int, torch: Any) -> Any:
    """torch.onnx.export to an in-memory ModelProto.

    Exporter: TorchScript (dynamo=False), chosen on torch 2.13 by comparing both. The dynamo
    exporter emits opset >= 18 only and reaches 17 through onnx's version converter, which fails on
    the classifier's global average pool (ReduceMean axes input -> attribute) and then keeps
    opset 18, which TensorRT 8.5/8.6 cannot parse. TorchScript emits opset 17 natively; after
    onnxslim both give the same Conv/Relu/Add/MaxPool/Resize/Concat graph for the ResUNet, with IR
    version 8 (old ONNX Runtime on JetPack 5 reads it) and no external data, and it is ~30x faster
    (0.2 s vs 7 s for a tiny ResUNet). It is deprecated since torch 2.9: when a torch release drops
    it, move to dynamo and opset 18, i.e. TensorRT >= 10 only.
    """
    import onnx

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own deprecation notices
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as exc:  # torch raises UnsupportedOperatorError, RuntimeError, ...
        first = str(exc).strip().splitlines()[0][:300]
        raise EdgesegError(f"torch.onnx.export failed at opset {opset}: {first}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _build(factory: str) -> Any:
    """Import `module:function` (the current folder is importable) and call it."""
    torch = require("torch", "export")
    module_name, _, function_name = factory.partition(":")
    if not module_name or not function_name:
        raise EdgesegError(f"--factory {factory!r} is not module:function", hint="e.g. mypackage.nets:build_model")
    added = str(Path.cwd())
    sys.path.insert(0, added)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgesegError(f"cannot import {module_name!r} for --factory: {exc}") from exc
    finally:
        sys.path.remove(added)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EdgesegError(f"{module_name} has no function {function_name!r}")
    model = function()
    if not isinstance(model, torch.nn.Module):
        raise EdgesegError(f"{factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model

