"""The cascade as a Triton BLS model: frames in, one record per frame out.

Per `execute` (the dynamic batcher's batch of requests): every frame is preprocessed as
`edgeseg run` does, all frames go to the classifier in batches of at most its max_batch_size, the
gate picks the defective ones, only those go to the segmenter, and edgeseg's post-processing turns
the masks into areas, RLE and boxes. Both models are called through BLS, so their own dynamic
batchers also merge the calls of several cascade instances.

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
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import triton_python_backend_utils as pb_utils

from edgeseg.edge.card import ModelCard, parse_card
from edgeseg.edge.postprocess import MaskPostprocess, defect_probability
from edgeseg.edge.preprocess import preprocess, to_gray
from edgeseg.edge.records import frame_record
from edgeseg.edge.sources import Frame
from edgeseg.serve.repository import IMAGE_INPUT, RECORD_OUTPUT, REQUEST_PARAMETER

_FRAME_FIELDS = {f.name for f in fields(Frame)} - {"image", "timestamp"}


class TritonPythonModel:
    def initialize(self, args: Dict[str, str]) -> None:
        parameters = {key: value["string_value"] for key, value in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.classifier = parse_card(parameters["classifier_card"], "classifier_card (model config)")
        self.segmenter = parse_card(parameters["segmenter_card"], "segmenter_card (model config)")
        self.limits = {"classifier": int(parameters["classifier_max_batch"]), "segmenter": int(parameters["segmenter_max_batch"])}
        self.gate = float(self.classifier.thresholds.get("defect", 0.5))
        self.post = MaskPostprocess(self.segmenter)
        self.shared = self.classifier.preprocess == self.segmenter.preprocess

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
        gate = float(options.get("gate", self.gate))
        arrived = time.perf_counter()
        frames = []
        for image, data in zip(images, metas):
            known = {key: value for key, value in data.items() if key in _FRAME_FIELDS}
            known.setdefault("index", 0)
            known.setdefault("source", "")
            frames.append((Frame(image=to_gray(image), timestamp=arrived, **known), gate))
        return frames

    def _run(self, work: Sequence[Tuple[Frame, float]]) -> List[bytes]:
        """The cascade over all frames of one execute; records in the same order."""
        stages: List[Dict[str, float]] = [{} for _ in work]
        started = time.perf_counter()
        tensors = [preprocess(frame.image, self.classifier.preprocess) for frame, _ in work]
        _spread(stages, range(len(work)), "preprocess", time.perf_counter() - started)
        scores = self._infer("classifier", self.classifier, tensors, stages, range(len(work)))
        probabilities = [defect_probability(s, self.classifier.output_activation) for s in scores]
        gated = [i for i, (_, gate) in enumerate(work) if probabilities[i] >= gate]
        maps: Dict[int, np.ndarray] = {}
        if gated:
            started = time.perf_counter()
            seg_tensors = [tensors[i] if self.shared else preprocess(work[i][0].image, self.segmenter.preprocess) for i in gated]
            _spread(stages, gated, "preprocess", time.perf_counter() - started)
            maps = dict(zip(gated, self._infer("segmenter", self.segmenter, seg_tensors, stages, gated)))
        records = []
        for i, (frame, gate) in enumerate(work):
            result = self.post.frame_result(frame, maps.get(i), probabilities[i], i in maps, stages[i], gate)
            records.append(json.dumps(frame_record(frame, result), separators=(",", ":")).encode())
        return records

    def _infer(self, model: str, card: ModelCard, tensors: List[np.ndarray], stages: List[Dict[str, float]], owners: Sequence[int]) -> List[np.ndarray]:
        """Run `model` over per-frame tensors (each [tiles, 1, h, w]) in batches of at most its
        max_batch_size; per frame its output rows. The batch's time is each member's stage time."""
        limit = self.limits[model]
        outputs: List[np.ndarray] = []
        start = 0
        while start < len(tensors):
            count, rows = 0, 0
            while start + count < len(tensors) and (count == 0 or rows + len(tensors[start + count]) <= limit):
                rows += len(tensors[start + count])
                count += 1
            if rows > limit:
                raise ValueError(f"one frame needs {rows} {model} tiles but its max_batch_size is {limit}")
            chunk = tensors[start : start + count]
            began = time.perf_counter()
            batch = _bls(model, card, np.concatenate(chunk) if count > 1 else chunk[0])
            _spread(stages, owners[start : start + count], model, time.perf_counter() - began)
            offset = 0
            for tensor in chunk:
                outputs.append(batch[offset : offset + len(tensor)])
                offset += len(tensor)
            start += count
        return outputs


def _bls(model: str, card: ModelCard, batch: np.ndarray) -> np.ndarray:
    """One BLS call; outputs asked in CPU memory (a TensorRT model may answer on the GPU)."""
    request = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=[card.output.name],
        inputs=[pb_utils.Tensor(card.input.name, batch)],
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
    )
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, card.output.name).as_numpy()


def _spread(stages: List[Dict[str, float]], owners: Sequence[int], stage: str, seconds: float) -> None:
    for i in owners:
        stages[i][stage] = stages[i].get(stage, 0.0) + seconds

