"""Contract scenarios: edgeseg's real build, load, infer and calibration code run against
bindings.py's stand-ins inside one TensorRT version's environment.

``python contract.py request.json`` prints {scenario: null (passed) | "what went wrong"}. The request
names the models the pytest fixtures made: {"fp32": onnx, "qdq": trt-flavour QDQ onnx,
"calibration": npz, "out": folder}. Each scenario states its expectation on this version's branch
(trt_compat decides it; the real polygraphy refuses what the real bindings lack).
"""
from __future__ import annotations

import base64
import json
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tensorrt as real_trt  # noqa: E402  (the real bindings of this environment)

from bindings import CudaModel, FakeTensorRT, _params  # noqa: E402

GPU = ("Orin (nvgpu)", "8.7", 8 << 30, 16, True, True)  # name, compute capability, memory, SMs, integrated, maps host memory
JETSON = ("aarch64", "NVIDIA Jetson AGX Orin Developer Kit", 16)
DGPU = ("NVIDIA A2", "8.6", 16 << 30, 10, False, True)  # a discrete GPU in an x86_64 server
SERVER = ("x86_64", None, 10)


def install(refuse_registration: bool = False, gpu: Any = GPU, machine: Any = JETSON) -> FakeTensorRT:
    """Make `tensorrt` and `pycuda.driver` the stand-ins for everything imported from here on."""
    from edgeseg.edge import cuda_context
    from edgeseg.edge.backends import tensorrt as backend
    from edgeseg.export import engine

    cuda = CudaModel(refuse_registration)
    trt = FakeTensorRT(real_trt, cuda)
    package = types.ModuleType("pycuda")
    package.driver = cuda  # type: ignore[attr-defined]
    sys.modules.update({"tensorrt": trt, "pycuda": package, "pycuda.driver": cuda})
    from edgeseg.edge.trt_compat import Platform

    identity = cuda_context.GpuIdentity(0, *gpu)
    trt.gpu = identity  # type: ignore[attr-defined]
    for module in (backend, engine):  # the machine: a Jetson AGX Orin unless told otherwise
        module.gpu_identity = lambda index=0: identity  # type: ignore[attr-defined]
        module.host_platform = lambda gpu: Platform(*machine)  # type: ignore[attr-defined]
    return trt


def major() -> int:
    return int(real_trt.__version__.split(".")[0])


def reference(model: bytes, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output for the ONNX the engine was parsed from."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def build(request: Dict[str, Any], name: str, source: str = "fp32", **options: Any) -> Path:
    from edgeseg.export.engine import BuildOptions, onnx_to_engine

    out = Path(request["out"]) / name
    return onnx_to_engine(request[source], out, BuildOptions(**options)).artifact


def run_engine(trt: FakeTensorRT, engine: Path, batches: Any, atol: float = 1e-5) -> None:
    """Load through TensorRTBackend, infer each batch, compare with ONNX Runtime on the parsed model;
    outputs stay valid after deactivate and every allocation is released. On an integrated GPU
    (Jetson) the I/O lives in mapped host memory: no device buffers, no copies; a discrete GPU
    has one device buffer per tensor. The context's scratch is not its own (allocated at the run)."""
    from edgeseg.edge.backends.tensorrt import TensorRTBackend
    from edgeseg.edge.card import read_card

    card = read_card(engine)
    backend = TensorRTBackend(engine, card)
    results = []
    with backend:
        io_buffers = 0 if trt.gpu.integrated else len(backend.inputs) + len(backend.outputs)
        assert len(trt.cuda.allocated) == io_buffers, f"{len(trt.cuda.allocated)} device allocations after activation, expected {io_buffers}"
        for batch in batches:
            out = backend.infer({card.input.name: batch})[card.output.name]
            expected = reference(base64.b64decode(plan_of(engine)["onnx"]), batch)
            assert out.shape == expected.shape, f"output shape {out.shape}, expected {expected.shape}"
            np.testing.assert_allclose(out, expected, atol=atol, rtol=atol, err_msg=f"batch of {len(batch)}")
            results.append((out, out.copy()))
            assert set(backend.timings) == {"h2d", "compute", "d2h"}
    for held, copy in results[-1:]:
        np.testing.assert_array_equal(held, copy, err_msg="an output held after deactivate changed (freed pinned memory)")
    assert trt.cuda.memory == {}, f"device memory not freed: {len(trt.cuda.memory)} allocations"
    assert trt.cuda.registered == 0, "host memory left registered"


def frames(card_shape: Any, *batches: int) -> Any:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, *card_shape[1:])).astype(np.float32) for n in batches]


