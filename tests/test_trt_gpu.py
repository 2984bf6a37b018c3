"""TensorRT on a real GPU: build the bundled demo models (edgeseg/assets: FP32 ONNX and their
symmetric 'trt' QDQ INT8, no torch needed, so a Jetson without torch runs every test) in each
precision, compare with ONNX Runtime through polygraphy's Comparator, run engines through
TensorRTBackend from a worker thread, and calibrate INT8 implicitly with a cache (TensorRT 8.5-10).

Every test here needs tensorrt, pycuda and a CUDA GPU; elsewhere they skip, saying which is missing.
None skips once those are present (benchmarks/bench_gpu.sh stops on any skip).
"""
import dataclasses
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeseg.edge.card import read_card, write_card
from edgeseg.errors import EdgesegError

pytestmark = pytest.mark.gpu

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack's python3-libnvinfer or pip install tensorrt-cu12)")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install pycuda, needs nvcc)")

from edgeseg.edge import trt_compat  # noqa: E402
from edgeseg.edge.backends.tensorrt import TensorRTBackend  # noqa: E402
from edgeseg.edge.cuda_context import CudaThread, gpu_identity  # noqa: E402
from edgeseg.export.engine import BuildOptions, onnx_to_engine  # noqa: E402

if gpu_identity(0) is None:
    pytest.skip("no CUDA GPU visible", allow_module_level=True)

FEATURES = trt_compat.features(trt.__version__)
# Logit tolerances against ONNX Runtime FP32 (INT8: against the same QDQ model on ONNX Runtime),
# element-wise for FP32, on the median error for the reduced precisions.
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2, "int8": 1e-1}
ERROR_STAT = {"fp32": "elemwise", "fp16": "median", "int8": "median"}


def simple_compare(precision):
    try:
        from polygraphy.comparator import SimpleCompareFunc as compare_func
    except ImportError:  # polygraphy < 0.50 (JetPack 5's Python 3.8 may have an older one)
        from polygraphy.comparator import CompareFunc

        compare_func = CompareFunc.simple
    return compare_func(atol=TOLERANCE[precision], rtol=TOLERANCE[precision], check_error_stat=ERROR_STAT[precision])


ASSETS = Path(__file__).resolve().parents[1] / "edgeseg" / "assets"


def _copy(name, folder):
    """A bundled model with its card, copied so builds never write beside the package's files."""
    for suffix in (".onnx", ".json"):
        shutil.copyfile(ASSETS / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.onnx"


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """{"classifier", "segmenter"}: the bundled FP32 demo models (dynamic batch, 64x400 / 256x1600)."""
    folder = tmp_path_factory.mktemp("models")
    return {task: _copy(task, folder) for task in ("classifier", "segmenter")}


@pytest.fixture(scope="module")
def qdq_models(demo_models):
    """The bundled symmetric ('trt' flavour) QDQ INT8 models of the same two networks."""
    folder = demo_models["classifier"].parent
    return {task: _copy(f"{task}.int8.trt.qdq", folder) for task in demo_models}


@pytest.fixture(scope="module")
def calibration_set(tmp_path_factory):
    from edgeseg.calibration.calibration_set import save_calibration_set

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 1600), dtype=np.uint8) for _ in range(8)]
    return save_calibration_set(tmp_path_factory.mktemp("calib") / "calib.npz", frames, [f"f{i}" for i in range(8)], "images")


def source_for(precision, task, demo_models, qdq_models):
    return qdq_models[task] if precision == "int8" else demo_models[task]


