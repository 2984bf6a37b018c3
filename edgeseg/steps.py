"""The deploy steps as plain functions: `export`, `calibrate`, `build` and `deploy`.

Each step is what its command does, without the command line: it takes paths and values, writes
its artifacts (cards beside them), returns a typed result, and raises EdgesegError (UsageError
for arguments that cannot work) with the fix. The commands parse options, call one of these and
print the result; `deploy` chains the other three. Notes a person should see go to the "edgeseg"
logger (info: progress notes, warning: things that may be wrong); long steps report through an
optional `progress` hook, so a caller can draw bars or stay silent.

    import edgeseg
    done = edgeseg.deploy(["runs/classifier/classifier.pt", "runs/segmenter/segmenter.pt"],
                          precision="int8", data="data/train", out_dir="models")
    print(done.run_command)
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

from edgeseg.errors import EdgesegError, UsageError
from edgeseg.files import PathLike
from edgeseg.edge.registry import AUTO, auto_backend
from edgeseg.layout import DATA_DIR, MODELS_DIR

if TYPE_CHECKING:  # the steps import these where they run (torch, onnx and ONNX Runtime load there)
    from edgeseg.calibration.accuracy import AccuracyReport, Budget
    from edgeseg.calibration.calibration_set import CalibrationSet
    from edgeseg.calibration.qdq import QdqResult
    from edgeseg.export.contract import ExportReport
    from edgeseg.export.engine import BuildOptions, BuildResult

log = logging.getLogger("edgeseg")

Advance = Callable[[int], None]
Progress = Callable[[str, Optional[int]], ContextManager[Advance]]
"""progress(description, total) opens the display of one long step (total None: unknown) and
yields the callable that advances it by n."""

TASKS = ("classifier", "segmenter")
TRT_MAX_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5 / 6.0)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PARITY_IMAGES = 8
CALIBRATION_NAME = "calibration.npz"
REPORT_NAME = "accuracy.json"
DEFAULT_MAX_DICE_DROP = 0.02
DEFAULT_MAX_GATE_DISAGREEMENT = 0.02
DEFAULT_MAX_FLOAT_LAYERS = 16  # the accuracy-aware search tries at most this many layers in float


@contextlib.contextmanager
def silent(_description: str, _total: Optional[int]) -> Iterator[Advance]:
    """The default `progress`: no display."""
    yield lambda _n: None


# -- export ---------------------------------------------------------------------------------------
@dataclass
class Exported:
    """What `export` wrote: one report per ONNX (the FP16 variants after the FP32 models); for
    `deploy`, also the ONNX models it took as they are (they came with their cards)."""

    reports: List[ExportReport]
    taken: List[Path] = field(default_factory=list)

    @property
    def onnx(self) -> List[Path]:
        return [Path(report.onnx) for report in self.reports] + self.taken

    def to_dict(self) -> List[Dict[str, Any]]:
        return [report.to_dict() for report in self.reports]


def export(
    checkpoints: Sequence[PathLike] = (),
    out_dir: PathLike = MODELS_DIR,
    *,
    onnx: Optional[PathLike] = None,
    factory: Optional[str] = None,
    weights: Optional[PathLike] = None,
    name: Optional[str] = None,
    fp16: bool = False,
    opset: int = 17,
    images: Optional[PathLike] = None,
    task: Optional[str] = None,
    size: Optional[Tuple[int, int]] = None,
    mean: float = 0.0,
    std: float = 1.0,
    geometry: str = "resize",
    classes: Optional[Sequence[str]] = None,
    activation: str = "sigmoid",
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
    layout: Optional[str] = None,
    channels: Optional[int] = None,
    card: Optional[PathLike] = None,
    seed: int = 0,
    progress: Progress = silent,
) -> Exported:
    """Export to ONNX with a model card, each checked against its source (parity) before it is written.

    Give exactly one source: edgeseg `checkpoints` (classifier and/or segmenter, each to
    <task>.onnx), an `onnx` model from elsewhere, or a torch `factory` ('package.module:function'
    returning the nn.Module, `weights` its state dict). The contract of an outside model (task,
    size (height, width), mean, std, geometry, classes, activation, input layout "NCHW"/"NHWC")
    comes from these arguments or from an existing `card`; the image channels (1 gray or 3 RGB) from
    `channels` for a factory (default 1), from the graph for an ONNX. `classes` renames a checkpoint
    segmenter's classes. `fp16` adds <name>.fp16.onnx of each model; `images` (a folder of strips)
    joins the parity inputs.
    """
    from edgeseg.files import ensure_writable_dir

    sources = [Path(c) for c in checkpoints]
    if sum(bool(s) for s in (sources, onnx, factory)) != 1:
        raise UsageError("give checkpoints (one or two), or an ONNX model, or a factory", hint="edgeseg export --checkpoint / --onnx / --factory")
    if name and len(sources) > 1:
        raise UsageError("--name applies to one model; export several checkpoints without it")
    if channels is not None and not factory:
        raise UsageError("--channels applies to --factory; an ONNX's channels come from its graph, a checkpoint's from training")
    if opset > TRT_MAX_OPSET:
        log.warning("warning: opset %d is above %d: TensorRT 8.5/8.6 (JetPack 5 / 6.0) cannot parse it", opset, TRT_MAX_OPSET)
    names = _class_names(classes)
    parity_images = _parity_images(Path(images)) if images else []
    folder = ensure_writable_dir(Path(out_dir))
    if sources:
        reports = _export_checkpoints(sources, folder, name, names, opset, size, seed, parity_images, progress)
    else:
        from edgeseg.lazy import require

        require("onnx", "checking an ONNX model" if onnx else "exporting your model")  # one line of advice, not a traceback
        contract = _contract(task, size, mean, std, geometry, names, activation, layout, channels, Path(card) if card else None)
        target = folder / f"{name or contract['task']}.onnx"
        if onnx:
            reports = [_adopt(Path(onnx), target, contract, input_name, output_name, seed, parity_images, progress)]
        else:
            reports = [_from_factory(str(factory), weights, target, contract, opset, seed, parity_images, progress)]
    if fp16:
        from edgeseg.export.fp16 import onnx_to_fp16

        for report in list(reports):
            with progress(f"converting {report.onnx} to FP16", None):
                reports.append(onnx_to_fp16(report.onnx, seed=seed, images=parity_images))
    from edgeseg.export.golden import add_golden_from_images

    for report in reports:
        with progress(f"recording {Path(report.onnx).name}'s golden set", None):
            add_golden_from_images(report.onnx, parity_images)
    return Exported(reports)


def _export_checkpoints(
    checkpoints: List[Path], folder: Path, name: Optional[str], names: Optional[List[str]], opset: int,
    size: Optional[Tuple[int, int]], seed: int, images: List[Path], progress: Progress,
) -> List[Any]:
    from edgeseg.lazy import require

    require("torch", "exporting checkpoints", extra="export")
    require("onnx", "exporting checkpoints")
    from edgeseg.export.torch_onnx import torch_to_onnx

    declared = [_checkpoint_task(path) for path in checkpoints]
    tasks = [task for task, _ in declared]
    if len(set(tasks)) != len(tasks):
        raise EdgesegError(f"two {tasks[0]} checkpoints would write the same {tasks[0]}.onnx", hint="export them in separate calls with --name")
    if names is not None:
        if "segmenter" not in tasks:
            raise UsageError("--classes names the segmenter's output maps; the classifier has one ('defect')")
        current = declared[tasks.index("segmenter")][1]
        if len(names) != len(current):
            raise UsageError(f"the segmenter has {len(current)} output maps ({','.join(current)}); --classes gives {len(names)} names")
    reports = []
    for path, kind in zip(checkpoints, tasks):
        target = folder / f"{name or kind}.onnx"
        with progress(f"exporting {path} -> {target}", None):
            reports.append(torch_to_onnx(path, target, opset=opset, size=size, seed=seed, images=images, classes=names if kind == "segmenter" else None))
    return reports


def _adopt(
    source: Path, target: Path, contract: Dict[str, Any], input_name: Optional[str], output_name: Optional[str],
    seed: int, images: List[Path], progress: Progress,
) -> Any:
    from edgeseg.export.outside import adopt_onnx

    found = contract.pop("names")
    contract.pop("channels")  # an ONNX's are its graph's
    with progress(f"checking {source} -> {target}", None):
        return adopt_onnx(
            source, target, **contract, input_name=input_name or found.get("input"),
            output_name=output_name or found.get("output"), seed=seed, images=images,
        )


def _from_factory(
    factory: str, weights: Optional[PathLike], target: Path, contract: Dict[str, Any], opset: int, seed: int, images: List[Path], progress: Progress
) -> Any:
    from edgeseg.lazy import require

    require("torch", "exporting your model", extra="export")
    from edgeseg.export.contract import user_contract
    from edgeseg.export.torch_onnx import factory_to_onnx

    contract.pop("names")
    if contract["size"] is None:
        raise UsageError("--factory needs the input size: --height and --width (or --card)")
    spec = user_contract(contract.pop("task"), contract.pop("size"), **contract)
    with progress(f"exporting {factory} -> {target}", None):
        return factory_to_onnx(factory, Path(weights) if weights else None, target, spec, opset=opset, seed=seed, images=images)


def _checkpoint_task(path: Path) -> Tuple[str, List[str]]:
    """The task and class names a checkpoint declares, read before exporting so name clashes
    and a wrong class count fail early."""
    from edgeseg.models.checkpoint import read_payload

    if not path.is_file():
        raise EdgesegError(f"checkpoint {path} not found", hint="pass the .pt file written by `edgeseg train`")
    payload = read_payload(path)
    task = payload.get("task") if isinstance(payload, dict) else None
    if task not in TASKS:
        raise EdgesegError(f"{path} is not an edgeseg checkpoint (no task)", hint=f"for your own model use --factory module:function --weights {path}")
    return str(task), [str(c) for c in payload.get("classes") or []]


def _contract(
    task: Optional[str], size: Optional[Tuple[int, int]], mean: float, std: float, geometry: str,
    classes: Optional[List[str]], activation: str, layout: Optional[str], channels: Optional[int], card: Optional[Path],
) -> Dict[str, Any]:
    """Contract keyword arguments from `card`, else from the arguments (task, size, classes,
    layout and channels given with a card win over the card's)."""
    if card is not None:
        from edgeseg.export.contract import contract_from_card

        base, names = contract_from_card(card)
        spec = base.preprocess
        return {
            "task": task or base.task, "size": size or (spec.height, spec.width), "mean": spec.mean, "std": spec.std,
            "geometry": spec.geometry, "classes": classes or base.classes, "thresholds": base.thresholds,
            "activation": base.output_activation, "layout": layout or spec.layout, "channels": channels or spec.channels, "names": names,
        }
    if task is None:
        raise UsageError("--onnx and --factory need --task classifier|segmenter (or --card)")
    return {
        "task": task, "size": size, "mean": mean, "std": std, "geometry": geometry, "classes": classes,
        "thresholds": None, "activation": activation, "layout": layout or "NCHW", "channels": channels or 1, "names": {},
    }


def _class_names(classes: Optional[Sequence[str]]) -> Optional[List[str]]:
    if classes is None:
        return None
    names = [str(c).strip() for c in classes]
    if not all(names) or len(set(names)) != len(names):
        raise UsageError(f"--classes must be distinct, non-empty, comma-separated names, got {','.join(map(str, classes))!r}")
    return names


def _parity_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise EdgesegError(f"--images {folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise EdgesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return found[:MAX_PARITY_IMAGES]


# -- calibrate ------------------------------------------------------------------------------------
@dataclass
class Calibrated:
    """What `calibrate` made: the calibration set, one QDQ model per model and flavour, with a
    validation set the accuracy of every precision (also written to out_dir/accuracy.json), and
    with a build target the artifacts built from the QDQ models (the ones the gate scored)."""

    calibration: CalibrationSet
    models: List[QdqResult]
    accuracy: Optional[AccuracyReport] = None
    removed: List[Path] = field(default_factory=list)  # INT8 models not written: beyond the budget
    built: Optional[Built] = None

    def to_dict(self) -> Dict[str, Any]:
        summary: Dict[str, Any] = {"calibration": self.calibration.describe(), "models": [r.to_dict() for r in self.models]}
        if self.built is not None:
            summary["built"] = self.built.to_dict()
        if self.accuracy is not None:
            summary["accuracy"] = dict(self.accuracy.to_dict(), removed=[str(p) for p in self.removed])
        return summary


class BudgetMissed(EdgesegError):
    """INT8 lost more accuracy than the budget allows, even with the layers the search kept in
    float; `report` holds the accuracy table, `result` what the step made (nothing beyond the
    budget is left in the output folder)."""

    def __init__(self, report: AccuracyReport, result: Any, hint: Optional[str] = None) -> None:
        super().__init__(
            f"INT8 accuracy budget missed ({len(report.misses)}): " + " | ".join(m.describe() for m in report.misses),
            hint=hint or "nothing beyond the budget was written; allow more --max-float-layers, --exclude the layers named, "
            "try --method entropy/percentile, or relax the budget",
        )
        self.report = report
        self.result = result


def calibrate(
    source: PathLike,
    models: Sequence[PathLike] = (),
    out_dir: PathLike = MODELS_DIR,
    *,
    count: int = 512,
    flavours: Optional[Sequence[str]] = None,
    method: str = "minmax",
    exclude: Sequence[str] = (),
    validation: Optional[PathLike] = None,
    validation_count: Optional[int] = None,
    max_dice_drop: Optional[float] = None,
    max_gate_disagreement: Optional[float] = None,
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS,
    backend: Optional[str] = None,
    seed: int = 0,
    progress: Progress = silent,
) -> Calibrated:
    """Build (or reuse) a calibration set and the INT8 QDQ models made from it.

    source: image folder, Severstal folder or its train.csv, a video, or a calibration .npz to
    reuse (out_dir/calibration.npz otherwise). Each FP32 ONNX in `models` becomes
    out_dir/<name>.int8.<flavour>.qdq.onnx for each flavour ("trt", "cpu"; default both).
    backend: also build each INT8 model for this backend (what `build` writes for it, into
    out_dir; `built` holds them) from one flavour (default the backend's own). With a `validation` folder FP32 and INT8 are scored on it as a
    cascade (accuracy_report): with a backend, the built artifacts on that backend (what ships);
    without, each QDQ model as it runs (ONNX Runtime, and OpenVINO where installed and exact),
    plus FP16 for comparison. A flavour that misses the budget (`max_dice_drop` per class of the
    cascade, `max_gate_disagreement`: the share of gate decisions that differ from FP32's) goes
    through the accuracy-aware search (`float_search`: at most `max_float_layers` layers kept in
    float, 0: no search); one still beyond the budget is not written and BudgetMissed carries the
    result. Everything is made in a staging folder inside out_dir and moved out when it passes.
    """
    from edgeseg.calibration.accuracy import Budget
    from edgeseg.calibration.qdq import FLAVOURS, check_flavour, check_method
    from edgeseg.files import ensure_writable_dir

    from edgeseg.edge.registry import BACKEND_FLAVOURS

    chosen = list(dict.fromkeys(flavours or (BACKEND_FLAVOURS[backend][:1] if backend else FLAVOURS)))
    for flavour in chosen:
        check_flavour(flavour)
    check_method(method)
    if backend is not None and len(chosen) > 1:
        raise UsageError(f"--backend builds one INT8 artifact per model, but {len(chosen)} flavours were asked", hint="choose one --flavour")
    paths = [Path(m) for m in models]
    source, out = Path(source), Path(out_dir)
    budget = Budget(max_dice_drop, max_gate_disagreement)
    if budget != Budget() and validation is None:
        raise UsageError("--max-dice-drop / --max-gate-disagreement need --validation")
    if max_float_layers < 0:
        raise UsageError(f"--max-float-layers must be >= 0 (0: no search), got {max_float_layers}")
    if validation is not None and not paths:
        raise UsageError("--validation compares models: give them with --model")
    if validation is not None and Path(validation).resolve() == source.resolve():
        log.warning("note: --validation is the calibration data itself: the accuracy figures will be optimistic")
    cards = _fp32_cards(paths)
    calibration = _calibration_set(source, out, cards, count, seed, progress)
    with tempfile.TemporaryDirectory(prefix=".edgeseg-int8-", dir=str(ensure_writable_dir(out))) as stage:
        maker = _Int8Maker(paths, calibration, method, list(exclude), Path(stage), backend, progress)
        made = {flavour: maker.make(flavour, {}, 0) for flavour in sorted(chosen, key=lambda f: f != "cpu")}  # cpu first: its ranges serve trt
        result = Calibrated(calibration, [])
        passed = list(made)
        if validation is not None:
            passed = _gate(result, maker, made, out, Path(validation), validation_count, seed, budget, max_float_layers, progress)
        for flavour in chosen:
            _promote(made[flavour], out, result, keep=flavour in passed)
    if result.accuracy is not None:
        from edgeseg.files import write_json

        write_json(out / REPORT_NAME, result.to_dict()["accuracy"])
        if result.accuracy.misses:
            raise BudgetMissed(result.accuracy, result)
    _golden_from_calibration(result)
    return result


def _golden_from_calibration(result: Calibrated) -> None:
    """Each INT8 model's golden set, from the calibration frames (the user's data)."""
    from edgeseg.export.golden import add_golden

    frames = result.calibration
    for model in result.models:
        add_golden(model.path, list(frames.frames), frames.names)


@dataclass
class _Made:
    """One flavour's INT8 models as made by one try (and the artifacts built from them)."""

    folder: Path
    models: List[QdqResult]
    built: List[BuildResult]

    @property
    def qdq(self) -> Dict[str, Path]:
        from edgeseg.edge.card import read_card

        return {read_card(r.path).task: r.path for r in self.models}


@dataclass
class _Int8Maker:
    """Makes one flavour's INT8 models, keeping given layers in float, and with a backend the
    artifacts built from them, each try in a folder of its own inside the staging folder."""

    models: List[Path]
    calibration: Any
    method: str
    exclude: List[str]
    stage: Path
    backend: Optional[str]
    progress: Progress

    def make(self, flavour: str, float_layers: Dict[str, List[str]], attempt: int) -> _Made:
        folder = self.stage / f"{flavour}-{attempt}"
        folder.mkdir()
        with _named_as_output(folder, self.stage.parent):
            results = self._quantise(flavour, float_layers, folder)
            return _Made(folder, results, self._build(results, folder))

    def _quantise(self, flavour: str, float_layers: Dict[str, List[str]], folder: Path) -> List[QdqResult]:
        from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path
        from edgeseg.edge.card import read_card

        results = []
        for index, model in enumerate(self.models):
            card = read_card(model)
            # minmax ranges are measured once per model (cpu first: it records every tensor) and reused
            cache = self.stage / f"ranges-{index}.json" if self.method == "minmax" else None
            reused = cache is not None and cache.is_file()
            extra = float_layers.get(card.task, [])
            label = f"INT8 {flavour} {model.name} ({self.method}{', ranges reused' if reused else ''}{f', {len(extra)} layers float' if extra else ''})"
            with self.progress(label, None if reused else self.calibration.batch_count(1, card.preprocess)) as advance:
                results.append(
                    onnx_to_qdq(
                        model, self.calibration, folder / qdq_path(model, flavour).name, flavour=flavour, method=self.method,
                        exclude=[*self.exclude, *extra], ranges_cache=cache, progress=advance,
                    )
                )
        return results

    def _build(self, results: List[QdqResult], folder: Path) -> List[BuildResult]:
        if self.backend is None:
            return []
        from edgeseg.export.engine import BuildOptions, onnx_to_engine, onnx_to_openvino, onnx_to_ort

        make = {"tensorrt": onnx_to_engine, "onnxruntime": onnx_to_ort, "openvino": onnx_to_openvino}[self.backend]
        built = []
        for r in results:
            with self.progress(f"building {r.path.name} -> int8 ({self.backend})", None):
                built.append(make(r.path, folder, BuildOptions(precision="int8")))
        return built

    def variants(self, flavour: str, made: _Made, unavailable: Dict[str, str]) -> List[Any]:
        """What the gate scores: the built artifacts on the backend, or each QDQ model as it runs."""
        from edgeseg.calibration.accuracy import Variant

        label = f"int8-{flavour}"
        if self.backend is not None:
            return [Variant(label, {r.task: r.artifact for r in made.built}, self.backend)]
        return _with_openvino([Variant(label, made.qdq)], unavailable)


@contextlib.contextmanager
def _named_as_output(folder: Path, out_dir: Path) -> Iterator[None]:
    """An error about a staged file (a full disk, say) names the file it would have become."""
    try:
        yield
    except EdgesegError as exc:
        renamed = copy.copy(exc)  # same type and exit code, whatever its constructor takes
        renamed.message = exc.message.replace(str(folder), str(out_dir))
        renamed.args = (renamed.message,)
        raise renamed from exc


def _with_openvino(variants: List[Any], unavailable: Dict[str, str]) -> List[Any]:
    """The variants, and the same files through OpenVINO where installed and it computes them right."""
    from edgeseg.lazy import available

    if not available("openvino"):
        return variants
    from edgeseg.edge.backends.openvino import inexact_int8_reason
    from edgeseg.edge.card import read_card

    found = list(variants)
    for variant in variants:
        reasons = [reason for reason in (inexact_int8_reason(read_card(path)) for path in variant.models.values()) if reason]
        if reasons:
            unavailable[f"openvino {variant.precision}"] = reasons[0]
        else:
            found.append(dataclasses.replace(variant, backend="openvino"))
    return found


def _gate(
    result: Calibrated, maker: _Int8Maker, made: Dict[str, _Made], out_dir: Path, validation: Path, validation_count: Optional[int],
    seed: int, budget: Budget, max_float_layers: int, progress: Progress,
) -> List[str]:
    """Score FP32 and every flavour on `validation` into result.accuracy; a flavour beyond the
    budget goes through the float-layer search (made[flavour] becomes its chosen try). Returns
    the flavours within the budget."""
    from edgeseg.calibration.accuracy import REFERENCE, Scorer, Variant, check_budget, float_search, load_validation
    from edgeseg.edge.card import read_card

    reference = Variant(REFERENCE, {read_card(m).task: m for m in maker.models})
    unavailable: Dict[str, str] = {}
    others: List[Variant] = []
    if maker.backend is None:  # the other precisions, for comparison
        try:
            others.append(Variant("fp16", {task: _fp16(path, out_dir) for task, path in reference.models.items()}))
        except (ImportError, EdgesegError) as exc:
            unavailable["fp16"] = str(exc)
        others += _with_openvino([reference], unavailable)[1:]
    int8 = {flavour: maker.variants(flavour, m, unavailable) for flavour, m in made.items()}
    data = load_validation(validation, validation_count, seed)
    total = len(data) * sum(len(v.models) for v in [reference, *others, *(v for vs in int8.values() for v in vs)])
    with progress(f"scoring {len(others) + len(made) + 1} precisions on {len(data)} strips", total) as advance:
        scorer = Scorer(reference, data, advance)
        report = scorer.report([*others, *(v for vs in int8.values() for v in vs)], unavailable, advance)
    result.accuracy = report
    labels = {flavour: [v.label for v in variants] for flavour, variants in int8.items()}
    check_budget(report, [label for group in labels.values() for label in group], budget)
    for flavour in made:
        if not any(m.variant in labels[flavour] for m in report.misses):
            continue
        ranked = _sensitivity(reference.models, made[flavour].qdq, data, maker.exclude + [n for r in made[flavour].models for n in r.kept_float])
        if max_float_layers and ranked:
            tries: List[Tuple[_Made, List[Variant]]] = []

            def attempt(float_layers: Dict[str, List[str]], number: int, flavour: str = flavour) -> List[Variant]:
                tried = maker.make(flavour, float_layers, number)
                tries.append((tried, maker.variants(flavour, tried, unavailable)))
                return tries[-1][1]

            with progress(f"keeping int8-{flavour} layers in float ({len(ranked[:max_float_layers])} candidates)", None) as advance:
                search, variants, rows = float_search(attempt, scorer, budget, ranked[:max_float_layers], advance)
            made[flavour] = next(tried for tried, returned in tries if returned is variants)
            report.searches.append(search)
            for variant in variants:
                report.rows[variant.label] = rows[variant.label]
                report.models[variant.label] = {task: str(path) for task, path in variant.models.items()}
        check_budget(report, [label for group in labels.values() for label in group], budget)
        for miss in report.misses:
            if miss.variant in labels[flavour]:
                miss.layers = [e for e in ranked if miss.task in ("cascade", e.task)][:5]
    return [flavour for flavour in made if not any(m.variant in labels[flavour] for m in report.misses)]


SENSITIVITY_STRIPS = 8  # validation strips the layer ranking runs on (it runs every layer's output)


def _sensitivity(fp32: Dict[str, Path], qdq: Dict[str, Path], data: Any, already_float: Sequence[str]) -> List[Any]:
    """The layers of every model ranked by the error they add to INT8 on the validation strips,
    those already float left out (blame_layers, most added error first)."""
    from edgeseg.calibration.accuracy import blame_layers
    from edgeseg.edge.card import read_card
    from edgeseg.edge.preprocess import preprocess

    ranked = []
    for task, model in fp32.items():
        spec = read_card(model).preprocess
        batches = [preprocess(frame, spec) for frame in data.frames[:SENSITIVITY_STRIPS]]
        ranked += blame_layers(model, qdq[task], batches, top=None, task=task)
    return sorted((e for e in ranked if e.added_error > 0 and e.node not in already_float), key=lambda e: e.added_error, reverse=True)


def _promote(made: _Made, out_dir: Path, result: Calibrated, keep: bool) -> None:
    """Move a try's files into out_dir (keep), or record its models as not written and remove
    what an earlier run left under their names (nothing beyond the budget stays deployable); the
    paths in the result and its report become the out_dir ones."""

    def moved(path: Path) -> Path:
        return out_dir / path.name

    for file in sorted(made.folder.iterdir()):
        if file.is_file():
            if keep:
                os.replace(file, moved(file))
            else:
                moved(file).unlink(missing_ok=True)
    if not keep:
        result.removed += [moved(r.path) for r in made.models]
    kept = [dataclasses.replace(r, path=moved(r.path), card=moved(r.card)) for r in made.models] if keep else []
    result.models = sorted(result.models + kept, key=lambda r: r.path.name.split(".")[0])  # stable: flavours in the order asked
    if keep and made.built:
        artifacts = [dataclasses.replace(b, source=moved(b.source), artifact=moved(b.artifact), card=moved(b.card)) for b in made.built]
        result.built = Built(made.built[0].backend, "int8", artifacts)
    if result.accuracy is not None:
        staged = str(made.folder)
        for label, models in result.accuracy.models.items():
            result.accuracy.models[label] = {t: str(moved(Path(p))) if p.startswith(staged) else p for t, p in models.items()}


def _fp32_cards(models: List[Path]) -> Dict[Path, Any]:
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


def _calibration_set(source: Path, out_dir: Path, cards: Dict[Path, Any], count: int, seed: int, progress: Progress) -> Any:
    from edgeseg.calibration.calibration_set import load_calibration_set, source_kind, source_to_calibration_set

    if source.suffix.lower() == ".npz":
        calibration = load_calibration_set(source)
    else:
        # Frames are stored at the largest model's geometry; smaller models resize from it.
        geometry = max((c.preprocess for c in cards.values()), key=lambda p: p.height * p.width, default=None)
        with progress(f"reading {source_kind(source)} {source.name}", count) as advance:
            calibration = source_to_calibration_set(source, out_dir / CALIBRATION_NAME, geometry, count, seed, progress=advance)
    notes = list(calibration.notes)
    height, width = calibration.frames.shape[1:]
    for model, card in cards.items():
        spec = card.preprocess
        if spec.geometry == "resize" and spec.height * spec.width > height * width:
            notes.append(f"calibration frames are {height}x{width}, smaller than {model.name}'s {spec.height}x{spec.width} input: they are upscaled")
    for note in notes:
        log.warning("note: %s", note)
    described = calibration.describe()
    log.info(
        "calibration set %s: %d frames of %dx%d, %s MB, sha256 %s…",
        calibration.path, len(calibration), described["frame_size"][0], described["frame_size"][1], described["megabytes"], calibration.sha256[:16],
    )
    return calibration


def _fp16(path: Path, out_dir: Path) -> Path:
    from edgeseg.export.fp16 import fp16_path, onnx_to_fp16

    return Path(onnx_to_fp16(path, out_dir / fp16_path(path).name).onnx)


# -- build ----------------------------------------------------------------------------------------
@dataclass
class Built:
    """What `build` wrote: one artifact (engine, CPU ONNX or OpenVINO IR) per model, and with a
    validation set their accuracy against FP32."""

    backend: str
    precision: str
    artifacts: List[BuildResult]
    accuracy: Optional[AccuracyReport] = None

    @property
    def run_command(self) -> Optional[str]:
        """`edgeseg run` over the built classifier and segmenter (None unless both were built)."""
        built = {r.task: r.artifact for r in self.artifacts}
        if set(built) != set(TASKS):
            return None
        return f"edgeseg run --classifier {built['classifier']} --segmenter {built['segmenter']}"

    def to_dict(self) -> List[Dict[str, Any]]:
        return [r.to_dict() for r in self.artifacts]


def fastest_precision(backend: str, int8_ready: bool) -> str:
    """The one precision rule of `build` and `deploy`: FP16 on TensorRT; on the CPU (where FP16 runs
    as slow reference kernels) INT8 when calibrated INT8 is at hand (build: every model has its QDQ
    model beside it; deploy: calibration data is given), else FP32."""
    if backend == "tensorrt":
        return "fp16"
    return "int8" if int8_ready else "fp32"


def build(
    models: Sequence[PathLike] = (),
    out_dir: PathLike = MODELS_DIR,
    *,
    backend: str = "auto",
    precision: Optional[str] = None,
    options: Optional[BuildOptions] = None,
    validation: Optional[PathLike] = None,
    validation_count: Optional[int] = None,
    max_dice_drop: Optional[float] = None,
    max_gate_disagreement: Optional[float] = None,
    seed: int = 0,
    progress: Progress = silent,
) -> Built:
    """Build the artifact each model runs fastest as on `backend`.

    models: ONNX models with cards, or edgeseg checkpoints (.pt, exported into out_dir first);
    none: the bundled demo models. backend: "tensorrt" (a GPU engine), "onnxruntime" (the ONNX
    Runtime-optimised ONNX), "openvino" (the IR) or "auto" (edge.registry.auto_backend: the one rule). precision: default
    `fastest_precision`; int8 builds from the QDQ model `calibrate` wrote beside each FP32 ONNX.
    options: an edgeseg.export.engine.BuildOptions for the rest (batch profile, workspace, ...).
    validation: a Severstal-layout folder: the built artifacts are scored on it, on `backend`,
    against their FP32 ONNX (accuracy_report, as a cascade when both models are built) and kept
    only within the budget (`max_dice_drop` per class, `max_gate_disagreement`); BudgetMissed
    otherwise, with nothing written. (`calibrate --backend` and `deploy` also search for layers
    to keep in float.)
    """
    from edgeseg.edge.registry import BACKEND_FLAVOURS
    from edgeseg.export.engine import BuildOptions, onnx_to_engine, onnx_to_openvino, onnx_to_ort, tensorrt_or_advice

    target = auto_backend(build=True) if backend == AUTO else backend
    base = options or BuildOptions()
    paths = [Path(m) for m in models]
    chosen = precision or fastest_precision(target, base.calibration == "qdq" and _calibrated(paths, BACKEND_FLAVOURS.get(target, ("cpu",))[0]))
    chosen_options = dataclasses.replace(base, precision=chosen)
    try:
        chosen_options.check(target)
    except EdgesegError as exc:  # an inconsistent combination of options: a usage error
        raise UsageError(exc.message, hint=exc.hint) from None
    if target == "tensorrt":
        tensorrt_or_advice()  # one line now, not after exporting checkpoints
    if precision is None:
        log.info("precision: %s (the fastest on %s here; pass --precision to choose)", chosen, target)
    qdq = (chosen, chosen_options.calibration) == ("int8", "qdq")
    flavour = BACKEND_FLAVOURS[target][0] if qdq else None
    if not paths:
        from edgeseg import assets

        paths = assets.models(flavour)
    make = {"tensorrt": onnx_to_engine, "onnxruntime": onnx_to_ort, "openvino": onnx_to_openvino}[target]
    sources = []
    for model in paths:
        onnx = _as_onnx(model, Path(out_dir), progress)
        sources.append((_fp32_of(onnx), int8_source(onnx, str(flavour), target) if qdq else onnx))
    if validation is None:
        artifacts = []
        for _, onnx in sources:
            with progress(f"building {onnx.name} -> {chosen} ({target})", None):
                artifacts.append(make(onnx, out_dir, chosen_options))
        return Built(target, chosen, artifacts)
    from edgeseg.calibration.accuracy import Budget
    from edgeseg.files import ensure_writable_dir

    out = ensure_writable_dir(out_dir)
    with tempfile.TemporaryDirectory(prefix=".edgeseg-build-gate-", dir=str(out)) as stage:
        artifacts = []
        for _, onnx in sources:
            with progress(f"building {onnx.name} -> {chosen} ({target})", None):
                artifacts.append(make(onnx, stage, chosen_options))
        built = Built(target, chosen, artifacts)
        report = _score_built(built, [fp32 for fp32, _ in sources], Path(validation), validation_count, seed, Budget(max_dice_drop, max_gate_disagreement), progress)
        if report.misses:
            raise BudgetMissed(report, built, hint="nothing was written; `edgeseg calibrate --backend` / `edgeseg deploy` keep the most sensitive layers in float, or relax the budget")
        for file in sorted(Path(stage).iterdir()):
            if file.is_file():
                os.replace(file, out / file.name)
    moved = [dataclasses.replace(r, artifact=out / r.artifact.name, card=out / r.card.name) for r in artifacts]
    for label, scored in report.models.items():  # the staged artifacts were scored: name them where they are now
        report.models[label] = {task: str(out / Path(path).name) if Path(path).parent == Path(stage) else path for task, path in scored.items()}
    return Built(target, chosen, moved, report)


def _fp32_of(onnx: Path) -> Path:
    """The FP32 ONNX a model comes from: itself, or the one its derived card names beside it."""
    from edgeseg.edge.card import read_card

    if not onnx.is_file():
        return onnx  # the builder says so
    made = read_card(onnx)
    if made.artifact.precision == "fp32":
        return onnx
    name = made.source.fp32_onnx or made.source.onnx
    return onnx.parent / name if name else onnx


def _score_built(
    built: Built, fp32: List[Path], validation: Path, validation_count: Optional[int], seed: int, budget: Budget, progress: Progress
) -> AccuracyReport:
    """The built artifacts on their backend against their FP32 models, with the budget checked."""
    from edgeseg.calibration.accuracy import REFERENCE, Variant, accuracy_report, check_budget, load_validation

    reference = Variant(REFERENCE, {r.task: path for r, path in zip(built.artifacts, fp32)})
    shipped = Variant(f"{built.precision} built", {r.task: r.artifact for r in built.artifacts}, built.backend)
    data = load_validation(validation, validation_count, seed)
    with progress(f"scoring {built.precision} ({built.backend}) against {REFERENCE} on {len(data)} strips", 2 * len(data) * len(fp32)) as advance:
        report = accuracy_report([reference, shipped], data, progress=advance)
    check_budget(report, [shipped.label], budget)
    return report


def _calibrated(models: List[Path], flavour: str) -> bool:
    """Every model is an ONNX with its calibrated QDQ model beside it (or is one)."""
    from edgeseg.calibration.qdq import qdq_path

    onnx = [m for m in models if m.suffix.lower() == ".onnx"]
    return bool(onnx) and len(onnx) == len(models) and all(qdq_path(m, flavour).is_file() or _is_int8(m) for m in onnx)


def _as_onnx(model: Path, out_dir: Path, progress: Progress) -> Path:
    """An ONNX path for `model`: checkpoints (.pt) are exported first, into the output folder."""
    if model.suffix.lower() != ".pt":
        return model
    from edgeseg.export.torch_onnx import torch_to_onnx

    with progress(f"exporting {model.name} to ONNX", None):
        return Path(torch_to_onnx(model, out_dir / f"{model.stem}.onnx").onnx)


def _is_int8(model: Path) -> bool:
    from edgeseg.edge.card import read_card

    return read_card(model).artifact.precision == "int8"


def int8_source(model: Path, flavour: str, backend: str) -> Path:
    """The QDQ model an INT8 build reads: `model` when it is one, else the `calibrate` output of
    `flavour` beside the FP32 model; a UsageError with the command that makes it otherwise."""
    from edgeseg.calibration.qdq import qdq_path

    if not model.is_file() or _is_int8(model):
        return model  # a missing file: the builder says so
    sibling = qdq_path(model, flavour)
    if sibling.is_file():
        log.info("int8: building from %s (the calibrated model beside %s)", sibling, model.name)
        return sibling
    implicit = " (or --calibration implicit --calibration-set SET.npz on TensorRT 8.5-10)" if backend == "tensorrt" else ""
    raise UsageError(
        f"{model.name} is FP32 and {sibling.name} is not beside it: INT8 builds from a calibrated QDQ model",
        hint=f"make it with `edgeseg calibrate {DATA_DIR} -m {model} --out {model.parent}`, then rerun{implicit}",
    )


# -- deploy ---------------------------------------------------------------------------------------
@dataclass
class Deployed:
    """What `deploy` did: each step's result, the seconds each took, and the command that runs it."""

    exported: Exported
    calibrated: Optional[Calibrated]
    built: Built
    seconds: Dict[str, float]

    @property
    def run_command(self) -> str:
        return self.built.run_command or ""  # deploy builds both models: never empty

    def to_dict(self) -> Dict[str, Any]:
        return {
            "export": self.exported.to_dict(),
            "calibrate": self.calibrated.to_dict() if self.calibrated is not None else None,
            "build": self.built.to_dict(),
            "seconds": {step: round(s, 3) for step, s in self.seconds.items()},
            "run_command": self.run_command,
        }


def deploy(
    models: Sequence[PathLike] = (),
    out_dir: PathLike = MODELS_DIR,
    *,
    factories: Sequence[str] = (),
    weights: Sequence[PathLike] = (),
    size: Optional[Tuple[int, int]] = None,
    mean: float = 0.0,
    std: float = 1.0,
    geometry: str = "resize",
    activation: str = "sigmoid",
    layout: Optional[str] = None,
    channels: int = 1,
    precision: Optional[str] = None,
    data: Optional[PathLike] = None,
    validation: Optional[PathLike] = None,
    count: int = 512,
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP,
    max_gate_disagreement: float = DEFAULT_MAX_GATE_DISAGREEMENT,
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS,
    backend: str = "auto",
    classes: Optional[Sequence[str]] = None,
    seed: int = 0,
    progress: Progress = silent,
) -> Deployed:
    """A classifier and a segmenter -> the artifacts this machine runs fastest: `export`,
    `calibrate` and `build` for `backend`. INT8 calibrates on `data` and builds in the calibrate
    step, so that the accuracy gate (on `validation`, default `data`) scores the built artifacts
    on the backend that runs them, searching for layers to keep in float when the budget is
    missed. precision: default `fastest_precision` (INT8 on CPU when `data` is given).

    models: edgeseg checkpoints (.pt) and ONNX models; `factories` ('module:function') with their
    `weights` (state dicts, paired in order) add torch models of your own. An ONNX with its card
    beside it skips export; one without is described as `export --onnx` does, and a factory
    exported as `export --factory` does, each outside model's task read from its output and its
    contract from size (height, width), mean, std, geometry, activation, layout, `classes` and
    (factories; an ONNX's come from its graph) channels.
    """
    target = auto_backend(build=True) if backend == AUTO else backend
    chosen = precision or fastest_precision(target, data is not None)
    if chosen == "int8" and data is None:
        raise UsageError("--precision int8 calibrates on --data DIR (images, a Severstal folder or a video)")
    if len(weights) > len(factories):
        raise UsageError("each --weights belongs to a --factory (paired in order)", hint="add the --factory module:function that builds the model")
    if len(models) + len(factories) != len(TASKS):
        raise UsageError(
            "deploy builds the cascade: give the classifier and the segmenter",
            hint="edgeseg deploy CLASSIFIER SEGMENTER ... (each a checkpoint .pt or an ONNX), or --factory module:function --weights FILE for your own",
        )
    contract = {
        "size": size, "mean": mean, "std": std, "geometry": geometry, "activation": activation, "layout": layout, "channels": channels,
        "classes": classes,
    }
    pairs = [(factory, weights[i] if i < len(weights) else None) for i, factory in enumerate(factories)]
    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    log.info("1/3 export %s -> %s", ", ".join([*map(str, models), *factories]), out_dir)
    exported = _deployable([Path(m) for m in models], pairs, Path(out_dir), contract, seed, progress)
    seconds["export"], started = time.perf_counter() - started, time.perf_counter()
    calibrated = None
    if chosen == "int8":
        from edgeseg.edge.registry import BACKEND_FLAVOURS

        log.info(
            "2/3 calibrate on %s and build for %s; gate on the built artifacts: Dice drop per class <= %s, gate disagreement <= %s",
            data, target, max_dice_drop, max_gate_disagreement,
        )
        calibrated = calibrate(
            str(data), exported.onnx, out_dir, count=count, flavours=[BACKEND_FLAVOURS[target][0]], validation=validation or data,
            max_dice_drop=max_dice_drop, max_gate_disagreement=max_gate_disagreement, max_float_layers=max_float_layers,
            backend=target, seed=seed, progress=progress,
        )
        seconds["calibrate"] = time.perf_counter() - started
        log.info("3/3 build-engine int8 for %s: built and scored in step 2", target)
        assert calibrated.built is not None  # calibrate with a backend builds, or raises BudgetMissed
        built = calibrated.built
    else:
        log.info("2/3 calibrate skipped (%s needs no calibration)", chosen)
        log.info("3/3 build-engine %s for %s", chosen, target)
        built = build(exported.onnx, out_dir, backend=target, precision=chosen, progress=progress)
        seconds["build"] = time.perf_counter() - started
    return Deployed(exported, calibrated, built, seconds)


def _deployable(
    models: List[Path], factories: List[Tuple[str, Optional[PathLike]]], out_dir: Path, contract: Dict[str, Any], seed: int,
    progress: Progress,
) -> Exported:
    """The FP32 ONNX models in out_dir that deploy builds from, one per task: checkpoints and
    factories are exported, an ONNX with a card is taken as it is (copied into out_dir with its
    card), one without is described."""
    from edgeseg.files import ensure_writable_dir

    folder = ensure_writable_dir(out_dir)
    checkpoints = [m for m in models if m.suffix.lower() == ".pt"]
    others = [m for m in models if m.suffix.lower() not in (".pt", ".onnx")]
    if others:
        raise UsageError(f"deploy takes edgeseg checkpoints (.pt) and ONNX models (.onnx), not {others[0].name}", hint="for your own torch model use --factory module:function --weights FILE")
    from edgeseg.edge.card import card_path

    reports: List[Any] = []
    taken: List[Path] = []
    ready: Dict[str, Path] = {}

    def add(task: str, path: Path, given: str) -> None:
        if task in ready:
            raise EdgesegError(
                f"deploy builds the cascade of a classifier and a segmenter; {given} is a second {task}",
                hint="give one model of each task (an outside model's task is read from its output: one score per image, or per-class maps)",
            )
        ready[task] = path

    for model in (m for m in models if m.suffix.lower() == ".onnx"):
        if card_path(model).is_file():
            path, task = _carded_onnx(model, folder)
            add(task, path, str(model))
            taken.append(path)
        else:
            reports.append(_describe_onnx(model, folder, contract, seed, progress))
            add(reports[-1].task, Path(reports[-1].onnx), str(model))
    for factory, weights in factories:
        reports.append(_export_factory(factory, weights, folder, contract, seed, progress))
        add(reports[-1].task, Path(reports[-1].onnx), factory)
    if checkpoints:  # --classes renames a checkpoint segmenter's maps unless an outside segmenter took them
        names = None if "segmenter" in ready else contract["classes"]
        for report in export(checkpoints, folder, classes=names, seed=seed, progress=progress).reports:
            reports.append(report)
            add(report.task, Path(report.onnx), str(report.onnx))
    return Exported(reports, taken)


def _carded_onnx(model: Path, folder: Path) -> Tuple[Path, str]:
    """An FP32 ONNX with its card, in `folder` (copied there, under its task's name, when elsewhere)."""
    from edgeseg.edge.card import read_card, write_card
    from edgeseg.files import atomic_output

    card = read_card(model)
    if (card.artifact.format, card.artifact.precision) != ("onnx", "fp32"):
        raise UsageError(
            f"{model} is a {card.artifact.precision} {card.artifact.format} artifact; deploy starts from the FP32 ONNX",
            hint="pass the FP32 ONNX it was made from",
        )
    if model.parent.resolve() == folder.resolve():
        return model, card.task
    target = folder / f"{card.task}.onnx"
    with atomic_output(target) as tmp:
        tmp.write_bytes(model.read_bytes())
    write_card(target, card)
    log.info("%s and its card: copied to %s", model, target)
    return target, card.task


def _describe_onnx(model: Path, folder: Path, contract: Dict[str, Any], seed: int, progress: Progress) -> Any:
    """`export --onnx` for an ONNX without a card, its task read from the graph's output."""
    from edgeseg.lazy import require

    require("onnx", "checking an ONNX model")
    from edgeseg.edge.card import output_task
    from edgeseg.export.graph import load_onnx, tensor_spec

    task = output_task(tensor_spec(load_onnx(model), None, "output").shape)
    if task is None:
        raise EdgesegError(
            f"{model} has no model card and its output is neither one score per image nor per-class maps",
            hint=f"describe it first: `edgeseg export --onnx {model} --task classifier|segmenter --output-name NAME`, then deploy the ONNX it writes",
        )
    names = _class_names(contract["classes"]) if task == "segmenter" else None
    values = _contract(task, contract["size"], contract["mean"], contract["std"], contract["geometry"], names, contract["activation"], contract["layout"], None, None)
    return _adopt(model, folder / f"{task}.onnx", values, None, None, seed, [], progress)


def _export_factory(factory: str, weights: Optional[PathLike], folder: Path, contract: Dict[str, Any], seed: int, progress: Progress) -> Any:
    """`export --factory` for deploy, its task read from the model's output on one frame."""
    from edgeseg.lazy import require

    require("torch", "exporting your model", extra="export")
    from edgeseg.edge.card import output_task
    from edgeseg.export.contract import user_contract
    from edgeseg.export.torch_onnx import load_factory, module_to_onnx, output_shape

    if contract["size"] is None:
        raise UsageError("--factory needs the input size: --height and --width")
    model, source = load_factory(factory, Path(weights) if weights else None)
    options = {k: contract[k] for k in ("mean", "std", "geometry", "activation", "channels")}
    options["layout"] = contract["layout"] or "NCHW"
    shape = output_shape(model, user_contract("classifier", contract["size"], **options).preprocess)
    task = output_task(shape)
    if task is None:
        raise EdgesegError(f"{factory} outputs {shape}: neither one score per image (N, 1) nor per-class maps (N, C, H, W)")
    classes = (_class_names(contract["classes"]) or [str(c + 1) for c in range(shape[1])]) if task == "segmenter" else None
    spec = user_contract(task, contract["size"], classes=classes, **options)
    target = folder / f"{task}.onnx"
    with progress(f"exporting {factory} -> {target}", None):
        return module_to_onnx(model, target, spec, source=source, seed=seed)
