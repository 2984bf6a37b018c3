"""`edgeseg train segmenter|classifier|evaluate`: train the two models, or score a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import typer
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import (
    DATA_DIR,
    MODELS_DIR,
    RUNS_DIR,
    Command,
    DataOption,
    Group,
    JsonOption,
    LimitOption,
    QuietOption,
    SeedOption,
    ThreadsOption,
    VerboseOption,
    cli_errors,
    number,
    out,
    print_json,
)
from edgeseg.lazy import require

app = typer.Typer(
    help=(
        "Train the classifier gate or the ResUNet segmenter on a Severstal-layout folder. A run folder gets "
        "<task>.pt (the best epoch, for `edgeseg export -c`), <task>.last.pt (for --resume) and metrics.json."
    ),
    cls=Group,
    no_args_is_help=True,
)

EpochsOption = Annotated[int, typer.Option("--epochs", min=1, help="Epochs in total (with --resume: train on up to this many).")]
BatchOption = Annotated[int, typer.Option("--batch", "--batch-size", min=1, help="Images (or crops) per step.")]
LrOption = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine decay).")]
WidthOption = Annotated[int, typer.Option("--base-width", min=1, help="Channels of the first stage (doubles per level).")]
InputOption = Annotated[Optional[str], typer.Option("--input-size", help="Model input HxW, e.g. 128x800 (default: the model's).")]
ValOption = Annotated[float, typer.Option("--val-fraction", help="Share of images held out for validation.")]
ValEveryOption = Annotated[int, typer.Option("--val-every", min=1, help="Validate every N epochs (and always after the last).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its <task>.last.pt (same options).")]
RunOutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<task>).")]

# Metric rows of the training and evaluation tables: (key, label), in reading order.
SEGMENTER_ROWS = (
    ("mean_dice", "Kaggle mean Dice (an empty mask predicted empty scores 1)"),
    ("dice_where_defect", "Dice where a defect exists"),
    ("empty_predicted_empty", "defect-free (image, class) pairs predicted empty"),
    ("mean_dice_untuned", "Kaggle mean Dice at p=0.5, no min-area"),
    ("dice_per_class", "Kaggle Dice per class"),
)
CLASSIFIER_ROWS = (
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall (defective strips the gate passes)"),
    ("f1", "F1"),
    ("roc_auc", "ROC AUC"),
)


def _size(text: Optional[str], what: str) -> Optional[Tuple[int, int]]:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{what} must look like HxW (e.g. 128x384), got {text!r}") from None
    return height, width


def metrics_table(title: str, task: str, metrics: Dict[str, Any], column: str) -> Any:
    """One table for training and evaluation alike: the Kaggle mean beside the Dice where a
    defect exists (the mean alone flatters: defect-free pairs score 1), thresholds as text (Fit)."""
    from edgeseg.edge.tables import Fit

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column(column, justify="right")
    for key, label in SEGMENTER_ROWS if task == "segmenter" else CLASSIFIER_ROWS:
        if key not in metrics:
            continue
        value = metrics[key]
        table.add_row(label, " ".join(number(v, 3) for v in value) if isinstance(value, list) else number(value))
    thresholds = metrics.get("thresholds") or {}
    if "probability" in thresholds:
        table.add_row("probability threshold per class", " ".join(number(v, 2) for v in thresholds["probability"]))
        table.add_row("min-area per class (px at model input)", " ".join(str(v) for v in thresholds["min_area"]))
    elif "defect" in thresholds or "threshold" in metrics:
        table.add_row("defect threshold", number(thresholds.get("defect", metrics.get("threshold")), 3))
    if "images" in metrics:
        table.add_row("images", str(metrics["images"]))
    return Fit(table)


def _run(config: Any, resume: bool, threads: int, json_output: bool) -> None:
    from edgeseg.training.loop import train

    result = train(config, resume=resume, threads=threads or None, show_progress=not json_output)
    summary = {"out": str(result.out), "checkpoint": str(result.checkpoint), "best_epoch": result.best_epoch,
               "best": result.best_metrics, "skipped": len(result.skipped), "seconds": round(result.seconds, 1)}
    if json_output:
        print_json(summary)
        return
    out.print(metrics_table(f"{config.task}: best epoch {result.best_epoch} -> {result.checkpoint}", config.task, result.best_metrics, "validation"))
    out.print(f"{len(result.skipped)} skipped row(s)/image(s); {result.seconds:.0f} s; metrics in {result.out / 'metrics.json'}")
    out.print(f"next: {export_hint(result.checkpoint)}", highlight=False, soft_wrap=True)


def export_hint(checkpoint: Path) -> str:
    """The command that exports a run's checkpoint (printed after training; a test runs it)."""
    return f"edgeseg export -c {checkpoint} --out {MODELS_DIR}"


