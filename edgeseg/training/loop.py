"""Training and evaluation of the segmenter (ResUNet) and the classifier gate.

One loop serves both tasks; what differs (dataset, loss, validation metrics, threshold choice) is
looked up per task. A run folder holds, named by task so
two runs' checkpoints can sit side by side (and export / bench hints name the right one):
    <task>.pt       the best validated checkpoint (models.checkpoint format, thresholds chosen on
                    the validation split, ready for `edgeseg export -c`);
    <task>.last.pt  the latest epoch, plus optimizer state and history, for `--resume`;
    metrics.json    per-epoch history, the best epoch's metrics and the skipped input.
Runs are reproducible: the split, the initial weights, the batch order and every augmentation
follow from --seed (and the epoch), so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from edgeseg.data.datasets import ClassificationDataset, SegmentationDataset
from edgeseg.data.severstal import CLASS_NAMES, NUM_CLASSES, Sample, SeverstalData, load_images, scan
from edgeseg.edge.preprocess import Preprocess
from edgeseg.errors import EdgesegError
from edgeseg.files import ensure_writable_dir, write_json
from edgeseg.models import DEFAULT_INPUT, MODEL_FOR_TASK, create_model, load_checkpoint, save_checkpoint
from edgeseg.models.checkpoint import read_payload
from edgeseg.training.losses import segmentation_loss
from edgeseg.training.metrics import (
    SegmentationScorer,
    apply_thresholds,
    best_defect_threshold,
    classification_metrics,
    dice,
)

TASKS = ("segmenter", "classifier")
METRICS = "metrics.json"
WARMUP_FRACTION = 0.03
_console = Console(stderr=True)


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in <task>.last.pt; `--resume` continues with it)."""

    task: str
    data: str
    out: str
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    seed: int = 0
    loss: str = "bce-dice"
    model: Dict[str, Any] = field(default_factory=dict)  # create_model options, e.g. {"base_width": 8}
    input_size: Optional[Tuple[int, int]] = None  # model input (H, W); default models.DEFAULT_INPUT[task]
    crop: Optional[Tuple[int, int]] = None  # segmenter: train on random (H, W) windows of the model frame
    defect_crop: float = 0.5  # segmenter: share of windows centred near a defect
    val_every: int = 1
    limit: Optional[int] = None  # use only the first N images (quick experiments)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise EdgesegError(f"unknown task {self.task!r}", hint=f"use one of {', '.join(TASKS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise EdgesegError("epochs, batch size and val-every must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise EdgesegError(f"validation fraction must be between 0 and 1, got {self.val_fraction}")
        if self.task == "segmenter":
            segmentation_loss(self.loss)  # validates the name
        self.input_size = tuple(self.input_size) if self.input_size else DEFAULT_INPUT[self.task]  # type: ignore[assignment]
        self.crop = tuple(self.crop) if self.crop else None  # type: ignore[assignment]


def best_checkpoint(task: str) -> str:
    """File name of a run's best checkpoint: the task, e.g. `classifier.pt`."""
    return f"{task}.pt"


def last_checkpoint(task: str) -> str:
    """File name of a run's resumable state, e.g. `classifier.last.pt`."""
    return f"{task}.last.pt"


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    best_epoch: int
    best_metrics: Dict[str, Any]
    skipped: List[str]
    seconds: float


def set_threads(threads: Optional[int]) -> int:
    """Use the cores this process may run on (not the machine's count) unless told otherwise."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def load_split(config: TrainConfig, progress: Optional[Progress]) -> Tuple[SeverstalData, List[Tuple[Sample, np.ndarray]], List[Tuple[Sample, np.ndarray]]]:
    """Scan and decode the data folder once (bad rows/images are recorded and skipped), then split."""
    data = scan(Path(config.data))
    if config.limit:
        data.samples = data.samples[: config.limit]
    task = progress.add_task("reading images", total=len(data.samples)) if progress else None
    advance = (lambda n: progress.advance(task, n)) if progress else None  # type: ignore[arg-type]
    items = list(load_images(data, advance))
    if len(items) < 2:
        raise EdgesegError(f"{config.data}: {len(items)} readable image(s); training needs at least 2")
    order = np.random.default_rng(config.seed).permutation(len(items))
    n_val = min(max(1, int(round(len(items) * config.val_fraction))), len(items) - 1)
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return data, train, val


def pixel_statistics(images: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Mean and std of pixel/255 over (a subsample of) the training images, for normalisation."""
    pixels = np.concatenate([img[::4, ::4].ravel() for img in images]).astype(np.float64) / 255.0
    return float(pixels.mean()), float(max(pixels.std(), 1e-3))


