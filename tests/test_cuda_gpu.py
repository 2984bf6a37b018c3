"""The CUDA half of the TensorRT path, on a GPU with pycuda but without TensorRT (what
benchmarks/gpu_check.sh runs on a lent GPU machine): the context-owning CudaThread used from other
threads, registered pinned + device buffers (and the pagelocked fallback where registration is
refused), async H2D -> a CUDA kernel in the place of the engine -> D2H on one stream timed with
events, all through TensorRTBackend's own __init__ / activate / infer / deactivate, buffer reuse
over 10,000 frames without leaks, two engines sharing one context thread, and outputs that outlive
the context.

TensorRT itself is absent: `kernel_tensorrt` is the few `tensorrt` names the backend reaches (their
contract is checked against the real bindings in tests/test_trt_contract.py), with an engine whose
execute_async_v3 launches the kernel on the stream whose handle it is given.

Skipped without pycuda.driver or a CUDA GPU, saying which.
"""
import gc
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install pycuda, needs nvcc)")

from edgeseg.edge.backends.tensorrt import TensorRTBackend, host_buffer, release_host_buffer  # noqa: E402
from edgeseg.edge.card import ModelCard, read_card  # noqa: E402
from edgeseg.edge.cuda_context import CudaThread, gpu_identity, host_platform  # noqa: E402

if gpu_identity(0) is None:
    pytest.skip("no CUDA GPU visible", allow_module_level=True)

KERNEL = """
__global__ void affine(const float *x, float *y, float scale, float shift, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = scale * x[i] + shift;
}
"""
SHAPE = (2, 1, 64, 400)  # the bundled classifier's input at batch 2
ENGINE_SHAPE = (-1,) + SHAPE[1:]
MIB = 1 << 20


class KernelContext:
    """The IExecutionContext calls TensorRTBackend makes, backed by a CUDA kernel (y = a*x + b):
    addresses and shapes are bound by name, execute_async_v3 launches on the stream it is given."""

    def __init__(self, scale, shift):
        from pycuda.compiler import SourceModule

        self.function = SourceModule(KERNEL).get_function("affine")
        self.function.prepare("PPffi")
        self.scale, self.shift = scale, shift
        self.addresses, self.shapes, self.streams = {}, {}, {}
        self.scratch = None  # (address, size) from set_device_memory (a USER_MANAGED context)

    def set_device_memory(self, memory, size):
        self.scratch = (memory, size)

    def set_input_shape(self, name, shape):
        if not 1 <= shape[0] <= SHAPE[0] or tuple(shape[1:]) != SHAPE[1:]:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes.get("x", ENGINE_SHAPE)  # elementwise: y has x's shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle):
        if self.scratch is None:
            return False  # TensorRT refuses a USER_MANAGED context without its scratch
        if stream_handle not in self.streams:  # pycuda makes no Stream from a raw handle: find the backend's by it
            self.streams[stream_handle] = next(o for o in gc.get_objects() if isinstance(o, cuda.Stream) and o.handle == stream_handle)
        stream = self.streams[stream_handle]
        n = int(np.prod(self.shapes["x"]))
        self.function.prepared_async_call(((n + 255) // 256, 1), (256, 1, 1), stream,
                                          self.addresses["x"], self.addresses["y"], np.float32(self.scale), np.float32(self.shift), np.int32(n))
        return True


def kernel_tensorrt(scale, shift):
    """The `tensorrt` names TensorRTBackend reaches, for a one-kernel engine x (-1, 1, 64, 400) -> y."""
    trt = types.SimpleNamespace(__version__="10.3.0", Logger=lambda severity=None: None)
    trt.Logger.WARNING = 2
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="USER_MANAGED")
    trt.contexts = []

    def create_execution_context(strategy=None):
        assert strategy == "USER_MANAGED", "the backend supplies the scratch itself"
        trt.contexts.append(KernelContext(scale, shift))
        return trt.contexts[-1]
    engine = types.SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda i: ("x", "y")[i],
        get_tensor_mode=lambda name: trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT,
        get_tensor_shape=lambda name: ENGINE_SHAPE,
        get_tensor_dtype=lambda name: trt.DataType.FLOAT,
        get_tensor_profile_shape=lambda name, profile: [(1,) + SHAPE[1:], SHAPE, SHAPE],
        create_execution_context=create_execution_context,
        device_memory_size_v2=1 << 20,
    )
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    return trt


