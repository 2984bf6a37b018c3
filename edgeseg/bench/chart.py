"""Horizontal bar chart PNG drawn with OpenCV (already a dependency; matplotlib is not).

One panel per group (e.g. "segmenter", "classifier"), one bar per measured variant, each
labelled on its row with its value printed after it, an optional whisker (e.g. min..p99) and
a few round ticks. A backend (the label's first word) keeps one colour in every panel, so
no legend is needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output

Colour = Tuple[int, int, int]  # BGR

WIDTH = 1000
MARGIN = 20
TITLE_LINE = 28  # px per title line; the title wraps at spaces to stay inside the margins
TITLE_SCALE = 0.75
TITLE_THICKNESS = 2
PANEL_HEAD = 30
BAR_HEIGHT = 22
BAR_GAP = 10
AXIS_HEIGHT = 34
PANEL_GAP = 14
FONT_SCALE = 0.5
MAX_LABEL_SHARE = 0.4  # of the width; longer labels are shortened with ".."

TEXT: Colour = (30, 30, 30)
MUTED: Colour = (110, 110, 110)
GRID: Colour = (225, 225, 225)
WHISKER: Colour = (60, 60, 60)
BACKENDS: Dict[str, Colour] = {"tensorrt": (0, 185, 118), "onnxruntime": (200, 120, 30), "pytorch": (40, 80, 230)}
PALETTE: Sequence[Colour] = ((170, 60, 150), (30, 160, 220), (150, 150, 20), (90, 90, 200), (60, 170, 60), (200, 90, 110))


@dataclass
class Bar:
    """One bar: `value` drawn as its length; `low`..`high` as a whisker when both are finite.
    A non-finite or negative value draws no bar and prints "n/a"."""

    label: str
    value: float
    low: Optional[float] = None
    high: Optional[float] = None

    @property
    def drawable(self) -> bool:
        return math.isfinite(self.value) and self.value >= 0

    @property
    def whisker(self) -> Optional[Tuple[float, float]]:
        low, high = self.low, self.high
        if not self.drawable or low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or min(low, high) < 0:
            return None
        return (min(low, high), max(low, high))


def bar_chart(path: PathLike, title: str, groups: Dict[str, List[Bar]], unit: str = "ms", log: bool = False) -> Path:
    """Write a PNG bar chart of `groups` ({panel title: bars}) to `path`, atomically. `log`: a
    log10 axis per panel, from the decade under its smallest value, so a 2 ms TensorRT bar and a
    2 s CPU bar are both readable; each bar's value is written at its end either way."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise EdgesegError(f"bar charts are written as PNG, not {target.name}", hint="name the file .png")
    if not groups:
        raise EdgesegError(f"nothing to chart for {target.name}: no groups")
    empty = [name for name, bars in groups.items() if not bars]
    if empty:
        raise EdgesegError(f"nothing to chart for {target.name}: group {', '.join(empty)} has no bars")

    everything = [bar for bars in groups.values() for bar in bars]
    colours = _backend_colours(bar.label for bar in everything)
    label_width = min(max(_text_width(bar.label) for bar in everything), int(WIDTH * MAX_LABEL_SHARE)) + 12
    value_width = max(_text_width(_value_text(bar, unit)) for bar in everything) + 12
    left, right = MARGIN + label_width, WIDTH - MARGIN - value_width
    title_lines = wrap(title, WIDTH - 2 * MARGIN, TITLE_SCALE, TITLE_THICKNESS)
    title_height = TITLE_LINE * len(title_lines) + 18
    height = title_height + sum(PANEL_HEAD + len(bars) * (BAR_HEIGHT + BAR_GAP) + AXIS_HEIGHT + PANEL_GAP for bars in groups.values()) + MARGIN

    image = np.full((height, WIDTH, 3), 255, dtype=np.uint8)
    for number, line in enumerate(title_lines):
        _text(image, line, (MARGIN, 30 + number * TITLE_LINE), TEXT, scale=TITLE_SCALE, thickness=TITLE_THICKNESS)
    top = title_height
    for name, bars in groups.items():
        top = _panel(image, name, bars, unit, colours, top, left, right, label_width, log)

    with atomic_output(target) as tmp:  # the temporary file keeps the suffix cv2.imwrite picks the encoder by
        if not cv2.imwrite(str(tmp), image):
            raise EdgesegError(f"OpenCV could not write the chart {target}")
    return target