def build_dataset(task: str, spec: Preprocess, items: Sequence[Tuple[Sample, np.ndarray]], *,
                  config: Optional[TrainConfig] = None) -> Union[ClassificationDataset, SegmentationDataset]:
    """Training dataset when `config` is given (crops, augmentation), else the plain evaluation one."""
    samples = [s for s, _ in items]
    images = [img for _, img in items]
    seed = config.seed if config else 0
    if task == "classifier":
        return ClassificationDataset(samples, images, spec, augment=config is not None, seed=seed)
    if config is None:
        return SegmentationDataset(samples, images, spec)
    return SegmentationDataset(samples, images, spec, crop=config.crop, defect_crop=config.defect_crop, augment=True, seed=seed)


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _batches(model: nn.Module, loader: DataLoader) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Sigmoid outputs and targets of a whole loader, batch by batch, in eval mode."""
    model.eval()
    with torch.inference_mode():
        for x, y in loader:
            yield torch.sigmoid(model(x)).numpy(), y.numpy()


def validate(config: TrainConfig, model: nn.Module, loader: DataLoader) -> Dict[str, Any]:
    """Validation metrics with thresholds chosen on this split ("thresholds" in the card convention)."""
    if config.task == "segmenter":
        scorer = SegmentationScorer(NUM_CLASSES)
        for probs, masks in _batches(model, loader):
            for p, m in zip(probs, masks):
                scorer.add(p, m)
        return scorer.result()
    probs, labels = (np.concatenate(a).ravel() for a in zip(*_batches(model, loader)))
    metrics: Dict[str, Any] = dict(classification_metrics(probs, labels, best_defect_threshold(probs, labels)))
    metrics["thresholds"] = {"defect": metrics["threshold"]}
    return metrics


def score_of(task: str, metrics: Dict[str, Any]) -> float:
    """The number that picks the best epoch."""
    return float(metrics["mean_dice"] if task == "segmenter" else metrics["accuracy"])


def train(config: TrainConfig, *, resume: bool = False, threads: Optional[int] = None, show_progress: bool = True) -> TrainResult:
    """Train per `config` into config.out (see the module docstring for what it writes)."""
    out = ensure_writable_dir(config.out)
    start_epoch, state = 0, None
    if resume:
        config, start_epoch, state = _resume_state(out, config)
        _console.print(f"resuming {out / last_checkpoint(config.task)} after epoch {start_epoch} of {config.epochs}, with its saved options", highlight=False)
    set_threads(threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    with _progress(show_progress) as progress:
        data, train_items, val_items = load_split(config, progress)
        if state is not None:
            spec = Preprocess.from_dict(state["preprocess"])
        else:
            mean, std = pixel_statistics([img for _, img in train_items])
            spec = Preprocess(height=config.input_size[0], width=config.input_size[1], mean=mean, std=std)  # type: ignore[index]
        for problem in data.problems:
            _console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
        train_set = build_dataset(config.task, spec, train_items, config=config)
        val_loader = DataLoader(build_dataset(config.task, spec, val_items), batch_size=2 if config.task == "segmenter" else 32)
        sampler_seed = torch.Generator()
        loader = DataLoader(
            train_set, batch_size=config.batch_size, sampler=RandomSampler(train_set, generator=sampler_seed),
            drop_last=len(train_set) > config.batch_size,
        )
        model = create_model(MODEL_FOR_TASK[config.task], **config.model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        history: List[Dict[str, Any]] = []
        best_score, best_epoch, best_metrics = -1.0, -1, {}
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, best_score, best_epoch = state["history"], state["best_score"], state["best_epoch"]
            best_metrics = state["best_metrics"]
        loss_fn = segmentation_loss(config.loss) if config.task == "segmenter" else nn.functional.binary_cross_entropy_with_logits
        total_steps = config.epochs * len(loader)
        bar = progress.add_task("training", total=total_steps, completed=start_epoch * len(loader)) if progress else None
        for epoch in range(start_epoch, config.epochs):
            train_set.set_epoch(epoch)  # type: ignore[attr-defined]
            sampler_seed.manual_seed(config.seed * 100_003 + epoch)
            losses = _train_epoch(model, loader, optimizer, loss_fn, epoch, total_steps, config, progress, bar)
            record: Dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan")}
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
                metrics = validate(config, model, val_loader)
                record["val"] = metrics
                if score_of(config.task, metrics) >= best_score:
                    best_score, best_epoch, best_metrics = score_of(config.task, metrics), epoch + 1, metrics
                    _save(out / best_checkpoint(config.task), model, config, spec, metrics, {"epoch": epoch + 1})
                _console.print(_epoch_line(config.task, record), highlight=False)
            history.append(record)
            extra = {
                "epoch": epoch + 1, "optimizer": optimizer.state_dict(), "history": history, "best_score": best_score,
                "best_epoch": best_epoch, "best_metrics": best_metrics, "train_config": _config_dict(config),
            }
            _save(out / last_checkpoint(config.task), model, config, spec, record.get("val", best_metrics), extra)
            _write_metrics(out, config, history, best_epoch, best_metrics, data.problems, time.perf_counter() - started)
    return TrainResult(out, out / best_checkpoint(config.task), best_epoch, best_metrics, data.problems, time.perf_counter() - started)


def _train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss_fn: Any, epoch: int,
                 total_steps: int, config: TrainConfig, progress: Optional[Progress], bar: Any) -> List[float]:
    """One pass over the training loader; returns the step losses."""
    model.train()
    losses: List[float] = []
    for step, (x, y) in enumerate(loader, start=epoch * len(loader)):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, total_steps, config.lr)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(bar, advance=1, description=f"epoch {epoch + 1}/{config.epochs} loss {np.mean(losses[-20:]):.4f}")
    return losses


def _progress(show: bool):
    if not show:
        from contextlib import nullcontext

        return nullcontext(None)
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=_console, transient=False,
    )


def _epoch_line(task: str, record: Dict[str, Any]) -> str:
    val = record["val"]
    if task == "segmenter":
        classes = " ".join(f"{d:.3f}" for d in val["dice_per_class"])
        return (
            f"epoch {record['epoch']}: loss {record['loss']:.4f}  val Kaggle mean Dice {val['mean_dice']:.4f}, "
            f"Dice where a defect exists {val['dice_where_defect']:.4f} (per class {classes})"
        )
    return (
        f"epoch {record['epoch']}: loss {record['loss']:.4f}  val accuracy {val['accuracy']:.4f} "
        f"F1 {val['f1']:.4f} AUC {val['roc_auc']:.4f}"
    )


def _config_dict(config: TrainConfig) -> Dict[str, Any]:
    data = asdict(config)
    data["input_size"] = list(config.input_size) if config.input_size else None
    data["crop"] = list(config.crop) if config.crop else None
    return data


def _save(path: Path, model: nn.Module, config: TrainConfig, spec: Preprocess, metrics: Dict[str, Any], extra: Dict[str, Any]) -> None:
    if config.task == "segmenter":
        classes = list(CLASS_NAMES)
        thresholds = metrics.get("thresholds") or {"probability": [0.5] * NUM_CLASSES, "min_area": [0] * NUM_CLASSES}
    else:
        classes = ["defect"]
        thresholds = metrics.get("thresholds") or {"defect": 0.5}
    save_checkpoint(
        path, model, task=config.task, model_config={"name": MODEL_FOR_TASK[config.task], **config.model},
        preprocess=spec, classes=classes, thresholds=thresholds, metrics=_plain(metrics), extra=_plain_extra(extra),
    )


def _plain(value: Any) -> Any:
    """JSON-able copy (weights_only checkpoints take plain containers; NaN stays a float)."""
    return json.loads(json.dumps(value))


def _plain_extra(extra: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (v if k == "optimizer" else _plain(v)) for k, v in extra.items()}


def _write_metrics(out: Path, config: TrainConfig, history: List[Dict[str, Any]], best_epoch: int,
                   best: Dict[str, Any], problems: List[str], seconds: float) -> None:
    report = {
        "task": config.task, "config": _config_dict(config), "best_epoch": best_epoch, "best": best,
        "history": history, "skipped": {"count": len(problems), "problems": problems}, "seconds": round(seconds, 1),
    }
    write_json(out / METRICS, report)


def _resume_state(out: Path, config: TrainConfig) -> Tuple[TrainConfig, int, Dict[str, Any]]:
    """Saved config (with this call's data/out/epochs), the epoch to start from, and saved state."""
    path = out / last_checkpoint(config.task)
    if not path.is_file():
        raise EdgesegError(f"nothing to resume: {path} does not exist", hint="drop --resume to start a new run")
    payload = read_payload(path)
    extra = payload.get("extra") or {}
    if "train_config" not in extra or "optimizer" not in extra:
        raise EdgesegError(f"{path} has no training state to resume from", hint="use a new --out to start a new run")
    saved = dict(extra["train_config"])
    if saved["task"] != config.task:
        raise EdgesegError(f"{path} is a {saved['task']} run, not a {config.task} run")
    resumed = replace(TrainConfig(**saved), data=config.data, out=config.out, epochs=config.epochs)
    start = int(extra["epoch"])
    if start >= resumed.epochs:
        raise EdgesegError(f"{path} already finished {start} of {resumed.epochs} epochs", hint="pass a larger --epochs to train on")
    state = {
        "model": payload["state_dict"], "optimizer": extra["optimizer"], "preprocess": payload["preprocess"],
        "history": list(extra["history"]), "best_score": float(extra["best_score"]),
        "best_epoch": int(extra["best_epoch"]), "best_metrics": dict(extra["best_metrics"]),
    }
    return resumed, start, state


def evaluate(checkpoint: Path, data_dir: Path, *, threads: Optional[int] = None, limit: Optional[int] = None,
             show_progress: bool = True) -> Dict[str, Any]:
    """Metrics of a checkpoint, with the thresholds it carries, on a whole data folder (a held-out set)."""
    set_threads(threads)
    model, meta = load_checkpoint(checkpoint)
    with _progress(show_progress) as progress:
        data = scan(Path(data_dir))
        if limit:
            data.samples = data.samples[:limit]
        task = progress.add_task("reading images", total=len(data.samples)) if progress else None
        items = list(load_images(data, (lambda n: progress.advance(task, n)) if progress else None))
        if not items:
            raise EdgesegError(f"{data_dir}: no readable images to evaluate on")
        loader = DataLoader(build_dataset(meta.task, meta.preprocess, items), batch_size=2 if meta.task == "segmenter" else 32)
        if meta.task == "classifier":
            probs, labels = (np.concatenate(a).ravel() for a in zip(*_batches(model, loader)))
            metrics: Dict[str, Any] = dict(classification_metrics(probs, labels, float(meta.thresholds["defect"])))
        else:
            metrics = _segmenter_metrics(model, loader, meta.thresholds, progress)
    metrics.update({
        "task": meta.task, "checkpoint": {"file": str(checkpoint), "sha256": meta.sha256}, "data": str(data_dir),
        "skipped": {"count": len(data.problems), "problems": data.problems},
    })
    return metrics


def _segmenter_metrics(model: nn.Module, loader: DataLoader, thresholds: Dict[str, Any], progress: Optional[Progress]) -> Dict[str, Any]:
    """Kaggle Dice per class and mean, plus the two halves it averages: Dice where a defect exists,
    and the share of defect-free (image, class) pairs predicted empty (each of those scores 1 or 0)."""
    scores: List[List[float]] = [[] for _ in range(NUM_CLASSES)]
    defective: List[float] = []
    empty_hits: List[bool] = []
    bar = progress.add_task("evaluating", total=len(loader.dataset)) if progress else None  # type: ignore[arg-type]
    for probs, masks in _batches(model, loader):
        for p, m in zip(probs, masks):
            predicted = apply_thresholds(p, thresholds["probability"], thresholds["min_area"])
            for c in range(NUM_CLASSES):
                score = dice(predicted[c], m[c])
                scores[c].append(score)
                if m[c].any():
                    defective.append(score)
                else:
                    empty_hits.append(score == 1.0)
            if progress is not None and bar is not None:
                progress.advance(bar, 1)
    per_class = [float(np.mean(s)) for s in scores]
    return {
        "dice_per_class": per_class, "mean_dice": float(np.mean(per_class)),
        "dice_where_defect": float(np.mean(defective)) if defective else float("nan"),
        "empty_predicted_empty": float(np.mean(empty_hits)) if empty_hits else float("nan"),
        "thresholds": thresholds, "images": len(scores[0]),
    }
