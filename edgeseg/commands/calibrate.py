"""`edgeseg calibrate`: calibration set -> INT8 QDQ models -> accuracy against FP32, with a budget.

A thin shell over edgeseg.calibration: build (or reuse) the calibration set, quantise each model
in each flavour, and with --validation compare every precision and fail on a missed budget.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import typer
from rich.markup import escape
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
    err,
    metavar,
    number,
    one_of,
    out,
    print_json,
    progress_bar,
)
from edgeseg.errors import EdgesegError

CALIBRATION_NAME = "calibration.npz"
REPORT_NAME = "accuracy.json"


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
    from edgeseg.calibration.qdq import FLAVOURS, check_flavour, check_method

    chosen = list(dict.fromkeys(flavours or FLAVOURS))
    for flavour in chosen:
        check_flavour(flavour)
    check_method(method)
    models = list(models or [])
    if (max_dice_drop is not None or max_recall_drop is not None) and validation is None:
        raise typer.BadParameter("--max-dice-drop / --max-recall-drop need --validation")
    if validation is not None and not models:
        raise typer.BadParameter("--validation compares models: give them with --model")
    if validation is not None and validation.resolve() == source.resolve():
        err.print("[yellow]note:[/] --validation is the calibration data itself: the accuracy figures will be optimistic", highlight=False)
    cards = _cards(models)
    calibration = _calibration_set(source, out_dir, cards, count, seed, json_output)
    results = _quantise(models, calibration, chosen, method, list(exclude or []), out_dir, json_output)
    summary: Dict[str, Any] = {"calibration": calibration.describe(), "models": [r.to_dict() for r in results]}
    if not json_output:
        _print_models(results)
    if validation is not None:
        summary["accuracy"], misses = _accuracy(
            models, results, calibration, out_dir, validation, validation_count, seed, max_dice_drop, max_recall_drop, json_output
        )
        if misses:
            if json_output:
                print_json(summary)
            raise EdgesegError(
                f"INT8 accuracy budget missed ({len(misses)}): " + " | ".join(m.describe() for m in misses),
                hint="the failing INT8 models were removed; --exclude the layers named, try --method entropy/percentile, or relax the budget",
            )
    if json_output:
        print_json(summary)


def _cards(models: List[Path]) -> Dict[Path, Any]:
    from edgeseg.edge.card import read_card

    cards = {}
    for model in models:
        if not model.is_file():
            raise EdgesegError(f"model {model} not found", hint="pass an FP32 ONNX exported by `edgeseg export`")
        card = read_card(model)
        if card.artifact.precision != "fp32":
            raise EdgesegError(f"{model} is {card.artifact.precision}; INT8 is made from the FP32 model", hint="pass the FP32 ONNX")
        cards[model] = card
    return cards


def _calibration_set(source: Path, out_dir: Path, cards: Dict[Path, Any], count: int, seed: int, quiet: bool) -> Any:
    from edgeseg.calibration.calibration_set import load_calibration_set, source_kind, source_to_calibration_set

    if source.suffix.lower() == ".npz":
        calibration = load_calibration_set(source)
    else:
        # Frames are stored at the largest model's geometry; smaller models resize from it.
        geometry = max((c.preprocess for c in cards.values()), key=lambda p: p.height * p.width, default=None)
        with progress_bar(quiet) as progress:
            task = progress.add_task(f"reading {source_kind(source)} {source.name}", total=count)
            calibration = source_to_calibration_set(
                source, out_dir / CALIBRATION_NAME, geometry, count, seed, progress=lambda n: progress.advance(task, n)
            )
    notes = list(calibration.notes)
    height, width = calibration.frames.shape[1:]
    for model, card in cards.items():
        spec = card.preprocess
        if spec.geometry == "resize" and spec.height * spec.width > height * width:
            notes.append(f"calibration frames are {height}x{width}, smaller than {model.name}'s {spec.height}x{spec.width} input: they are upscaled")
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if not quiet:
        described = calibration.describe()
        err.print(
            f"calibration set {calibration.path}: {len(calibration)} frames of {described['frame_size'][0]}x{described['frame_size'][1]}, "
            f"{described['megabytes']} MB, sha256 {calibration.sha256[:16]}…",
            highlight=False,
        )
    return calibration


def _quantise(
    models: List[Path], calibration: Any, flavours: List[str], method: str, exclude: List[str], out_dir: Path, quiet: bool
) -> List[Any]:
    """Each model in each flavour. With minmax, the cpu flavour goes first and leaves the activation
    ranges in a cache that the trt flavour reuses: one calibration pass per model."""
    import tempfile

    from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path
    from edgeseg.edge.card import read_card

    order = sorted(flavours, key=lambda f: f != "cpu")
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-ranges-") as scratch:
        for index, model in enumerate(models):
            batches = calibration.batch_count(1, read_card(model).preprocess)
            cache = Path(scratch) / f"{index}.json" if method == "minmax" else None
            for flavour in order:
                reused = cache is not None and cache.is_file()
                label = f"INT8 {flavour} {model.name} ({method}{', ranges reused' if reused else ''})"
                with progress_bar(quiet) as progress:
                    task = progress.add_task(label, total=None if reused else batches)
                    results.append(
                        onnx_to_qdq(
                            model, calibration, out_dir / qdq_path(model, flavour).name, flavour=flavour, method=method,
                            exclude=exclude, ranges_cache=cache, progress=lambda n: progress.advance(task, n),
                        )
                    )
    return sorted(results, key=lambda r: (str(r.path.parent), r.path.name.split(".")[0], flavours.index(r.flavour)))


def _print_models(results: List[Any]) -> None:
    if not results:
        return
    table = Table(title="INT8 QDQ models")
    for column in ("model", "flavour", "method", "quantised ops", "rel. L2 vs FP32 (1st batch)", "seconds"):
        table.add_column(column)
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r.quantized.items()))
        table.add_row(str(r.path), r.flavour, r.method, ops, f"{r.first_batch_rel_l2:.4f}", f"{r.seconds:.1f}")
    out.print(table)


def _accuracy(
    models: List[Path],
    results: List[Any],
    calibration: Any,
    out_dir: Path,
    validation: Path,
    validation_count: Optional[int],
    seed: int,
    max_dice_drop: Optional[float],
    max_recall_drop: Optional[float],
    quiet: bool,
) -> Any:
    from edgeseg.calibration.accuracy import OPENVINO, REFERENCE, accuracy_report, blame_layers, check_budget, load_validation
    from edgeseg.edge.card import card_path, read_card
    from edgeseg.files import write_json
    from edgeseg.lazy import available

    variants: Dict[str, Dict[str, Path]] = {REFERENCE: {read_card(m).task: m for m in models}}
    unavailable: Dict[str, str] = {}
    try:
        variants["fp16"] = {task: _fp16(path, out_dir) for task, path in variants[REFERENCE].items()}
    except (ImportError, EdgesegError) as exc:
        unavailable["fp16"] = str(exc)
    for r in results:
        variants.setdefault(f"int8-{r.flavour}", {})[read_card(r.path).task] = r.path
    if available("openvino"):  # the same files through the other CPU runtime
        for label in [label for label in variants if label != "fp16"]:
            variants[f"{OPENVINO}{label}"] = variants[label]
    data = load_validation(validation, validation_count, seed)
    total = len(data) * sum(len(v) for v in variants.values())
    with progress_bar(quiet) as progress:
        task = progress.add_task(f"scoring {len(variants)} precisions on {len(data)} strips", total=total)
        report = accuracy_report(variants, data, unavailable, progress=lambda n: progress.advance(task, n))
    int8 = [label for label in variants if "int8-" in label]
    misses = check_budget(report, int8, max_dice_drop, max_recall_drop)
    for miss in misses:
        reference = variants[REFERENCE][miss.task]
        spec = read_card(reference).preprocess
        few = [batch for batch, _ in zip(calibration.batches(1, spec), range(4))]
        miss.layers = blame_layers(reference, variants[miss.variant][miss.task], few)
    removed = sorted({variants[m.variant][m.task] for m in misses})
    for path in removed:
        path.unlink(missing_ok=True)
        card_path(path).unlink(missing_ok=True)
    summary = report.to_dict()
    summary["removed"] = [str(p) for p in removed]
    write_json(out_dir / REPORT_NAME, summary)
    if not quiet:
        _print_accuracy(report)
        out.print(f"accuracy report: {out_dir / REPORT_NAME}")
    return summary, misses


def _fp16(path: Path, out_dir: Path) -> Path:
    from edgeseg.edge.artifacts import fp16_path
    from edgeseg.export.fp16 import onnx_to_fp16

    return Path(onnx_to_fp16(path, out_dir / fp16_path(path).name).onnx)


def _print_accuracy(report: Any) -> None:
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
    out.print(table)


def _num(value: Optional[float], drop: Optional[float] = None) -> str:
    if value is None:
        return ""
    if drop is None:
        return number(value)
    change = number(-drop)
    return f"{number(value)} ({change if change.startswith('-') else '+' + change})"
