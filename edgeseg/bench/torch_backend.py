"""PyTorch eager behind the backend protocol: the baseline every exported path is measured against.

It runs the edgeseg checkpoint an ONNX model was exported from (the card's source names it and
its sha256), so "ONNX Runtime vs PyTorch" compares the same weights. Benchmark-only: the
runtime (edgeseg.edge) never imports torch. On CUDA the input copy, the model and the output copy
are timed with CUDA events, as the TensorRT backend does; on CPU only "compute" is reported.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import ModelCard, TensorSpec
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, sha256
from edgeseg.lazy import require


def checkpoint_of(onnx: PathLike, card: ModelCard) -> Path:
    """The checkpoint an exported model came from: the card's `source.checkpoint`, beside the ONNX,
    with the sha256 the card recorded (a retrained or replaced checkpoint is refused)."""
    name = card.source.checkpoint
    if not name:
        raise EdgesegError(
            f"{onnx} was not exported from an edgeseg checkpoint (its card names none)",
            hint="PyTorch eager runs edgeseg checkpoints; export one with `edgeseg export -c CHECKPOINT.pt`",
        )
    folder = Path(onnx).parent
    path = folder / Path(str(name)).name
    original = card.source.checkpoint_path
    if not path.is_file():
        if not original or not Path(str(original)).is_file():
            where = f"`cp {original} {folder}/`" if original else f"copy {name} next to {onnx}"
            raise EdgesegError(f"the checkpoint {path.name} that {Path(onnx).name} was exported from is not beside it", hint=where)
        path = Path(str(original))  # still where it was exported from
    want = card.source.checkpoint_sha256
    if want and sha256(path) != want:
        raise EdgesegError(
            f"{path} is not the checkpoint {Path(onnx).name} was exported from (sha256 differs)",
            hint=f"re-export: `edgeseg export -c {path} --out {folder}`",
        )
    return path


class TorchBackend(Backend):
    """An edgeseg checkpoint in eager mode. device: "cpu" or "cuda[:N]"; half: FP16 weights and
    compute (CUDA only: CPU half-precision convolutions are reference code, not a deployment path)."""

    kind = "pytorch"

    def __init__(self, artifact: PathLike, card: ModelCard, device: str = "cpu", half: bool = False, threads: int = 0) -> None:
        super().__init__(artifact, card)
        if half and not device.startswith("cuda"):
            raise EdgesegError("PyTorch FP16 is benchmarked on CUDA only", hint="use --precision fp32 for PyTorch on CPU")
        self.device = device
        self.half = half
        self.threads = threads
        self._model: Any = None
        self._events: List[Any] = []

    def describe(self) -> str:
        torch = require("torch", "the PyTorch eager baseline")
        return f"pytorch {torch.__version__} ({self.device}, {'fp16' if self.half else 'fp32'})"

    @property
    def runs_on(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def _activate_impl(self) -> None:
        torch = require("torch", "the PyTorch eager baseline")
        from edgeseg.models import load_checkpoint

        if self.threads:
            torch.set_num_threads(self.threads)
        model, _meta = load_checkpoint(self.artifact)
        model = model.to(self.device)
        self._model = model.half() if self.half else model
        if self.device.startswith("cuda"):
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

    def _io_specs_impl(self) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        # Eager modules declare no tensors: the exported model's card is the contract.
        return [self.card.input], [self.card.output]

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        torch = require("torch", "the PyTorch eager baseline")
        array = feed[self.card.input.name]
        with torch.inference_mode():
            if not self._events:
                start = time.perf_counter()
                output = self._model(torch.from_numpy(array))
                result = output.numpy()
                self.timings = {"compute": time.perf_counter() - start}
                return {self.card.output.name: result}
            start, copied_in, computed, copied_out = self._events
            start.record()
            x = torch.from_numpy(array).to(self.device, non_blocking=False)
            copied_in.record()
            output = self._model(x.half() if self.half else x)
            computed.record()
            result = output.float().cpu().numpy()
            copied_out.record()
            torch.cuda.synchronize()
        self.timings = {
            "h2d": start.elapsed_time(copied_in) / 1e3,
            "compute": copied_in.elapsed_time(computed) / 1e3,
            "d2h": computed.elapsed_time(copied_out) / 1e3,
        }
        return {self.card.output.name: result}

    def _deactivate_impl(self) -> None:
        self._model = None
        self._events = []



def default_device() -> str:
    """"cuda" when this torch sees a GPU, else "cpu" (torch is imported only when installed)."""
    from edgeseg.lazy import available

    if not available("torch"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
