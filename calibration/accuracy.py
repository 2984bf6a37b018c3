"""Accuracy of each precision (FP32, FP16, INT8 trt / cpu) on a validation set, through ONNX Runtime
and OpenVINO.

The QDQ models run on CPU, so INT8 accuracy is known before any engine is built. Every model runs
through the runtime's own path: `open_backend` (the variant's backend), `preprocess`, the
classifier's `defect_probability` and gate, the segmenter's `MaskPostprocess` with the card
thresholds. Scores are edgeseg.training.metrics' (Kaggle Dice: empty on empty = 1), so the numbers
are the ones training reported and the runtime would produce.

The contract (`check_budget`) is the cascade's: each class's Dice of the whole cascade (the gate
included) against FP32's, and the gate decisions against FP32's (a flipped decision is a lost
defect or a needless segmenter run); the ungated segmenter's Dice is reported as a diagnostic.
A precision that misses its budget is explained by `blame_layers`: the layers whose output error
grows the most over the error already present at their inputs; `float_search` then keeps the
fewest of them in float that bring it within the budget.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import read_card
from edgeseg.edge.preprocess import preprocess
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike
from edgeseg.lazy import require

REFERENCE = "fp32"
LAYER_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TASKS = ("classifier", "segmenter")
Progress = Optional[Callable[[int], None]]


@dataclass
class ValidationSet:
    """Decoded strips (gray uint8, native size) with their (C, H, W) truth masks."""

    names: List[str]
    frames: List[np.ndarray]
    truths: List[np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def defective(self) -> np.ndarray:
        return np.array([bool(t.any()) for t in self.truths])


def load_validation(data: PathLike, count: Optional[int] = None, seed: int = 0) -> ValidationSet:
    """A Severstal-layout folder (train.csv + train_images/); `count` strips, a seeded random choice."""
    from edgeseg.data.severstal import load_image, scan

    scanned = scan(Path(data))
    samples = list(scanned.samples)
    if count is not None and count < len(samples):
        chosen = sorted(np.random.default_rng(seed).choice(len(samples), size=count, replace=False))
        samples = [samples[i] for i in chosen]
    names, frames, truths = [], [], []
    for sample in samples:
        try:
            frame = load_image(sample.path, shape=None)
        except EdgesegError:
            continue
        names.append(sample.image_id)
        frames.append(frame)
        truths.append(sample.masks(frame.shape))
    if not frames:
        raise EdgesegError(f"no readable validation strip in {data}", hint="pass a Severstal-layout folder (train.csv + train_images/)")
    return ValidationSet(names, frames, truths)


# -- running one precision ------------------------------------------------------------------------
@dataclass
class _Outputs:
    """Per-image results of one precision, kept for cross-precision figures."""

    probabilities: Optional[np.ndarray] = None  # classifier defect probability per image
    gate: float = 0.5
    dice: Optional[np.ndarray] = None  # (N, C) segmenter Dice per image and class
    masks: List[np.ndarray] = field(default_factory=list)  # packed bits of (C, H, W) masks
    classes: List[str] = field(default_factory=list)


@dataclass
class Variant:
    """One row of the report: the models of one precision ("fp32", "fp16", "int8-cpu", ...) by
    task, and the backend that runs them."""

    precision: str
    models: Dict[str, Path]
    backend: str = "onnxruntime"

    @property
    def label(self) -> str:
        """The row's name: the precision, prefixed by the backend unless it is ONNX Runtime."""
        return self.precision if self.backend == "onnxruntime" else f"{self.backend} {self.precision}"


def _backend(path: Path, backend: str = "onnxruntime") -> Backend:
    from edgeseg.edge.backends import BackendOptions, open_backend

    return open_backend(path, backend, BackendOptions.cpu())