def feeds(card, batches=(1, 3)):
    rng = np.random.default_rng(1)
    _, channels, height, width = card.input.shape
    return [{card.input.name: rng.standard_normal((n, channels, height, width), dtype=np.float32)} for n in batches]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_engine_matches_onnxruntime(task, precision, demo_models, qdq_models, tmp_path):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator

    source = source_for(precision, task, demo_models, qdq_models)
    result = onnx_to_engine(source, tmp_path, BuildOptions(precision=precision, batch=(1, 2, 4)))
    card = read_card(result.artifact)
    assert card.artifact.tensorrt_version == trt.__version__
    assert (card.artifact.gpu_name, card.artifact.compute_capability) == (gpu_identity(0).name, gpu_identity(0).compute_capability)
    assert card.artifact.profile["max"][0] == 4
    if precision == "fp16" and not FEATURES.weak_typing:
        assert "strongly_typed" in card.artifact.build_flags
    runners = [
        OnnxrtRunner(SessionFromOnnx(str(source)), name="onnxruntime"),
        TrtRunner(EngineFromBytes(result.artifact.read_bytes()), name="tensorrt"),
    ]
    outputs = Comparator.run(runners, data_loader=feeds(card))
    assert bool(Comparator.compare_accuracy(outputs, compare_func=simple_compare(precision)))


