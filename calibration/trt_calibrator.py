"""Implicit INT8 for TensorRT 8.5-10 (JetPack 5/6): entropy and min-max calibrators with a cache.

TensorRT calls back into Python during the build: `get_batch(names)` wants device pointers to the
next batch (or None when done), `read_calibration_cache()` the bytes of an earlier run (or None),
`write_calibration_cache(memoryview)` to store a new one (TensorRT python/src/infer/pyInt8.cpp:
the trampoline copies the returned list of ints into the bindings, treats None as "no cache").
Subclasses of the binding classes must call the base __init__ (polygraphy's Calibrator notes the
segfault otherwise).

Batches: any iterable of preprocessed float32 NCHW arrays, re-cut to exactly `batch_shape[0]`
(a calibrator has one fixed batch size; the last partial batch is dropped). Each batch goes to a
pycuda device buffer allocated once, copied by the CudaThread that owns the context.

Cache: the bytes TensorRT writes, untouched, plus a JSON header BESIDE it (`<cache>.json`) with
the calibration set's and the model's sha256, batch shape, algorithm and TensorRT version. A cache whose header
does not match is refused before the build — TensorRT would otherwise silently reuse scales from
another data set. Exceptions never cross back into TensorRT (a C++ noexcept boundary): they are
kept and re-raised by `check()` after the build.

TensorRT 11 removed IInt8*Calibrator (migration guide): asking for one there is an error.
Python 3.8-compatible (runs on JetPack 5).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from edgeseg.edge.cuda_context import CudaThread
from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike, atomic_output
from edgeseg.lazy import require

ALGORITHMS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
HEADER_SCHEMA = "edgeseg.calibration-cache/1"

Batches = Union[Iterable[np.ndarray], Callable[[], Iterable[np.ndarray]]]
T = TypeVar("T")


def header_path(cache: PathLike) -> Path:
    """`calib.cache` -> `calib.cache.json`: the header lives beside the cache, never inside it."""
    cache = Path(cache)
    return cache.with_name(cache.name + ".json")


def cache_header(
    dataset_sha256: str, model_sha256: str, batch_shape: Sequence[int], algorithm: str, tensorrt_version: str
) -> Dict[str, Any]:
    return {
        "schema": HEADER_SCHEMA,
        "calibration_sha256": dataset_sha256,
        "model_sha256": model_sha256,
        "batch_shape": [int(d) for d in batch_shape],
        "algorithm": algorithm,
        "tensorrt_version": tensorrt_version,
    }


def read_cache(cache: PathLike, expected: Dict[str, Any]) -> Optional[bytes]:
    """The cache's bytes when it exists and its header matches `expected`; None when there is no
    cache. A cache from another set, batch shape, algorithm or TensorRT is refused, in one line."""
    cache = Path(cache)
    if not cache.is_file():
        return None
    header_file = header_path(cache)
    try:
        header = json.loads(header_file.read_text())
    except (OSError, ValueError):
        raise EdgesegError(
            f"calibration cache {cache} has no readable header {header_file.name}, so its origin is unknown",
            hint="delete the cache to recalibrate, or pass another --calibration-cache",
        ) from None
    labels = {
        "calibration_sha256": "calibration set (sha256)",
        "model_sha256": "model (ONNX sha256)",
        "batch_shape": "batch shape",
        "algorithm": "calibrator",
        "tensorrt_version": "TensorRT version",
    }
    for key, label in labels.items():
        if header.get(key) != expected[key]:
            raise EdgesegError(
                f"calibration cache {cache} was made with another {label}: {header.get(key)} (this build: {expected[key]})",
                hint="delete the cache to recalibrate, or pass another --calibration-cache",
            )
    return cache.read_bytes()


def rebatch(arrays: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Cut a stream of (n, C, H, W) arrays into contiguous float32 batches of exactly `batch_size`
    (a trailing remainder smaller than a batch is dropped)."""
    pending: List[np.ndarray] = []
    count = 0
    for array in arrays:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise EdgesegError(f"calibration batches must be NCHW arrays, got shape {array.shape}")
        pending.append(array)
        count += array.shape[0]
        while count >= batch_size:
            merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield np.ascontiguousarray(merged[:batch_size])
            rest = merged[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)


