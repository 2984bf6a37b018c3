"""The TensorRT calibrator's TensorRT-free parts: re-batching and the cache header that refuses a
cache from another calibration set, model or batch size. (Calibration itself: test_trt_gpu.py.)"""
import json

import numpy as np
import pytest

from edgeseg.calibration.trt_calibrator import TrtCalibrator, cache_header, header_path, read_cache, rebatch
from edgeseg.errors import EdgesegError
from edgeseg.lazy import available

HEADER = cache_header("a" * 64, "b" * 64, (4, 1, 32, 160), "entropy", "10.3.0.30")


def write_cache(tmp_path, header=HEADER, payload=b"TRT-8501-EntropyCalibration2\nimage: 3c010a14\n"):
    cache = tmp_path / "segmenter.int8.calib"
    cache.write_bytes(payload)
    if header is not None:
        header_path(cache).write_text(json.dumps(header))
    return cache


def test_rebatch_cuts_exact_batches_and_drops_the_remainder():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((n, 1, 2, 3)).astype(np.float64) for n in (3, 1, 5, 2)]  # 11 rows
    batches = list(rebatch(arrays, 4))
    assert [b.shape for b in batches] == [(4, 1, 2, 3)] * 2
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(arrays)[:8].astype(np.float32))


def test_rebatch_refuses_non_nchw():
    with pytest.raises(EdgesegError, match="NCHW"):
        list(rebatch([np.zeros((2, 3))], 1))


def test_header_lives_beside_the_cache(tmp_path):
    assert header_path(tmp_path / "calib.cache").name == "calib.cache.json"


def test_no_cache_means_calibrate(tmp_path):
    assert read_cache(tmp_path / "missing.calib", HEADER) is None


def test_matching_cache_is_reused_byte_for_byte(tmp_path):
    cache = write_cache(tmp_path)
    assert read_cache(cache, HEADER) == cache.read_bytes()


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("calibration_sha256", "c" * 64, "another calibration set"),
        ("model_sha256", "d" * 64, "another model"),
        ("batch_shape", [8, 1, 32, 160], "another batch shape"),
        ("algorithm", "minmax", "another calibrator"),
        ("tensorrt_version", "8.5.2.2", "another TensorRT version"),
    ],
)
def test_foreign_cache_is_refused(tmp_path, field, value, fragment):
    cache = write_cache(tmp_path, header=dict(HEADER, **{field: value}))
    with pytest.raises(EdgesegError, match=fragment) as info:
        read_cache(cache, HEADER)
    assert "delete the cache" in str(info.value)


def test_cache_without_header_is_refused(tmp_path):
    cache = write_cache(tmp_path, header=None)
    with pytest.raises(EdgesegError, match="no readable header"):
        read_cache(cache, HEADER)


@pytest.mark.skipif(available("tensorrt"), reason="TensorRT is installed here")
def test_calibrator_without_tensorrt_says_what_to_install(tmp_path):
    with pytest.raises(EdgesegError, match="tensorrt is needed for INT8 calibration"):
        TrtCalibrator([], "image", (1, 1, 8, 8), tmp_path / "c.calib", "a" * 64, "b" * 64)


def test_unknown_algorithm(tmp_path):
    with pytest.raises(EdgesegError, match="unknown calibrator"):
        TrtCalibrator([], "image", (1, 1, 8, 8), tmp_path / "c.calib", "a" * 64, "b" * 64, algorithm="percentile")


def calibrator_after_build(fed=0, error=None, cached=None):
    """A TrtCalibrator in the state a build leaves it in (constructing one needs TensorRT + CUDA;
    run_build/check are plain Python over these fields)."""
    calibrator = object.__new__(TrtCalibrator)
    calibrator.batch_shape, calibrator.fed, calibrator.error, calibrator._cached = (4, 1, 8, 8), fed, error, cached
    return calibrator


def failing_build(message):
    def build():
        raise EdgesegError(message)

    return build


def test_a_build_that_fails_before_any_batch_reports_its_own_error():
    """A parse error / unsupported layer / out-of-memory before the first get_batch is not "the
    calibration set gave no full batch"."""
    with pytest.raises(EdgesegError, match="could not build segmenter.onnx: out of memory"):
        calibrator_after_build().run_build(failing_build("TensorRT could not build segmenter.onnx: out of memory"))


def test_an_error_inside_a_callback_is_the_root_cause():
    calibrator = calibrator_after_build(fed=1, error=EdgesegError("calibration batch has shape (2, 1, 8, 8)"))
    with pytest.raises(EdgesegError, match="calibration batch has shape") as info:
        calibrator.run_build(failing_build("TensorRT could not build segmenter.onnx: calibration failure"))
    assert "could not build" in str(info.value.__cause__)
    with pytest.raises(EdgesegError, match=r"INT8 calibration failed: OSError\('disk'\)"):
        calibrator_after_build(fed=1, error=OSError("disk")).run_build(failing_build("build failed"))


def test_a_build_that_succeeded_without_a_batch_says_so():
    with pytest.raises(EdgesegError, match="gave no full batch of 4"):
        calibrator_after_build().run_build(lambda: b"plan")
    assert calibrator_after_build(fed=3).run_build(lambda: b"plan") == b"plan"
    assert calibrator_after_build(cached=b"cache").run_build(lambda: b"plan") == b"plan"  # scales from the cache
