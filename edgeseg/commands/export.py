"""`edgeseg export`: trained model -> ONNX + model card (+ FP16 variant), with parity numbers.

A thin shell over edgeseg.steps.export; heavy imports happen inside it, so `edgeseg --help`
stays torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Literal, Optional

import typer
from typing_extensions import Annotated

from edgeseg.commands.common import (
    MODELS_DIR,
    ActivationOption,
    ChannelsOption,
    GeometryOption,
    HeightOption,
    JsonOption,
    LayoutOption,
    MeanOption,
    StdOption,
    WidthOption,
    OutDirOption,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    out,
    print_json,
    progress_steps,
)


@cli_errors
def export(
    checkpoint: Annotated[
        Optional[List[Path]],
        typer.Option("--checkpoint", "-c", help="edgeseg checkpoint (.pt from `edgeseg train`); repeat for classifier and segmenter."),
    ] = None,
    onnx: Annotated[
        Optional[Path], typer.Option("--onnx", help="An ONNX model from elsewhere: copied with a card built from the contract flags or --card.")
    ] = None,
    factory: Annotated[
        Optional[str], typer.Option("--factory", help="Your own torch model: 'package.module:function' returning the nn.Module.")
    ] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="State dict for --factory (torch.save(model.state_dict())).")] = None,
    out_dir: OutDirOption = MODELS_DIR,
    name: Annotated[
        Optional[str], typer.Option("--name", help="File stem of the ONNX (default: the task, e.g. segmenter.onnx); one model only.")
    ] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write <name>.fp16.onnx (FP16 compute, FP32 I/O) for strongly typed TensorRT.")] = False,
    opset: Annotated[int, typer.Option("--opset", min=13, max=20, help="ONNX opset; 17 is the highest TensorRT 8.5/8.6 parse.")] = 17,
    images: Annotated[
        Optional[Path], typer.Option("--images", help="Folder of real strips (PNG/JPEG) added to the parity inputs (first 8).")
    ] = None,
    task: Annotated[Optional[Literal["classifier", "segmenter"]], typer.Option("--task", help="Contract of --onnx/--factory.")] = None,
    height: HeightOption = None,
    width: WidthOption = None,
    mean: MeanOption = 0.0,
    std: StdOption = 1.0,
    geometry: GeometryOption = "resize",
    classes: Annotated[
        Optional[str],
        typer.Option("--classes", help="Comma-separated class names, one per output map (-c: renames the segmenter's classes in its card)."),
    ] = None,
    activation: ActivationOption = "sigmoid",
    channels: ChannelsOption = None,
    input_name: Annotated[Optional[str], typer.Option("--input-name", help="--onnx: the image input (if it has several).")] = None,
    output_name: Annotated[Optional[str], typer.Option("--output-name", help="--onnx: the output to use (if it has several).")] = None,
    layout: LayoutOption = None,
    card: Annotated[Optional[Path], typer.Option("--card", help="--onnx/--factory: take the contract from this existing model card JSON.")] = None,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export models to ONNX (opset 17, dynamic batch, input [bold]image[/], output [bold]logits[/]) with a model card,
    after checking the ONNX against PyTorch on synthetic strips and random frames (fails above 1e-4 relative L2).

    Examples:

      edgeseg export -c runs/classifier/classifier.pt -c runs/segmenter/segmenter.pt --fp16

      edgeseg export -c runs/segmenter/segmenter.pt --classes pits,crack,scratch,patch

      edgeseg export --onnx their.onnx --task segmenter --height 256 --width 1600 --classes 1,2,3,4 --out models

      edgeseg export --factory mynets:build --weights w.pt --task classifier --height 128 --width 800 --out models
    """
    from edgeseg.steps import export as export_models

    if (height is None) != (width is None):
        raise typer.BadParameter("give both --height and --width, or neither")
    done = export_models(
        checkpoint or [], out_dir, onnx=onnx, factory=factory, weights=weights, name=name, fp16=fp16, opset=opset, images=images,
        task=task, size=(height, width) if height and width else None, mean=mean, std=std, geometry=geometry,
        classes=classes.split(",") if classes is not None else None, activation=activation, input_name=input_name,
        output_name=output_name, layout=layout, channels=channels, card=card, seed=seed, progress=progress_steps(json_output),
    )
    if json_output:
        print_json(done.to_dict())
    else:
        print_exported(done)
        out.print(f"next: {build_hint(done.onnx, out_dir)}", highlight=False, soft_wrap=True)


def print_exported(done: Any) -> None:
    """The parity table of `edgeseg export` and where the models went (deploy prints them too)."""
    out.print(export_table(done.reports))
    folders = sorted({str(r.onnx.parent) for r in done.reports})
    out.print(f"wrote {len(done.reports)} ONNX model(s) with cards to {', '.join(folders)}")


def build_hint(models: List[Path], folder: Path) -> str:
    """The command that builds the exported models for this machine (printed after exporting; a test runs it)."""
    import shlex

    return " ".join(["edgeseg build-engine", *(shlex.quote(str(m)) for m in models), "--out", shlex.quote(str(folder))])


def export_table(reports: List[Any]) -> Any:
    """The parity checks of each exported artifact, for people (Fit: folded under the artifact where narrow)."""
    from rich.table import Table

    from edgeseg.edge.tables import Fit

    table = Table(title="edgeseg export (parity passes under the relative L2 or the max abs limit)", title_justify="left")
    table.add_column("artifact", no_wrap=True)
    table.add_column("s", justify="right")
    table.add_column("check")
    for column in ("n", "max abs", "rel L2", "limit rel/abs"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("")
    for report in reports:
        common = [report.onnx.name, f"{report.seconds:.1f}"]
        if not report.parity:
            table.add_row(*common, "runs on ONNX Runtime, output shape fits the task", "", "", "", "", "[green]ok[/]")
        for i, p in enumerate(report.parity):
            mark = "[green]ok[/]" if p.ok else "[red]FAIL[/]"
            table.add_row(
                *(common if i == 0 else ["", ""]), f"{p.check} {p.inputs}", str(p.samples),
                f"{p.max_abs:.1e}", f"{p.rel_l2:.1e}", f"{p.tolerance:g}/{p.atol:g}", mark,
            )
    return Fit(table)