def classifier_probabilities(backend: Backend, data: ValidationSet, progress: Progress = None) -> Tuple[np.ndarray, float]:
    """(defect probability per image, the card's gate) from any backend (activated here)."""
    from edgeseg.edge.postprocess import defect_probability

    card = backend.card
    probabilities = np.empty(len(data), dtype=np.float64)
    with backend:
        for i, frame in enumerate(data.frames):
            scores = backend.infer({card.input.name: preprocess(frame, card.preprocess)})[card.output.name]
            probabilities[i] = defect_probability(scores, card.output_activation)
            if progress is not None:
                progress(1)
    return probabilities, float(card.thresholds.get("defect", 0.5))


def segmenter_scores(backend: Backend, data: ValidationSet, progress: Progress = None) -> Tuple[np.ndarray, List[np.ndarray], List[str]]:
    """(Dice per image and class, packed masks per image, class names) from any backend."""
    from edgeseg.edge.postprocess import MaskPostprocess
    from edgeseg.training.metrics import dice

    card = backend.card
    post = MaskPostprocess(card)
    scores = np.empty((len(data), len(card.classes)), dtype=np.float64)
    packed: List[np.ndarray] = []
    with backend:
        for i, (frame, truth) in enumerate(zip(data.frames, data.truths)):
            maps = backend.infer({card.input.name: preprocess(frame, card.preprocess)})[card.output.name]
            segmentation = post(maps, frame.shape[:2])
            masks = np.zeros((len(card.classes),) + frame.shape[:2], dtype=np.uint8)
            for c, name in enumerate(card.classes):
                if name in segmentation.masks:
                    masks[c] = segmentation.masks[name]
                scores[i, c] = dice(masks[c], truth[c])
            packed.append(np.packbits(masks.astype(bool)))
            if progress is not None:
                progress(1)
    return scores, packed, list(card.classes)


def _run(models: Dict[str, Path], data: ValidationSet, progress: Progress, backend: str = "onnxruntime") -> _Outputs:
    outputs = _Outputs()
    if "classifier" in models:
        outputs.probabilities, outputs.gate = classifier_probabilities(_backend(models["classifier"], backend), data, progress)
    if "segmenter" in models:
        outputs.dice, outputs.masks, outputs.classes = segmenter_scores(_backend(models["segmenter"], backend), data, progress)
    return outputs


def _metrics(run: _Outputs, reference: Optional[_Outputs], data: ValidationSet) -> Dict[str, Any]:
    from edgeseg.training.metrics import classification_metrics

    truth = data.defective
    row: Dict[str, Any] = {}
    if run.probabilities is not None:
        row["classifier"] = classification_metrics(run.probabilities, truth, run.gate)
        if reference is not None and reference.probabilities is not None:
            agree = (run.probabilities >= run.gate) == (reference.probabilities >= reference.gate)
            row["classifier"]["decision_agreement"] = float(np.mean(agree))
            row["classifier"]["decision_flips"] = int(np.sum(~agree))
    if run.dice is not None:
        per_class = run.dice.mean(axis=0)
        row["segmenter"] = {
            "dice_per_class": {name: float(v) for name, v in zip(run.classes, per_class)},
            "mean_dice": float(per_class.mean()),
            "images": len(data),
        }
        if reference is not None and reference.masks:
            row["segmenter"]["mask_agreement"] = _mask_agreement(run.masks, reference.masks, len(run.classes), data)
    if run.probabilities is not None and run.dice is not None:
        gated = run.probabilities >= run.gate
        empty = np.array([[1.0 if not t[c].any() else 0.0 for c in range(len(run.classes))] for t in data.truths])
        cascade = np.where(gated[:, None], run.dice, empty).mean(axis=0)
        row["cascade"] = {
            "gate": run.gate,
            "gate_recall": float(gated[truth].mean()) if truth.any() else float("nan"),
            "gate_precision": float(truth[gated].mean()) if gated.any() else float("nan"),
            "gated_fraction": float(gated.mean()),
            "dice_per_class": {name: float(v) for name, v in zip(run.classes, cascade)},
            "mean_dice": float(cascade.mean()),
        }
    return row


