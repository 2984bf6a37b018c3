"""Validation metrics and threshold choice, torch-free (numpy + OpenCV).

Segmenter: Dice per (image, class) with the Kaggle Severstal convention (an empty prediction on an
empty mask scores 1), averaged per class over images, and the mean of the classes. Predictions are
post-processed like the runtime's model-card thresholds: pixel probability > `probability[c]`, then
connected components smaller than `min_area[c]` pixels are dropped.
Classifier: accuracy, precision, recall, F1 at a threshold, and ROC AUC (threshold-free).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

PROBABILITY_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREA_GRID = (0, 16, 32, 64, 128, 256, 512, 1024, 2048)
DEFECT_GRID = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist())


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Kaggle Dice of two binary masks: 2|A∩B| / (|A|+|B|), and 1.0 when both are empty."""
    pred, true = prediction.astype(bool), truth.astype(bool)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def apply_thresholds(probabilities: np.ndarray, probability: Sequence[float], min_area: Sequence[int]) -> np.ndarray:
    """(C, H, W) probabilities -> uint8 (C, H, W) masks: threshold, then drop components < min_area px."""
    masks = np.zeros(probabilities.shape, dtype=np.uint8)
    for c, prob in enumerate(probabilities):
        binary = (prob > probability[c]).astype(np.uint8)
        if min_area[c] <= 0:
            masks[c] = binary
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area[c]
        keep[0] = False  # background
        masks[c] = keep[labels]
    return masks


def mean_dice(predictions: np.ndarray, truths: np.ndarray) -> Tuple[List[float], float]:
    """Per-class and mean Kaggle Dice of (N, C, H, W) binary predictions against truths."""
    classes = predictions.shape[1]
    per_class = [float(np.mean([dice(p[c], t[c]) for p, t in zip(predictions, truths)])) for c in range(classes)]
    return per_class, float(np.mean(per_class))


@dataclass
class SegmentationScorer:
    """Accumulates, per validation image and class, what every (probability, min_area) pair of the grid
    would score, without keeping the probability maps: for each probability threshold it stores the
    area of every connected component and its overlap with the truth, from which any min_area's
    Dice follows. `result()` then gives the best thresholds per class and their Dice.
    """

    num_classes: int
    probabilities: Tuple[float, ...] = PROBABILITY_GRID
    min_areas: Tuple[int, ...] = MIN_AREA_GRID
    # scores[c] : list over images of (len(probabilities), len(min_areas)) Dice arrays
    scores: List[List[np.ndarray]] = field(default_factory=list)
    # defective[c] : per image, whether the truth has class c (Dice where a defect exists)
    defective: List[List[bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scores = [[] for _ in range(self.num_classes)]
        self.defective = [[] for _ in range(self.num_classes)]

    def add(self, probabilities: np.ndarray, truths: np.ndarray) -> None:
        """One image: (C, H, W) probabilities and (C, H, W) binary truth."""
        min_areas = np.asarray(self.min_areas)
        for c in range(self.num_classes):
            truth = truths[c].astype(bool)
            truth_area = int(truth.sum())
            table = np.empty((len(self.probabilities), len(self.min_areas)))
            for i, p in enumerate(self.probabilities):
                binary = (probabilities[c] > p).astype(np.uint8)
                count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
                areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
                overlap = np.bincount(labels[truth], minlength=count)[1:]
                kept = areas[None, :] >= min_areas[:, None]  # (min_areas, components)
                predicted = (kept * areas).sum(axis=1)
                intersection = (kept * overlap).sum(axis=1)
                total = predicted + truth_area
                table[i] = np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))
            self.scores[c].append(table)
            self.defective[c].append(truth_area > 0)

    def result(self) -> Dict[str, object]:
        """{"thresholds": card thresholds, "dice_per_class", "mean_dice" at them, "mean_dice_untuned"
        (0.5, no min-area), and the two halves the Kaggle mean averages, as `evaluate` reports them:
        "dice_where_defect" and "empty_predicted_empty"}."""
        if not self.scores or not self.scores[0]:
            raise ValueError("no validation images were scored")
        best_p: List[float] = []
        best_area: List[int] = []
        per_class: List[float] = []
        plain: List[float] = []
        where_defect: List[float] = []
        empty_hits: List[bool] = []
        half = self.probabilities.index(0.5) if 0.5 in self.probabilities else len(self.probabilities) // 2
        for c in range(self.num_classes):
            mean = np.mean(self.scores[c], axis=0)  # (probabilities, min_areas)
            i, j = np.unravel_index(int(np.argmax(mean)), mean.shape)
            best_p.append(float(self.probabilities[i]))
            best_area.append(int(self.min_areas[j]))
            per_class.append(float(mean[i, j]))
            plain.append(float(mean[half, 0]))
            for table, defect in zip(self.scores[c], self.defective[c]):
                if defect:
                    where_defect.append(float(table[i, j]))
                else:
                    empty_hits.append(bool(table[i, j] == 1.0))
        return {
            "thresholds": {"probability": best_p, "min_area": best_area},
            "dice_per_class": per_class,
            "mean_dice": float(np.mean(per_class)),
            "mean_dice_untuned": float(np.mean(plain)),
            "dice_where_defect": float(np.mean(where_defect)) if where_defect else float("nan"),
            "empty_predicted_empty": float(np.mean(empty_hits)) if empty_hits else float("nan"),
            "images": len(self.scores[0]),
        }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN if one class is absent."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average rank for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> Dict[str, float]:
    """accuracy, precision, recall, F1 at `threshold` (p >= threshold is "defect") and ROC AUC."""
    labels = labels.astype(bool)
    predicted = probabilities >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(probabilities, labels),
        "threshold": float(threshold),
        "images": int(labels.size),
    }


def best_defect_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The grid threshold with the best accuracy (ties: the one closest to 0.5)."""
    truth = labels.astype(bool)
    ranked = sorted(DEFECT_GRID, key=lambda t: (-np.mean((probabilities >= t) == truth), abs(t - 0.5)))
    return float(ranked[0])
