"""Run the matrix: per cell and batch size the timing loop, FLOP/s against the machine's GEMM rate
and (with a validation set) accuracy; then the whole cascade end to end per backend × precision.

The result is one JSON-able document; report.py renders it, compare.py diffs two of them.
Schema "edgeseg.bench/1" (a change that breaks readers bumps the number):
  date, environment (edgeseg info + load average), settings, matmul {device: GEMM rate},
  results: one row per model x backend x precision x batch —
    measured: model, name, backend, precision, flavour, artifact, batch, describe, device, input,
      iterations, warmup_iterations, wall_s, throughput (images/s), cv, unstable,
      latency_ms {host, compute[, h2d, d2h]: count mean median p90 p95 p99 min max std cv},
      gflops_per_run, gflops_per_s, matmul_gflops_per_s, efficiency[, accuracy]
    not run: model, name, backend, precision, flavour, artifact, skipped (why, and the fix)
  ratios {"<name> b<batch>": {"<backend> <precision>": throughput / baseline}},
  pipeline: [backend, precision, frames, defective_frames, fps, gate_pass_rate, latency_ms],
  notes {what could not be counted}, interrupted (Ctrl-C stops between steps, keeps the rest).
"""
from __future__ import annotations

import contextlib
import datetime
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.bench.measure import Measurement, Settings, measure
from edgeseg.bench.variants import Variant
from edgeseg.edge.card import ModelCard
from edgeseg.edge.preprocess import preprocess
from edgeseg.envinfo import benchmark_environment
from edgeseg.errors import EdgesegError

SCHEMA = "edgeseg.bench/1"
Step = Optional[Callable[[str], None]]


@dataclass
class Options:
    """What to measure besides the timing loop's Settings.

    batches: images per inference. threads: ONNX Runtime intra-op / torch threads (0: default).
    validation: a Severstal-layout folder for accuracy columns (None: no accuracy).
    pipeline_frames: frames of the synthetic clip for the end-to-end run (0: skip it), with a
    share `prevalence` of defective strips. baseline: the cell every throughput is compared with.
    repeats: rounds the timed phase is split into, cells interleaved (see _measure_all).
    scored: the model names `validation` scores (e.g. not a random-init speed stand-in).
    """

    settings: Settings = Settings()
    batches: Sequence[int] = (1,)
    threads: int = 0
    torch_device: str = "cpu"
    validation: Optional[Path] = None
    validation_count: Optional[int] = None
    pipeline_frames: int = 30
    prevalence: float = 0.3
    seed: int = 0
    baseline: str = "onnxruntime fp32"
    repeats: int = 1
    scored: Optional[Sequence[str]] = None  # model names the validation scores (None: every model)

    def check(self) -> None:
        if self.repeats < 1:
            raise EdgesegError(f"--repeats must be >= 1, got {self.repeats}")
        if not self.batches or min(self.batches) < 1:
            raise EdgesegError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if not 0.0 <= self.prevalence <= 1.0:
            raise EdgesegError(f"--prevalence is a share of defective strips in [0, 1], got {self.prevalence}")
        if self.pipeline_frames < 0:
            raise EdgesegError(f"--frames must be >= 0, got {self.pipeline_frames}")


