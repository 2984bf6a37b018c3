"""`edgeseg build-engine`: ONNX models (or checkpoints) -> TensorRT engines, or CPU artifacts.

A thin shell over edgeseg.steps.build: parse the options, build, print what was written; a model
that fails stops the command with one line, the artifacts already written stay complete and valid.
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
    out,
    print_json,
    progress_steps,
)
from edgeseg.commands.calibrate import MAX_DICE_DROP_HELP, MAX_GATE_DISAGREEMENT_HELP
from edgeseg.errors import UsageError


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """"256x1600" -> (256, 1600)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--size must look like HEIGHTxWIDTH (e.g. 256x1600), got {text!r}")
    return int(match.group(1)), int(match.group(2))


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
    validation: Annotated[
        Optional[Path],
        typer.Option("--validation", help="Severstal-layout folder: score the built artifacts on this backend against their FP32 ONNX; keep them only within the budget."),
    ] = None,
    validation_count: Annotated[Optional[int], typer.Option("--validation-count", min=1, help="Use this many validation strips (seeded choice); default all.")] = None,
    max_dice_drop: Annotated[Optional[float], typer.Option("--max-dice-drop", help=MAX_DICE_DROP_HELP)] = None,
    max_gate_disagreement: Annotated[Optional[float], typer.Option("--max-gate-disagreement", help=MAX_GATE_DISAGREEMENT_HELP)] = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Build TensorRT engines (or CPU artifacts) for the classifier and the segmenter in one call.

    Writes <out>/<name>.<precision>.engine and its card <name>.<precision>.json (TensorRT version, GPU, compute capability, flags, hashes). An engine only loads on the TensorRT and GPU it was built with; the card lets the runtime say so before loading.

    Without TensorRT, --backend onnxruntime writes <name>.<precision>.ort.onnx (the graph ONNX Runtime optimised, with its card) instead, so the same command works on every machine; --backend openvino writes the OpenVINO IR <name>.<precision>.xml + .bin with its card.

    Examples:

    edgeseg build-engine models/classifier.onnx models/segmenter.onnx --precision fp16

    edgeseg build-engine models/classifier.onnx models/segmenter.onnx --precision int8   # the .int8.*.qdq.onnx beside them

    edgeseg build-engine models/segmenter.int8.trt.qdq.onnx --precision int8 --workspace 1024

    edgeseg build-engine --backend onnxruntime --precision fp32

    edgeseg build-engine --backend openvino --precision int8

    edgeseg build-engine models/classifier.onnx models/segmenter.onnx --backend openvino --precision int8 --validation data/val --max-dice-drop 0.01 --max-gate-disagreement 0
    """
    from edgeseg.commands.calibrate import accuracy_table
    from edgeseg.export.engine import BuildOptions
    from edgeseg.steps import BudgetMissed, build

    options = BuildOptions(
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
    if (max_dice_drop is not None or max_gate_disagreement is not None) and validation is None:
        raise UsageError("--max-dice-drop / --max-gate-disagreement need --validation")
    try:
        built = build(
            models or [], out_dir, backend=backend, precision=precision, options=options, validation=validation, validation_count=validation_count,
            max_dice_drop=max_dice_drop, max_gate_disagreement=max_gate_disagreement, progress=progress_steps(json_output),
        )
    except BudgetMissed as missed:
        if json_output:
            print_json(missed.report.to_dict())
        else:
            out.print(accuracy_table(missed.report))
        raise
    if json_output:
        print_json(built.to_dict() if built.accuracy is None else {"artifacts": built.to_dict(), "accuracy": built.accuracy.to_dict()})
    else:
        print_built(built)
        if built.accuracy is not None:
            out.print(accuracy_table(built.accuracy))
        if built.run_command:
            out.print(f"next: {built.run_command}", highlight=False, soft_wrap=True)


def print_built(built: Any) -> None:
    """The table of `edgeseg build-engine` (deploy prints it too)."""
    out.print(build_table(built))


def build_table(built: Any) -> Any:
    """The artifacts built, for people (Fit: folded under the task where narrow)."""
    from edgeseg.edge.tables import Fit

    table = Table(title=f"build-engine ({built.backend})")
    for column in ("task", "artifact", "precision", "MB", "seconds"):
        table.add_column(column, justify="right" if column in ("MB", "seconds") else "left")
    for r in built.artifacts:
        row = r.to_dict()
        table.add_row(r.task, str(r.artifact), r.precision, f"{row['megabytes']:.2f}", f"{row['seconds']:.2f}")
    return Fit(table)