def _mask_agreement(masks: List[np.ndarray], reference: List[np.ndarray], classes: int, data: ValidationSet) -> float:
    """Mean Kaggle Dice of this precision's masks against the reference precision's masks."""
    from edgeseg.training.metrics import dice

    scores: List[float] = []
    for mine, theirs, frame in zip(masks, reference, data.frames):
        shape = (classes,) + frame.shape[:2]
        count = int(np.prod(shape))
        a = np.unpackbits(mine, count=count).reshape(shape)
        b = np.unpackbits(theirs, count=count).reshape(shape)
        scores.extend(dice(a[c], b[c]) for c in range(classes))
    return float(np.mean(scores))


# -- the report -----------------------------------------------------------------------------------
@dataclass
class LayerError:
    """Relative L2 error of one layer's output against FP32, and how much of it the layer added."""

    node: str
    op_type: str
    relative_error: float
    added_error: float
    task: str = ""  # the model it is in, where a report ranks the layers of several

    def to_dict(self) -> Dict[str, Any]:
        found = {"node": self.node, "op_type": self.op_type, "relative_error": self.relative_error, "added_error": self.added_error}
        return dict(found, task=self.task) if self.task else found


@dataclass
class BudgetMiss:
    """One budget a variant missed: `metric` of `task` ("cascade" / "segmenter": "dice <class>";
    "classifier": "decision_agreement", whose drop is the share of gate decisions flipped)."""

    variant: str
    task: str
    metric: str
    reference: float
    value: float
    budget: float
    layers: List[LayerError] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return self.reference - self.value

    @property
    def excess(self) -> float:
        """How far past the budget (> 0 for a miss)."""
        return self.drop - self.budget

    def describe(self) -> str:
        line = (
            f"{self.variant} {self.task} {self.metric} {self.value:.4f} vs {REFERENCE} {self.reference:.4f}: "
            f"drop {self.drop:.4f} > budget {self.budget:.4f}"
        )
        if self.layers:
            line += "; layers most responsible: " + ", ".join(f"{e.node} (+{e.added_error:.3f})" for e in self.layers)
        return line

    def to_dict(self) -> Dict[str, Any]:
        return {
            "variant": self.variant, "task": self.task, "metric": self.metric, "reference": self.reference,
            "value": self.value, "drop": self.drop, "budget": self.budget, "layers": [e.to_dict() for e in self.layers],
        }


@dataclass(frozen=True)
class Budget:
    """The accuracy contract an INT8 variant must keep against FP32 (None: not checked).

    max_dice_drop: per class, the cascade's Dice (gate included; a segmenter scored alone: its
    own). max_gate_disagreement: the share of validation strips whose gate decision (defect /
    clean at the card's threshold) differs from FP32's; it bounds the classifier's recall and
    precision changes at once (each flip moves one of them).
    """

    max_dice_drop: Optional[float] = None
    max_gate_disagreement: Optional[float] = None

    def misses(self, label: str, row: Dict[str, Any], reference: Dict[str, Any]) -> List[BudgetMiss]:
        found: List[BudgetMiss] = []
        task = "cascade" if "cascade" in row else "segmenter"
        if self.max_dice_drop is not None and task in row:
            mine, theirs = row[task]["dice_per_class"], reference[task]["dice_per_class"]
            for name, value in mine.items():
                if theirs[name] - value > self.max_dice_drop:
                    found.append(BudgetMiss(label, task, f"dice {name}", theirs[name], value, self.max_dice_drop))
        agreement = row.get("classifier", {}).get("decision_agreement")
        if self.max_gate_disagreement is not None and agreement is not None and 1.0 - agreement > self.max_gate_disagreement:
            found.append(BudgetMiss(label, "classifier", "decision_agreement", 1.0, agreement, self.max_gate_disagreement))
        return found


