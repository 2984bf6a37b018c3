"""The CUDA half of the TensorRT path, on a GPU with pycuda but without TensorRT (what
benchmarks/gpu_check.sh runs on a lent GPU machine): the context-owning CudaThread used from other
threads, registered pinned + device buffers, async H2D -> a CUDA kernel in the place of
execute_async_v3 -> D2H on one stream timed with events (TensorRTBackend's own `_run`, driven
through an execution context that launches the kernel), buffer reuse over 10,000 frames without
leaks, two engines sharing one context thread, and outputs that outlive the context.

Skipped without pycuda.driver or a CUDA GPU, saying which.
"""
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install pycuda, needs nvcc)")

from edgeseg.edge.backends.tensorrt import TensorRTBackend, _Binding, host_buffer, release_host_buffer  # noqa: E402
from edgeseg.edge.cuda_context import CudaThread, gpu_identity  # noqa: E402

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


class KernelContext:
    """The IExecutionContext calls TensorRTBackend makes, backed by a CUDA kernel (y = a*x + b):
    addresses and shapes are bound by name, execute_async_v3 launches on the stream it is given."""

    def __init__(self, stream, scale, shift):
        from pycuda.compiler import SourceModule

        self.function = SourceModule(KERNEL).get_function("affine")
        self.function.prepare("PPffi")
        self.stream, self.scale, self.shift = stream, scale, shift
        self.addresses, self.shapes = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]  # elementwise: y has x's shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle):
        assert stream_handle == self.stream.handle  # the backend's one stream
        n = int(np.prod(self.shapes["x"]))
        self.function.prepared_async_call(((n + 255) // 256, 1), (256, 1, 1), self.stream,
                                          self.addresses["x"], self.addresses["y"], np.float32(self.scale), np.float32(self.shift), np.int32(n))
        return True


def kernel_backend(cuda_thread, scale=2.0, shift=1.0):
    """A TensorRTBackend whose engine is the kernel: buffers, stream and events made as _load makes
    them (in the CUDA thread); only deserialisation is replaced."""
    backend = object.__new__(TensorRTBackend)
    backend.artifact, backend.timings, backend._shapes = "kernel", {}, {}
    backend._cuda, backend._shared_thread = cuda_thread, cuda_thread

    def load():
        backend._stream = cuda.Stream()
        backend._events = [cuda.Event() for _ in range(4)]
        backend._context = KernelContext(backend._stream, scale, shift)
        backend._bindings = []
        for name, is_input in (("x", True), ("y", False)):
            host, registered = host_buffer(cuda, int(np.prod(SHAPE)), np.dtype(np.float32))
            binding = _Binding(name, is_input, np.dtype(np.float32), list(SHAPE), SHAPE, SHAPE, host, cuda.mem_alloc(host.nbytes), registered)
            backend._bindings.append(binding)
            backend._context.set_tensor_address(name, int(binding.device))

    cuda_thread.call(load)
    return backend


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
            host[:] = 0
            cuda.memcpy_dtoh_async(host, device, stream)
            stream.synchronize()
            ok = bool(np.array_equal(host, np.arange(host.size, dtype=np.float32)))
            device.free()
            release_host_buffer(host, registered)
            return registered, ok

        registered, ok = owner.call(round_trip)
    assert ok and registered  # cuMemHostRegister works on this GPU (the fallback copies instead)


def test_backend_run_h2d_kernel_d2h_on_one_stream_with_event_timings():
    with CudaThread(0) as owner:
        backend = kernel_backend(owner)
        try:
            feed = frame()
            out = backend._infer_impl(feed)["y"]
            np.testing.assert_allclose(out, 2.0 * feed["x"] + 1.0, rtol=1e-6)
            assert set(backend.timings) == {"h2d", "compute", "d2h"} and all(v > 0 for v in backend.timings.values())
        finally:
            backend._deactivate_impl()


def test_buffers_are_reused_over_10000_frames_without_leaking():
    """Same device memory free and the same host buffers after 10,000 frames as after the first."""
    with CudaThread(0) as owner:
        backend = kernel_backend(owner)
        try:
            pointers = [b.host.ctypes.data for b in backend._bindings]
            backend._infer_impl(frame())
            free_before = owner.call(lambda: cuda.mem_get_info()[0])
            feed = frame(1)
            for i in range(10_000):
                feed["x"][0, 0, 0, 0] = i
                out = backend._infer_impl(feed)["y"]
            assert out[0, 0, 0, 0] == 2.0 * 9_999 + 1.0
            assert owner.call(lambda: cuda.mem_get_info()[0]) == free_before
            assert [b.host.ctypes.data for b in backend._bindings] == pointers
        finally:
            backend._deactivate_impl()


def test_two_engines_share_one_context_thread():
    """Classifier and segmenter on one GPU: two backends, one CudaThread, called from two threads."""
    errors = []
    with CudaThread(0) as owner:
        engines = [kernel_backend(owner, scale=2.0, shift=1.0), kernel_backend(owner, scale=-1.0, shift=0.5)]

        def run(index):
            try:
                for i in range(200):
                    feed = frame(i)
                    got = engines[index]._infer_impl(feed)["y"].copy()
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
            engine._deactivate_impl()
        assert owner.alive  # the shared thread outlives both
    assert errors == []


def test_an_output_held_past_deactivate_and_context_teardown_stays_valid():
    owner = CudaThread(0)
    backend = kernel_backend(owner)
    feed = frame(3)
    kept = backend._infer_impl(feed)["y"]
    expected = kept.copy()
    backend._deactivate_impl()
    owner.close()  # pops and releases the primary context: CUDA-owned memory would be gone now
    np.ones(1 << 24, np.float32)
    np.testing.assert_array_equal(kept, expected)