class TrtCalibrator:
    """An implicit-INT8 calibrator for one single-input network; give `trt_object` to the builder
    (config.int8_calibrator, or polygraphy's CreateConfig(int8=True, calibrator=...)).

    batches: an iterable of preprocessed float32 NCHW arrays, or a callable returning a fresh one
    (lets TensorRT rewind if it asks again). batch_shape: (N, C, H, W) fed each time; N must be the
    calibration profile's OPT batch. cache: calibration cache path (header beside it).
    dataset_sha256 / model_sha256: the calibration set's and the ONNX's hashes (written in the
    header, checked on reuse: a cache's scales belong to one network and one data set).
    algorithm: "entropy" (IInt8EntropyCalibrator2, TensorRT's default choice) or "minmax".
    """

    def __init__(
        self,
        batches: Batches,
        input_name: str,
        batch_shape: Sequence[int],
        cache: PathLike,
        dataset_sha256: str,
        model_sha256: str,
        algorithm: str = "entropy",
        device: int = 0,
        cuda_thread: Optional[CudaThread] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise EdgesegError(f"unknown calibrator {algorithm!r}", hint=f"use one of {', '.join(ALGORITHMS)}")
        trt = require("tensorrt", "INT8 calibration")
        base = getattr(trt, ALGORITHMS[algorithm], None)
        if base is None:
            raise EdgesegError(
                f"TensorRT {trt.__version__} has no {ALGORITHMS[algorithm]} (implicit INT8 was removed in 11.0)",
                hint="build from the QDQ model: --precision int8 --calibration qdq",
            )
        self.input_name = input_name
        self.batch_shape: Tuple[int, ...] = tuple(int(d) for d in batch_shape)
        self.cache = Path(cache)
        self.header = cache_header(dataset_sha256, model_sha256, self.batch_shape, algorithm, trt.__version__)
        self._cached = read_cache(self.cache, self.header)  # refuses a foreign cache now, not mid-build
        self._batches = batches
        self._iterator: Optional[Iterator[np.ndarray]] = None
        self._progress = progress
        self.fed = 0
        self.error: Optional[BaseException] = None
        self._cuda = cuda_thread or CudaThread(device)
        self._own_thread = cuda_thread is None
        nbytes = int(np.prod(self.batch_shape)) * 4
        self._device: Any = None
        try:
            self._device = self._cuda.call(lambda: require("pycuda.driver").mem_alloc(nbytes))
            self.trt_object = _binding_class(base)(self)
        except BaseException:
            self.close()
            raise

    # -- what TensorRT calls (via the binding subclass); never raises into TensorRT ------------------
    def _get_batch(self, names: List[str]) -> Optional[List[int]]:
        try:
            if list(names) != [self.input_name]:
                raise EdgesegError(f"the calibrator feeds one input {self.input_name!r}; the network asks for {list(names)}")
            if self._iterator is None:
                source = self._batches() if callable(self._batches) else self._batches
                self._iterator = rebatch(source, self.batch_shape[0])
            batch = next(self._iterator, None)
            if batch is None:
                return None
            if batch.shape != self.batch_shape:
                raise EdgesegError(f"calibration batch has shape {batch.shape}, the calibration profile needs {self.batch_shape}")
            cuda = require("pycuda.driver")
            self._cuda.call(cuda.memcpy_htod, self._device, batch)
            self.fed += 1
            if self._progress is not None:
                self._progress(self.fed)
            return [int(self._device)]
        except BaseException as exc:  # kept for check(); None ends calibration
            self.error = exc
            return None

    def _read_cache(self) -> Optional[bytes]:
        return self._cached

    def _write_cache(self, cache: Any) -> None:
        try:
            data = bytes(cache)
            with atomic_output(self.cache) as tmp:
                tmp.write_bytes(data)
            with atomic_output(header_path(self.cache)) as tmp:
                tmp.write_text(json.dumps(self.header, indent=2) + "\n")
            self._cached = data
        except BaseException as exc:
            self.error = exc

    # -- after the build ------------------------------------------------------------------------------
    def run_build(self, build: Callable[[], T]) -> T:
        """Run `build` (which calls back into this calibrator) and report the first thing that went
        wrong: an error inside a callback is the root cause of a failed build; otherwise a failed
        build reports its own error (a parse error or out-of-memory before the first get_batch is
        not "no full batch"); only a build that succeeded is checked for having calibrated."""
        try:
            result = build()
        except BaseException as exc:
            if self.error is not None:
                raise self._callback_error() from exc
            raise
        self.check()
        return result

    def _callback_error(self) -> EdgesegError:
        assert self.error is not None
        if isinstance(self.error, EdgesegError):
            return self.error
        return EdgesegError(f"INT8 calibration failed: {self.error!r}")

    def check(self) -> None:
        """Raise what went wrong inside a TensorRT callback, or if calibration saw no batch."""
        if self.error is not None:
            raise self._callback_error() from self.error
        if self._cached is None and self.fed == 0:
            raise EdgesegError(
                f"the calibration set gave no full batch of {self.batch_shape[0]}",
                hint="use a larger calibration set or a smaller --opt-batch",
            )

    def close(self) -> None:
        """Free the device buffer (in the owning thread) and stop a thread this calibrator started."""
        if self._device is not None and self._cuda.alive:
            self._cuda.call(self._device.free)
        self._device = None
        if self._own_thread:
            self._cuda.close()

    def __enter__(self) -> "TrtCalibrator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _binding_class(base: Any) -> Any:
    """A subclass of TensorRT's calibrator base `base` that forwards to a TrtCalibrator."""

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self, owner: TrtCalibrator) -> None:
            base.__init__(self)  # required by the pybind trampoline
            self._owner = owner

        def get_batch_size(self) -> int:
            return self._owner.batch_shape[0]

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            return self._owner._get_batch(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return self._owner._read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            self._owner._write_cache(cache)

    return _Calibrator
