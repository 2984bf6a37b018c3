"""Backends behind one protocol (base.Backend): ONNX Runtime, OpenVINO and TensorRT.

`open_backend` is the one place that maps an artifact to the backend that runs it; the
TensorRT module (tensorrt + pycuda) and the OpenVINO module are imported only when picked.
The vocabulary, the typed options and the `auto` rule live in edgeseg.edge.registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.edge.artifacts import backend_of_name
from edgeseg.edge.registry import AUTO, BACKENDS, DISPLAY_NAMES, FORMAT_BACKEND, MODEL_BACKENDS, ONNXRUNTIME, OPENVINO, TENSORRT, TRITON, BackendOptions
from edgeseg.edge.registry import auto_backend as _auto
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import available

__all__ = ["BACKENDS", "MODEL_BACKENDS", "Backend", "BackendOptions", "artifact_backend", "auto_backend", "open_backend"]


def artifact_backend(artifact: PathLike, card: Optional[ModelCard] = None) -> str:
    """The backend an artifact is made for: "tensorrt" for an engine, "openvino" for an IR,
    "onnxruntime" for ONNX (which OpenVINO runs too, see `auto_backend`).

    The card's artifact format decides when a card is given, the file name otherwise.
    """
    return FORMAT_BACKEND[card.artifact.format] if card is not None else backend_of_name(artifact)


def auto_backend(artifact: PathLike, card: ModelCard) -> str:
    """The backend `auto` runs `artifact` on (registry.auto_backend: the one rule), told whether
    OpenVINO computes this model right here (openvino.inexact_int8_reason)."""
    return _auto(artifact_backend(artifact, card), card.artifact.ort_only, openvino_exact=not _openvino_inexact(card))


def _openvino_inexact(card: ModelCard) -> bool:
    if not available("openvino"):
        return False
    from edgeseg.edge.backends.openvino import inexact_int8_reason

    return bool(inexact_int8_reason(card))


def open_backend(artifact: PathLike, backend: str = AUTO, options: Optional[BackendOptions] = None) -> Backend:
    """A not-yet-activated backend for `artifact` (ONNX, OpenVINO IR or engine, card beside it).

    backend: "auto" picks by artifact and machine (`auto_backend`); naming one that cannot run
    the artifact is an error that says what to pass instead. `options` holds every backend's
    typed options; the picked backend's part goes to its constructor, so a caller can pass them
    without knowing which artifact it was given.
    """
    path = Path(artifact)
    options = options or BackendOptions()
    if backend not in BACKENDS:
        raise EdgesegError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == TRITON:
        raise EdgesegError("the triton backend runs the whole cascade on a Triton server, not one model here", hint="use edgeseg.edge.triton.TritonCascade (edgeseg run --backend triton --url grpc://host:8001)")
    if not path.is_file():
        raise EdgesegError(f"model {path} not found", hint="pass an exported .onnx, an OpenVINO .xml or a built .engine (with its .json card)")
    card = read_card(path)
    made_for = artifact_backend(path, card)
    if backend == AUTO:
        backend = auto_backend(path, card)
    _check_pairing(path, card, made_for, backend)
    if backend == TENSORRT:
        try:
            from edgeseg.edge.backends.tensorrt import TensorRTBackend
        except ImportError as exc:
            raise EdgesegError(
                f"the TensorRT backend cannot be loaded ({exc})", hint="use JetPack's TensorRT and pip install pycuda, or run the ONNX model"
            ) from exc
        return TensorRTBackend(path, card, **vars(options.tensorrt))
    if backend == OPENVINO:
        if not available("openvino"):
            raise EdgesegError("openvino is needed for the OpenVINO backend but is not installed", hint="pip install 'edgeseg[openvino]'")
        from edgeseg.edge.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(path, card, **vars(options.openvino))
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, card, **vars(options.onnxruntime))


def _check_pairing(path: Path, card: ModelCard, made_for: str, backend: str) -> None:
    """Refuse a backend that cannot run the artifact, naming what to pass instead."""
    if backend == made_for or (made_for == ONNXRUNTIME and backend == OPENVINO and not card.artifact.ort_only):
        return
    if made_for == TENSORRT:
        raise EdgesegError(f"{path} is a TensorRT engine; {DISPLAY_NAMES[backend]} cannot run it", hint="pass the ONNX model it was built from")
    if made_for == OPENVINO:
        raise EdgesegError(f"{path} is an OpenVINO IR; {DISPLAY_NAMES[backend]} cannot run it", hint="pass --backend openvino (or auto), or the ONNX it was made from")
    if backend == OPENVINO:
        raise EdgesegError(
            f"{path} was optimised offline by ONNX Runtime (its fused operators are ONNX Runtime's own); OpenVINO cannot run it",
            hint="pass the ONNX it was built from, or `edgeseg build-engine --backend openvino` for an IR",
        )
    raise EdgesegError(
        f"{path} is an ONNX model; the TensorRT backend runs engines",
        hint=f"build one with `edgeseg build-engine {path}` and pass the .engine",
    )
