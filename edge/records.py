"""The one versioned record schema of edgeseg's results (JSONL, MQTT, Triton, multi-camera).

A run's output starts with one *header* record (what produced the results: models and their
sha256, backends, source, gate, host, edgeseg version, start time) followed by one *frame*
record per processed frame (where the frame came from, when it was captured, which models
(`model_sha256`) said what about it and how long each stage took). A model pair swapped in
mid-run (edgeseg.edge.swap) gets a header record of its own before its first frame. Every
producer builds its records here, so a consumer parses one format; `SCHEMA` changes whenever a
field changes meaning or goes away.

Clocks: `captured_at` / `started_at` are wall-clock (ISO 8601, UTC, milliseconds) for joining
with the line's other systems; `monotonic_s` is the host's monotonic clock (time.perf_counter)
at the same instant, immune to NTP steps: subtract the header's from a frame's for the offset
from the run start, or two frames' for the interval between them.

Boxes are `[x, y, w, h]` in frame pixels, origin top-left, one per kept connected component.
RLE is the Severstal convention (edgeseg.edge.rle: column-major, 1-based, "start length ...").
Records are strict JSON (`to_json`): a model output that is not a number never becomes a bare
`NaN` that JSON parsers refuse; such a frame says so in `error`, with `defect_probability` null.
`validate_record` is a hand-written checker (no jsonschema dependency) that tests run on every
line a run writes. Torch-free, Python 3.8-compatible.
"""
from __future__ import annotations

import json
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from edgeseg import __version__
from edgeseg.errors import EdgesegError
from edgeseg.files import sha256

if TYPE_CHECKING:  # runtime imports would be circular for nothing: only attributes are read
    from edgeseg.edge.card import ModelCard
    from edgeseg.edge.cascade import Cascade
    from edgeseg.edge.postprocess import FrameResult
    from edgeseg.edge.sources import Frame, Source

SCHEMA = "edgeseg.record/1"
GLASS_TO_GLASS = "glass_to_glass"


def iso_utc(wall: float) -> str:
    """time.time() seconds -> ISO 8601 UTC with milliseconds ("2026-12-01T22:04:05.123+00:00";
    the +00:00 form, which Python 3.8's datetime.fromisoformat reads back)."""
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")


def model_entry(card: "ModelCard", artifact: Path, backend: str) -> Dict[str, Any]:
    """One model of the header record: its file (or, for a remote one, where it is served),
    sha256, format, precision and the line naming what runs it."""
    digest = card.artifact.sha256 or sha256(artifact)  # the card's was checked at load
    return {
        "path": str(artifact),
        "sha256": digest,
        "format": card.artifact.format,
        "precision": card.artifact.precision,
        "backend": backend,
    }


def header_record(
    cascade: "Cascade",
    source: str,
    started: Optional[Tuple[float, float]] = None,
    verify: Optional[Mapping[str, str]] = None,
    cameras: Sequence["Source"] = (),
) -> Dict[str, Any]:
    """The run's first record: `cascade`'s models and gate. `started`: (time.time(),
    time.perf_counter()) of the run start (default: now). `verify`: per role, what checking the
    model against its golden set gave (edgeseg.edge.verify: "passed", "no golden set"; a role
    not named: "skipped"). `cameras`: the run's sources, each said up or down (a camera dead at
    the start: the run goes on without it and keeps reconnecting). Call it once the cascade is
    active, so `backend` names the providers."""
    wall, mono = started if started is not None else (time.time(), time.perf_counter())
    models = cascade.models()
    for role, entry in models.items():
        entry["verify"] = (verify or {}).get(role, "skipped")
    return {
        "schema": SCHEMA,
        "type": "header",
        "started_at": iso_utc(wall),
        "monotonic_s": round(mono, 6),
        "host": socket.gethostname(),
        "edgeseg_version": __version__,
        "source": str(source),
        "gate": float(cascade.gate),
        "classes": list(cascade.segmenter_card.classes),
        "models": models,
        "cameras": [{"camera": index, "uri": camera.uri, "down": bool(camera.stats.down)} for index, camera in enumerate(cameras)],
    }


@dataclass(frozen=True)
class RunHeader:
    """What a run's header record says that is known when the run starts: its cascade, source
    and start time ((time.time(), time.perf_counter())). `record()` makes the record when the
    first frame arrives, once the cascade is active and its backends name their providers."""

    cascade: "Cascade"
    source: str
    started: Tuple[float, float] = field(default_factory=lambda: (time.time(), time.perf_counter()))
    verify: Mapping[str, str] = field(default_factory=dict)  # header_record's
    cameras: Sequence["Source"] = ()  # header_record's: said up or down when the record is made

    def record(self) -> Dict[str, Any]:
        return header_record(self.cascade, self.source, self.started, self.verify, self.cameras)