@dataclass
class Attempt:
    """One try of the accuracy-aware search: this many layers (the top of the ranking) in float."""

    float_layers: int
    misses: List[BudgetMiss]

    @property
    def worst_excess(self) -> float:
        return max((m.excess for m in self.misses), default=0.0)

    def to_dict(self) -> Dict[str, Any]:
        return {"float_layers": self.float_layers, "within_budget": not self.misses, "worst_excess": self.worst_excess,
                "misses": [m.describe() for m in self.misses]}


@dataclass
class FloatSearch:
    """How INT8 was brought within the budget (or how close it came): the layers ranked by the
    error they add on the validation strips, the tries, and the layers kept in float."""

    variant: str
    sensitivity: List[LayerError]
    attempts: List[Attempt]
    float_layers: Dict[str, List[str]]  # task -> node names kept in float by the chosen try

    @property
    def within_budget(self) -> bool:
        return any(not a.misses for a in self.attempts)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "variant": self.variant, "within_budget": self.within_budget, "float_layers": self.float_layers,
            "sensitivity": [e.to_dict() for e in self.sensitivity], "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass
class AccuracyReport:
    """rows: precision label -> {"classifier": {...}, "segmenter": {...}, "cascade": {...}};
    unavailable: precision label -> why it could not be evaluated; searches: the accuracy-aware
    INT8 searches run for variants that first missed the budget (their rows are the chosen try's)."""

    images: int
    defective: int
    rows: Dict[str, Dict[str, Any]]
    models: Dict[str, Dict[str, str]]
    backends: Dict[str, str] = field(default_factory=dict)  # label -> the backend it ran on
    unavailable: Dict[str, str] = field(default_factory=dict)
    misses: List[BudgetMiss] = field(default_factory=list)
    budget: Budget = field(default_factory=Budget)
    searches: List[FloatSearch] = field(default_factory=list)

    def delta(self, variant: str, task: str, metric: str) -> Optional[float]:
        """reference - variant for one metric (a positive number is a loss); None when absent."""
        try:
            return float(self.rows[REFERENCE][task][metric]) - float(self.rows[variant][task][metric])
        except KeyError:
            return None

    def class_drops(self, variant: str) -> Dict[str, float]:
        """Per class, reference - variant Dice of the cascade (of the segmenter when scored alone)."""
        task = "cascade" if "cascade" in self.rows[variant] else "segmenter"
        try:
            mine, theirs = self.rows[variant][task]["dice_per_class"], self.rows[REFERENCE][task]["dice_per_class"]
        except KeyError:
            return {}
        return {name: float(theirs[name] - value) for name, value in mine.items()}

    def to_dict(self) -> Dict[str, Any]:
        deltas = {
            label: {
                "cascade_dice_drop_per_class": self.class_drops(label),
                "cascade_mean_dice_drop": self.delta(label, "cascade", "mean_dice"),
                "gate_disagreement": 1.0 - self.rows[label]["classifier"]["decision_agreement"] if "classifier" in self.rows[label] else None,
                "classifier_recall_drop": self.delta(label, "classifier", "recall"),
                "classifier_precision_drop": self.delta(label, "classifier", "precision"),
                "segmenter_mean_dice_drop": self.delta(label, "segmenter", "mean_dice"),
            }
            for label in self.rows
            if label != REFERENCE
        }
        return {
            "reference": REFERENCE,
            "images": self.images,
            "defective": self.defective,
            "models": self.models,
            "backends": self.backends,
            "results": self.rows,
            "deltas": deltas,
            "unavailable": self.unavailable,
            "budget": {"max_dice_drop": self.budget.max_dice_drop, "max_gate_disagreement": self.budget.max_gate_disagreement},
            "budget_misses": [m.to_dict() for m in self.misses],
            "float_search": [s.to_dict() for s in self.searches],
            "within_budget": not self.misses,
        }


