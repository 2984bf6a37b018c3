"""`--backend triton`: the cascade runs on a Triton Inference Server, the client only streams frames.

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
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edgeseg.edge.card import ModelCard, parse_card
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.postprocess import FrameResult, MaskPostprocess, Segmentation
from edgeseg.edge.preprocess import to_gray
from edgeseg.edge.rle import decode
from edgeseg.edge.sinks import Sink
from edgeseg.edge.sources import Frame, Source
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
    if not port.isdigit():
        raise EdgesegError(f"--url {url!r} has no valid port", hint=f"e.g. grpc://{host or rest}:{DEFAULT_PORT}")
    return f"{host or rest}:{port}"


class TritonCascade:
    """A connection to the cascade on one Triton server.

    Constructing it connects and reads the cascade's config (the cards), so a wrong address or a
    server without the cascade fails before any frame is read. One caller at a time (the
    pipeline's inference thread); `close` is safe twice.
    """

    def __init__(self, url: str, model: str = CASCADE, reconnect_s: float = 30.0, timeout_s: float = 60.0) -> None:
        self.url = url
        self.address = grpc_address(url)
        self.model = model
        self.reconnect_s = reconnect_s
        self.timeout_s = timeout_s
        self.reconnects = 0
        self._grpc = require("tritonclient.grpc", "the Triton client (pip install 'edgeseg[triton]')")
        self._errors = require("tritonclient.utils", "the Triton client (pip install 'edgeseg[triton]')")
        self._client: Any = None
        try:
            self._connect()
            config = self._client.get_model_config(model, as_json=True)["config"]
            self._version = self._client.get_server_metadata().version
        except self._errors.InferenceServerException as exc:
            self.close()
            raise EdgesegError(
                f"cannot use the Triton cascade {model!r} at {url}: {_message(exc)}",
                hint="start one with `edgeseg serve`, or check --url",
            ) from exc
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        try:
            self.classifier_card = parse_card(parameters["classifier_card"], f"classifier_card of {model!r} at {url}")
            self.segmenter_card = parse_card(parameters["segmenter_card"], f"segmenter_card of {model!r} at {url}")
        except KeyError as exc:
            self.close()
            raise EdgesegError(f"model {model!r} at {url} is not an edgeseg cascade (no model cards in its config)", hint="serve one with `edgeseg serve`") from exc
        except EdgesegError:  # a card that does not validate: its field, named
            self.close()
            raise

    def describe(self) -> str:
        return f"triton {self._version} at {self.address} ({self.model})"

    def infer(self, frames: Sequence[Frame], gate: Optional[float] = None) -> List[Dict[str, Any]]:
        """Each frame's record, as the server's cascade wrote it, in order. Frames of one size
        (one camera, or a line of equal cameras) go in one request, so they stay one batch."""
        records: List[Optional[Dict[str, Any]]] = [None] * len(frames)
        groups: Dict[Tuple[int, int], List[int]] = {}
        grays = [np.ascontiguousarray(to_gray(frame.image)) for frame in frames]
        for i, gray in enumerate(grays):
            groups.setdefault(gray.shape, []).append(i)
        for members in groups.values():
            answers = self._request(np.stack([grays[i] for i in members]), [frames[i] for i in members], gate)
            for i, record in zip(members, answers):
                records[i] = record
        return [record for record in records if record is not None]

    def _request(self, images: np.ndarray, frames: Sequence[Frame], gate: Optional[float]) -> List[Dict[str, Any]]:
        tensor = self._grpc.InferInput("IMAGE", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        metas = [{f.name: getattr(frame, f.name) for f in fields(frame) if f.name != "image"} for frame in frames]
        options: Dict[str, Any] = {"frame": [{k: v for k, v in meta.items() if _plain(v)} for meta in metas]}
        if gate is not None:
            options["gate"] = gate
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
        if self._client is not None:
            self._client.close()
        self._client = self._grpc.InferenceServerClient(self.address)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def result_from_record(record: Dict[str, Any], frame: Frame, classes: Sequence[str]) -> FrameResult:
    """The FrameResult a local run makes for `frame`, from the server's record: masks decoded
    from the RLE, each box's component area recounted on its mask (8-connected, as the
    post-processing labelled it), the server's stage times."""
    height, width = frame.image.shape[:2]
    entries = record["classes"]
    segmentation = Segmentation(areas={name: int(entries[name]["area"]) if name in entries else 0 for name in classes})
    for name, entry in entries.items():
        if not entry["rle"]:
            continue
        mask = decode(entry["rle"], (height, width))
        segmentation.rle[name] = entry["rle"]
        segmentation.masks[name] = mask
        if entry["mean_probability"] is not None:
            segmentation.mean_probability[name] = float(entry["mean_probability"])
        areas = _component_areas(mask)
        segmentation.boxes.extend({"class": name, "box": list(box), "area": areas.get(tuple(box), 0)} for box in entry["boxes"])
    return FrameResult(
        index=frame.index,
        source=frame.source,
        timestamp=frame.timestamp,
        height=height,
        width=width,
        defect_probability=float(record["defect_probability"]),
        gated=bool(record["gated"]),
        segmentation=segmentation,
        latency={k: v / 1000.0 for k, v in record["latency_ms"].items() if k in _SERVER_STAGES},
        gate=float(record["gate"]),
    )


