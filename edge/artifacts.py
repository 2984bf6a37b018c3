"""The artifact file-name grammar, built and parsed in one place.

  <name>.onnx                     FP32 ONNX (edgeseg export)
  <name>.fp16.onnx                FP16 ONNX (export --fp16)
  <name>.int8.<flavour>.qdq.onnx  calibrated INT8 QDQ ONNX, flavour trt | cpu (edgeseg calibrate)
  <name>.<precision>.engine       TensorRT engine (build-engine); .plan / .trt are read too
  <name>.<precision>.ort.onnx     ONNX Runtime-optimised ONNX (build-engine --backend onnxruntime)
  <name>.<precision>.xml + .bin   OpenVINO IR (build-engine --backend openvino)
  <artifact stem>.json            the model card beside each of them
  <artifact stem>.golden.npz      its golden set (frames and the outputs it gave: edge.golden)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeseg.edge.registry import ONNXRUNTIME, OPENVINO, TENSORRT
from edgeseg.files import PathLike

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
IR_SUFFIXES = (".xml",)
BUILT_SUFFIX = {TENSORRT: "engine", ONNXRUNTIME: "ort.onnx", OPENVINO: "xml"}
# Name parts that describe a variant, stripped to get a model's base name ("segmenter.int8.qdq" -> "segmenter").
_VARIANT_PARTS = {"fp32", "fp16", "int8", "qdq", "trt", "cpu", "ort"}


def card_path(artifact: PathLike) -> Path:
    """`model.onnx` -> `model.json`; `model.fp16.engine` -> `model.fp16.json`."""
    return Path(artifact).with_suffix(".json")


def golden_path(artifact: PathLike) -> Path:
    """`model.onnx` -> `model.golden.npz`; `model.fp16.engine` -> `model.fp16.golden.npz`."""
    return Path(artifact).with_suffix(".golden.npz")


def weights_path(ir: PathLike) -> Path:
    """An OpenVINO IR's weights: `model.xml` -> `model.bin`."""
    return Path(ir).with_suffix(".bin")


def base_name(model: PathLike) -> str:
    """The model's name without variant parts: segmenter.int8.cpu.qdq.onnx -> segmenter."""
    name = Path(model).name
    parts = name[: -len(".onnx")].split(".") if name.endswith(".onnx") else [Path(model).stem]
    while len(parts) > 1 and parts[-1] in _VARIANT_PARTS:
        parts.pop()
    return ".".join(parts)


def fp16_path(onnx: PathLike) -> Path:
    """model.onnx -> model.fp16.onnx."""
    path = Path(onnx)
    return path.with_name(f"{path.stem}.fp16.onnx")


def qdq_path(onnx: PathLike, flavour: str) -> Path:
    """`model.onnx` -> `model.int8.trt.qdq.onnx` / `model.int8.cpu.qdq.onnx`."""
    path = Path(onnx)
    return path.with_name(f"{path.stem}.int8.{flavour}.qdq.onnx")


def qdq_flavour(path: PathLike) -> Optional[str]:
    """The flavour a QDQ file name says (`m.int8.cpu.qdq.onnx` -> "cpu"), None for other names."""
    parts = Path(path).name.split(".")
    if len(parts) >= 5 and parts[-4] == "int8" and parts[-2:] == ["qdq", "onnx"]:
        return parts[-3]
    return None


def flavour_sibling(path: PathLike, flavour: str) -> Path:
    """The other flavour's QDQ file beside `path` (itself when `path` is not a QDQ name)."""
    path = Path(path)
    if qdq_flavour(path) is None:
        return path
    return path.with_name(".".join(path.name.split(".")[:-4] + ["int8", flavour, "qdq", "onnx"]))


def built_path(onnx: PathLike, out_dir: PathLike, precision: str, backend: str) -> Path:
    """<out>/<name>.<precision>.engine (TensorRT), .ort.onnx (ONNX Runtime) or .xml (OpenVINO IR)."""
    return Path(out_dir) / f"{base_name(onnx)}.{precision}.{BUILT_SUFFIX[backend]}"


def backend_of_name(path: PathLike) -> str:
    """The backend a file name says it is made for (used when no card format says it)."""
    suffix = Path(path).suffix.lower()
    return TENSORRT if suffix in ENGINE_SUFFIXES else OPENVINO if suffix in IR_SUFFIXES else ONNXRUNTIME
