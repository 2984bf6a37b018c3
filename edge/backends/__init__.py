"""Backends behind one protocol (base.Backend): ONNX Runtime and TensorRT.

`open_backend` is the one place that maps an artifact to the backend that runs it; the
TensorRT module (tensorrt + pycuda) is imported only when an engine is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import read_card
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

BACKENDS = ("auto", "onnxruntime", "tensorrt", "triton")  # triton: the whole cascade on a server (backends/triton.py)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

__all__ = ["BACKENDS", "Backend", "artifact_backend", "open_backend"]


def artifact_backend(artifact: PathLike, card_format: str = "") -> str:
    """The backend an artifact needs: "tensorrt" for an engine, "onnxruntime" for ONNX.

    The card's artifact format decides when present, the file suffix otherwise.
    """
    if card_format in ("tensorrt", "onnx"):
        return "tensorrt" if card_format == "tensorrt" else "onnxruntime"
    return "tensorrt" if Path(artifact).suffix.lower() in ENGINE_SUFFIXES else "onnxruntime"


def open_backend(
    artifact: PathLike,
    backend: str = "auto",
    ort_options: Optional[Dict[str, Any]] = None,
    trt_options: Optional[Dict[str, Any]] = None,
) -> Backend:
    """A not-yet-activated backend for `artifact` (ONNX or engine, with its card beside it).

    backend: "auto" picks by artifact; naming one that cannot run the artifact is an error that
    says what to pass instead. The options of the backend that is picked go to its constructor
    (OnnxRuntimeBackend: providers, intra_op_threads, ...; TensorRTBackend: device, ...), so a
    caller can pass both without knowing which artifact it was given.
    """
    path = Path(artifact)
    if backend not in BACKENDS:
        raise EdgesegError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == "triton":
        raise EdgesegError("the triton backend runs the whole cascade on a Triton server, not one model here", hint="use edgeseg.edge.backends.triton.TritonCascade (edgeseg run --backend triton --url grpc://host:8001)")
    if not path.is_file():
        raise EdgesegError(f"model {path} not found", hint="pass an exported .onnx or a built .engine (with its .json card)")
    card = read_card(path)
    needed = artifact_backend(path, str(card.artifact.get("format", "")))
    if backend == "auto":
        backend = needed
    if backend != needed:
        if needed == "tensorrt":
            raise EdgesegError(f"{path} is a TensorRT engine; ONNX Runtime cannot run it", hint="pass the ONNX model it was built from")
        raise EdgesegError(
            f"{path} is an ONNX model; the TensorRT backend runs engines",
            hint=f"build one with `edgeseg build-engine {path}` and pass the .engine",
        )
    if backend == "tensorrt":
        try:
            from edgeseg.edge.backends.tensorrt import TensorRTBackend
        except ImportError as exc:
            raise EdgesegError(
                f"the TensorRT backend cannot be loaded ({exc})", hint="use JetPack's TensorRT and pip install pycuda, or run the ONNX model"
            ) from exc
        return TensorRTBackend(path, card, **(trt_options or {}))
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, card, **(ort_options or {}))
