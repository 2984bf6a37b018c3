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
from edgeseg.edge.registry import LOCAL_BACKENDS
from edgeseg.edge.tables import Fit
from edgeseg.steps import DEFAULT_MAX_FLOAT_LAYERS

MAX_DICE_DROP_HELP = (
    "Budget per class: fail (exit 1, INT8 not written) if any class's Dice of the whole cascade (gate included; "
    "a segmenter alone: its own) drops more than this below FP32's."
)
MAX_GATE_DISAGREEMENT_HELP = (
    "Gate budget: fail (exit 1, INT8 not written) if more than this share of validation strips get the opposite "
    "defect/clean decision from FP32's (0.02: 2 in 100; bounds classifier recall and precision changes alike)."
)
MAX_FLOAT_LAYERS_HELP = (
    "When INT8 misses a budget, keep up to this many of the layers adding the most error in float (fewest first), "
    "rebuild and rescore; 0: no search."
)


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
    max_dice_drop: Annotated[Optional[float], typer.Option("--max-dice-drop", help=MAX_DICE_DROP_HELP)] = None,
    max_gate_disagreement: Annotated[Optional[float], typer.Option("--max-gate-disagreement", help=MAX_GATE_DISAGREEMENT_HELP)] = None,
    max_float_layers: Annotated[int, typer.Option("--max-float-layers", min=0, help=MAX_FLOAT_LAYERS_HELP)] = DEFAULT_MAX_FLOAT_LAYERS,
    backend: Annotated[
        Optional[Literal[LOCAL_BACKENDS]],  # type: ignore[valid-type]
        typer.Option("--backend", "-b", help="Also build each INT8 model for this backend (build-engine's artifact, in OUT); --validation then scores those on it."),
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
    through OpenVINO too when it is installed ("openvino ..." rows), as a cascade: the Dice of each
    class through the gate, gate decisions flipped against FP32, classifier recall and precision,
    and the ungated segmenter's Dice as a diagnostic, into OUT/accuracy.json. With --backend, the
    artifacts built for it are scored instead (what ships). --max-dice-drop (per class) and
    --max-gate-disagreement turn that into a gate: a flavour that misses it keeps its most
    sensitive layers in float (at most --max-float-layers), and is not written if still beyond.

    Examples:

      edgeseg calibrate data/train -m models/classifier.onnx -m models/segmenter.onnx

      edgeseg calibrate models/calibration.npz -m models/segmenter.onnx --flavour trt --validation data/test --max-dice-drop 0.01

      edgeseg calibrate data/train -m models/classifier.onnx -m models/segmenter.onnx --flavour cpu --backend openvino --validation data/val --max-dice-drop 0.01 --max-gate-disagreement 0
    """
    from edgeseg.steps import REPORT_NAME, BudgetMissed
    from edgeseg.steps import calibrate as calibrate_models

    try:
        done = calibrate_models(
            source, models or [], out_dir, count=count, flavours=flavours, method=method, exclude=exclude or [], validation=validation,
            validation_count=validation_count, max_dice_drop=max_dice_drop, max_gate_disagreement=max_gate_disagreement,
            max_float_layers=max_float_layers, backend=backend, seed=seed, progress=progress_steps(json_output),
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
        for search in done.accuracy.searches:
            out.print(float_search_table(search))
        out.print(f"accuracy report: {report_path}")


def models_table(results: List[Any]) -> Any:
    """The INT8 models written, for people (Fit: folded under the model where narrow)."""
    table = Table(title="INT8 QDQ models")
    for column in ("model", "flavour", "method", "quantised ops", "float layers", "rel. L2 vs FP32 (1st batch)", "seconds"):
        table.add_column(column)
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r.quantized.items()))
        table.add_row(str(r.path), r.flavour, r.method, ops, str(len(r.excluded)), f"{r.first_batch_rel_l2:.4f}", f"{r.seconds:.1f}")
    return Fit(table)


def accuracy_table(report: Any) -> Any:
    """FP32 and the other precisions scored as a cascade on the validation strips, for people
    (Fit: folded under the precision where narrow). Changes against FP32 in brackets."""
    from edgeseg.calibration.accuracy import REFERENCE

    table = Table(title=f"accuracy on {report.images} validation strips ({report.defective} defective); rows: backend and precision (no backend: ONNX Runtime CPU)")
    columns = ["precision", "cascade Dice per class", "cascade Dice", "gate flips", "cls recall", "cls precision", "seg Dice (ungated)", "vs FP32 masks"]
    for column in columns:
        table.add_column(column)
    for label, row in report.rows.items():
        cls, seg, cas = row.get("classifier", {}), row.get("segmenter", {}), row.get("cascade", {})
        other = label != REFERENCE
        drops = report.class_drops(label) if other else {}
        per_class = cas.get("dice_per_class") or seg.get("dice_per_class") or {}
        flips = cls.get("decision_flips")
        table.add_row(
            label,
            " ".join(_num(v, drops.get(name)) for name, v in per_class.items()),
            _num(cas.get("mean_dice"), report.delta(label, "cascade", "mean_dice") if other else None),
            f"{flips} ({1 - cls['decision_agreement']:.1%})" if flips is not None else "",
            _num(cls.get("recall"), report.delta(label, "classifier", "recall") if other else None),
            _num(cls.get("precision"), report.delta(label, "classifier", "precision") if other else None),
            _num(seg.get("mean_dice"), report.delta(label, "segmenter", "mean_dice") if other else None),
            _num(seg.get("mask_agreement")),
        )
    for label, reason in report.unavailable.items():
        table.add_row(label, f"[dim]unavailable: {reason}[/]", *[""] * (len(columns) - 2))
    return Fit(table)


def float_search_table(search: Any, top: int = 8) -> Any:
    """The accuracy-aware search of one INT8 variant: the layers ranked by the error they add,
    which were kept in float, and each try."""
    chosen = {(task, node) for task, nodes in search.float_layers.items() for node in nodes}
    verdict = "within the budget" if search.within_budget else "still beyond the budget (best try shown)"
    tries = ", ".join(f"{a.float_layers} float: {'pass' if not a.misses else 'miss'}" for a in search.attempts)
    table = Table(title=f"{search.variant}: {len(chosen)} layer(s) kept in float, {verdict}; tries: {tries}")
    for column in ("layer (most error added first)", "model", "op", "added rel. L2", "rel. L2", "kept float"):
        table.add_column(column)
    for e in search.sensitivity[:top]:
        table.add_row(e.node, e.task, e.op_type, f"{e.added_error:.4f}", f"{e.relative_error:.4f}", "yes" if (e.task, e.node) in chosen else "")
    return Fit(table)


def _num(value: Optional[float], drop: Optional[float] = None) -> str:
    if value is None:
        return ""
    if drop is None:
        return number(value)
    change = number(-drop)
    return f"{number(value)} ({change if change.startswith('-') else '+' + change})"
