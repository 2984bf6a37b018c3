"""`edgeseg export`: trained model -> ONNX + model card (+ FP16 variant), with parity numbers.

A thin shell over edgeseg.export (torch_to_onnx, factory_to_onnx, adopt_onnx, onnx_to_fp16);
heavy imports happen inside the command so `edgeseg --help` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import typer
from typing_extensions import Annotated

from edgeseg.commands.common import (
    MODELS_DIR,
    VERBOSITY,
    Geometry,
    JsonOption,
    OutDirOption,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    err,
    out,
    print_json,
    status,
)
from edgeseg.errors import EdgesegError
from edgeseg.lazy import require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PARITY_IMAGES = 8
TRT_MAX_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5 / 6.0)


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
    height: Annotated[Optional[int], typer.Option("--height", min=1, help="Model input height (checkpoint: override its size).")] = None,
    width: Annotated[Optional[int], typer.Option("--width", min=1, help="Model input width (checkpoint: override its size).")] = None,
    mean: Annotated[float, typer.Option("--mean", help="Contract: x = (pixel/255 - mean) / std.")] = 0.0,
    std: Annotated[float, typer.Option("--std", help="Contract: x = (pixel/255 - mean) / std.")] = 1.0,
    geometry: Annotated[Geometry, typer.Option("--geometry", help="Contract: 'resize' the frame to the input, or cut it in 'tile's.")] = "resize",
    classes: Annotated[
        Optional[str],
        typer.Option("--classes", help="Comma-separated class names, one per output map (-c: renames the segmenter's classes in its card)."),
    ] = None,
    activation: Annotated[
        Literal["sigmoid", "none"], typer.Option("--activation", help="Contract: 'sigmoid' for logits, 'none' if it outputs probabilities.")
    ] = "sigmoid",
    input_name: Annotated[Optional[str], typer.Option("--input-name", help="--onnx: the image input (if it has several).")] = None,
    output_name: Annotated[Optional[str], typer.Option("--output-name", help="--onnx: the output to use (if it has several).")] = None,
    layout: Annotated[Literal["NCHW", "NHWC"], typer.Option("--layout", help="--onnx: input layout (a Transpose is put in front of NHWC).")] = "NCHW",
    card: Annotated[Optional[Path], typer.Option("--card", help="--onnx/--factory: take the contract from this existing model card JSON.")] = None,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> List[Any]:
    """Export models to ONNX (opset 17, dynamic batch, input [bold]image[/], output [bold]logits[/]) with a model card,
    after checking the ONNX against PyTorch on synthetic strips and random frames (fails above 1e-4 relative L2).

    Examples:

      edgeseg export -c runs/classifier/classifier.pt -c runs/segmenter/segmenter.pt --fp16

      edgeseg export -c runs/segmenter/segmenter.pt --classes pits,crack,scratch,patch

      edgeseg export --onnx their.onnx --task segmenter --height 256 --width 1600 --classes 1,2,3,4 --out models

      edgeseg export --factory mynets:build --weights w.pt --task classifier --height 128 --width 800 --out models
    """
    from edgeseg.files import ensure_writable_dir

    sources = sum(bool(s) for s in (checkpoint, onnx, factory))
    if sources != 1:
        raise typer.BadParameter("give --checkpoint (once or twice), or --onnx, or --factory")
    if name and checkpoint and len(checkpoint) > 1:
        raise typer.BadParameter("--name applies to one model; export several checkpoints without it")
    if opset > TRT_MAX_OPSET:
        err.print(f"[yellow]warning:[/] opset {opset} is above {TRT_MAX_OPSET}: TensorRT 8.5/8.6 (JetPack 5 / 6.0) cannot parse it")
    parity_images = _images(images) if images else []
    if (height is None) != (width is None):
        raise typer.BadParameter("give both --height and --width, or neither")
    size = (height, width) if height and width else None
    folder = ensure_writable_dir(out_dir)

    reports = []
    if checkpoint:
        require("torch", "exporting checkpoints", extra="export")
        require("onnx", "exporting checkpoints")
        from edgeseg.export.torch_onnx import torch_to_onnx

        declared = [_checkpoint_task(path) for path in checkpoint]
        tasks = [task for task, _ in declared]
        if len(set(tasks)) != len(tasks):
            raise EdgesegError(f"two {tasks[0]} checkpoints would write the same {tasks[0]}.onnx", hint="export them in separate calls with --name")
        names = _names(classes)
        if names is not None:
            if "segmenter" not in tasks:
                raise typer.BadParameter("--classes names the segmenter's output maps; the classifier has one ('defect')")
            current = declared[tasks.index("segmenter")][1]
            if len(names) != len(current):
                raise typer.BadParameter(f"the segmenter has {len(current)} output maps ({','.join(current)}); --classes gives {len(names)} names")
        for path, kind in zip(checkpoint, tasks):
            target = folder / f"{name or kind}.onnx"
            with status(f"exporting {path} -> {target}"):
                reports.append(
                    torch_to_onnx(path, target, opset=opset, size=size, seed=seed, images=parity_images, classes=names if kind == "segmenter" else None)
                )
    else:
        require("onnx", "checking an ONNX model" if onnx else "exporting your model")  # one line of advice, not a traceback
        contract = _contract_flags(task, size, mean, std, geometry, classes, activation, card)
        kind = contract["task"]
        target = folder / f"{name or kind}.onnx"
        if onnx:
            from edgeseg.export.outside import adopt_onnx

            names = contract.pop("names")
            with status(f"checking {onnx} -> {target}"):
                reports.append(
                    adopt_onnx(
                        onnx, target, **contract, input_name=input_name or names.get("input"),
                        output_name=output_name or names.get("output"), layout=layout, seed=seed, images=parity_images,
                    )
                )
        else:
            require("torch", "exporting your model", extra="export")
            from edgeseg.export.contract import user_contract
            from edgeseg.export.torch_onnx import factory_to_onnx

            contract.pop("names")
            if contract["size"] is None:
                raise typer.BadParameter("--factory needs the input size: --height and --width (or --card)")
            spec = user_contract(contract.pop("task"), contract.pop("size"), **contract)
            with status(f"exporting {factory} -> {target}"):
                reports.append(factory_to_onnx(str(factory), weights, target, spec, opset=opset, seed=seed, images=parity_images))
    exported = [r.onnx for r in reports]
    if fp16:
        from edgeseg.export.fp16 import onnx_to_fp16

        for report in list(reports):
            with status(f"converting {report.onnx} to FP16"):
                reports.append(onnx_to_fp16(report.onnx, seed=seed, images=parity_images))

    if json_output:
        print_json([r.to_dict() for r in reports])
    else:
        out.print(export_table(reports))
        out.print(f"wrote {len(reports)} ONNX model(s) with cards to {', '.join(sorted({str(r.onnx.parent) for r in reports}))}")
        if VERBOSITY.depth == 1:  # run by `edgeseg deploy`, the next stage is deploy's
            out.print(f"next: {build_hint(exported, folder)}", highlight=False, soft_wrap=True)
    return reports  # for `edgeseg deploy`, which runs this command as its first stage


def build_hint(models: List[Path], folder: Path) -> str:
    """The command that builds the exported models for this machine (printed after exporting; a test runs it)."""
    import shlex

    return " ".join(["edgeseg build-engine", *(shlex.quote(str(m)) for m in models), "--out", shlex.quote(str(folder))])


def _checkpoint_task(path: Path) -> Tuple[str, List[str]]:
    """The task and class names a checkpoint declares, read before exporting so name clashes
    and a wrong --classes count fail early."""
    from edgeseg.models.checkpoint import read_payload

    if not path.is_file():
        raise EdgesegError(f"checkpoint {path} not found", hint="pass the .pt file written by `edgeseg train`")
    payload = read_payload(path)
    task = payload.get("task") if isinstance(payload, dict) else None
    if task not in ("classifier", "segmenter"):
        raise EdgesegError(f"{path} is not an edgeseg checkpoint (no task)", hint="for your own model use --factory and --weights")
    return str(task), [str(c) for c in payload.get("classes") or []]


def _contract_flags(
    task: Optional[str],
    size: Optional[tuple],
    mean: float,
    std: float,
    geometry: str,
    classes: Optional[str],
    activation: str,
    card: Optional[Path],
) -> Dict[str, Any]:
    """Contract keyword arguments from --card, else from the flags (a flag given with --card wins
    for task, size and classes)."""
    if card is not None:
        from edgeseg.export.contract import contract_from_card

        base, names = contract_from_card(card)
        spec = base.preprocess
        return {
            "task": task or base.task,
            "size": size or (spec.height, spec.width),
            "mean": spec.mean,
            "std": spec.std,
            "geometry": spec.geometry,
            "classes": _names(classes) or base.classes,
            "thresholds": base.thresholds,
            "activation": base.output_activation,
            "names": names,
        }
    if task is None:
        raise typer.BadParameter("--onnx and --factory need --task classifier|segmenter (or --card)")
    return {
        "task": task,
        "size": size,
        "mean": mean,
        "std": std,
        "geometry": geometry,
        "classes": _names(classes),
        "thresholds": None,
        "activation": activation,
        "names": {},
    }


def _names(classes: Optional[str]) -> Optional[List[str]]:
    """--classes as a list (None when not given); empty or repeated names are a usage error."""
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise typer.BadParameter(f"--classes must be distinct, non-empty, comma-separated names, got {classes!r}")
    return names


def _images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise EdgesegError(f"--images {folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise EdgesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return found[:MAX_PARITY_IMAGES]


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
