"""`edgeseg calibrate`: calibration set -> INT8 QDQ models -> accuracy against FP32, with a budget.

A thin shell over edgeseg.steps.calibrate: build (or reuse) the calibration set, quantise each
model in each flavour, and with --validation compare every precision and fail on a missed budget.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Literal, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from edgeseg.commands.common import (
    FLAVOURS,
    METHODS,
    MODELS_DIR,
    JsonOption,
    OutDirOption,
    QuietOption,
    SeedOption,
    VerboseOption,
    cli_errors,
    metavar,
    number,
    one_of,
    out,
    print_json,
    progress_steps,
)
from edgeseg.edge.tables import Fit


@cli_errors
def calibrate(
    source: Annotated[
        Path,
        typer.Argument(
            help="Image folder, Severstal folder (train.csv + train_images/) or its train.csv, a video, "
            "or an existing calibration .npz to reuse."
        ),
    ],
    models: Annotated[
        Optional[List[Path]],
        typer.Option("--model", "-m", help="FP32 ONNX (with its card) to quantise; repeat for classifier and segmenter."),
    ] = None,
    out_dir: OutDirOption = MODELS_DIR,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Frames in the calibration set (a warning under 100).")] = 512,
    flavours: Annotated[
        Optional[List[str]],
        typer.Option(
            "--flavour", metavar=metavar(FLAVOURS), callback=one_of(FLAVOURS),
            help="INT8 form: 'trt' (TensorRT, symmetric) and/or 'cpu' (ONNX Runtime x86, U8S8); repeat for both. Default: both.",
        ),
    ] = None,
    method: Annotated[Literal[METHODS], typer.Option("--method", help="Activation ranges (percentile: 99.999).")] = "minmax",  # type: ignore[valid-type]
    exclude: Annotated[
        Optional[List[str]], typer.Option("--exclude", help="ONNX node name to keep in float (repeat); see the layers a budget miss names.")
    ] = None,
    validation: Annotated[
        Optional[Path],
        typer.Option("--validation", help="Severstal-layout folder (not the calibration data): compare FP32, FP16 and INT8 on it."),
    ] = None,
    validation_count: Annotated[
        Optional[int], typer.Option("--validation-count", min=1, help="Use this many validation strips (seeded choice); default all.")
    ] = None,
    max_dice_drop: Annotated[
        Optional[float], typer.Option("--max-dice-drop", help="Fail (exit 1, INT8 model removed) if segmenter mean Dice drops more than this.")
    ] = None,
    max_recall_drop: Annotated[
        Optional[float], typer.Option("--max-recall-drop", help="Fail (exit 1, INT8 model removed) if classifier recall drops more than this.")
    ] = None,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Build a calibration set and the INT8 (QDQ ONNX) models made from it.

    The set holds --count frames through the models' own preprocessing (a Severstal folder is
    stratified: clean and defective strips, every class), stored as OUT/calibration.npz; its
    sha256 goes into every INT8 model card. Each --model gives OUT/<name>.int8.trt.qdq.onnx (for
    `edgeseg build-engine --precision int8`) and OUT/<name>.int8.cpu.qdq.onnx (ONNX Runtime).
    With --validation, FP32, FP16 and each INT8 flavour are scored on it through ONNX Runtime, and
    through OpenVINO too when it is installed ("openvino ..." rows; classifier accuracy/recall,
    segmenter Dice per class, cascade gate recall) into OUT/accuracy.json;
    --max-dice-drop / --max-recall-drop turn that into a gate that names the layers to --exclude.

    Examples:

      edgeseg calibrate data/train -m models/classifier.onnx -m models/segmenter.onnx

      edgeseg calibrate models/calibration.npz -m models/segmenter.onnx --flavour trt --validation data/test --max-dice-drop 0.01
    """
    from edgeseg.steps import REPORT_NAME, BudgetMissed
    from edgeseg.steps import calibrate as calibrate_models

    try:
        done = calibrate_models(
            source, models or [], out_dir, count=count, flavours=flavours, method=method, exclude=exclude or [], validation=validation,
            validation_count=validation_count, max_dice_drop=max_dice_drop, max_recall_drop=max_recall_drop, seed=seed,
            progress=progress_steps(json_output),
        )
    except BudgetMissed as missed:
        print_calibrated(missed.result, out_dir / REPORT_NAME, json_output)
        raise
    print_calibrated(done, out_dir / REPORT_NAME, json_output)
    command = None if json_output else build_hint(done.models)
    if command:
        out.print(f"next: {command}", highlight=False, soft_wrap=True)


