"""`edgeseg bench --compare A.json B.json`: B against A, cell by cell, for CI.

Cells are matched on (model, backend, precision, batch), pipelines on (backend, precision). Per
cell: throughput, median and p99 host latency, and accuracy (segmenter mean Dice, classifier
recall) when both runs measured it; per pipeline: FPS and p99 glass-to-glass latency.

A regression is a change for the worse beyond BOTH the threshold and the runs' own noise, so two
runs of the same models on a busy machine do not cry wolf:
- throughput: the relative spread (max - min) / median of each run's `--repeats` rounds, the
  larger of the two runs; with a single round, the run's coefficient of variation;
- latency: the larger coefficient of variation of the two runs' timed iterations, and for p99
  also the run's own tail spread (p99 - median) / median; a p99 of fewer than MIN_TAIL_SAMPLES
  timings is shown but not judged (it is the slowest one or two runs, not a percentile);
- accuracy: none (the same data gives the same score), so any drop beyond the threshold counts.
A cell in only one run is listed as missing, apart from the changes, and is no regression.
Runs from different machines are compared but flagged: their ratios measure the machines.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgeseg.bench.suite import SCHEMA
from edgeseg.errors import UsageError
from edgeseg.files import PathLike

DEFAULT_THRESHOLD = 0.05
MIN_TAIL_SAMPLES = 20
_HINT = "pass JSON files written by `edgeseg bench`"


@dataclass
class Figure:
    """One figure of one run: its value and the relative noise it was measured with."""

    value: float
    noise: float
    higher_is_better: bool
    judged: bool = True  # False: too few samples for this figure to mean anything


@dataclass
class Change:
    """One figure of one cell in both runs, and the verdict on it."""

    cell: str
    metric: str
    old: float
    new: float
    noise: float  # the larger relative noise of the two runs
    higher_is_better: bool
    verdict: str  # "regression", "improvement", "within noise", "unchanged", "too few samples"

    @property
    def ratio(self) -> Optional[float]:
        return self.new / self.old if self.old else None

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), ratio=self.ratio, regression=self.regression)


@dataclass
class Comparison:
    changes: List[Change]
    missing_in_b: List[str] = field(default_factory=list)  # cells (or figures) A has and B lacks
    new_in_b: List[str] = field(default_factory=list)

    @property
    def regressions(self) -> List[Change]:
        return [c for c in self.changes if c.regression]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "regressions": len(self.regressions),
            "missing_in_b": self.missing_in_b,
            "new_in_b": self.new_in_b,
        }


def load(path: PathLike) -> Dict[str, Any]:
    """A bench JSON document with every key the comparison reads, or a UsageError (exit 2) of
    one line naming the file and what is wrong with it."""
    file = Path(path)
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"{file} not found", hint=_HINT) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{file} is not readable JSON ({exc})", hint=_HINT) from None
    family = SCHEMA.split("/")[0]
    schema = document.get("schema", "") if isinstance(document, dict) else ""
    if not str(schema).startswith(family + "/"):
        raise UsageError(f"{file} is not an edgeseg bench result (schema {schema!r})", hint=_HINT)
    if schema != SCHEMA:
        raise UsageError(f"{file} has schema {schema}, this edgeseg reads {SCHEMA}", hint="re-run `edgeseg bench` with this version")
    try:
        _cells(document)
    except (KeyError, TypeError, ValueError) as exc:
        detail = exc.args[0] if exc.args else type(exc).__name__
        raise UsageError(f"{file} is an incomplete bench result: {detail}", hint=_HINT) from None
    return document


def _need(row: Dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{_label(row)} has no {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def _label(row: Dict[str, Any]) -> str:
    if "throughput" in row or "name" in row:
        return f"result {row.get('name', '?')} {row.get('backend', '?')} {row.get('precision', '?')} b{row.get('batch', '?')}"
    return f"pipeline {row.get('backend', '?')} {row.get('precision', '?')}"


def _spread(rounds: Any, fallback: float) -> float:
    values = [float(v) for v in rounds or [] if v]
    if len(values) < 2:
        return fallback
    middle = sorted(values)[len(values) // 2]
    return (max(values) - min(values)) / middle if middle else fallback


def _accuracy(row: Dict[str, Any]) -> Dict[str, Figure]:
    accuracy = row.get("accuracy")
    if not isinstance(accuracy, dict):
        return {}
    figures = {}
    for key in ("mean_dice", "recall"):
        if isinstance(accuracy.get(key), (int, float)):
            figures[key] = Figure(float(accuracy[key]), 0.0, True)
    return figures


def _tail(stats: Dict[str, Any], cv: float) -> Figure:
    """The p99 of a latency block, with its noise: the cv or the run's own tail spread."""
    p99, median = float(stats.get("p99", stats["median"])), float(stats["median"])
    spread = (p99 - median) / median if median > 0 else 0.0
    return Figure(p99, max(cv, spread), False, judged=int(stats.get("count", MIN_TAIL_SAMPLES)) >= MIN_TAIL_SAMPLES)