@pytest.fixture
def kernel_engine(tmp_path, monkeypatch):
    """make(cuda_thread, scale, shift) -> an activated TensorRTBackend over the kernel engine, made by
    its own __init__ (card checked against this GPU and platform) and activate (buffers, stream)."""
    gpu = gpu_identity(0)
    base = read_card(Path(__file__).resolve().parents[1] / "edgeseg" / "assets" / "classifier.onnx").to_dict()
    spec = {"shape": ["batch", *SHAPE[1:]], "dtype": "float32"}
    plan = tmp_path / "kernel.engine"
    plan.write_bytes(b"kernel")
    made = []

    def make(cuda_thread, scale=2.0, shift=1.0, zero_copy=False):
        trt = kernel_tensorrt(scale, shift)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        artifact = {"format": "tensorrt", "precision": "fp32", "tensorrt_version": "10.3.0", "gpu_name": gpu.name,
                    "compute_capability": gpu.compute_capability, "build_flags": [], **host_platform(gpu).card_fields()}
        card = ModelCard.from_dict(dict(base, input=dict(spec, name="x"), output=dict(spec, name="y"), artifact=artifact))
        backend = TensorRTBackend(plan, card, cuda_thread=cuda_thread)
        backend.zero_copy = zero_copy or backend.zero_copy  # mapped pinned memory works on any UVA GPU, not only a Jetson's
        backend.activate()
        backend.contexts = trt.contexts
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.deactivate()


def frame(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(SHAPE, dtype=np.float32)}


def test_cuda_thread_serves_calls_from_other_threads():
    """The context lives in the CudaThread; a worker thread's calls run there (no "invalid device
    context"), and its exceptions come back to the caller."""
    seen = {}
    with CudaThread(0) as owner:
        def work():
            try:
                allocation = owner.call(cuda.mem_alloc, 1 << 20)
                data = np.arange(1 << 18, dtype=np.float32)
                owner.call(cuda.memcpy_htod, allocation, data)
                back = np.empty_like(data)
                owner.call(cuda.memcpy_dtoh, back, allocation)
                owner.call(allocation.free)
                seen["equal"] = bool(np.array_equal(back, data))
                seen["thread"] = owner.call(lambda: threading.current_thread().name)
                owner.call(lambda: 1 / 0)
            except ZeroDivisionError:
                seen["raised"] = True
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    assert seen == {"equal": True, "thread": "edgeseg-cuda", "raised": True}
    assert not owner.alive


def test_registered_pinned_and_device_buffers_round_trip():
    with CudaThread(0) as owner:
        def round_trip():
            host, registered = host_buffer(cuda, 1 << 20, np.dtype(np.float32))
            device = cuda.mem_alloc(host.nbytes)
            host[:] = np.arange(host.size, dtype=np.float32)
            stream = cuda.Stream()
            cuda.memcpy_htod_async(device, host, stream)
            stream.synchronize()  # the async copy reads `host` until it completes: only then overwrite it
            host[:] = 0
            cuda.memcpy_dtoh_async(host, device, stream)
            stream.synchronize()
            ok = bool(np.array_equal(host, np.arange(host.size, dtype=np.float32)))
            device.free()
            release_host_buffer(host, registered)
            return registered, ok

        registered, ok = owner.call(round_trip)
    assert ok and registered  # cuMemHostRegister works on this GPU (the fallback copies instead)


def test_backend_init_activate_infer_on_one_stream_with_event_timings(kernel_engine):
    with CudaThread(0) as owner:
        backend = kernel_engine(owner)
        assert [b.registered for b in backend._bindings] == [True, True]
        for batch in (2, 1):  # the context's shape follows the feed; outputs are sized by it
            feed = {"x": frame()["x"][:batch].copy()}
            out = backend.infer(feed)["y"]
            assert out.shape == feed["x"].shape
            np.testing.assert_allclose(out, 2.0 * feed["x"] + 1.0, rtol=1e-6)
        assert set(backend.timings) == {"h2d", "compute", "d2h"} and all(v > 0 for v in backend.timings.values())
        backend.deactivate()