def sample_feed(card: ModelCard, batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """`batch` synthetic strips (defective ones: realistic activations), preprocessed as the
    runtime does; tiled models get every tile of each strip."""
    from edgeseg.data.synth import make_strip, sample_defect_classes, strip_rng

    arrays = []
    for index in range(batch):
        rng = strip_rng(seed, index)
        strip, _ = make_strip(rng, sample_defect_classes(rng) or (3,))
        arrays.append(preprocess(strip, card.preprocess))
    return {card.input.name: np.ascontiguousarray(np.concatenate(arrays).astype(card.input.dtype))}


class _Reference:
    """FLOPs per reference ONNX and GEMM rate per device, each computed once per run; a figure
    that cannot be had here is None with the reason kept for the report."""

    def __init__(self) -> None:
        self.flops: Dict[Tuple[str, int], Optional[float]] = {}
        self.rates: Dict[str, Optional[Dict[str, Any]]] = {}
        self.notes: Dict[str, str] = {}

    def gflops(self, reference: Optional[Path], batch: int) -> Optional[float]:
        if reference is None:
            return None
        key = (str(reference), batch)
        if key not in self.flops:
            from edgeseg.bench.flops import onnx_flops

            try:
                count = onnx_flops(reference, batch=batch)
                self.flops[key] = count.total / 1e9
                if count.uncounted:
                    self.notes[f"flops {reference.name}"] = f"not counted: {', '.join(sorted(set(count.uncounted)))}"
            except EdgesegError as exc:
                self.flops[key] = None
                self.notes[f"flops {reference.name}"] = str(exc)
        return self.flops[key]

    def rate(self, device: str) -> Optional[Dict[str, Any]]:
        if device not in self.rates:
            from edgeseg.bench.flops import matmul_rate

            try:
                rate = matmul_rate(device)
                self.rates[device] = {"gflops": rate.gflops, "size": rate.size, "dtype": rate.dtype, "method": rate.method}
            except EdgesegError as exc:
                self.rates[device] = None
                self.notes[f"matmul {device}"] = str(exc)
        return self.rates[device]


def _measure_all(cells: List[Variant], options: Options, reference: _Reference, accuracy: Dict[int, Any], step: Step, rows: List[Dict[str, Any]]) -> None:
    """Append a row per runnable cell and batch to `rows`.

    All backends stay active while a batch size is measured in `options.repeats` rounds, the
    cells interleaved (order reversed every other round): a change in the machine's load then
    falls on every cell alike, and each round's throughput is kept for paired ratios. A Ctrl-C
    still appends the rounds already measured.
    """
    runnable = [c for c in cells if c.artifact is not None]
    rounds = options.repeats
    first = Settings(options.settings.warmup_s, options.settings.duration_s / rounds, -(-options.settings.iterations // rounds))
    later = Settings(0.0, first.duration_s, first.iterations)  # one warm-up call: the cell ran before
    with contextlib.ExitStack() as stack:
        backends = [stack.enter_context(cell.open(options.threads, options.torch_device)) for cell in runnable]
        for batch in options.batches:
            planned = []
            for cell, backend in zip(runnable, backends):
                row = dict(_identity(cell), batch=batch, describe=backend.describe(), device=backend.runs_on)
                feed = sample_feed(cell.card, batch, options.seed)
                images = next(iter(feed.values())).shape[0]
                if backend.max_batch is not None and images > backend.max_batch:
                    rows.append(dict(row, skipped=f"{cell.artifact} takes at most {backend.max_batch} images per run, batch {batch} needs {images}"))
                else:
                    planned.append((cell, backend, feed, row, Measurement(batch=images)))
            try:
                for index in range(rounds):
                    for cell, backend, feed, row, total in planned if index % 2 == 0 else planned[::-1]:
                        if step is not None:
                            step(f"{cell.name} {cell.label} batch {batch}" + (f" round {index + 1}/{rounds}" if rounds > 1 else ""))
                        total.merge(measure(backend, feed, first if index == 0 else later))
            finally:
                for cell, backend, feed, row, total in planned:
                    if total.iterations:
                        rows.append(_row(row, total, feed, _efficiency(reference, cell, total.batch, total.latency_ms(), backend.runs_on), accuracy.get(id(cell))))


def _row(row: Dict[str, Any], total: Measurement, feed: Dict[str, np.ndarray], efficiency: Dict[str, Any], accuracy: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    latency = total.latency_ms()
    row.update(
        input=list(next(iter(feed.values())).shape),
        iterations=total.iterations,
        warmup_iterations=total.warmup_iterations,
        wall_s=total.wall_s,
        throughput=total.throughput,
        throughput_rounds=total.rounds,
        latency_ms=latency,
        cv=latency["host"].get("cv"),
        unstable=total.unstable,
        **efficiency,
    )
    if accuracy is not None:
        row["accuracy"] = accuracy
    return row


def _efficiency(reference: _Reference, cell: Variant, images: int, latency: Dict[str, Dict[str, float]], device: str) -> Dict[str, Any]:
    """GFLOPs per run (from the FP32 graph), achieved GFLOP/s at the median compute time, and that
    as a share of the device's measured FP32 GEMM rate."""
    gflops = reference.gflops(cell.reference, images)
    compute = latency.get("compute", latency["host"])["median"] / 1000.0
    achieved = gflops / compute if gflops is not None and compute > 0 else None
    rate = reference.rate(device)
    return {
        "gflops_per_run": gflops,
        "gflops_per_s": achieved,
        "matmul_gflops_per_s": rate["gflops"] if rate else None,
        "efficiency": achieved / rate["gflops"] if achieved is not None and rate else None,
    }


def _identity(cell: Variant) -> Dict[str, Any]:
    return {
        "model": cell.task,
        "name": cell.name,
        "backend": cell.backend,
        "precision": cell.precision,
        "flavour": cell.flavour,
        "artifact": str(cell.artifact) if cell.artifact else None,
    }


def _accuracy(cell: Variant, options: Options, data: Any) -> Optional[Dict[str, Any]]:
    """Classifier recall / accuracy or segmenter per-class and mean Dice of this cell, on `data`."""
    if data is None:
        return None
    from edgeseg.calibration.accuracy import classifier_probabilities, segmenter_scores

    backend = cell.open(options.threads, options.torch_device)
    if cell.task == "classifier":
        from edgeseg.training.metrics import classification_metrics

        probabilities, gate = classifier_probabilities(backend, data)
        metrics = classification_metrics(probabilities, data.defective, gate)
        return {"images": len(data), **{k: metrics[k] for k in ("recall", "precision", "accuracy") if k in metrics}}
    dice, _masks, classes = segmenter_scores(backend, data)
    per_class = dice.mean(axis=0)
    return {"images": len(data), "dice_per_class": {c: float(v) for c, v in zip(classes, per_class)}, "mean_dice": float(per_class.mean())}


def _pipelines(cells: List[Variant], options: Options, folder: Path, step: Step) -> List[Dict[str, Any]]:
    """The cascade over a synthetic clip for every backend × precision with both models runnable."""
    from edgeseg.data.clip import strip_frames, write_clip
    from edgeseg.edge.cascade import LocalCascade
    from edgeseg.edge.pipeline import Pipeline
    from edgeseg.edge.sources import open_source

    pairs: Dict[str, Dict[str, Variant]] = {}
    for cell in cells:
        if cell.artifact is not None and cell.task in ("classifier", "segmenter"):
            pairs.setdefault(cell.label, {}).setdefault(cell.task, cell)
    pairs = {label: pair for label, pair in pairs.items() if len(pair) == 2}
    if not pairs:
        return []
    images, defective = strip_frames(options.pipeline_frames, options.prevalence, options.seed)
    clip = write_clip(images, folder / "clip.mp4")
    rows = []
    for label, pair in pairs.items():
        if step is not None:
            step(f"pipeline {label}")
        classifier, segmenter = (pair[t].open(options.threads, options.torch_device) for t in ("classifier", "segmenter"))
        with open_source(clip) as source:
            report = Pipeline(source, LocalCascade(classifier, segmenter)).run()
        latency = report["latency_ms"]
        rows.append(
            {
                "backend": pair["segmenter"].backend,
                "precision": pair["segmenter"].precision,
                "frames": report["frames"],
                "defective_frames": int(sum(defective)),
                "fps": report["fps"],
                "gate_pass_rate": report["gate_pass_rate"],
                "latency_ms": {k: latency[k] for k in ("glass_to_glass", "classifier", "segmenter") if k in latency},
            }
        )
    return rows


def run_bench(cells: List[Variant], options: Options, step: Step = None) -> Dict[str, Any]:
    """Measure every runnable cell, then the pipelines; the document report.py renders."""
    options.check()
    started = datetime.datetime.now(datetime.timezone.utc)
    data = None
    if options.validation is not None:
        from edgeseg.calibration.accuracy import load_validation

        data = load_validation(options.validation, options.validation_count, options.seed)
    reference = _Reference()
    document: Dict[str, Any] = {
        "schema": SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "environment": benchmark_environment(),
        "settings": {
            "warmup_s": options.settings.warmup_s,
            "duration_s": options.settings.duration_s,
            "min_iterations": options.settings.iterations,
            "repeats": options.repeats,
            "batches": list(options.batches),
            "threads": options.threads,
            "baseline": options.baseline,
            "validation": str(options.validation) if options.validation else None,
            "pipeline": {"frames": options.pipeline_frames, "prevalence": options.prevalence, "seed": options.seed},
        },
        "results": [],
        "pipeline": [],
        "interrupted": False,
    }
    document["results"].extend(dict(_identity(cell), skipped=cell.skipped) for cell in cells if cell.artifact is None)
    try:
        scored = [cell for cell in cells if cell.artifact is not None and (options.scored is None or cell.name in options.scored)]
        accuracy = {id(cell): _accuracy(cell, options, data) for cell in scored}
        _measure_all(cells, options, reference, accuracy, step, document["results"])
        if options.pipeline_frames:
            with tempfile.TemporaryDirectory(prefix="edgeseg-bench-clip-") as folder:
                document["pipeline"] = _pipelines(cells, options, Path(folder), step)
    except KeyboardInterrupt:
        document["interrupted"] = True
    document["matmul"] = {device: rate for device, rate in reference.rates.items()}
    document["notes"] = reference.notes
    document["ratios"] = ratios(document["results"], options.baseline)
    return document


def ratios(rows: List[Dict[str, Any]], baseline: str) -> Dict[str, Dict[str, float]]:
    """Throughput of every measured row over the baseline row of the same model and batch:
    {"segmenter b1": {"onnxruntime int8": 1.9, "pytorch fp32": 0.4, ...}}. With interleaved
    rounds, the median of the per-round ratios (each against the baseline's run beside it)."""
    measured = [r for r in rows if "throughput" in r]
    base = {(r["name"], r["batch"]): r for r in measured if f"{r['backend']} {r['precision']}" == baseline}
    table: Dict[str, Dict[str, float]] = {}
    for r in measured:
        reference = base.get((r["name"], r["batch"]))
        if not reference:
            continue
        paired = [a / b for a, b in zip(r.get("throughput_rounds", []), reference.get("throughput_rounds", [])) if b > 0]
        same_rounds = len(paired) > 1 and len(paired) == len(r["throughput_rounds"]) == len(reference["throughput_rounds"])
        value = statistics.median(paired) if same_rounds else r["throughput"] / reference["throughput"]
        table.setdefault(f"{r['name']} b{r['batch']}", {})[f"{r['backend']} {r['precision']}"] = value
    return table