class Scorer:
    """Scores variants on `data` against the FP32 reference (ONNX Runtime), whose outputs are
    computed once: the accuracy-aware search re-scores one variant many times."""

    def __init__(self, reference: Variant, data: ValidationSet, progress: Progress = None) -> None:
        if reference.label != REFERENCE:
            raise ValueError(f"the reference must be {REFERENCE!r} on onnxruntime, got {reference.label!r}")
        self.reference = reference
        self.data = data
        self._outputs = _run(reference.models, data, progress)
        self.row = _metrics(self._outputs, None, data)

    def score(self, variant: Variant, progress: Progress = None) -> Dict[str, Any]:
        return _metrics(_run(variant.models, self.data, progress, variant.backend), self._outputs, self.data)

    def report(self, variants: Sequence[Variant], unavailable: Optional[Dict[str, str]] = None, progress: Progress = None) -> AccuracyReport:
        rows = {REFERENCE: self.row}
        for variant in variants:
            if variant is not self.reference:
                rows[variant.label] = self.score(variant, progress)
        return AccuracyReport(
            images=len(self.data),
            defective=int(self.data.defective.sum()),
            rows=rows,
            models={v.label: {task: str(path) for task, path in v.models.items()} for v in [self.reference, *variants] if v.label in rows},
            backends={v.label: v.backend for v in [self.reference, *variants] if v.label in rows},
            unavailable=dict(unavailable or {}),
        )


def accuracy_report(
    variants: Sequence[Variant],
    data: ValidationSet,
    unavailable: Optional[Dict[str, str]] = None,
    progress: Progress = None,
) -> AccuracyReport:
    """Evaluate every variant on `data`; one must be FP32 on ONNX Runtime, the reference every row
    is compared with. progress(1) after each image of each model.
    """
    reference = next((v for v in variants if v.label == REFERENCE), None)
    if reference is None:
        raise ValueError(f"variants must include the {REFERENCE!r} reference on onnxruntime")
    return Scorer(reference, data, progress).report(variants, unavailable, progress)


def check_budget(report: AccuracyReport, variants: Sequence[str], budget: Budget) -> List[BudgetMiss]:
    """The budget misses of `variants` against the reference; stored on the report too."""
    report.budget = budget
    report.misses = [miss for label in variants for miss in budget.misses(label, report.rows[label], report.rows[REFERENCE])]
    return report.misses


# -- keeping the fewest layers in float -------------------------------------------------------------
Make = Callable[[Dict[str, List[str]], int], List[Variant]]
"""make(float layers by task, try number) -> the variants (one per backend scored) of an INT8 build
that keeps those layers in float; each try writes its own files."""


def float_search(
    make: Make, scorer: Scorer, budget: Budget, ranked: Sequence[LayerError], progress: Progress = None
) -> Tuple[FloatSearch, List[Variant], Dict[str, Dict[str, Any]]]:
    """Keep the fewest of the `ranked` layers (most error added first) in float that bring every
    variant `make` returns within `budget`: the top 1, 2, 4... until one passes, then bisection
    between the last failing and the first passing count (Polygraphy's precision bisection; the
    error a layer adds only shrinks when more layers are float, so the passing prefixes are the
    longer ones). Returns the search, and the chosen try's variants with their rows: the first
    passing try, else the one closest to the budget.
    """
    if not ranked:
        raise ValueError("float_search needs at least one ranked layer")
    tried: Dict[int, Tuple[Attempt, List[Variant], Dict[str, Dict[str, Any]]]] = {}

    def attempt(count: int) -> bool:
        chosen: Dict[str, List[str]] = {}
        for layer in ranked[:count]:
            chosen.setdefault(layer.task, []).append(layer.node)
        variants = make(chosen, len(tried) + 1)
        rows = {v.label: scorer.score(v, progress) for v in variants}
        misses = [m for v in variants for m in budget.misses(v.label, rows[v.label], scorer.row)]
        tried[count] = (Attempt(count, misses), variants, rows)
        return not misses

    failing, passing, count = 0, None, 1
    while count <= len(ranked) and passing is None:
        if attempt(count):
            passing = count
        else:
            failing, count = count, (len(ranked) if count < len(ranked) < 2 * count else 2 * count)
    while passing is not None and passing - failing > 1:
        middle = (failing + passing) // 2
        if attempt(middle):
            passing = middle
        else:
            failing = middle
    best = passing if passing is not None else min(tried, key=lambda k: (tried[k][0].worst_excess, k))
    _, variants, rows = tried[best]
    float_layers: Dict[str, List[str]] = {}
    for layer in ranked[:best]:
        float_layers.setdefault(layer.task, []).append(layer.node)
    search = FloatSearch(variants[0].label if variants else "", list(ranked), [tried[k][0] for k in tried], float_layers)
    return search, variants, rows


