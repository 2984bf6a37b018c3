"""`edgeseg build-engine`: ONNX models (or checkpoints) -> TensorRT engines, or CPU artifacts.

A thin shell over edgeseg.export.engine: parse and check the options once, export checkpoints
first, then build each model in turn; a model that fails stops the command with one line, the
artifacts already written stay complete and valid.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Literal, Optional, Tuple

import typer
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import (
    MODELS_DIR,
    Backend,
    JsonOption,
    OutDirOption,
    Precision,
    QuietOption,
    VerboseOption,
    cli_errors,
    note,
    out,
    print_json,
    status,
)
from edgeseg.edge.registry import AUTO, BACKEND_FLAVOURS, ONNXRUNTIME, OPENVINO, TENSORRT, auto_backend
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.layout import DATA_DIR

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """"256x1600" -> (256, 1600)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--size must look like HEIGHTxWIDTH (e.g. 256x1600), got {text!r}")
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
        if (artifact.precision, artifact.flavour) == (("int8", qdq_flavour) if qdq_flavour else ("fp32", None)):
            found.append(path)
    if not found:
        raise EdgesegError("no models given and no bundled demo models found", hint="pass ONNX files: edgeseg build-engine classifier.onnx segmenter.onnx")
    return found


def _as_onnx(model: Path, out_dir: Path) -> Path:
    """An ONNX path for `model`: checkpoints (.pt) are exported first, into the output folder."""
    if model.suffix.lower() != ".pt":
        return model
    from edgeseg.export.torch_onnx import torch_to_onnx

    with status(f"exporting {model.name} to ONNX"):
        return Path(torch_to_onnx(model, out_dir / f"{model.stem}.onnx").onnx)


