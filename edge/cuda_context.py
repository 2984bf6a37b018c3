"""CUDA plumbing for the TensorRT path: which GPU this is, and the one thread that owns its context.

Why a thread: pycuda's context is per thread. A context made in the main thread (pycuda.autoinit)
is not current in a pipeline worker, and streams or buffers made in one context are invalid in
another ("explicit_context_dependent failed: invalid device context", "invalid resource
handle"). So one `CudaThread` retains the device's primary context — the context the CUDA
runtime, and therefore TensorRT, uses — pushes it once, and runs every CUDA call submitted to it;
any thread may submit. It frees what it made before popping and releasing the context, so pycuda
never finds a non-empty context stack at exit. `CudaThread.shared(device)` is the one thread a
process's engines on that device share (classifier and segmenter run one after the other anyway):
they then also share one execution-context scratch buffer (`scratch`), sized for the largest.

pycuda facts used (doc/driver.rst, src/cpp/cuda.hpp of inducer/pycuda): Device.retain_primary_context()
(pycuda 2020.1+) returns a context that is *not* current; Context.push()/Context.pop(); detach()
on a primary context calls cuDevicePrimaryCtxRelease.

GPU identity comes from the CUDA driver API through ctypes (cuDeviceGetName, cuDeviceGetAttribute
with CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR = 75/76, cuDriverGetVersion; libcudart's
cudaRuntimeGetVersion): no pycuda and
no context needed, so `build-engine`, `edgeseg info` and the runtime's card check all read the same
strings. Python 3.8-compatible.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import platform
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, TypeVar

from edgeseg.edge.trt_compat import Platform
from edgeseg.errors import EdgesegError
from edgeseg.lazy import require

T = TypeVar("T")

_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (cuda.h)
_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
_MULTIPROCESSORS = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
_INTEGRATED = 18  # CU_DEVICE_ATTRIBUTE_INTEGRATED: the GPU shares DRAM with the CPU (Jetson)
_CAN_MAP_HOST_MEMORY = 19  # CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: pinned host memory can be mapped
_DEVICE_TREE_MODEL = "/proc/device-tree/model"  # "NVIDIA Jetson AGX Orin Developer Kit" on a Jetson


@dataclass(frozen=True)
class GpuIdentity:
    """What an engine is tied to: the GPU model and its compute capability ("8.7"); Orin modules
    share 8.7 and differ in SM count. integrated: the GPU shares system memory (Jetson);
    maps_host_memory: pinned host memory can be mapped into its address space."""

    index: int
    name: str
    compute_capability: str
    total_memory: int
    multiprocessors: int = 0
    integrated: bool = False
    maps_host_memory: bool = False

    @property
    def zero_copy(self) -> bool:
        """Frames are best staged in mapped pinned memory that kernels read in place: on an
        integrated GPU host and device memory are the same DRAM, so a host -> device copy only
        duplicates the frame. A discrete GPU would read mapped memory over PCIe: copy there."""
        return self.integrated and self.maps_host_memory


def _driver() -> Optional[ctypes.CDLL]:
    """libcuda initialised, or None when there is no NVIDIA driver / GPU."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if lib.cuInit(0) != 0:
        return None
    return lib


def driver_version() -> Optional[str]:
    """The newest CUDA the driver supports ("12.2"), or None without a driver."""
    lib = _driver()
    return None if lib is None else _version(lib.cuDriverGetVersion)


def runtime_version() -> Optional[str]:
    """The CUDA runtime (toolkit) installed here ("11.4" on JetPack 5), or None without libcudart.
    Found by the loader or in CUDA's default prefix, as TensorRT's own loader looks for it."""
    names = [n for n in (ctypes.util.find_library("cudart"),) if n] + sorted(glob.glob("/usr/local/cuda/lib64/libcudart.so*"))
    for name in names:
        try:
            return _version(ctypes.CDLL(name).cudaRuntimeGetVersion)
        except (OSError, AttributeError):
            continue
    return None


def _version(getter: Callable[..., int]) -> Optional[str]:
    """CUDA's integer version (12020) from a cu*/cuda*GetVersion(int*) call, as "12.2"."""
    value = ctypes.c_int(0)
    if getter(ctypes.byref(value)) != 0:
        return None
    return f"{value.value // 1000}.{(value.value % 1000) // 10}"


def list_gpus() -> List[GpuIdentity]:
    """Every CUDA device the driver sees; empty without a driver or GPU."""
    lib = _driver()
    if lib is None:
        return []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    return [gpu for gpu in (_identity(lib, index) for index in range(count.value)) if gpu is not None]


def gpu_identity(index: int = 0) -> Optional[GpuIdentity]:
    """The identity of CUDA device `index`, or None when it does not exist."""
    lib = _driver()
    return None if lib is None else _identity(lib, index)


