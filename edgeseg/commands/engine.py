"""`edgeseg build-engine`: ONNX models (or checkpoints) -> TensorRT engines, or CPU artifacts.

A thin shell over edgeseg.export.engine: parse and check the options once, export checkpoints
first, then build each model in turn; a model that fails stops the command with one line, the
artifacts already written stay complete and valid.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import JsonOption, OutDirOption, cli_errors, err, out, print_json
from edgeseg.errors import EdgesegError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """"256x1600" -> (256, 1600)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise EdgesegError(f"--size must look like HEIGHTxWIDTH (e.g. 256x1600), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def demo_models(qdq_flavour: Optional[str]) -> List[Path]:
    """The bundled demo models (edgeseg/assets): the FP32 ONNX, or the INT8 QDQ ones of
    `qdq_flavour` ("trt" for TensorRT, "cpu" for ONNX Runtime)."""
    from edgeseg.edge.card import read_card

    found = []
    for path in sorted(ASSETS.glob("*.onnx")):
        try:
            artifact = read_card(path).artifact
        except EdgesegError:
            continue
        if (artifact.get("precision", "fp32"), artifact.get("flavour")) == (("int8", qdq_flavour) if qdq_flavour else ("fp32", None)):
            found.append(path)
    if not found:
        raise EdgesegError("no models given and no bundled demo models found", hint="pass ONNX files: edgeseg build-engine classifier.onnx segmenter.onnx")
    return found


def _as_onnx(model: Path, out_dir: Path) -> Path:
    """An ONNX path for `model`: checkpoints (.pt) are exported first, into the output folder."""
    if model.suffix.lower() != ".pt":
        return model
    from edgeseg.export.torch_onnx import torch_to_onnx

    with err.status(f"exporting {model.name} to ONNX"):
        return Path(torch_to_onnx(model, out_dir / f"{model.stem}.onnx").onnx)


@cli_errors
def build_engine(
    models: Annotated[
        Optional[List[Path]],
        typer.Argument(help="ONNX models with cards, or edgeseg checkpoints (.pt, exported first). Default: the bundled demo models."),
    ] = None,
    out_dir: OutDirOption = Path("engines"),
    precision: Annotated[str, typer.Option("--precision", "-p", help="fp32 | fp16 | int8 (int8 takes the QDQ ONNX from `edgeseg calibrate`).")] = "fp16",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="tensorrt: a GPU engine. onnxruntime: the CPU artifact (ONNX Runtime-optimised ONNX). "
            "openvino: the OpenVINO IR (.xml + .bin) for Intel CPUs, GPUs and NPUs.",
        ),
    ] = "tensorrt",
    min_batch: Annotated[int, typer.Option("--min-batch", help="Smallest batch the engine accepts.")] = 1,
    opt_batch: Annotated[int, typer.Option("--opt-batch", help="Batch TensorRT tunes for (tiles per frame for tiled models).")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch; buffers are sized for it.")] = 8,
    size: Annotated[Optional[str], typer.Option("--size", help="Input HEIGHTxWIDTH for fully convolutional models (default: the card's).")] = None,
    workspace: Annotated[Optional[int], typer.Option("--workspace", help="Builder workspace limit in MiB (keep it small on Jetson: shared memory).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file, read before and updated after each build.")] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", help="Run on this DLA core (Jetson), falling back to the GPU per layer.")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine loads on newer TensorRT too (8.6+, slower).")] = False,
    hardware_compatible: Annotated[bool, typer.Option("--hardware-compatible", help="Engine loads on any Ampere+ GPU (8.6+, slower).")] = False,
    calibration: Annotated[
        str, typer.Option("--calibration", help="int8: qdq (explicit, every TensorRT) or implicit (entropy/min-max calibration, TensorRT 8.5-10).")
    ] = "qdq",
    calibration_set: Annotated[Optional[Path], typer.Option("--calibration-set", help="The .npz from `edgeseg calibrate` (implicit INT8).")] = None,
    calibration_cache: Annotated[Optional[Path], typer.Option("--calibration-cache", help="Calibration cache file (default beside the set).")] = None,
    calibrator: Annotated[str, typer.Option("--calibrator", help="entropy | minmax (implicit INT8).")] = "entropy",
    ort_optimization: Annotated[
        str, typer.Option("--ort-optimization", help="basic | extended (portable) | all (adds layouts tied to this CPU): onnxruntime backend.")
    ] = "extended",
    json_output: JsonOption = False,
) -> None:
    """Build TensorRT engines (or CPU artifacts) for the classifier and the segmenter in one call.

    Writes <out>/<name>.<precision>.engine and its card <name>.<precision>.json (TensorRT version, GPU, compute capability, flags, hashes). An engine only loads on the TensorRT and GPU it was built with; the card lets the runtime say so before loading.

    Without TensorRT, --backend onnxruntime writes <name>.<precision>.ort.onnx (the graph ONNX Runtime optimised, with its card) instead, so the same command works on every machine; --backend openvino writes the OpenVINO IR <name>.<precision>.xml + .bin with its card.

    Examples:

    edgeseg build-engine classifier.onnx segmenter.onnx --precision fp16

    edgeseg build-engine segmenter.int8.qdq.onnx --precision int8 --workspace 1024

    edgeseg build-engine --backend onnxruntime --precision fp32

    edgeseg build-engine --backend openvino --precision int8
    """
    from edgeseg.calibration.qdq import BACKEND_FLAVOURS
    from edgeseg.export.engine import BuildOptions, onnx_to_engine, onnx_to_openvino, onnx_to_ort, tensorrt_or_advice

    options = BuildOptions(
        precision=precision,
        batch=(min_batch, opt_batch, max_batch),
        size=parse_size(size),
        workspace_mib=workspace,
        timing_cache=timing_cache,
        dla_core=dla_core,
        version_compatible=version_compatible,
        hardware_compatible=hardware_compatible,
        calibration=calibration,
        calibration_set=calibration_set,
        calibration_cache=calibration_cache,
        calibrator=calibrator,
        ort_level=ort_optimization,
    )
    options.check(backend)
    if backend == "tensorrt":
        tensorrt_or_advice()  # one line now, not after exporting checkpoints
    flavour = BACKEND_FLAVOURS[backend][0] if (precision, calibration) == ("int8", "qdq") else None
    sources = list(models) if models else demo_models(flavour)
    build = {"tensorrt": onnx_to_engine, "onnxruntime": onnx_to_ort, "openvino": onnx_to_openvino}[backend]
    results = []
    for model in sources:
        onnx = _as_onnx(model, out_dir)
        with err.status(f"building {onnx.name} -> {precision} ({backend})"):
            results.append(build(onnx, out_dir, options))
    if json_output:
        print_json([r.to_dict() for r in results])
        return
    table = Table(title=f"build-engine ({backend})")
    for column in ("task", "artifact", "precision", "MB", "seconds"):
        table.add_column(column, justify="right" if column in ("MB", "seconds") else "left")
    for r in results:
        row = r.to_dict()
        table.add_row(r.task, str(r.artifact), r.precision, f"{row['megabytes']:.2f}", f"{row['seconds']:.2f}")
    out.print(table)