@cli_errors
def build_engine(
    models: Annotated[
        Optional[List[Path]],
        typer.Argument(help="ONNX models with cards, or edgeseg checkpoints (.pt, exported first). Default: the bundled demo models."),
    ] = None,
    out_dir: OutDirOption = MODELS_DIR,
    precision: Annotated[
        Optional[Precision],
        typer.Option(
            "--precision", "-p",
            help="int8 takes the QDQ ONNX from `edgeseg calibrate` (found beside an FP32 ONNX). "
            "Default: the fastest here: fp16 on TensorRT; on CPU int8 where calibrated, else fp32.",
        ),
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            "-b",
            help="tensorrt: a GPU engine. onnxruntime: the CPU artifact (ONNX Runtime-optimised ONNX). "
            "openvino: the OpenVINO IR (.xml + .bin) for Intel CPUs, GPUs and NPUs. auto: TensorRT where it imports, else onnxruntime on a CUDA machine, else openvino where installed, else onnxruntime.",
        ),
    ] = "auto",
    min_batch: Annotated[int, typer.Option("--min-batch", min=1, help="Smallest batch the engine accepts.")] = 1,
    opt_batch: Annotated[int, typer.Option("--opt-batch", min=1, help="Batch TensorRT tunes for (tiles per frame for tiled models).")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch; buffers are sized for it.")] = 8,
    size: Annotated[Optional[str], typer.Option("--size", help="Input HEIGHTxWIDTH for fully convolutional models (default: the card's).")] = None,
    workspace: Annotated[Optional[int], typer.Option("--workspace", help="Builder workspace limit in MiB (keep it small on Jetson: shared memory).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file, read before and updated after each build.")] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", help="Run on this DLA core (Jetson), falling back to the GPU per layer.")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine loads on newer TensorRT too (8.6+, slower).")] = False,
    hardware_compatible: Annotated[bool, typer.Option("--hardware-compatible", help="Engine loads on any Ampere+ GPU (8.6+, slower).")] = False,
    calibration: Annotated[
        Literal["qdq", "implicit"],
        typer.Option("--calibration", help="int8: qdq (explicit, every backend) or implicit (TensorRT 8.5-10 entropy/min-max calibration)."),
    ] = "qdq",
    calibration_set: Annotated[Optional[Path], typer.Option("--calibration-set", help="The .npz from `edgeseg calibrate` (implicit INT8).")] = None,
    calibration_cache: Annotated[Optional[Path], typer.Option("--calibration-cache", help="Calibration cache file (default beside the set).")] = None,
    calibrator: Annotated[Literal["entropy", "minmax"], typer.Option("--calibrator", help="Implicit INT8 (TensorRT) calibrator.")] = "entropy",
    ort_optimization: Annotated[
        Literal["basic", "extended", "all"],
        typer.Option("--ort-optimization", help="onnxruntime backend: extended is portable; all adds layouts tied to this CPU."),
    ] = "extended",
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> List[Any]:
    """Build TensorRT engines (or CPU artifacts) for the classifier and the segmenter in one call.

    Writes <out>/<name>.<precision>.engine and its card <name>.<precision>.json (TensorRT version, GPU, compute capability, flags, hashes). An engine only loads on the TensorRT and GPU it was built with; the card lets the runtime say so before loading.

    Without TensorRT, --backend onnxruntime writes <name>.<precision>.ort.onnx (the graph ONNX Runtime optimised, with its card) instead, so the same command works on every machine; --backend openvino writes the OpenVINO IR <name>.<precision>.xml + .bin with its card.

    Examples:

    edgeseg build-engine models/classifier.onnx models/segmenter.onnx --precision fp16

    edgeseg build-engine models/classifier.onnx models/segmenter.onnx --precision int8   # the .int8.*.qdq.onnx beside them

    edgeseg build-engine models/segmenter.int8.trt.qdq.onnx --precision int8 --workspace 1024

    edgeseg build-engine --backend onnxruntime --precision fp32

    edgeseg build-engine --backend openvino --precision int8
    """
    from edgeseg.export.engine import BuildOptions, onnx_to_engine, onnx_to_openvino, onnx_to_ort, tensorrt_or_advice

    target = auto_backend(build=True) if backend == AUTO else backend
    chosen = precision or default_precision(target, models or [], calibration)
    options = BuildOptions(
        precision=chosen,
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
    try:
        options.check(target)
    except EdgesegError as exc:  # an inconsistent combination of options: a usage error
        raise UsageError(exc.message, hint=exc.hint) from None
    if target == TENSORRT:
        tensorrt_or_advice()  # one line now, not after exporting checkpoints
    if precision is None:
        note(f"precision: {chosen} (the fastest on {target} here; pass --precision to choose)")
    qdq = (chosen, calibration) == ("int8", "qdq")
    flavour = BACKEND_FLAVOURS[target][0] if qdq else None
    sources = list(models) if models else demo_models(flavour)
    build = {TENSORRT: onnx_to_engine, ONNXRUNTIME: onnx_to_ort, OPENVINO: onnx_to_openvino}[target]
    results = []
    for model in sources:
        onnx = _as_onnx(model, out_dir)
        if qdq:
            onnx = int8_source(onnx, str(flavour), target)
        with status(f"building {onnx.name} -> {chosen} ({target})"):
            results.append(build(onnx, out_dir, options))
    if json_output:
        print_json([r.to_dict() for r in results])
        return results
    table = Table(title=f"build-engine ({target})")
    for column in ("task", "artifact", "precision", "MB", "seconds"):
        table.add_column(column, justify="right" if column in ("MB", "seconds") else "left")
    for r in results:
        row = r.to_dict()
        table.add_row(r.task, str(r.artifact), r.precision, f"{row['megabytes']:.2f}", f"{row['seconds']:.2f}")
    out.print(table)
    command = run_command(results)
    if command:
        out.print(f"next: {command}", highlight=False, soft_wrap=True)
    return results  # for `edgeseg deploy`, which runs this command as its last stage


def run_command(results: List[Any]) -> Optional[str]:
    """`edgeseg run` over the built classifier and segmenter (None unless both were built)."""
    built = {r.task: r.artifact for r in results}
    if set(built) != {"classifier", "segmenter"}:
        return None
    return f"edgeseg run --classifier {built['classifier']} --segmenter {built['segmenter']}"


def default_precision(backend: str, models: List[Path], calibration: str = "qdq") -> str:
    """The fastest precision on `backend`: FP16 on TensorRT; on the CPU (where FP16 runs as slow
    reference kernels) INT8 when every given ONNX has its calibrated QDQ model beside it, else FP32."""
    if backend == TENSORRT:
        return "fp16"
    from edgeseg.calibration.qdq import qdq_path

    flavour = BACKEND_FLAVOURS[backend][0]
    onnx = [m for m in models if m.suffix.lower() == ".onnx"]
    if calibration == "qdq" and onnx and len(onnx) == len(models) and all(qdq_path(m, flavour).is_file() or _is_int8(m) for m in onnx):
        return "int8"
    return "fp32"


def _is_int8(model: Path) -> bool:
    from edgeseg.edge.card import read_card

    return read_card(model).artifact.precision == "int8"


def int8_source(model: Path, flavour: str, backend: str) -> Path:
    """The QDQ model an INT8 build reads: `model` when it is one, else the `calibrate` output of
    `flavour` beside the FP32 model; a UsageError with the command that makes it otherwise."""
    from edgeseg.calibration.qdq import qdq_path

    if not model.is_file() or _is_int8(model):
        return model  # a missing file: the builder says so
    sibling = qdq_path(model, flavour)
    if sibling.is_file():
        note(f"int8: building from {sibling} (the calibrated model beside {model.name})")
        return sibling
    implicit = " (or --calibration implicit --calibration-set SET.npz on TensorRT 8.5-10)" if backend == TENSORRT else ""
    raise UsageError(
        f"{model.name} is FP32 and {sibling.name} is not beside it: INT8 builds from a calibrated QDQ model",
        hint=f"make it with `edgeseg calibrate {DATA_DIR} -m {model} --out {model.parent}`, then rerun{implicit}",
    )