def test_backend_runs_from_a_worker_thread(demo_models, tmp_path):
    """The pipeline's situation: constructed in the main thread, used in another one."""
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    engine = onnx_to_engine(demo_models["segmenter"], tmp_path, BuildOptions(precision="fp16", batch=(1, 2, 4))).artifact
    backend = TensorRTBackend(engine, read_card(engine))
    batches = feeds(backend.card, batches=(1, 4, 2))
    with OnnxRuntimeBackend(demo_models["segmenter"], read_card(demo_models["segmenter"])) as reference:
        expected = [reference.infer(feed)["logits"].copy() for feed in batches]
    seen = {}

    def work():
        try:
            with backend:
                seen["max_batch"] = backend.max_batch
                seen["outputs"] = [backend.infer(feed)["logits"].copy() for feed in batches]
                seen["timings"] = dict(backend.timings)
        except BaseException as exc:  # surfaced in the main thread below
            seen["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert "error" not in seen, seen.get("error")
    assert seen["max_batch"] == 4
    for got, want in zip(seen["outputs"], expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=TOLERANCE["fp16"], rtol=TOLERANCE["fp16"])
    assert set(seen["timings"]) == {"h2d", "compute", "d2h"} and all(v > 0 for v in seen["timings"].values())
    with pytest.raises(EdgesegError, match="cannot take shape"):
        with backend:
            backend.infer(feeds(backend.card, batches=(5,))[0])


def test_two_engines_share_one_cuda_thread(demo_models, tmp_path):
    engines = {task: onnx_to_engine(path, tmp_path, BuildOptions(precision="fp32")).artifact for task, path in demo_models.items()}
    with CudaThread(0) as cuda:
        backends = [TensorRTBackend(path, read_card(path), cuda_thread=cuda) for path in engines.values()]
        for backend in backends:
            backend.activate()
        for backend in backends:
            assert backend.infer(feeds(backend.card, batches=(1,))[0])[backend.card.output.name].shape[0] == 1
        for backend in backends:
            backend.deactivate()
        assert cuda.alive  # a shared thread outlives the backends that used it


def test_engine_from_another_tensorrt_is_refused_before_loading(demo_models, tmp_path):
    engine = onnx_to_engine(demo_models["classifier"], tmp_path, BuildOptions(precision="fp32")).artifact
    card = read_card(engine)
    card.artifact.tensorrt_version = "8.5.2.2" if not trt.__version__.startswith("8.5.2.2") else "10.3.0.30"
    write_card(engine, card)
    with pytest.raises(EdgesegError, match="cannot run here: it was built with TensorRT") as info:
        TensorRTBackend(engine, read_card(engine))
    assert "edgeseg build-engine classifier.onnx --precision fp32" in str(info.value)


def test_timing_cache_is_written_and_reused(demo_models, tmp_path):
    """One cache file per TensorRT version and GPU, beside the path asked for."""
    import tensorrt

    from edgeseg.edge.cuda_context import gpu_identity
    from edgeseg.export.engine import keyed_timing_cache

    asked = tmp_path / "timing.cache"
    cache = keyed_timing_cache(asked, tensorrt.__version__, gpu_identity(0))
    result = onnx_to_engine(demo_models["classifier"], tmp_path / "a", BuildOptions(precision="fp16", timing_cache=asked))
    assert f"timing cache: {cache}" in result.notes and not asked.exists()
    size = cache.stat().st_size
    assert size > 0
    onnx_to_engine(demo_models["classifier"], tmp_path / "b", BuildOptions(precision="fp16", timing_cache=asked))
    assert cache.stat().st_size >= size


def test_cpu_flavour_qdq_is_refused_by_tensorrt(tmp_path):
    cpu = _copy("classifier.int8.cpu.qdq", tmp_path)
    with pytest.raises(EdgesegError, match="only the symmetric 'trt' flavour"):
        onnx_to_engine(cpu, tmp_path / "out", BuildOptions(precision="int8"))


def test_implicit_int8_calibration_where_tensorrt_has_it(demo_models, calibration_set, tmp_path):
    """8.5-10: calibrates, writes the cache with its header, reuses it, refuses it for another batch
    shape. 11.x: says there is no implicit INT8 (no skip either way)."""
    options = BuildOptions(precision="int8", calibration="implicit", calibration_set=calibration_set.path, batch=(1, 2, 4))
    if not FEATURES.implicit_int8:
        with pytest.raises(EdgesegError, match="no implicit INT8"):
            onnx_to_engine(demo_models["segmenter"], tmp_path, options)
        return
    first = onnx_to_engine(demo_models["segmenter"], tmp_path, options)
    cache = tmp_path / "segmenter.int8.calib"
    header = json.loads((tmp_path / "segmenter.int8.calib.json").read_text())
    assert cache.stat().st_size > 0
    assert header["calibration_sha256"] == calibration_set.sha256 and header["batch_shape"] == [2, 1, 256, 1600]
    assert read_card(first.artifact).artifact.calibration_sha256 == calibration_set.sha256
    before = cache.read_bytes()
    onnx_to_engine(demo_models["segmenter"], tmp_path, options)  # reuses the cache
    assert cache.read_bytes() == before
    with pytest.raises(EdgesegError, match="another batch shape"):
        onnx_to_engine(demo_models["segmenter"], tmp_path, dataclasses.replace(options, batch=(1, 4, 4)))


def test_outputs_held_past_deactivate_stay_valid(demo_models, tmp_path):
    """An output kept after deactivate (and after its CUDA thread and context are gone) still holds
    what infer returned: it never points into freed pinned memory."""
    engine = onnx_to_engine(demo_models["classifier"], tmp_path, BuildOptions(precision="fp32", batch=(1, 1, 2))).artifact
    backend = TensorRTBackend(engine, read_card(engine))
    with backend:
        kept = backend.infer(feeds(backend.card, batches=(2,))[0])[backend.card.output.name]
        expected = kept.copy()
    np.ones(1 << 24, np.float32)  # reuse freed memory if anything was freed
    np.testing.assert_array_equal(kept, expected)


def test_bench_measures_engines_with_cuda_event_parts_and_batch_limits(demo_models, tmp_path):
    """edgeseg bench on engines built beside the models: TensorRT rows carry H2D / compute / D2H
    from CUDA events, a batch beyond the engine's profile is reported as not run, and the
    cascade runs end to end on the engines."""
    from edgeseg.bench.measure import Settings
    from edgeseg.bench.suite import Options, run_bench
    from edgeseg.bench.variants import plan

    for path in demo_models.values():
        onnx_to_engine(path, tmp_path, BuildOptions(precision="fp16", batch=(1, 2, 2)))
    cells = plan(list(demo_models.values()), backends=["tensorrt"], precisions=["fp16"], engines=tmp_path)
    assert all(c.artifact is not None for c in cells), [c.skipped for c in cells]
    document = run_bench(cells, Options(settings=Settings(0.1, 0.2, 5), batches=(1, 4), pipeline_frames=4))
    rows = {(r["name"], r["batch"]): r for r in document["results"]}
    for name in ("classifier", "segmenter"):
        measured = rows[(name, 1)]
        assert measured["device"] == "cuda" and set(measured["latency_ms"]) == {"host", "h2d", "compute", "d2h"}
        assert measured["latency_ms"]["compute"]["median"] < measured["latency_ms"]["host"]["median"]
        assert "at most 2" in rows[(name, 4)]["skipped"]
    assert document["pipeline"][0]["backend"] == "tensorrt" and document["pipeline"][0]["frames"] == 4
