"""Python-backend stand-in for an `onnxruntime_onnx` model: edgeseg's ONNX Runtime backend on the
ONNX in the model's version folder.

For a Triton without the onnxruntime backend (pytriton's `tritonserver` ships only the Python
backend). The dynamic batcher hands `execute` several requests of equal shape at once; they run as
one batch, which is what the real backend does, so batching shows in Triton's statistics alike.
Only importable inside Triton's Python backend (`triton_python_backend_utils`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import triton_python_backend_utils as pb_utils

from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend
from edgeseg.edge.card import read_card


class TritonPythonModel:
    def initialize(self, args: Dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        artifact = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        # One intra-op thread per instance: instances, not threads, are how Triton scales a model.
        self.backend = OnnxRuntimeBackend(artifact, read_card(artifact), intra_op_threads=1)
        self.backend.activate()
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]
        pb_utils.Logger.log_info(f"{config['name']}: stand-in running {artifact.name} on {self.backend.describe()}")

    def execute(self, requests: List[Any]) -> List[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            result = self.backend.infer({self.input: np.ascontiguousarray(batch)})[self.output]
        except Exception as exc:  # one error response per request; the model stays up
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for array in arrays:
            part = result[start : start + len(array)]
            start += len(array)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, part)]))
        return responses

    def finalize(self) -> None:
        self.backend.deactivate()
