"""`--backend triton`: the cascade runs on a Triton Inference Server, the client only streams frames.

`TritonCascade` is the remote implementation of edgeseg.edge.cascade.Cascade: `prepare` makes
the frame grayscale, `infer` sends a batch and reads the records back, `finish` decodes a record
into the FrameResult a local run makes, so the Pipeline and the Inspector run it as they run the
local cascade.

Each frame goes to the server's BLS "cascade" model (written by `edgeseg serve`, see
edgeseg.serve.repository) as one grayscale uint8 tensor over gRPC (binary tensor data); the
server runs classifier, gate, segmenter and post-processing, batching the frames of every client
together, and answers the frame's record. Both model cards come from the cascade's config, so a
thin client needs only the server's address. Records equal the local cascade's: the server runs
the same edgeseg code on the same models (with other NumPy / OpenCV builds, as on pytriton's
server, the classes' mean probabilities may differ in the 6th decimal).

Frames travel on the wire, not through Triton's system shared memory: a 256x1600 frame is 400 KB
(one copy into the request, small next to the models' time), while a shared-memory region per
client must be created, registered, re-registered after every server restart and unregistered on
every exit path, and does nothing for a client on another host, the case this backend is for.

A lost server (crash, restart) is reported once, then the client reconnects with a fresh channel
every half second and resends the frame, for up to `reconnect_s`; past that the run fails with one
clear error. File sources lose no frame; live sources drop frames meanwhile as they always do.
"""
from __future__ import annotations

import json
import math
import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeseg.edge.card import parse_card
from edgeseg.edge.cascade import ROLES, Cascade, Inferred, Prepared, check_gate
from edgeseg.edge.postprocess import MaskPostprocess, NotFinite, Segmentation
from edgeseg.edge.preprocess import to_gray
from edgeseg.edge.records import model_entry
from edgeseg.edge.rle import decode
from edgeseg.edge.sources import Frame
from edgeseg.errors import EdgesegError
from edgeseg.lazy import require

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8001
CASCADE = "cascade"  # edgeseg.serve.repository.CASCADE, kept here so the client needs no server code
_SERVER_STAGES = ("preprocess", "classifier", "segmenter")
_RETRY_S = 0.5


def grpc_address(url: str) -> str:
    """"grpc://host:port", "host:port" or "host" -> "host:port" for tritonclient.grpc."""
    rest = url
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme != "grpc":
            raise EdgesegError(f"--url {url!r}: the Triton client speaks gRPC", hint=f"use grpc://host:{DEFAULT_PORT}")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise EdgesegError(f"--url {url!r} is not grpc://host:port", hint=f"e.g. grpc://127.0.0.1:{DEFAULT_PORT}")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", str(DEFAULT_PORT))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgesegError(f"--url {url!r} has no valid port (1-65535)", hint=f"e.g. grpc://{host or rest}:{DEFAULT_PORT}")
    return f"{host or rest}:{port}"