def to_json(record: Dict[str, Any]) -> str:
    """A record as one line of strict JSON (compact; NaN and infinities refused, never written)."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise EdgesegError(f"a {record.get('type', 'record')} record holds a value that is not a number: {exc}") from exc


def frame_record(frame: "Frame", result: "FrameResult") -> Dict[str, Any]:
    """One frame's record. Latencies are those known when the result was complete, i.e. before
    any sink ran: `glass_to_glass` is capture -> result ready, the sinks' own time excluded."""
    segmentation = result.segmentation
    boxes: Dict[str, List[List[int]]] = {name: [] for name in segmentation.areas}
    for box in segmentation.boxes:
        boxes[box["class"]].append([int(v) for v in box["box"]])
    classes = {
        name: {
            "area": int(area),
            "boxes": boxes[name],
            "mean_probability": _rounded(segmentation.mean_probability.get(name)),
            "rle": segmentation.rle.get(name, ""),
        }
        for name, area in segmentation.areas.items()
    }
    latency = {GLASS_TO_GLASS: round((result.completed - frame.timestamp) * 1000.0, 3)}
    latency.update({stage: round(seconds * 1000.0, 3) for stage, seconds in result.latency.items()})
    return {
        "schema": SCHEMA,
        "type": "frame",
        "source": frame.source,
        "camera": frame.camera,
        "item": frame.item,
        "frame": frame.index,
        "captured_at": iso_utc(frame.captured_at),
        "monotonic_s": round(frame.timestamp, 6),
        "position_ms": None if frame.position_ms is None else round(frame.position_ms, 3),
        "size": [result.height, result.width],
        "gate": float(result.gate),
        "defect_probability": round(result.defect_probability, 6) if math.isfinite(result.defect_probability) else None,
        "gated": bool(result.gated),
        "error": result.error or None,
        "model_sha256": None if result.models is None else dict(result.models),
        "latency_ms": latency,
        "classes": classes,
    }


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 6)


# -- validation -------------------------------------------------------------------------------
_NUMBER = (int, float)
_HEADER_FIELDS: Dict[str, Any] = {
    "schema": str,
    "type": str,
    "started_at": "iso",
    "monotonic_s": _NUMBER,
    "host": str,
    "edgeseg_version": str,
    "source": str,
    "gate": _NUMBER,
    "classes": list,
    "models": dict,
    "cameras": list,
}
_MODEL_FIELDS: Dict[str, Any] = {"path": str, "sha256": "sha256", "format": str, "precision": str, "backend": str, "verify": str}
_FRAME_FIELDS: Dict[str, Any] = {
    "schema": str,
    "type": str,
    "source": str,
    "camera": int,
    "item": (str, type(None)),
    "frame": int,
    "captured_at": "iso",
    "monotonic_s": _NUMBER,
    "position_ms": (int, float, type(None)),
    "size": list,
    "gate": _NUMBER,
    "defect_probability": (int, float, type(None)),
    "gated": bool,
    "error": (str, type(None)),
    "model_sha256": (dict, type(None)),
    "latency_ms": dict,
    "classes": dict,
}
_CLASS_FIELDS: Dict[str, Any] = {"area": int, "boxes": list, "mean_probability": (int, float, type(None)), "rle": str}