def build_hint(results: List[Any]) -> Optional[str]:
    """`edgeseg build-engine` over the INT8 models made for this machine's backend (None when
    its flavour was not made); printed after calibrating, a test runs it."""
    import shlex

    from edgeseg.edge.registry import BACKEND_FLAVOURS, auto_backend

    backend = auto_backend(build=True)
    made = [shlex.quote(str(r.path)) for r in results if r.flavour == BACKEND_FLAVOURS[backend][0]]
    return " ".join(["edgeseg build-engine", *made, "--backend", backend]) if made else None


def print_calibrated(done: Any, report_path: Path, json_output: bool = False) -> None:
    """The tables of `edgeseg calibrate`, or its JSON (deploy prints them too)."""
    if json_output:
        print_json(done.to_dict())
        return
    if done.models:
        out.print(models_table(done.models))
    if done.accuracy is not None:
        out.print(accuracy_table(done.accuracy))
        out.print(f"accuracy report: {report_path}")


def models_table(results: List[Any]) -> Any:
    """The INT8 models written, for people (Fit: folded under the model where narrow)."""
    table = Table(title="INT8 QDQ models")
    for column in ("model", "flavour", "method", "quantised ops", "rel. L2 vs FP32 (1st batch)", "seconds"):
        table.add_column(column)
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r.quantized.items()))
        table.add_row(str(r.path), r.flavour, r.method, ops, f"{r.first_batch_rel_l2:.4f}", f"{r.seconds:.1f}")
    return Fit(table)


def accuracy_table(report: Any) -> Any:
    """FP32, FP16 and INT8 scored on the validation strips, for people (Fit: folded under the precision where narrow)."""
    from edgeseg.calibration.accuracy import REFERENCE

    table = Table(title=f"accuracy on {report.images} validation strips ({report.defective} defective), ONNX Runtime CPU (openvino rows: OpenVINO CPU)")
    columns = ["precision", "cls accuracy", "cls recall", "seg mean Dice", "Dice per class", "vs FP32 masks", "gate recall", "cascade Dice"]
    for column in columns:
        table.add_column(column)
    for label, row in report.rows.items():
        cls, seg, cas = row.get("classifier", {}), row.get("segmenter", {}), row.get("cascade", {})
        dice_drop = report.delta(label, "segmenter", "mean_dice") if label != REFERENCE else None
        table.add_row(
            label,
            _num(cls.get("accuracy")),
            _num(cls.get("recall"), report.delta(label, "classifier", "recall") if label != REFERENCE else None),
            _num(seg.get("mean_dice"), dice_drop),
            " ".join(f"{v:.3f}" for v in seg.get("dice_per_class", {}).values()),
            _num(seg.get("mask_agreement")),
            _num(cas.get("gate_recall")),
            _num(cas.get("mean_dice")),
        )
    for label, reason in report.unavailable.items():
        table.add_row(label, f"[dim]unavailable: {reason}[/]", *[""] * (len(columns) - 2))
    return Fit(table)


def _num(value: Optional[float], drop: Optional[float] = None) -> str:
    if value is None:
        return ""
    if drop is None:
        return number(value)
    change = number(-drop)
    return f"{number(value)} ({change if change.startswith('-') else '+' + change})"