# -- which layers lose the accuracy ---------------------------------------------------------------
def blame_layers(
    reference: PathLike, quantized: PathLike, batches: Iterable[np.ndarray], top: Optional[int] = 5, task: str = ""
) -> List[LayerError]:
    """Rank layers (Conv/Gemm/MatMul) by the error they add: their output's relative L2 error
    against the FP32 model minus the largest error of the layers feeding them.

    Both graphs run unoptimised with every layer output exposed (the QDQ graph keeps the FP32
    tensor names), so the QDQ numerics are the fake-quant ones TensorRT implements.
    """
    onnx = require("onnx", "layer error analysis")
    ref_model = onnx.load(str(reference))
    q_model = onnx.load(str(quantized))
    q_tensors = {out for node in q_model.graph.node for out in node.output}
    layers = [node for node in ref_model.graph.node if node.op_type in LAYER_TYPES and node.output[0] in q_tensors]
    if not layers:
        return []
    names = [node.output[0] for node in layers]
    input_name = read_card(Path(reference)).input.name
    ref_session = _exposing_session(ref_model, names)
    q_session = _exposing_session(q_model, names)
    ref_sq = np.zeros(len(names))
    diff_sq = np.zeros(len(names))
    for batch in batches:
        ref_out = ref_session.run(names, {input_name: batch})
        q_out = q_session.run(names, {input_name: batch})
        for i, (f, q) in enumerate(zip(ref_out, q_out)):
            ref_sq[i] += float(np.square(f, dtype=np.float64).sum())
            diff_sq[i] += float(np.square(q - f, dtype=np.float64).sum())
    relative = {name: math.sqrt(d / max(r, 1e-30)) for name, r, d in zip(names, ref_sq, diff_sq)}
    upstream = _upstream_layers(ref_model, layers)
    ranked = [
        LayerError(
            node=node.name,
            op_type=node.op_type,
            relative_error=relative[node.output[0]],
            added_error=relative[node.output[0]] - max((relative[u] for u in upstream[node.output[0]]), default=0.0),
            task=task,
        )
        for node in layers
    ]
    ranked.sort(key=lambda e: e.added_error, reverse=True)
    return ranked if top is None else ranked[:top]


def _exposing_session(model: Any, names: Sequence[str]) -> Any:
    from edgeseg.edge.backends.onnxruntime import ort_session

    onnx = require("onnx", "layer error analysis")
    present = {out.name for out in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort_session(model.SerializeToString(), providers=["CPUExecutionProvider"], graph_optimization="disable", log_severity=3)


def _upstream_layers(model: Any, layers: Sequence[Any]) -> Dict[str, List[str]]:
    """layer output -> outputs of the nearest layers feeding its data input (through Relu, Add,
    pooling, Resize, Concat...)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    layer_outputs = {node.output[0] for node in layers}
    found: Dict[str, List[str]] = {}
    for node in layers:
        seen, hits = set(), []
        queue = deque([node.input[0]])
        while queue:
            tensor = queue.popleft()
            if tensor in seen or tensor not in producers:
                continue
            seen.add(tensor)
            if tensor in layer_outputs:
                hits.append(tensor)
                continue
            queue.extend(producers[tensor].input)
        found[node.output[0]] = hits
    return found