def validate_record(record: Any) -> None:
    """Raise EdgesegError naming the first field of `record` that breaks the schema: a missing
    or unknown key, a wrong type, a bad time, a box that is not four pixel counts, an RLE that
    is not pairs of positive integers, or a class area that disagrees with its RLE."""
    if not isinstance(record, dict):
        raise EdgesegError(f"a record is a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise EdgesegError(f"record schema is {record.get('schema')!r}, expected {SCHEMA!r}")
    kind = record.get("type")
    if kind == "header":
        _check_fields(record, _HEADER_FIELDS, "header")
        if not all(isinstance(name, str) for name in record["classes"]):
            raise EdgesegError("header.classes must be a list of class names")
        if set(record["models"]) != {"classifier", "segmenter"}:
            raise EdgesegError(f"header.models must name classifier and segmenter, got {sorted(record['models'])}")
        for role, model in record["models"].items():
            _check_fields(model, _MODEL_FIELDS, f"header.models.{role}")
    elif kind == "frame":
        _check_frame(record)
    else:
        raise EdgesegError(f"record type is {kind!r}, expected 'header' or 'frame'")


def _check_frame(record: Dict[str, Any]) -> None:
    _check_fields(record, _FRAME_FIELDS, "frame")
    if record["frame"] < 0:
        raise EdgesegError(f"frame.frame is {record['frame']}, expected >= 0")
    size = record["size"]
    if len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
        raise EdgesegError(f"frame.size must be [height, width] in pixels, got {size}")
    height, width = size
    probability = record["defect_probability"]
    if probability is None and record["error"] is None:
        raise EdgesegError("frame.defect_probability is null but the frame has no error")
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise EdgesegError(f"frame.defect_probability {probability} is outside [0, 1]")
    models = record["model_sha256"]
    if models is not None:
        _check_fields(models, {"classifier": "sha256", "segmenter": "sha256"}, "frame.model_sha256")
    latency = record["latency_ms"]
    if GLASS_TO_GLASS not in latency:
        raise EdgesegError("frame.latency_ms has no glass_to_glass")
    for stage, ms in latency.items():
        if not (_is_number(ms) and ms >= 0):
            raise EdgesegError(f"frame.latency_ms.{stage} must be a number of ms >= 0, got {ms!r}")
    for name, entry in record["classes"].items():
        where = f"frame.classes.{name}"
        _check_fields(entry, _CLASS_FIELDS, where)
        probability = entry["mean_probability"]
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise EdgesegError(f"{where}.mean_probability {probability} is outside [0, 1]")
        if (probability is None) != (entry["area"] == 0):
            raise EdgesegError(f"{where}: mean_probability must be null exactly when the area is 0")
        for box in entry["boxes"]:
            if not (isinstance(box, list) and len(box) == 4 and all(_is_int(v) for v in box)):
                raise EdgesegError(f"{where}.boxes holds {box!r}, expected [x, y, w, h] in pixels")
            x, y, w, h = box
            if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
                raise EdgesegError(f"{where}.boxes {box} lies outside the {width}x{height} frame")
        if _rle_area(entry["rle"], height * width, where) != entry["area"]:
            raise EdgesegError(f"{where}.area {entry['area']} disagrees with its RLE")


def _check_fields(data: Any, fields: Dict[str, Any], where: str) -> None:
    if not isinstance(data, dict):
        raise EdgesegError(f"{where} must be a JSON object, got {type(data).__name__}")
    missing = sorted(set(fields) - set(data))
    unknown = sorted(set(data) - set(fields))
    if missing or unknown:
        raise EdgesegError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    for key, want in fields.items():
        value = data[key]
        if want == "iso":
            _check_iso(value, f"{where}.{key}")
        elif want == "sha256":
            if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise EdgesegError(f"{where}.{key} is not a hex sha256: {value!r}")
        elif isinstance(value, bool) and want is not bool and bool not in (want if isinstance(want, tuple) else (want,)):
            raise EdgesegError(f"{where}.{key} must be {_type_name(want)}, got a boolean")
        elif not isinstance(value, want):
            raise EdgesegError(f"{where}.{key} must be {_type_name(want)}, got {type(value).__name__}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise EdgesegError(f"{where}.{key} must be finite, got {value}")


def _check_iso(value: Any, where: str) -> None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    offset = parsed.utcoffset() if parsed is not None else None
    if offset is None or offset.total_seconds() != 0:
        raise EdgesegError(f"{where} must be an ISO 8601 UTC time, got {value!r}")


def _rle_area(rle: str, pixels: int, where: str) -> int:
    if not rle:
        return 0
    try:
        numbers = [int(token) for token in rle.split()]
    except ValueError as exc:
        raise EdgesegError(f"{where}.rle has a non-integer token") from exc
    starts, lengths = numbers[0::2], numbers[1::2]
    if len(starts) != len(lengths) or min(starts) < 1 or min(lengths) < 1:
        raise EdgesegError(f"{where}.rle must be pairs of start >= 1 and length >= 1")
    if any(b < a + n for a, n, b in zip(starts, lengths, starts[1:])) or starts[-1] + lengths[-1] - 1 > pixels:
        raise EdgesegError(f"{where}.rle runs overlap, are unsorted or pass the frame's end")
    return sum(lengths)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(want: Any) -> str:
    types = want if isinstance(want, tuple) else (want,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)
