"""The benchmark matrix: which artifact runs each model × backend × precision, or why none can.

An FP32 ONNX (with its card) stands for its whole family, found by edgeseg's file names:
  onnxruntime  fp32 `m.onnx` · fp16 `m.fp16.onnx` (made on the fly when missing) ·
               int8 `m.int8.cpu.qdq.onnx` (else the `trt` flavour; beside m or in <engines>); `<engines>/m.<p>.ort.onnx`
               from `edgeseg build-engine --backend onnxruntime` is preferred when present
  openvino     the same ONNX files as onnxruntime (int8: `m.int8.<flavour>.qdq.onnx`, the flavour
               `edge.registry.BACKEND_FLAVOURS` prefers per backend); `<engines>/m.<p>.xml` from
               `edgeseg build-engine --backend openvino` is preferred when present
  tensorrt     `<engines>/m.<p>.engine` (built by `edgeseg build-engine`)
  pytorch      the checkpoint named in the card, eager; fp16 on CUDA only, no int8
Any other artifact (an engine, an FP16 or QDQ ONNX) is benchmarked as given. A cell that cannot
run here stays in the matrix with the reason and the command that would fill it, so a report
from a CPU machine says plainly that it has no TensorRT figures rather than leaving them out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from edgeseg.edge.artifacts import base_name, built_path, fp16_path, qdq_path
from edgeseg.edge.backends import Backend, BackendOptions, artifact_backend, open_backend
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.edge.registry import BACKEND_FLAVOURS, LOCAL_BACKENDS, ONNXRUNTIME, OPENVINO, PRECISIONS, TENSORRT
from edgeseg.errors import EdgesegError
from edgeseg.layout import DATA_DIR
from edgeseg.lazy import ONNX_ADVICE, TORCH_ADVICE, available

BUNDLED = Path(__file__).resolve().parent.parent / "assets"  # the demo models: never a place to write
ENGINES_DIR = Path("engines")  # searched after the ONNX's folder; where hints put what the bundled models lack

BACKENDS = LOCAL_BACKENDS + ("pytorch",)


@dataclass
class Variant:
    """One cell of the matrix. `artifact` is what runs (None when skipped); `reference` is the FP32
    ONNX of the model (FLOPs are counted from it), when known."""

    task: str
    name: str
    backend: str
    precision: str
    card: ModelCard
    artifact: Optional[Path] = None
    reference: Optional[Path] = None
    skipped: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def flavour(self) -> Optional[str]:
        return self.card.artifact.flavour if self.backend != "pytorch" else None

    def open(self, threads: int = 0, device: Optional[str] = None) -> Backend:
        """A not-yet-activated backend for this cell (threads: ONNX Runtime / torch CPU threads)."""
        if self.artifact is None:
            raise EdgesegError(f"{self.name} {self.label} cannot run here: {self.skipped}")
        if self.backend == "pytorch":
            from edgeseg.bench.torch_backend import TorchBackend

            return TorchBackend(self.artifact, self.card, device=device or "cpu", half=self.precision == "fp16", threads=threads)
        return open_backend(self.artifact, self.backend, BackendOptions.with_threads(threads))


def plan(
    models: Sequence[Path],
    backends: Sequence[str] = BACKENDS,
    precisions: Sequence[str] = PRECISIONS,
    engines: Optional[Path] = None,
    scratch: Optional[Path] = None,
    torch_device: str = "cpu",
) -> List[Variant]:
    """Every cell for `models`; FP32 ONNX files expand over backends × precisions.

    engines: where built engines / ORT artifacts are (default: beside each ONNX, then ./engines).
    scratch: a folder for FP16 ONNX made on the fly (no FP16 row from ONNX Runtime without one).
    """
    for name, values, known in (("backend", backends, BACKENDS), ("precision", precisions, PRECISIONS)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise EdgesegError(f"unknown {name} {', '.join(unknown)}", hint=f"use {', '.join(known)}")
    cells: List[Variant] = []
    for model in models:
        path = Path(model)
        if not path.is_file():
            raise EdgesegError(f"model {path} not found", hint="pass exported .onnx files or built .engine files (cards beside them)")
        card = read_card(path)
        backend = artifact_backend(path, card)
        precision = card.artifact.precision
        if backend == ONNXRUNTIME and precision == "fp32":
            for b in backends:
                for p in precisions:
                    cells.append(_cell(path, card, b, p, engines, scratch, torch_device))
        else:
            reference = _reference(path, card)
            for b in _runners(path, card, backend, backends):
                cells.append(Variant(card.task, base_name(path), b, precision, card, path, reference, _runnable(b)))
    return cells


def _cell(onnx: Path, card: ModelCard, backend: str, precision: str, engines: Optional[Path], scratch: Optional[Path], torch_device: str) -> Variant:
    name = base_name(onnx)
    cell = Variant(card.task, name, backend, precision, card, reference=onnx)
    cell.skipped = _runnable(backend)
    if cell.skipped:
        return cell
    folders = [f for f in (engines, onnx.parent, ENGINES_DIR) if f is not None]
    target = engines or (onnx.parent if _ours(onnx.parent) else ENGINES_DIR)  # where a hint's command writes
    if backend == TENSORRT:
        found = _first(built_path(onnx, f, precision, backend) for f in folders)
        hint = f"edgeseg build-engine {onnx} --precision {precision} --out {target}"
        return _found(cell, found, f"no {name}.{precision}.engine in {', '.join(map(str, folders))}: build it with `{hint}`")
    if backend == "pytorch":
        return _torch_cell(cell, onnx, card, precision, torch_device)
    built = _first(built_path(onnx, f, precision, backend) for f in folders)
    if built is not None or precision == "fp32":
        return _found(cell, built or onnx, "")
    if precision == "fp16":
        fix = "bench converts the FP32 model when given a scratch folder" if available("onnx") else f"install onnx and bench converts the FP32 model: {ONNX_ADVICE}"
        return _found(cell, _fp16(onnx, name, scratch), f"no {name}.fp16.onnx in {', '.join(map(str, folders))}: {fix}")
    found = _first(qdq_path(f / f"{name}.onnx", flavour) for f in folders for flavour in BACKEND_FLAVOURS[backend])
    hint = f"edgeseg calibrate {DATA_DIR} -m {onnx} --out {target}"
    return _found(cell, found, f"no {name}.int8.*.qdq.onnx in {', '.join(map(str, folders))}: make it with `{hint}` (calibration images: {DATA_DIR} or yours)")


def _ours(folder: Path) -> bool:
    """Whether a hint may write into `folder`: a writable folder of the user's, not edgeseg's
    bundled assets (in site-packages, or in a clone's package)."""
    return os.access(folder, os.W_OK) and folder.resolve() != BUNDLED


def _runners(path: Path, card: ModelCard, made_for: str, backends: Sequence[str]) -> List[str]:
    """The requested backends that run an artifact given as is: an ONNX runs on ONNX Runtime and
    OpenVINO alike (an ONNX Runtime-optimised one only on ONNX Runtime), anything else only on
    the backend it was made for."""
    if made_for != ONNXRUNTIME or card.artifact.ort_only:
        return [made_for]
    chosen = [b for b in (ONNXRUNTIME, OPENVINO) if b in backends]
    return chosen or [made_for]


def _torch_cell(cell: Variant, onnx: Path, card: ModelCard, precision: str, device: str) -> Variant:
    from edgeseg.bench.torch_backend import checkpoint_of

    if precision == "int8":
        cell.skipped = "PyTorch eager has no INT8 inference path to compare (ONNX Runtime and TensorRT run the QDQ model)"
    elif precision == "fp16" and not device.startswith("cuda"):
        cell.skipped = "PyTorch FP16 is measured on CUDA only (no GPU here)"
    else:
        try:
            cell.artifact = checkpoint_of(onnx, card)
        except EdgesegError as exc:
            cell.skipped = str(exc)
    return cell


def _runnable(backend: str) -> str:
    """Why `backend` cannot run on this machine ("" when it can)."""
    # pycuda.driver, not the pycuda package: a pycuda built without CUDA, or without a driver here,
    # imports as a package and fails at its driver.
    if backend == "tensorrt" and not (available("tensorrt") and available("pycuda.driver")):
        return "TensorRT and pycuda (pycuda.driver) are not usable here (JetPack or a CUDA machine with `pip install edgeseg[trt]` pycuda)"
    if backend == "pytorch" and not available("torch"):
        return f"torch is not installed ({TORCH_ADVICE})"
    if backend == "onnxruntime" and not available("onnxruntime"):
        return "onnxruntime is not installed"
    if backend == "openvino" and not available("openvino"):
        return "openvino is not installed (pip install 'edgeseg[openvino]')"
    return ""


def _fp16(onnx: Path, name: str, scratch: Optional[Path]) -> Optional[Path]:
    beside = fp16_path(onnx.parent / f"{name}.onnx")
    if beside.is_file():
        return beside
    if scratch is None or not available("onnx"):
        return None
    from edgeseg.export.fp16 import onnx_to_fp16

    return Path(onnx_to_fp16(onnx, scratch / beside.name).onnx)


def _reference(path: Path, card: ModelCard) -> Optional[Path]:
    """The ONNX graph FLOPs are counted from: the artifact itself when it is ONNX (FP16 and QDQ
    graphs count the same as FP32), else the ONNX an engine was built from, if it is still around."""
    if card.artifact.format == "onnx":
        return path
    names = [name for name in (card.source.onnx, card.source.fp32_onnx) if name]
    candidates = [folder / Path(name).name for name in names for folder in (path.parent, Path.cwd())]
    return _first(candidates + [path.parent / f"{base_name(path)}.onnx"])


def _found(cell: Variant, path: Optional[Path], reason: str) -> Variant:
    if path is None:
        cell.skipped = reason
    else:
        cell.artifact = path
        if cell.backend != "pytorch":
            cell.card = read_card(path)
    return cell


def _first(paths: Any) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)