class TritonCascade(Cascade):
    """The cascade on one Triton server.

    Constructing it connects once to read the cascade's config (both cards, and the most frames
    one request may hold), so a wrong address or a server without the cascade fails before any
    frame is read; `activate` opens the connection `infer` uses and `deactivate` closes it. One
    caller of `infer` at a time (the pipeline's inference thread).
    """

    def __init__(self, url: str, model: str = CASCADE, reconnect_s: float = 30.0, timeout_s: float = 60.0, gate: Optional[float] = None) -> None:
        self.url = url
        self.address = grpc_address(url)
        self.model = model
        self.reconnect_s = reconnect_s
        self.timeout_s = timeout_s
        self.reconnects = 0
        self._grpc = require("tritonclient.grpc", "the Triton client (pip install 'edgeseg[triton]')")
        self._errors = require("tritonclient.utils", "the Triton client (pip install 'edgeseg[triton]')")
        self._client: Any = None  # the connection while active
        client = self._grpc.InferenceServerClient(self.address)
        try:
            config = client.get_model_config(model, as_json=True)["config"]
            self._version = client.get_server_metadata().version
        except self._errors.InferenceServerException as exc:
            raise EdgesegError(
                f"cannot use the Triton cascade {model!r} at {url}: {_message(exc)}",
                hint="start one with `edgeseg serve`, or check --url",
            ) from exc
        finally:
            client.close()
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        try:  # a card that does not validate is an error naming its field (parse_card)
            cards = [parse_card(parameters[f"{role}_card"], f"{role}_card of {model!r} at {url}") for role in ROLES]
        except KeyError as exc:
            raise EdgesegError(f"model {model!r} at {url} is not an edgeseg cascade (no model cards in its config)", hint="serve one with `edgeseg serve`") from exc
        self._max_batch = int(config.get("max_batch_size", 0)) or None
        super().__init__(cards[0], cards[1], _RecordSegmentation(cards[1]), gate)

    def _activate_impl(self) -> None:
        self._connect()

    def _deactivate_impl(self) -> None:
        self._close()

    @property
    def frame_limit(self) -> Optional[int]:
        return self._max_batch

    def describe(self) -> Dict[str, str]:
        served_by = f"triton {self._version} at {self.address} ({self.model})"
        return {role: served_by for role in ROLES}

    def models(self) -> Dict[str, Dict[str, Any]]:
        served_by = self.describe()
        cards = (self.classifier_card, self.segmenter_card)
        return {role: model_entry(card, Path(self.address, self.model, role), served_by[role]) for role, card in zip(ROLES, cards)}

    def counters(self) -> Dict[str, Any]:
        return {"reconnects": self.reconnects}

    def prepare(self, frame: Frame) -> Prepared:
        """The frame as the server takes it: grayscale uint8 (the server preprocesses)."""
        started = time.perf_counter()
        gray = np.ascontiguousarray(to_gray(frame.image))
        return Prepared(frame, gray, time.perf_counter() - started)

    def infer(self, batch: Sequence[Prepared], gate: Optional[float] = None) -> List[Inferred]:
        """Each frame's record, as the server's cascade wrote it, as the frame's `output`.
        Frames of one size (one camera, or a line of equal cameras) go in one request (up to the
        cascade's max_batch_size), so they stay one batch. Stages: the server's preprocess /
        classifier / segmenter, and "triton": the rest of the round trip (network, server
        queueing and post-processing)."""
        threshold = self.gate if gate is None else check_gate(gate)
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, prepared in enumerate(batch):
            groups.setdefault(prepared.tensor.shape, []).append(i)
        records: List[Dict[str, Any]] = [{} for _ in batch]
        began = time.perf_counter()
        for members in groups.values():
            step = self._max_batch or len(members)
            for chunk in (members[start : start + step] for start in range(0, len(members), step)):
                answers = self._request(np.stack([batch[i].tensor for i in chunk]), [batch[i].frame for i in chunk], threshold)
                for i, record in zip(chunk, answers):
                    records[i] = record
        round_trip = time.perf_counter() - began
        items = []
        for prepared, record in zip(batch, records):
            server = {k: v / 1000.0 for k, v in record["latency_ms"].items() if k in _SERVER_STAGES}
            stages = {"preprocess": prepared.preprocess + server.get("preprocess", 0.0)}
            stages.update((stage, server[stage]) for stage in ROLES if stage in server)
            stages["triton"] = max(0.0, round_trip - sum(server.values()))
            probability = math.nan if record["defect_probability"] is None else float(record["defect_probability"])  # null: not a number
            items.append(Inferred(prepared.frame, probability, bool(record["gated"]), float(record["gate"]), record, stages))
        return items

    def _request(self, images: np.ndarray, frames: Sequence[Frame], gate: float) -> List[Dict[str, Any]]:
        tensor = self._grpc.InferInput("IMAGE", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        metas = [{f.name: getattr(frame, f.name) for f in fields(frame) if f.name != "image"} for frame in frames]
        options: Dict[str, Any] = {"frame": [{k: v for k, v in meta.items() if _plain(v)} for meta in metas], "gate": gate}
        parameters = {"edgeseg": json.dumps(options)}
        lost: Optional[float] = None
        while True:
            try:
                answer = self._client.infer(self.model, [tensor], parameters=parameters, client_timeout=self.timeout_s)
                break
            except self._errors.InferenceServerException as exc:
                if not _unavailable(exc):
                    raise EdgesegError(f"the Triton cascade at {self.url} failed on frame {frames[0].index}: {_message(exc)}") from exc
                now = time.monotonic()
                if lost is None:
                    lost = now
                    logger.warning("lost the Triton server at %s (%s); reconnecting for up to %.0f s", self.url, _message(exc), self.reconnect_s)
                elif now - lost > self.reconnect_s:
                    raise EdgesegError(f"the Triton server at {self.url} has been unreachable for {self.reconnect_s:.0f} s", hint="restart it (`edgeseg serve`) and run again") from exc
                time.sleep(_RETRY_S)
                self._connect()  # a fresh channel connects at once instead of on gRPC's backoff
        if lost is not None:
            self.reconnects += 1
            logger.warning("reconnected to the Triton server at %s after %.1f s", self.url, time.monotonic() - lost)
        return [json.loads(value) for value in answer.as_numpy("RECORD").reshape(-1)]

    def _connect(self) -> None:
        self._close()
        self._client = self._grpc.InferenceServerClient(self.address)

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class _RecordSegmentation(MaskPostprocess):
    """The server post-processed already: a remote frame's segmenter output is its record, and
    this turns it into the Segmentation a local run makes: masks decoded from the RLE, each
    box's component area recounted on its mask (8-connected, as the post-processing labelled
    it)."""

    def __call__(self, maps: Any, frame_shape: Tuple[int, int]) -> Segmentation:
        if maps.get("error"):  # the server found a segmenter output that is not a number
            raise NotFinite(maps["error"])
        entries = maps["classes"]
        segmentation = Segmentation(areas={name: int(entries[name]["area"]) if name in entries else 0 for name in self.classes})
        for name, entry in entries.items():
            if not entry["rle"]:
                continue
            mask = decode(entry["rle"], frame_shape)
            segmentation.rle[name] = entry["rle"]
            segmentation.masks[name] = mask
            if entry["mean_probability"] is not None:
                segmentation.mean_probability[name] = float(entry["mean_probability"])
            areas = _component_areas(mask)
            segmentation.boxes.extend({"class": name, "box": list(box), "area": areas.get(tuple(box), 0)} for box in entry["boxes"])
        return segmentation


def _component_areas(mask: np.ndarray) -> Dict[Tuple[int, ...], int]:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return {tuple(int(v) for v in stats[label, :4]): int(stats[label, cv2.CC_STAT_AREA]) for label in range(1, count)}


def _message(exc: Any) -> str:
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0]


def _unavailable(exc: Any) -> bool:
    """The server is gone or not there yet (not: the model failed on this frame)."""
    status = str(exc.status() or "") if callable(getattr(exc, "status", None)) else ""
    return "UNAVAILABLE" in status or "failed to connect" in _message(exc).lower()


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