def _identity(lib: ctypes.CDLL, index: int) -> Optional[GpuIdentity]:
    device = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    memory = ctypes.c_size_t(0)
    if (
        lib.cuDeviceGetName(name, len(name), device) != 0
        or lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device) != 0
        or lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device) != 0
    ):
        return None
    lib.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
    sms, integrated, maps = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(sms), _MULTIPROCESSORS, device)
    lib.cuDeviceGetAttribute(ctypes.byref(integrated), _INTEGRATED, device)
    lib.cuDeviceGetAttribute(ctypes.byref(maps), _CAN_MAP_HOST_MEMORY, device)
    return GpuIdentity(
        index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}", memory.value, sms.value, bool(integrated.value), bool(maps.value)
    )


def host_platform(gpu: Optional[GpuIdentity]) -> Platform:
    """This machine's platform as engine cards record it (architecture, Jetson module, SM count)."""
    return Platform(platform.machine(), jetson_module(), gpu.multiprocessors if gpu else 0)


def jetson_module(model_file: str = _DEVICE_TREE_MODEL) -> Optional[str]:
    """The Jetson module this runs on ("NVIDIA Jetson AGX Orin Developer Kit"), None elsewhere."""
    try:
        with open(model_file, "rb") as handle:
            model = handle.read().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return None
    return model if "jetson" in model.lower() else None


class CudaThread:
    """A worker thread that owns device `device`'s primary CUDA context and runs submitted calls.

    `call(fn, *args)` runs `fn` in the owner thread with the context current and returns its
    result (or raises its exception) in the caller's thread. Owners free what they allocated
    through `call` before `close()`, which pops and releases the context and ends the thread.
    Use as a context manager.
    """

    _shared: ClassVar[Dict[int, "CudaThread"]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, device: int = 0, name: str = "edgeseg-cuda") -> None:
        self.device = device
        self._users = 0  # holders of the shared thread (`shared` / `release`)
        self._scratch: Any = None  # DeviceAllocation behind `scratch`, freed before the context is popped
        self._scratch_bytes = 0
        self._jobs: "queue.Queue[Optional[Tuple[Callable[..., Any], Tuple[Any, ...], Future]]]" = queue.Queue()
        started: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.result()  # re-raises a failed context creation here, in the caller

    def _run(self, started: Future) -> None:
        try:
            cuda = require("pycuda.driver", "the TensorRT backend")
            cuda.init()
            if not 0 <= self.device < cuda.Device.count():
                raise EdgesegError(f"no CUDA device {self.device} (this machine has {cuda.Device.count()})")
            context = cuda.Device(self.device).retain_primary_context()
            context.push()
        except BaseException as exc:  # report to the constructor, then end the thread
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                func, args, result = job
                if result.set_running_or_notify_cancel():
                    try:
                        result.set_result(func(*args))
                    except BaseException as exc:
                        result.set_exception(exc)
        finally:
            if self._scratch is not None:
                self._scratch.free()
            cuda.Context.pop()
            context.detach()

    @classmethod
    def shared(cls, device: int = 0) -> "CudaThread":
        """The process's thread for `device`, started on first use; each caller `release`s it once."""
        with cls._shared_lock:
            thread = cls._shared.get(device)
            if thread is None or not thread.alive:
                thread = cls._shared[device] = cls(device)
            thread._users += 1
            return thread

    def release(self) -> None:
        """Give back a thread from `shared`; the last holder's release closes it."""
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            if self._shared.get(self.device) is self:
                del self._shared[self.device]
        self.close()

    def scratch(self, nbytes: int) -> int:
        """Device address of at least `nbytes` of execution-context scratch, one buffer for every
        engine run in this thread: they run one at a time, each call synchronised before the next.
        Growing it frees the smaller buffer, so callers compare the address with the one they
        bound before each run (call in this thread)."""
        if self._scratch is None or nbytes > self._scratch_bytes:
            cuda = require("pycuda.driver", "the TensorRT backend")
            if self._scratch is not None:
                self._scratch.free()
                self._scratch = None
            self._scratch_bytes = max(int(nbytes), 1)
            self._scratch = cuda.mem_alloc(self._scratch_bytes)
        return int(self._scratch)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run `func(*args)` in the context-owning thread and wait for its result."""
        if threading.current_thread() is self._thread:
            return func(*args)
        if not self.alive:
            raise EdgesegError("the CUDA thread has stopped", hint="re-open the backend")
        result: Future = Future()
        self._jobs.put((func, args, result))
        return result.result()

    def close(self) -> None:
        """Stop the thread after the calls already queued; pops and releases the context."""
        if self.alive:
            self._jobs.put(None)
            self._thread.join()

    def __enter__(self) -> "CudaThread":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