@app.command("segmenter", cls=Command)
@cli_errors
def segmenter(
    data: DataOption = DATA_DIR,
    out_dir: RunOutOption = None,
    epochs: EpochsOption = 20,
    batch_size: BatchOption = 8,
    lr: LrOption = 2e-3,
    base_width: WidthOption = 16,
    input_size: InputOption = None,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Train on random HxW windows of the model frame (multiples of 16), e.g. 128x384; validation uses whole frames.")] = None,
    defect_crop: Annotated[float, typer.Option("--defect-crop", help="Share of crops centred near a defect pixel.")] = 0.5,
    loss: Annotated[Literal["bce-dice", "focal-tversky"], typer.Option("--loss", help="Segmentation loss.")] = "bce-dice",
    val_fraction: ValOption = 0.15,
    val_every: ValEveryOption = 1,
    seed: SeedOption = 0,
    resume: ResumeOption = False,
    threads: ThreadsOption = 0,
    limit: LimitOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train the ResUNet (one mask per defect class); best epoch by mean Kaggle Dice on validation.

    Per-class probability and min-area thresholds are chosen on the validation split and stored in
    the checkpoint. Example: `edgeseg train segmenter --data data/train --base-width 8 --crop 128x384`
    (writes runs/segmenter/segmenter.pt).
    """
    require("torch", "training")  # one line of install advice on a runtime-only install
    from edgeseg.training.loop import TrainConfig

    config = TrainConfig(
        task="segmenter", data=str(data), out=str(out_dir or RUNS_DIR / "segmenter"), epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, loss=loss, model={"base_width": base_width},
        input_size=_size(input_size, "--input-size"), crop=_size(crop, "--crop"), defect_crop=defect_crop,
        val_every=val_every, limit=limit,
    )
    _run(config, resume, threads, json_output)


@app.command("classifier", cls=Command)
@cli_errors
def classifier(
    data: DataOption = DATA_DIR,
    out_dir: RunOutOption = None,
    epochs: EpochsOption = 20,
    batch_size: BatchOption = 16,
    lr: LrOption = 2e-3,
    base_width: WidthOption = 16,
    input_size: InputOption = None,
    val_fraction: ValOption = 0.15,
    val_every: ValEveryOption = 1,
    seed: SeedOption = 0,
    resume: ResumeOption = False,
    threads: ThreadsOption = 0,
    limit: LimitOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train the defect / no-defect gate at its own (smaller) input; best epoch by validation accuracy.

    The defect-probability threshold with the best validation accuracy is stored in the checkpoint.
    Example: `edgeseg train classifier --data data/train --base-width 8 --input-size 64x400`
    (writes runs/classifier/classifier.pt).
    """
    require("torch", "training")  # one line of install advice on a runtime-only install
    from edgeseg.training.loop import TrainConfig

    config = TrainConfig(
        task="classifier", data=str(data), out=str(out_dir or RUNS_DIR / "classifier"), epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, model={"base_width": base_width},
        input_size=_size(input_size, "--input-size"), val_every=val_every, limit=limit,
    )
    _run(config, resume, threads, json_output)


@app.command("evaluate", cls=Command)
@cli_errors
def evaluate(
    checkpoints: Annotated[List[Path], typer.Argument(help="One or more checkpoints written by `edgeseg train` (runs/<task>/<task>.pt).")],
    data: DataOption,
    threads: ThreadsOption = 0,
    limit: LimitOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Score checkpoints with their own thresholds on a whole folder, e.g. a held-out synthetic set.

    Segmenter: Kaggle mean Dice, Dice where a defect exists and per class, at model resolution;
    classifier: accuracy, precision, recall, F1 at its threshold, and ROC AUC. --json prints
    {checkpoint path as given: metrics}.
    """
    require("torch", "evaluating checkpoints")
    from edgeseg.training.loop import evaluate as run_evaluate

    if len({str(path) for path in checkpoints}) != len(checkpoints):
        raise typer.BadParameter("the same checkpoint is given twice")
    results = {str(path): run_evaluate(path, data, threads=threads or None, limit=limit, show_progress=not json_output) for path in checkpoints}
    if json_output:
        print_json(results)
        return
    for name, metrics in results.items():
        out.print(metrics_table(f"{name} on {data} ({metrics['images']} images)", metrics["task"], metrics, "value"))
