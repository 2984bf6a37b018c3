"""`edgeseg deploy`: a classifier and a segmenter -> the artifacts this machine runs fastest, in one step.

An Ultralytics-style shortcut over the three stages a user can also run one by one: `export`
(ONNX + cards), `calibrate` (INT8 QDQ models, with the accuracy gate against FP32 on --data or
--validation) and `build-engine` (for this machine's backend). A thin shell over
edgeseg.steps.deploy, which chains the library functions those commands wrap.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgeseg.commands.common import (
    MODELS_DIR,
    ActivationOption,
    Backend,
    ChannelsOption,
    GeometryOption,
    HeightOption,
    LayoutOption,
    MeanOption,
    StdOption,
    WidthOption,
    OutDirOption,
    Precision,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    out,
    progress_steps,
)
from edgeseg.commands.calibrate import MAX_DICE_DROP_HELP, MAX_FLOAT_LAYERS_HELP, MAX_GATE_DISAGREEMENT_HELP
from edgeseg.steps import DEFAULT_MAX_DICE_DROP, DEFAULT_MAX_FLOAT_LAYERS, DEFAULT_MAX_GATE_DISAGREEMENT


@cli_errors
def deploy(
    models: Annotated[
        Optional[List[Path]],
        typer.Argument(help="The classifier and the segmenter: edgeseg checkpoints (.pt) or ONNX models (with a card beside it, or described by the contract options)."),
    ] = None,
    factory: Annotated[
        Optional[List[str]], typer.Option("--factory", help="Your own torch model: 'package.module:function' returning the nn.Module (repeat for both).")
    ] = None,
    weights: Annotated[Optional[List[Path]], typer.Option("--weights", help="State dict of each --factory, in the same order.")] = None,
    precision: Annotated[Optional[Precision], typer.Option("--precision", "-p", help="Default: the fastest here (build-engine's rule).")] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", "-d", help="int8: Severstal-layout folder or images/video to calibrate on.")
    ] = None,
    validation: Annotated[
        Optional[Path], typer.Option("--validation", help="int8: folder the accuracy gate scores FP32 vs INT8 on (default: --data).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=8, help="int8: frames in the calibration set.")] = 512,
    max_dice_drop: Annotated[float, typer.Option("--max-dice-drop", help=f"int8, on the built artifacts. {MAX_DICE_DROP_HELP}")] = DEFAULT_MAX_DICE_DROP,
    max_gate_disagreement: Annotated[
        float, typer.Option("--max-gate-disagreement", help=f"int8, on the built artifacts. {MAX_GATE_DISAGREEMENT_HELP}")
    ] = DEFAULT_MAX_GATE_DISAGREEMENT,
    max_float_layers: Annotated[int, typer.Option("--max-float-layers", min=0, help=f"int8. {MAX_FLOAT_LAYERS_HELP}")] = DEFAULT_MAX_FLOAT_LAYERS,
    backend: Annotated[Backend, typer.Option("--backend", "-b", help="Build target (auto: TensorRT where it imports, else onnxruntime with CUDA, else openvino where installed, else onnxruntime).")] = "auto",
    classes: Annotated[Optional[str], typer.Option("--classes", help="Comma-separated segmenter class names for the cards.")] = None,
    height: HeightOption = None,
    width: WidthOption = None,
    mean: MeanOption = 0.0,
    std: StdOption = 1.0,
    geometry: GeometryOption = "resize",
    activation: ActivationOption = "sigmoid",
    layout: LayoutOption = None,
    channels: ChannelsOption = None,
    out_dir: OutDirOption = MODELS_DIR,
    seed: SeedOption = 0,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export, calibrate (INT8, with the accuracy gate) and build for this machine, then print the run command.

    Examples:

      edgeseg deploy runs/classifier/classifier.pt runs/segmenter/segmenter.pt --precision int8 --data data/train

      edgeseg deploy runs/classifier/classifier.pt runs/segmenter/segmenter.pt --precision fp16 --backend tensorrt

      edgeseg deploy --factory mynets:classifier --weights cls.pt --factory mynets:unet --weights seg.pt --height 256 --width 1600 -p int8 -d data/train

      edgeseg deploy models/classifier.onnx their_unet.onnx --precision int8 --data data/train
    """
    from edgeseg.commands.calibrate import print_calibrated
    from edgeseg.commands.engine import print_built
    from edgeseg.commands.export import print_exported
    from edgeseg.steps import REPORT_NAME, BudgetMissed
    from edgeseg.steps import deploy as deploy_models

    if (height is None) != (width is None):
        raise typer.BadParameter("give both --height and --width, or neither")
    try:
        done = deploy_models(
            models or [], out_dir, factories=factory or [], weights=weights or [], size=(height, width) if height and width else None,
            mean=mean, std=std, geometry=geometry, activation=activation, layout=layout, channels=channels or 1, precision=precision,
            data=data, validation=validation, count=count, max_dice_drop=max_dice_drop, max_gate_disagreement=max_gate_disagreement,
            max_float_layers=max_float_layers, backend=backend, classes=classes.split(",") if classes is not None else None, seed=seed,
            progress=progress_steps(),
        )
    except BudgetMissed as missed:
        print_calibrated(missed.result, out_dir / REPORT_NAME)
        raise
    if done.exported.reports:  # ONNX models with cards are taken as they are
        print_exported(done.exported)
    if done.calibrated is not None:
        print_calibrated(done.calibrated, out_dir / REPORT_NAME)
    print_built(done.built)
    out.print(f"[bold green]deployed.[/] run it: {done.run_command}", highlight=False, soft_wrap=True)
