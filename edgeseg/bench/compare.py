"""`edgeseg bench --compare A.json B.json`: B against A, cell by cell, for CI.

Cells are matched on (model, backend, precision, batch), pipelines on (backend, precision).
A regression is B slower than A by more than the threshold: throughput below (1 - t)x, median
host latency above (1 + t)x, pipeline FPS below (1 - t)x; a cell measured in A but not in B
counts as one too (a build that lost its TensorRT engines must not pass as "no change").
Runs from different machines are compared but flagged: their ratios measure the machines.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgeseg.bench.suite import SCHEMA
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

DEFAULT_THRESHOLD = 0.05


@dataclass
class Change:
    """One figure of one cell in both runs (`new` None: missing from B)."""

    cell: str
    metric: str
    old: float
    new: Optional[float]
    higher_is_better: bool
    regression: bool

    @property
    def ratio(self) -> Optional[float]:
        return self.new / self.old if self.new is not None and self.old else None

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), ratio=self.ratio)


def load(path: PathLike) -> Dict[str, Any]:
    """A bench JSON document, or one line naming the file and what is wrong with it."""
    file = Path(path)
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise EdgesegError(f"{file} not found", hint="pass JSON files written by `edgeseg bench`") from None
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"{file} is not readable JSON ({exc})", hint="pass JSON files written by `edgeseg bench`") from None
    family = SCHEMA.split("/")[0]
    schema = document.get("schema", "") if isinstance(document, dict) else ""
    if not str(schema).startswith(family + "/"):
        raise EdgesegError(f"{file} is not an edgeseg bench result (schema {schema!r})", hint="pass JSON files written by `edgeseg bench`")
    if schema != SCHEMA:
        raise EdgesegError(f"{file} has schema {schema}, this edgeseg reads {SCHEMA}", hint="re-run `edgeseg bench` with this version")
    return document


def _cells(document: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    cells: Dict[str, Dict[str, float]] = {}
    for r in document["results"]:
        if "throughput" in r:
            cells[f"{r['name']} {r['backend']} {r['precision']} b{r['batch']}"] = {
                "throughput": r["throughput"],
                "host_p50_ms": r["latency_ms"]["host"]["median"],
            }
    for p in document.get("pipeline", []):
        cells[f"pipeline {p['backend']} {p['precision']}"] = {"fps": p["fps"]}
    return cells


def compare(old: Dict[str, Any], new: Dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> List[Change]:
    """Every figure of every cell of `old`, against `new`."""
    if not 0 < threshold < 1:
        raise EdgesegError(f"--threshold is a fraction in (0, 1), e.g. 0.05 for 5 %, got {threshold}")
    changes = []
    after = _cells(new)
    for cell, figures in _cells(old).items():
        for metric, value in figures.items():
            higher = metric != "host_p50_ms"
            now = after.get(cell, {}).get(metric)
            if now is None:
                regression = True
            elif higher:
                regression = now < value * (1 - threshold)
            else:
                regression = now > value * (1 + threshold)
            changes.append(Change(cell, metric, value, now, higher, regression))
    return changes


def machines(old: Dict[str, Any], new: Dict[str, Any]) -> Tuple[str, str]:
    """A short description of each run's machine (CPU model, GPUs)."""

    def describe(document: Dict[str, Any]) -> str:
        env = document.get("environment", {})
        cpu = env.get("cpu", {}) if isinstance(env.get("cpu"), dict) else {}
        gpus = env.get("gpus") if isinstance(env.get("gpus"), list) else []
        return " + ".join([str(cpu.get("model", "?"))] + [g.get("name", "?") for g in gpus])

    return describe(old), describe(new)