def _component_areas(mask: np.ndarray) -> Dict[Tuple[int, ...], int]:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return {tuple(int(v) for v in stats[label, :4]): int(stats[label, cv2.CC_STAT_AREA]) for label in range(1, count)}


@dataclass
class _RemoteModel:
    """What the pipeline and the header record read of a model they do not run: card, a path
    naming it on the server, and the server's description."""

    card: ModelCard
    artifact: Path
    served_by: str

    def describe(self) -> str:
        return self.served_by


class _ServerSegmentation(MaskPostprocess):
    """The server post-processed already: what a frame carries in place of maps is its
    Segmentation (result_from_record), kept as it is."""

    def __call__(self, maps: Any, frame_shape: Tuple[int, int]) -> Segmentation:
        return maps


class TritonPipeline(Pipeline):
    """The Pipeline (one capture thread per camera, batching across cameras, sinks, latency
    report, stop/abort) with the inference stage on a Triton server: each batch of frames is one
    request to the cascade per frame size. Stages: the server's preprocess / classifier /
    segmenter, and "triton": the rest of the round trip (network, server queueing and
    post-processing)."""

    def __init__(self, sources: Union[Source, Sequence[Source]], cascade: TritonCascade, sinks: Sequence[Sink] = (), **settings: Any) -> None:
        """settings: Pipeline's keywords but `postprocess` (the server post-processes)."""
        served_by = cascade.describe()
        super().__init__(
            sources,
            _RemoteModel(cascade.classifier_card, Path(cascade.address, cascade.model, "classifier"), served_by),  # type: ignore[arg-type]
            _RemoteModel(cascade.segmenter_card, Path(cascade.address, cascade.model, "segmenter"), served_by),  # type: ignore[arg-type]
            sinks,
            postprocess=_ServerSegmentation(cascade.segmenter_card),
            **settings,
        )
        self.cascade = cascade

    def report(self) -> Dict[str, Any]:
        report = super().report()
        report["reconnects"] = self.cascade.reconnects
        return report

    def _activate(self) -> None:
        """No local backend to load: the server holds the models."""
        self._backend_names.update({"classifier": self.cascade.describe(), "segmenter": self.cascade.describe()})

    def _deactivate(self) -> None:
        self.cascade.close()

    def _infer_batch(self, batch: List[Any], results_q: Any) -> bool:
        taken = time.perf_counter()
        captured = [entry.item for entry in batch]
        for entry in batch:
            camera = self.cameras[entry.camera]
            camera.waited_max = max(camera.waited_max, entry.waited)
        self._batch_sizes[len(batch)] += 1
        records = self.cascade.infer([c.frame for c in captured], self.gate)
        round_trip = time.perf_counter() - taken
        classes = self.segmenter.card.classes
        for c, record in zip(captured, records):
            result = result_from_record(record, c.frame, classes)
            stages = {"capture": c.frame.decode, "preprocess": c.preprocess + result.latency.get("preprocess", 0.0), "queue": taken - c.queued}
            for stage in ("classifier", "segmenter"):
                if stage in result.latency:
                    stages[stage] = result.latency[stage]
            stages["triton"] = max(0.0, round_trip - sum(result.latency.values()))
            if not self._put(results_q, (c.frame, result.defect_probability, result.gated, result.segmentation, stages, time.perf_counter())):
                return False
        return True


def _message(exc: Any) -> str:
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0]


def _unavailable(exc: Any) -> bool:
    """The server is gone or not there yet (not: the model failed on this frame)."""
    status = str(exc.status() or "") if callable(getattr(exc, "status", None)) else ""
    return "UNAVAILABLE" in status or "failed to connect" in _message(exc).lower()


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
