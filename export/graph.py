"""ONNX files: read with one-line errors, validate, clean up, write atomically, describe I/O.

Every ONNX edgeseg writes or accepts passes `validate` (onnx.checker full check + strict shape
inference), carries its weights inline (no external-data file to lose beside it) and is written
through `atomic_output`, so a failed export never leaves a half-written model.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import onnx

from edgeseg.edge.card import TensorSpec
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output

MAX_INLINE_BYTES = 2**31 - 1  # protobuf's limit: larger models would need an external data file


def load_onnx(path: PathLike) -> onnx.ModelProto:
    """Read and validate an ONNX file; one line naming the file for a missing, truncated or corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, external-data OSError, ...
        raise EdgesegError(
            f"cannot read ONNX {path}: truncated or not an ONNX file ({type(exc).__name__})",
            hint="re-export it or copy it again",
        ) from exc
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise EdgesegError(f"ONNX {path} has no graph (empty, truncated or not an ONNX file)", hint="re-export it or copy it again")
    return validate(model, str(path))


def validate(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """onnx.checker full check, then strict shape inference; returns the model with inferred shapes."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise EdgesegError(f"ONNX {where} is invalid: {first}", hint="re-export it; a hand-edited graph must pass onnx.checker") from exc


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, identity/dead-node removal and a topological sort (onnxslim): the plain
    graph TensorRT's parser and INT8 calibration expect."""
    from edgeseg.lazy import require

    onnxslim = require("onnxslim", "ONNX graph clean-up")
    return onnxslim.slim(model)


def save_onnx(model: onnx.ModelProto, path: PathLike) -> Path:
    """Serialise with weights inline and rename into place (never half-written)."""
    data = model.SerializeToString()
    if len(data) > MAX_INLINE_BYTES:
        raise EdgesegError(f"model for {path} is over 2 GB and would need an external data file, which edgeseg does not write")
    target = Path(path)
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
    return target


def opset_of(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def tensor_spec(model: onnx.ModelProto, name: Optional[str], kind: str) -> TensorSpec:
    """The graph input or output called `name` (the only one when None) as a card TensorSpec."""
    values = list(model.graph.input if kind == "input" else model.graph.output)
    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in values if v.name not in initializers]  # old exporters list weights as inputs
    names = [v.name for v in values]
    if name is None:
        if len(values) != 1:
            raise EdgesegError(
                f"the ONNX has {len(values)} {kind}s ({', '.join(names)})",
                hint=f"name the one to use with --{kind}-name",
            )
        value = values[0]
    elif name in names:
        value = values[names.index(name)]
    else:
        raise EdgesegError(f"the ONNX has no {kind} {name!r}", hint=f"its {kind}s are: {', '.join(names)}")
    tensor = value.type.tensor_type
    shape: List[Union[int, str]] = [
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in tensor.shape.dim
    ]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)