def _panel(
    image: np.ndarray, name: str, bars: List[Bar], unit: str, colours: Dict[str, Colour], top: int, left: int, right: int, label_width: int,
    log: bool = False,
) -> int:
    """Draw one group's panel from `top`; return where the next panel starts."""
    reach = [bar.value for bar in bars if bar.drawable] + [whisker[1] for whisker in (bar.whisker for bar in bars) if whisker]
    lows = [bar.value for bar in bars if bar.drawable] + [whisker[0] for whisker in (bar.whisker for bar in bars) if whisker]
    positive = [v for v in lows if v > 0]
    log = log and bool(positive)
    ticks = _log_ticks(min(positive), max(reach)) if log else _ticks(max(reach, default=0.0))
    span = right - left

    def x_of(value: float) -> int:
        if not log:
            return left + int(round(value / ticks[-1] * span))
        if value <= ticks[0]:
            return left
        low, high = math.log10(ticks[0]), math.log10(ticks[-1])
        return left + int(round((math.log10(value) - low) / (high - low) * span))

    scale = ", log scale" if log else ""
    _text(image, f"{name} ({unit}{scale})" if unit else name, (MARGIN, top + 20), TEXT, scale=0.6, thickness=1)
    bars_top = top + PANEL_HEAD
    axis_y = bars_top + len(bars) * (BAR_HEIGHT + BAR_GAP)
    decimals = max(0, -math.floor(math.log10(ticks[0] if log else ticks[1])))  # round steps: 5, 10, 15 or 0.5, 1.0, 1.5
    for tick in ticks:
        x = x_of(tick)
        cv2.line(image, (x, bars_top - 4), (x, axis_y), GRID, 1)
        cv2.line(image, (x, axis_y), (x, axis_y + 4), MUTED, 1)
        label = f"{tick:,.{decimals}f}" if not log or tick < 1 else f"{tick:,.0f}"
        _text(image, label, (x - _text_width(label) // 2, axis_y + 20), MUTED)
    cv2.line(image, (left, axis_y), (right, axis_y), MUTED, 1)

    for row, bar in enumerate(bars):
        y = bars_top + row * (BAR_HEIGHT + BAR_GAP)
        middle = y + BAR_HEIGHT // 2
        _text(image, _fit(bar.label, label_width - 12), (MARGIN, middle + 5), TEXT)
        end = left
        if bar.drawable:
            end = x_of(bar.value)
            if end > left:
                cv2.rectangle(image, (left, y), (end - 1, y + BAR_HEIGHT - 1), colours[_backend(bar.label)], cv2.FILLED)
        whisker = bar.whisker
        if whisker:
            low, high = x_of(whisker[0]), x_of(whisker[1])
            cv2.line(image, (low, middle), (high, middle), WHISKER, 1)
            for x in (low, high):
                cv2.line(image, (x, middle - 5), (x, middle + 5), WHISKER, 1)
            end = max(end, high)
        _text(image, _value_text(bar, unit), (end + 6, middle + 5), TEXT)
    return axis_y + AXIS_HEIGHT + PANEL_GAP


def _log_ticks(low: float, high: float) -> List[float]:
    """Decades from the one under `low` (so the smallest bar has a length) to the one at or above
    `high`."""
    first = math.ceil(math.log10(low)) - 1
    last = max(math.ceil(math.log10(max(high, low))), first + 1)
    return [10.0 ** k for k in range(first, last + 1)]


def _ticks(top: float) -> List[float]:
    """0 and a few round steps (1, 2 or 5 x 10^k) up to the first one at or above `top`."""
    if top <= 0:
        return [0.0, 1.0]
    rough = top / 4
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(s * magnitude for s in (1, 2, 5, 10) if s * magnitude >= rough)
    count = max(1, math.ceil(top / step - 1e-9))
    return [i * step for i in range(count + 1)]


def _format(value: float) -> str:
    """About three significant digits, never scientific notation."""
    if value == 0:
        return "0"
    for limit, digits in ((100, 0), (10, 1), (1, 2), (0.1, 3)):
        if abs(value) >= limit:
            return f"{value:,.{digits}f}"
    return f"{value:.2g}" if abs(value) >= 1e-4 else f"{value:.1e}"


def _value_text(bar: Bar, unit: str) -> str:
    return f"{_format(bar.value)} {unit}".strip() if bar.drawable else "n/a"


def _backend(label: str) -> str:
    words = label.split()
    return words[0].lower() if words else ""


def _backend_colours(labels: Iterable[str]) -> Dict[str, Colour]:
    """Fixed colours for edgeseg's backends; others take unused palette colours in order of appearance."""
    colours: Dict[str, Colour] = {}
    spare = list(PALETTE)
    for label in labels:
        backend = _backend(label)
        if backend not in colours:
            colours[backend] = BACKENDS.get(backend) or (spare.pop(0) if spare else PALETTE[len(colours) % len(PALETTE)])
    return colours


def _text_width(text: str, scale: float = FONT_SCALE, thickness: int = 1) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]


def wrap(text: str, width: int, scale: float = FONT_SCALE, thickness: int = 1) -> List[str]:
    """`text` in lines at most `width` px wide as drawn, broken at spaces (a word wider than
    that is cut with "..", as labels are)."""
    lines: List[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", scale, thickness) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word if _text_width(word, scale, thickness) <= width else _fit(word, width, scale, thickness))
    return lines or [""]


def _fit(text: str, width: int, scale: float = FONT_SCALE, thickness: int = 1) -> str:
    if _text_width(text, scale, thickness) <= width:
        return text
    while text and _text_width(text + "..", scale, thickness) > width:
        text = text[:-1]
    return text + ".."


def _text(image: np.ndarray, text: str, origin: Tuple[int, int], colour: Colour, scale: float = FONT_SCALE, thickness: int = 1) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
