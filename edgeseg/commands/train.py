"""`edgeseg train segmenter|classifier|evaluate`: train the two models, or score a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import JsonOption, OutDirOption, SeedOption, cli_errors, out, print_json
from edgeseg.errors import EdgesegError

app = typer.Typer(
    help=(
        "Train the ResUNet segmenter or the classifier gate on a Severstal-layout folder. A run folder gets "
        "best.pt (for `edgeseg export`), last.pt (for --resume) and metrics.json."
    ),
    no_args_is_help=True,
)

DataOption = Annotated[Path, typer.Option("--data", "-d", help="Folder with train.csv and train_images/ (e.g. from `edgeseg data synth`).")]
EpochsOption = Annotated[int, typer.Option("--epochs", help="Epochs in total (with --resume: train on up to this many).")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", help="Images (or crops) per step.")]
LrOption = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine decay).")]
WidthOption = Annotated[int, typer.Option("--base-width", help="Channels of the first stage (doubles per level).")]
InputOption = Annotated[Optional[str], typer.Option("--input-size", help="Model input HxW, e.g. 128x800 (default: the model's).")]
ValOption = Annotated[float, typer.Option("--val-fraction", help="Share of images held out for validation.")]
ValEveryOption = Annotated[int, typer.Option("--val-every", help="Validate every N epochs (and always after the last).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt (same options).")]
ThreadsOption = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: the cores this process may use).")]
LimitOption = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N images (quick experiments).")]


def _size(text: Optional[str], what: str) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EdgesegError(f"{what} must look like HxW (e.g. 128x384), got {text!r}") from None
    return [height, width]


def _run(config, resume: bool, threads: Optional[int], json_output: bool) -> None:
    from edgeseg.train import train

    result = train(config, resume=resume, threads=threads)
    summary = {"out": str(result.out), "best_epoch": result.best_epoch, "best": result.best_metrics,
               "skipped": len(result.skipped), "seconds": round(result.seconds, 1)}
    if json_output:
        print_json(summary)
        return
    table = Table(title=f"best epoch {result.best_epoch} -> {result.out / 'best.pt'}")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    for key, value in result.best_metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, list):
            table.add_row(key, " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value))
        elif key == "thresholds":
            table.add_row(key, str(value))
    out.print(table)
    out.print(f"{len(result.skipped)} skipped row(s)/image(s); {result.seconds:.0f} s; metrics in {result.out / 'metrics.json'}")


@app.command("segmenter")
@cli_errors
def segmenter(
    data: DataOption,
    out_dir: OutDirOption,
    epochs: EpochsOption = 20,
    batch_size: BatchOption = 8,
    lr: LrOption = 2e-3,
    base_width: WidthOption = 16,
    input_size: InputOption = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Train on random HxW windows of the model frame (multiples of 16), e.g. 128x384; validation uses whole frames.")] = None,
    defect_crop: Annotated[float, typer.Option("--defect-crop", help="Share of crops centred near a defect pixel.")] = 0.5,
    loss: Annotated[str, typer.Option("--loss", help="bce-dice or focal-tversky.")] = "bce-dice",
    val_fraction: ValOption = 0.15,
    val_every: ValEveryOption = 1,
    seed: SeedOption = 0,
    resume: ResumeOption = False,
    threads: ThreadsOption = None,
    limit: LimitOption = None,
    json_output: JsonOption = False,
) -> None:
    """Train the ResUNet (one mask per defect class); best epoch by mean Kaggle Dice on validation.

    Per-class probability and min-area thresholds are chosen on the validation split and stored in
    the checkpoint. Example: `edgeseg train segmenter --data data/train --out runs/seg --base-width 8 --crop 128x384`.
    """
    from edgeseg.train import TrainConfig

    config = TrainConfig(
        task="segmenter", data=str(data), out=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, loss=loss, model={"base_width": base_width},
        input_size=_size(input_size, "--input-size"), crop=_size(crop, "--crop"), defect_crop=defect_crop,
        val_every=val_every, limit=limit,
    )
    _run(config, resume, threads, json_output)


@app.command("classifier")
@cli_errors
def classifier(
    data: DataOption,
    out_dir: OutDirOption,
    epochs: EpochsOption = 20,
    batch_size: BatchOption = 16,
    lr: LrOption = 2e-3,
    base_width: WidthOption = 16,
    input_size: InputOption = None,
    val_fraction: ValOption = 0.15,
    val_every: ValEveryOption = 1,
    seed: SeedOption = 0,
    resume: ResumeOption = False,
    threads: ThreadsOption = None,
    limit: LimitOption = None,
    json_output: JsonOption = False,
) -> None:
    """Train the defect / no-defect gate at its own (smaller) input; best epoch by validation accuracy.

    The defect-probability threshold with the best validation accuracy is stored in the checkpoint.
    Example: `edgeseg train classifier --data data/train --out runs/cls --base-width 8 --input-size 64x400`.
    """
    from edgeseg.train import TrainConfig

    config = TrainConfig(
        task="classifier", data=str(data), out=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, model={"base_width": base_width},
        input_size=_size(input_size, "--input-size"), val_every=val_every, limit=limit,
    )
    _run(config, resume, threads, json_output)


@app.command("evaluate")
@cli_errors
def evaluate(
    checkpoints: Annotated[List[Path], typer.Argument(help="One or more .pt files written by `edgeseg train` (best.pt).")],
    data: DataOption,
    threads: ThreadsOption = None,
    limit: LimitOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score checkpoints with their own thresholds on a whole folder, e.g. a held-out synthetic set.

    Segmenter: per-class and mean Kaggle Dice at model resolution; classifier: accuracy, precision,
    recall, F1 at its threshold, and ROC AUC. --json prints {checkpoint file name: metrics}.
    """
    from edgeseg.train import evaluate as run_evaluate

    results = {path.name: run_evaluate(path, data, threads=threads, limit=limit) for path in checkpoints}
    if json_output:
        print_json(results)
        return
    for name, metrics in results.items():
        table = Table(title=f"{name} on {data} ({metrics['images']} images)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            if isinstance(value, float):
                table.add_row(key, f"{value:.4f}")
            elif key == "dice_per_class":
                table.add_row(key, " ".join(f"{v:.3f}" for v in value))
        out.print(table)
