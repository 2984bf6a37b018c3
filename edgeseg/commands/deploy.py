"""`edgeseg deploy`: checkpoints -> the artifacts this machine runs fastest, in one step.

An Ultralytics-style shortcut over the three stages a user can also run one by one: `export`
(ONNX + cards), `calibrate` (INT8 QDQ models, with the accuracy gate against FP32 on --data or
--validation) and `build-engine` (for this machine's backend). Each stage is the command's own
function, called with the options deploy decides, so there is one implementation of each.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgeseg.commands.common import (
    MODELS_DIR,
    Backend,
    OutDirOption,
    Precision,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    out,
)
from edgeseg.errors import UsageError

DEFAULT_MAX_DICE_DROP = 0.02
DEFAULT_MAX_RECALL_DROP = 0.02


@cli_errors
def deploy(
    checkpoints: Annotated[List[Path], typer.Argument(help="The classifier and segmenter checkpoints (runs/<task>/<task>.pt).")],
    precision: Annotated[Optional[Precision], typer.Option("--precision", "-p", help="Default: the fastest here (build-engine's rule).")] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", "-d", help="int8: Severstal-layout folder or images/video to calibrate on.")
    ] = None,
    validation: Annotated[
        Optional[Path], typer.Option("--validation", help="int8: folder the accuracy gate scores FP32 vs INT8 on (default: --data).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=8, help="int8: frames in the calibration set.")] = 512,
    max_dice_drop: Annotated[float, typer.Option("--max-dice-drop", help="int8: refuse a segmenter losing more mean Dice.")] = DEFAULT_MAX_DICE_DROP,
    max_recall_drop: Annotated[float, typer.Option("--max-recall-drop", help="int8: refuse a classifier losing more recall.")] = DEFAULT_MAX_RECALL_DROP,
    backend: Annotated[Backend, typer.Option("--backend", "-b", help="Build target (auto: TensorRT where it imports, else onnxruntime with CUDA, else openvino where installed, else onnxruntime).")] = "auto",
    classes: Annotated[Optional[str], typer.Option("--classes", help="Comma-separated segmenter class names for the cards.")] = None,
    out_dir: OutDirOption = MODELS_DIR,
    seed: SeedOption = 0,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export, calibrate (INT8, with the accuracy gate) and build for this machine, then print the run command.

    Examples:

      edgeseg deploy runs/classifier/classifier.pt runs/segmenter/segmenter.pt --precision int8 --data data/train

      edgeseg deploy runs/classifier/classifier.pt runs/segmenter/segmenter.pt --precision fp16 --backend tensorrt
    """
    from edgeseg.commands.calibrate import calibrate
    from edgeseg.commands.engine import build_engine, run_command
    from edgeseg.edge.registry import AUTO, BACKEND_FLAVOURS, TENSORRT, auto_backend
    from edgeseg.commands.export import export

    target = auto_backend(build=True) if backend == AUTO else backend
    chosen = precision or ("fp16" if target == TENSORRT else ("int8" if data is not None else "fp32"))
    if chosen == "int8" and data is None:
        raise typer.BadParameter("--precision int8 calibrates on --data DIR (images, a Severstal folder or a video)")
    out.print(f"[bold]1/3 export[/] {', '.join(map(str, checkpoints))} -> {out_dir}")
    reports = export(checkpoint=list(checkpoints), out_dir=out_dir, classes=classes, seed=seed)
    onnx = [Path(report.onnx) for report in reports]
    if chosen == "int8":
        out.print(f"[bold]2/3 calibrate[/] on {data}, gate: Dice drop <= {max_dice_drop}, recall drop <= {max_recall_drop}")
        calibrate(
            source=data, models=onnx, out_dir=out_dir, count=count, flavours=[BACKEND_FLAVOURS[target][0]],
            validation=validation or data, max_dice_drop=max_dice_drop, max_recall_drop=max_recall_drop, seed=seed,
        )
    else:
        out.print(f"[bold]2/3 calibrate[/] skipped ({chosen} needs no calibration)")
    out.print(f"[bold]3/3 build-engine[/] {chosen} for {target}")
    results = build_engine(models=onnx, out_dir=out_dir, precision=chosen, backend=target)
    command = run_command(results)
    if command is None:
        raise UsageError("deploy builds the cascade: give the classifier and the segmenter checkpoints", hint="edgeseg deploy CLASSIFIER.pt SEGMENTER.pt ...")
    out.print(f"[bold green]deployed.[/] run it: {command}", highlight=False, soft_wrap=True)