def input_shape(engine: Path) -> Any:
    from edgeseg.edge.card import read_card

    card = read_card(engine)
    return [1, card.input.shape[1], card.preprocess.height, card.preprocess.width]


def plan_of(engine: Path) -> Dict[str, Any]:
    return json.loads(engine.read_bytes())


# -- scenarios -----------------------------------------------------------------------------------------------
def fp32_build_load_infer(request: Dict[str, Any]) -> None:
    trt = install()
    engine = build(request, "fp32", precision="fp32", batch=(1, 2, 4))
    plan = plan_of(engine)
    assert plan["profiles"] == [{"image": [[1, *input_shape(engine)[1:]], [2, *input_shape(engine)[1:]], [4, *input_shape(engine)[1:]]]}], plan["profiles"]
    assert "FP16" not in plan["flags"] and "INT8" not in plan["flags"], plan["flags"]
    assert plan["pools"] == {"WORKSPACE": 2048 << 20}, f"workspace: a quarter of the Orin's 8 GiB by default, got {plan['pools']}"
    run_engine(trt, engine, frames(input_shape(engine), 3, 1, 4))


def fp16_on_this_version(request: Dict[str, Any]) -> None:
    """8.x/10.x: the FP16 builder flag on the FP32 ONNX; 11.x: no flag, the FP16 ONNX strongly typed."""
    trt = install()
    engine = build(request, "fp16", precision="fp16", batch=(1, 1, 2))
    plan = plan_of(engine)
    strongly_typed = 1 << int(real_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if hasattr(real_trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") else 0
    if major() >= 11:
        assert "FP16" not in plan["flags"] and plan["network_flags"] & strongly_typed, plan
        import onnx

        model = onnx.load_from_string(base64.b64decode(plan["onnx"]))
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer), "11.x must parse the FP16 ONNX"
    else:
        assert "FP16" in plan["flags"] and not plan["network_flags"] & strongly_typed, plan
    run_engine(trt, engine, frames(input_shape(engine), 2, 1))


def int8_qdq(request: Dict[str, Any]) -> None:
    """INT8 from the QDQ model: the INT8 flag on weakly typed 8.x/10.x, nothing on 11.x; never a calibrator."""
    trt = install()
    engine = build(request, "qdq", source="qdq", precision="int8", batch=(1, 1, 2))
    plan = plan_of(engine)
    assert plan["calibrator"] is None, plan["calibrator"]
    assert ("INT8" in plan["flags"]) == (major() < 11), plan["flags"]
    run_engine(trt, engine, frames(input_shape(engine), 2))


def implicit_int8_calibrates(request: Dict[str, Any]) -> None:
    """8.x/10.x: the real TrtCalibrator on the real IInt8EntropyCalibrator2 base is driven as TensorRT
    drives it (its batches land in device memory, its cache is written); 11.x: refused in one line."""
    from edgeseg.errors import EdgesegError

    trt = install()
    options = dict(precision="int8", calibration="implicit", calibration_set=Path(request["calibration"]), batch=(1, 2, 2))
    if major() >= 11:
        try:
            build(request, "implicit", **options)
        except EdgesegError as exc:
            assert "implicit" in str(exc), exc
            return
        raise AssertionError("implicit INT8 was not refused on TensorRT 11")
    engine = build(request, "implicit", **options)
    plan = plan_of(engine)
    assert plan["calibrator"] == "IInt8EntropyCalibrator2" and "INT8" in plan["flags"], plan
    assert plan["calibration_batches"] >= 1, plan
    assert engine.with_suffix(".calib").read_bytes() == b"calibration-table"
    assert trt.cuda.memory == {}, "the calibrator's device buffer was not freed"
    run_engine(trt, engine, frames(input_shape(engine), 2))


def calibrator_overrides_match_the_base(request: Dict[str, Any]) -> None:
    """Every method the binding subclass overrides takes the base's parameters (pybind11 calls it
    with them), and the base __init__ runs (pybind11 refuses the instance otherwise)."""
    if major() >= 11:
        return
    install()
    from edgeseg.calibration import trt_calibrator

    for name, base_name in trt_calibrator.ALGORITHMS.items():
        base = getattr(real_trt, base_name)
        cls = trt_calibrator._binding_class(base)
        for method, function in vars(cls).items():
            if method.startswith("__") or not callable(function):
                continue
            assert hasattr(base, method), f"{cls.__name__}.{method} overrides nothing on {base_name}"
            wanted = [p for p, _, _ in _params(getattr(base, method))[0]]
            import inspect

            got = list(inspect.signature(function).parameters)[1:]
            assert len(got) == len(wanted), f"{base_name}.{method} takes {wanted}, the override takes {got}"
        owner = types.SimpleNamespace(batch_shape=(2, 1, 8, 8), _get_batch=lambda names: [1], _read_cache=lambda: None, _write_cache=lambda c: None)
        instance = cls(owner)  # TypeError here when base.__init__ is not called
        assert isinstance(instance, base) and instance.get_batch_size() == 2


def dla_engine_runs_on_its_core(request: Dict[str, Any]) -> None:
    """--dla-core 1: a dynamic batch profile is refused (DLA needs min = opt = max); the build targets
    DLA core 1 with GPU fallback and records which layers fall back; loading sets the runtime's
    DLA_core from the card before deserialising."""
    from edgeseg.errors import EdgesegError

    trt = install()
    try:
        build(request, "dla-dynamic", precision="fp16", batch=(1, 1, 2), dla_core=1)
        raise AssertionError("a dynamic batch profile was accepted for DLA")
    except EdgesegError as exc:
        assert "min = opt = max" in str(exc), exc
    engine = build(request, "dla", precision="fp16", batch=(2, 2, 2), dla_core=1)
    plan = plan_of(engine)
    assert plan["device_type"] == "DLA" and plan["dla_core"] == 1 and "GPU_FALLBACK" in plan["flags"], plan
    import onnx

    from bindings import DLA_OPS
    from edgeseg.edge.card import read_card

    ops = [node.op_type for node in onnx.load_from_string(base64.b64decode(plan["onnx"])).graph.node]
    artifact = read_card(engine).artifact
    fallback = [op for op in ops if op not in DLA_OPS]
    assert fallback and (artifact.dla_layers, artifact.gpu_fallback_layers) == (len(ops) - len(fallback), fallback), artifact
    run_engine(trt, engine, frames(input_shape(engine), 2))
    assert trt.runtimes[-1].state.get("deserialised_with_dla_core") == 1, "the runtime deserialised on the default DLA core"


def pagelocked_fallback(request: Dict[str, Any]) -> None:
    """Registration refused (as on some Jetson kernels): CUDA-owned pinned buffers (mapped on the
    Jetson), outputs copied out."""
    trt = install(refuse_registration=True)
    engine = build(request, "pagelocked", precision="fp32", batch=(1, 1, 2))
    run_engine(trt, engine, frames(input_shape(engine), 2, 1))


def discrete_gpu_copies(request: Dict[str, Any]) -> None:
    """On a discrete GPU (x86_64 server) frames go host -> device -> host through device buffers."""
    trt = install(gpu=DGPU, machine=SERVER)
    engine = build(request, "dgpu", precision="fp32", batch=(1, 2, 4))
    assert plan_of(engine)["pools"] == {"WORKSPACE": 8192 << 20}, "workspace: half of a discrete GPU's 16 GiB"
    run_engine(trt, engine, frames(input_shape(engine), 3, 1, 4))


def engines_share_one_scratch(request: Dict[str, Any]) -> None:
    """Two engines opened in one process (classifier and segmenter) run in one CUDA thread and share
    one scratch buffer of the larger engine's size; the smaller one, run again after the larger one
    grew the buffer, runs on the new buffer. Outputs match ONNX Runtime throughout."""
    from bindings import SCRATCH_PER_IMAGE
    from edgeseg.edge.backends.tensorrt import TensorRTBackend
    from edgeseg.edge.card import read_card

    trt = install()
    small = build(request, "scratch-small", precision="fp32", batch=(1, 1, 1))
    large = build(request, "scratch-large", precision="fp32", batch=(1, 2, 4))
    backends = [TensorRTBackend(path, read_card(path)) for path in (small, large)]
    for backend in backends:
        backend.activate()
    try:
        for backend, path, n in ((backends[0], small, 1), (backends[1], large, 4), (backends[0], small, 1)):
            batch = frames(input_shape(path), n)[0]
            out = backend.infer({backend.card.input.name: batch})[backend.card.output.name]
            np.testing.assert_allclose(out, reference(base64.b64decode(plan_of(path)["onnx"]), batch), atol=1e-5, rtol=1e-5)
        assert sorted(trt.cuda.allocated.values()) == [4 * SCRATCH_PER_IMAGE], f"device allocations {trt.cuda.allocated}: expected one scratch of the larger engine"
    finally:
        for backend in backends:
            backend.deactivate()
    assert trt.cuda.memory == {}, f"device memory not freed: {len(trt.cuda.memory)} allocations"


def jetson_platform_is_recorded_and_checked(request: Dict[str, Any]) -> None:
    """The card records aarch64, the module and the SM count; a plan from x86_64 or another module is
    refused in one line before deserialising; hardware-compatible builds are refused on Jetson."""
    from edgeseg.edge.backends.tensorrt import TensorRTBackend
    from edgeseg.edge.card import read_card
    from edgeseg.errors import EdgesegError

    trt = install()
    engine = build(request, "jetson", precision="fp32", batch=(1, 1, 1))
    artifact = read_card(engine).artifact
    assert (artifact.platform, artifact.jetson_module, artifact.multiprocessors) == JETSON, artifact
    opened = len(trt.runtimes)  # the build itself ran its plan once (its golden set)
    for field, value, fragment in (("platform", "x86_64", "built on x86_64"), ("jetson_module", "NVIDIA Jetson Orin NX", "Orin NX")):
        card = read_card(engine)
        setattr(card.artifact, field, value)
        try:
            TensorRTBackend(engine, card)
            raise AssertionError(f"a plan with {field}={value} was accepted")
        except EdgesegError as exc:
            assert fragment in str(exc) and "\n" not in str(exc), exc
    assert len(trt.runtimes) == opened, "a foreign plan reached deserialize_cuda_engine"
    if real_trt.__version__ >= "8.6":
        try:
            build(request, "hwcompat", precision="fp32", batch=(1, 1, 1), hardware_compatible=True)
            raise AssertionError("a hardware-compatible build was accepted on Jetson")
        except EdgesegError as exc:
            assert "discrete-GPU feature" in str(exc), exc


def timing_cache_per_version_and_gpu(request: Dict[str, Any]) -> None:
    """--timing-cache names one file per TensorRT version and GPU, written by the build and read by
    the next one on the same device; another GPU gets its own file."""
    install()
    asked = Path(request["out"]) / "timing.cache"
    for gpu, builds in ((GPU, 2), (("Orin (nvgpu)", "8.7", 16 << 30, 8, True), 1)):
        install(gpu=gpu)
        for n in range(builds):
            build(request, f"timing-{gpu[3]}-{n}", precision="fp32", batch=(1, 1, 1), timing_cache=asked)
    files = sorted(p.name for p in asked.parent.glob("timing*.cache"))
    assert not asked.exists() and len(files) == 2, files
    version = real_trt.__version__
    assert files == sorted([f"timing.trt{version}.orin-nvgpu-cc8.7-sm16.cache", f"timing.trt{version}.orin-nvgpu-cc8.7-sm8.cache"]), files
    lines = (asked.parent / f"timing.trt{version}.orin-nvgpu-cc8.7-sm16.cache").read_text().splitlines()
    assert len(lines) == 2, f"the second build on the same GPU did not start from the first one's cache: {lines}"


SCENARIOS: Dict[str, Callable[[Dict[str, Any]], None]] = {
    f.__name__: f
    for f in (
        fp32_build_load_infer,
        fp16_on_this_version,
        int8_qdq,
        implicit_int8_calibrates,
        calibrator_overrides_match_the_base,
        dla_engine_runs_on_its_core,
        pagelocked_fallback,
        discrete_gpu_copies,
        engines_share_one_scratch,
        jetson_platform_is_recorded_and_checked,
        timing_cache_per_version_and_gpu,
    )
}


def main() -> int:
    request = json.loads(Path(sys.argv[1]).read_text())
    request["out"] = tempfile.mkdtemp(prefix="run-", dir=request["out"])  # no cache or engine left from a run before
    only = request.get("only") or list(SCENARIOS)
    results: Dict[str, Optional[str]] = {}
    for name in only:
        try:
            SCENARIOS[name](request)
            results[name] = None
        except BaseException as exc:  # noqa: BLE001 (reported, one line per scenario)
            tail = traceback.extract_tb(exc.__traceback__)[-1]
            results[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]} [{Path(tail.filename).name}:{tail.lineno}]"
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