def test_pagelocked_fallback_when_registration_is_refused(kernel_engine, monkeypatch):
    """Where cuMemHostRegister is refused, CUDA-owned pinned memory is used and outputs are copies
    that outlive the context."""
    def refuse(array, flags=0):
        raise cuda.LogicError("cuMemHostRegister failed: operation not supported")

    monkeypatch.setattr(cuda, "register_host_memory", refuse)
    owner = CudaThread(0)
    backend = kernel_engine(owner)
    assert [b.registered for b in backend._bindings] == [False, False]
    feed = frame(5)
    kept = backend.infer(feed)["y"]
    np.testing.assert_allclose(kept, 2.0 * feed["x"] + 1.0, rtol=1e-6)
    assert all(kept.ctypes.data != b.host.ctypes.data for b in backend._bindings)
    backend.deactivate()
    owner.close()
    np.testing.assert_allclose(kept, 2.0 * feed["x"] + 1.0, rtol=1e-6)


def test_buffers_are_reused_over_10000_frames_without_leaking(kernel_engine):
    """The same host buffers after 10,000 frames as after the first, and free device memory within
    a tolerance (the driver's own bookkeeping moves a little; a leak of one frame's buffers per
    frame would be gigabytes)."""
    with CudaThread(0) as owner:
        backend = kernel_engine(owner)
        pointers = [b.host.ctypes.data for b in backend._bindings]
        backend.infer(frame())
        free_before = owner.call(lambda: cuda.mem_get_info()[0])
        feed = frame(1)
        for i in range(10_000):
            feed["x"][0, 0, 0, 0] = i
            out = backend.infer(feed)["y"]
        assert out[0, 0, 0, 0] == 2.0 * 9_999 + 1.0
        assert abs(owner.call(lambda: cuda.mem_get_info()[0]) - free_before) <= 64 * MIB
        assert [b.host.ctypes.data for b in backend._bindings] == pointers
        backend.deactivate()


def test_mapped_pinned_buffers_are_read_and_written_in_place(kernel_engine):
    """Zero copy (the Jetson path, forced here): I/O in pinned host memory mapped with DEVICEMAP,
    bound by its device pointer; no device buffers, no copies, outputs right."""
    with CudaThread(0) as owner:
        backend = kernel_engine(owner, zero_copy=True)
        assert all(b.device is None and b.address == b.host.base.get_device_pointer() for b in backend._bindings)
        for batch in (2, 1):
            feed = {"x": frame(batch)["x"][:batch].copy()}
            np.testing.assert_allclose(backend.infer(feed)["y"], 2.0 * feed["x"] + 1.0, rtol=1e-6)
        backend.deactivate()


def test_engines_in_one_process_share_a_thread_and_one_scratch(kernel_engine):
    """Without an explicit thread, two engines run in the process's shared CUDA thread and their
    contexts are given the same scratch buffer; it is freed when the last one closes."""
    engines = [kernel_engine(None), kernel_engine(None, scale=-1.0, shift=0.5)]
    for engine, (scale, shift) in zip(engines, ((2.0, 1.0), (-1.0, 0.5))):
        feed = frame(7)
        np.testing.assert_allclose(engine.infer(feed)["y"], scale * feed["x"] + shift, rtol=1e-6)
    scratches = {engine.contexts[-1].scratch for engine in engines}
    assert len(scratches) == 1 and next(iter(scratches))[0] != 0, scratches
    for engine in engines:
        engine.deactivate()


def test_two_engines_share_one_context_thread(kernel_engine):
    """Classifier and segmenter on one GPU: two backends, one CudaThread, called from two threads."""
    errors = []
    with CudaThread(0) as owner:
        engines = [kernel_engine(owner, scale=2.0, shift=1.0), kernel_engine(owner, scale=-1.0, shift=0.5)]

        def run(index):
            try:
                for i in range(200):
                    feed = frame(i)
                    got = engines[index].infer(feed)["y"].copy()
                    scale, shift = (2.0, 1.0) if index == 0 else (-1.0, 0.5)
                    np.testing.assert_allclose(got, scale * feed["x"] + shift, rtol=1e-6)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for engine in engines:
            engine.deactivate()
        assert owner.alive  # the shared thread outlives both
    assert errors == []


def test_an_output_held_past_deactivate_and_context_teardown_stays_valid(kernel_engine):
    owner = CudaThread(0)
    backend = kernel_engine(owner)
    feed = frame(3)
    kept = backend.infer(feed)["y"]
    expected = kept.copy()
    backend.deactivate()
    owner.close()  # pops and releases the primary context: CUDA-owned memory would be gone now
    np.ones(1 << 24, np.float32)
    np.testing.assert_array_equal(kept, expected)