def _cells(document: Dict[str, Any]) -> Dict[str, Dict[str, Figure]]:
    """{cell: {metric: Figure}} of one run; KeyError/TypeError for a document missing a key."""
    cells: Dict[str, Dict[str, Figure]] = {}
    results = document.get("results")
    if not isinstance(results, list):
        raise KeyError("no results list")
    for row in results:
        if not isinstance(row, dict):
            raise TypeError("a result is not an object")
        if "throughput" not in row:
            continue  # a skipped cell: nothing measured
        host = _need(row, "latency_ms", "host")
        cv = float(_need(row, "latency_ms", "host", "cv"))
        key = f"{_need(row, 'name')} {_need(row, 'backend')} {_need(row, 'precision')} b{_need(row, 'batch')}"
        cells[key] = {
            "throughput": Figure(float(row["throughput"]), _spread(row.get("throughput_rounds"), cv), True),
            "host_p50_ms": Figure(float(_need(row, "latency_ms", "host", "median")), cv, False),
            "host_p99_ms": _tail(host, cv),
            **_accuracy(row),
        }
    pipeline = document.get("pipeline") or []
    if not isinstance(pipeline, list):
        raise TypeError("pipeline is not a list")
    for row in pipeline:
        if not isinstance(row, dict):
            raise TypeError("a pipeline row is not an object")
        glass = _need(row, "latency_ms", "glass_to_glass")
        cv = float(glass.get("cv", 0.0))
        _need(row, "latency_ms", "glass_to_glass", "p99")
        cells[f"pipeline {_need(row, 'backend')} {_need(row, 'precision')}"] = {
            "fps": Figure(float(_need(row, "fps")), cv, True),
            "glass_p99_ms": _tail(glass, cv),
        }
    return cells


def compare(old: Dict[str, Any], new: Dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Every figure of every cell both runs measured; cells (and figures) in one run only are
    listed as missing or new."""
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold is a fraction in (0, 1), e.g. 0.05 for 5 %, got {threshold}")
    before, after = _cells(old), _cells(new)
    result = Comparison(changes=[])
    for cell, figures in before.items():
        if cell not in after:
            result.missing_in_b.append(cell)
            continue
        for metric, a in figures.items():
            b = after[cell].get(metric)
            if b is None:
                result.missing_in_b.append(f"{cell} {metric}")
                continue
            noise = max(a.noise, b.noise)
            verdict = _verdict(a.value, b.value, a.higher_is_better, threshold, noise) if a.judged and b.judged else "too few samples"
            result.changes.append(Change(cell, metric, a.value, b.value, noise, a.higher_is_better, verdict))
    result.new_in_b = [cell for cell in after if cell not in before]
    return result


def _verdict(old: float, new: float, higher_is_better: bool, threshold: float, noise: float) -> str:
    if old == 0:
        return "unchanged" if new == 0 else ("improvement" if (new > 0) == higher_is_better else "regression")
    change = new / old - 1.0
    worse = change < 0 if higher_is_better else change > 0
    if abs(change) <= threshold:
        return "unchanged"
    if abs(change) <= noise:
        return "within noise"
    return "regression" if worse else "improvement"


def machines(old: Dict[str, Any], new: Dict[str, Any]) -> Tuple[str, str]:
    """A short description of each run's machine (CPU model, GPUs)."""

    def describe(document: Dict[str, Any]) -> str:
        env = document.get("environment")
        env = env if isinstance(env, dict) else {}  # an unknown machine, not a reason to stop
        cpu, gpus = env.get("cpu"), env.get("gpus")
        cpu = cpu if isinstance(cpu, dict) else {}
        gpus = gpus if isinstance(gpus, list) else []
        return " + ".join([str(cpu.get("model", "?"))] + [g.get("name", "?") for g in gpus if isinstance(g, dict)])

    return describe(old), describe(new)
