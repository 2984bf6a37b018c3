"""The cascade as a Triton BLS model: frames in, one record per frame out.

Per `execute` (the dynamic batcher's batch of requests) the frames of all requests go through
the cascade `edgeseg run` uses (edgeseg.edge.cascade.LocalCascade): preprocessed alike, the
classifier in batches of at most its max_batch_size, the gate, the segmenter on the defective
ones only, and edgeseg's post-processing. Its two Backends are the server's own models, called
through BLS (`ServerModel`), so their dynamic batchers also merge the calls of several cascade
instances. Frames that ask for one gate run as one batch.

Request: input IMAGE uint8 [n, height, width] (grayscale frames), optional request parameter
"edgeseg" = JSON {"frame": {Frame fields but the image, one dict or a list of n}, "gate": p}.
Response: RECORD [n, 1] BYTES, each one frame record (edgeseg.edge.records, the record `edgeseg
run` writes). Its clocks are the server's: `monotonic_s` is when the request arrived and
`glass_to_glass` the time from there to the record (the client's clock means nothing here);
`captured_at`, `item`, `source`, `frame` are the client's. The edgeseg client keeps only the model
results and writes its own record with its own clocks.
Only importable inside Triton's Python backend (`triton_python_backend_utils`).
"""
from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import triton_python_backend_utils as pb_utils

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard, TensorSpec, parse_card
from edgeseg.edge.cascade import ROLES, Inferred, LocalCascade
from edgeseg.edge.preprocess import to_gray
from edgeseg.edge.records import frame_record, to_json
from edgeseg.edge.sources import Frame
from edgeseg.serve.repository import IMAGE_INPUT, RECORD_OUTPUT, REQUEST_PARAMETER

_FRAME_FIELDS = {f.name for f in fields(Frame)} - {"image", "timestamp"}


class ServerModel(Backend):
    """One of the server's models as a Backend: each `infer` is one BLS call, with outputs asked
    in CPU memory (a TensorRT model may answer on the GPU). Its specs are its card's, and its
    `max_batch` the model's max_batch_size."""

    kind = "triton-bls"

    def __init__(self, model: str, card: ModelCard, max_batch: int) -> None:
        super().__init__(Path(model), card)
        self.model = model
        self._limit = max_batch

    def describe(self) -> str:
        return f"{self.kind} {self.model}"

    def _activate_impl(self) -> None:
        """Nothing to load: the server holds the model."""

    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        self.max_batch = self._limit
        return [self.card.input], [self.card.output]

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        output = self.card.output.name
        request = pb_utils.InferenceRequest(
            model_name=self.model,
            requested_output_names=[output],
            inputs=[pb_utils.Tensor(self.card.input.name, feed[self.card.input.name])],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.model}: {response.error().message()}")
        return {output: pb_utils.get_output_tensor_by_name(response, output).as_numpy()}

    def _deactivate_impl(self) -> None:
        """Nothing to free."""


class TritonPythonModel:
    def initialize(self, args: Dict[str, str]) -> None:
        parameters = {key: value["string_value"] for key, value in json.loads(args["model_config"]).get("parameters", {}).items()}
        models = [ServerModel(role, parse_card(parameters[f"{role}_card"], f"{role}_card (model config)"), int(parameters[f"{role}_max_batch"])) for role in ROLES]
        self.cascade = LocalCascade(models[0], models[1], warm_up=False)  # no BLS call before the first request
        self.cascade.activate()

    def finalize(self) -> None:
        self.cascade.deactivate()

    def execute(self, requests: List[Any]) -> List[Any]:
        responses = []
        for request in requests:  # parse each request alone: one bad request fails only itself
            try:
                responses.append(self._frames(request))
            except Exception as exc:
                responses.append(pb_utils.TritonError(f"bad request: {type(exc).__name__}: {exc}"))
        work = [frame for item in responses if isinstance(item, list) for frame in item]
        try:
            records = iter(self._run(work)) if work else iter(())
        except Exception as exc:  # a model failed: every request of this batch gets the error
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        out = []
        for item in responses:
            if isinstance(item, list):
                payload = np.array([[next(records)] for _ in item], dtype=np.object_)
                out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(RECORD_OUTPUT, payload)]))
            else:
                out.append(pb_utils.InferenceResponse(output_tensors=[], error=item))
        return out

    def _frames(self, request: Any) -> List[Tuple[Frame, float]]:
        images = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy()
        options = json.loads(request.parameters() or "{}").get(REQUEST_PARAMETER)
        options = json.loads(options) if isinstance(options, str) else {}
        meta = options.get("frame") or {}
        metas = meta if isinstance(meta, list) else [meta] * len(images)
        gate = float(options.get("gate", self.cascade.gate))
        arrived = time.perf_counter()
        frames = []
        for image, data in zip(images, metas):
            known = {key: value for key, value in data.items() if key in _FRAME_FIELDS}
            known.setdefault("index", 0)
            known.setdefault("source", "")
            frames.append((Frame(image=to_gray(image), timestamp=arrived, **known), gate))
        return frames

    def _run(self, work: Sequence[Tuple[Frame, float]]) -> List[bytes]:
        """The cascade over all frames of one execute, one `infer` per gate asked; records in
        the same order."""
        prepared = [self.cascade.prepare(frame) for frame, _ in work]
        inferred: Dict[int, Inferred] = {}
        for gate in dict.fromkeys(gate for _, gate in work):
            members = [i for i, (_, asked) in enumerate(work) if asked == gate]
            inferred.update(zip(members, self.cascade.infer([prepared[i] for i in members], gate)))
        records = []
        for i, (frame, _) in enumerate(work):
            record = frame_record(frame, self.cascade.finish(inferred[i]))
            records.append(to_json(record).encode())
        return records
