"""Backends behind one protocol (base.Backend): ONNX Runtime, OpenVINO and TensorRT.

`open_backend` is the one place that maps an artifact to the backend that runs it; the
TensorRT module (tensorrt + pycuda) and the OpenVINO module are imported only when picked.

What `auto` picks (`auto_backend`):
  .engine / .plan / .trt (TensorRT card)  -> tensorrt
  .xml (OpenVINO IR card)                 -> openvino
  .onnx                                   -> onnxruntime when its CUDA provider is there (a GPU
                                             machine), else openvino when it is installed (the
                                             faster CPU runtime on x86, INT8 especially:
                                             benchmarks/results/bench_cpu.md) and computes the
                                             model right on this CPU (not the `trt` INT8 flavour
                                             without VNNI: openvino.inexact_int8_reason), else
                                             onnxruntime.
  An ONNX Runtime-optimised `.ort.onnx` (build-engine --backend onnxruntime) stays onnxruntime:
  its fused com.microsoft nodes are ONNX Runtime's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import available

# triton runs the whole cascade on a server (edge/triton.py), so only `run` offers it;
# MODEL_BACKENDS run one model here (build-engine, deploy, bench, open_backend).
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "triton")
MODEL_BACKENDS = tuple(b for b in BACKENDS if b != "triton")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
IR_SUFFIXES = (".xml",)
_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}

__all__ = ["BACKENDS", "MODEL_BACKENDS", "Backend", "artifact_backend", "auto_backend", "open_backend"]


def artifact_backend(artifact: PathLike, card_format: str = "") -> str:
    """The backend an artifact is made for: "tensorrt" for an engine, "openvino" for an IR,
    "onnxruntime" for ONNX (which OpenVINO runs too, see `auto_backend`).

    The card's artifact format decides when present, the file suffix otherwise.
    """
    formats = {"tensorrt": "tensorrt", "openvino": "openvino", "onnx": "onnxruntime"}
    if card_format in formats:
        return formats[card_format]
    suffix = Path(artifact).suffix.lower()
    return "tensorrt" if suffix in ENGINE_SUFFIXES else "openvino" if suffix in IR_SUFFIXES else "onnxruntime"


def _ort_only(card: ModelCard) -> bool:
    """An ONNX that ONNX Runtime optimised offline (its own fused operators inside)."""
    return str(card.artifact.get("optimized_by", "")).startswith("onnxruntime")


def _ort_has_cuda() -> bool:
    if not available("onnxruntime"):
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def auto_backend(artifact: PathLike, card: ModelCard) -> str:
    """The backend `auto` runs `artifact` on (the rule is in the module docstring)."""
    made_for = artifact_backend(artifact, str(card.artifact.get("format", "")))
    if made_for != "onnxruntime" or _ort_only(card) or _ort_has_cuda():
        return made_for
    if not available("openvino"):
        return "onnxruntime"
    from edgeseg.edge.backends.openvino import inexact_int8_reason

    return "onnxruntime" if inexact_int8_reason(card) else "openvino"


def open_backend(
    artifact: PathLike,
    backend: str = "auto",
    ort_options: Optional[Dict[str, Any]] = None,
    trt_options: Optional[Dict[str, Any]] = None,
    ov_options: Optional[Dict[str, Any]] = None,
) -> Backend:
    """A not-yet-activated backend for `artifact` (ONNX, OpenVINO IR or engine, card beside it).

    backend: "auto" picks by artifact and machine (`auto_backend`); naming one that cannot run
    the artifact is an error that says what to pass instead. The options of the backend that is
    picked go to its constructor (OnnxRuntimeBackend: providers, intra_op_threads, ...;
    OpenVINOBackend: device, threads, hint, ...; TensorRTBackend: device, ...), so a caller can
    pass all of them without knowing which artifact it was given.
    """
    path = Path(artifact)
    if backend not in BACKENDS:
        raise EdgesegError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == "triton":
        raise EdgesegError("the triton backend runs the whole cascade on a Triton server, not one model here", hint="use edgeseg.edge.triton.TritonCascade (edgeseg run --backend triton --url grpc://host:8001)")
    if not path.is_file():
        raise EdgesegError(f"model {path} not found", hint="pass an exported .onnx, an OpenVINO .xml or a built .engine (with its .json card)")
    card = read_card(path)
    made_for = artifact_backend(path, str(card.artifact.get("format", "")))
    if backend == "auto":
        backend = auto_backend(path, card)
    _check_pairing(path, card, made_for, backend)
    if backend == "tensorrt":
        try:
            from edgeseg.edge.backends.tensorrt import TensorRTBackend
        except ImportError as exc:
            raise EdgesegError(
                f"the TensorRT backend cannot be loaded ({exc})", hint="use JetPack's TensorRT and pip install pycuda, or run the ONNX model"
            ) from exc
        return TensorRTBackend(path, card, **(trt_options or {}))
    if backend == "openvino":
        if not available("openvino"):
            raise EdgesegError("openvino is needed for the OpenVINO backend but is not installed", hint="pip install 'edgeseg[openvino]'")
        from edgeseg.edge.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(path, card, **(ov_options or {}))
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, card, **(ort_options or {}))


def _check_pairing(path: Path, card: ModelCard, made_for: str, backend: str) -> None:
    """Refuse a backend that cannot run the artifact, naming what to pass instead."""
    if backend == made_for or (made_for == "onnxruntime" and backend == "openvino" and not _ort_only(card)):
        return
    if made_for == "tensorrt":
        raise EdgesegError(f"{path} is a TensorRT engine; {_NAMES[backend]} cannot run it", hint="pass the ONNX model it was built from")
    if made_for == "openvino":
        raise EdgesegError(f"{path} is an OpenVINO IR; {_NAMES[backend]} cannot run it", hint="pass --backend openvino (or auto), or the ONNX it was made from")
    if backend == "openvino":
        raise EdgesegError(
            f"{path} was optimised offline by ONNX Runtime (its fused operators are ONNX Runtime's own); OpenVINO cannot run it",
            hint="pass the ONNX it was built from, or `edgeseg build-engine --backend openvino` for an IR",
        )
    raise EdgesegError(
        f"{path} is an ONNX model; the TensorRT backend runs engines",
        hint=f"build one with `edgeseg build-engine {path}` and pass the .engine",
    )
