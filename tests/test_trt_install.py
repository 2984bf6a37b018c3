"""What the TensorRT install looks like to edgeseg without a GPU: a pycuda whose driver module does
not load is not usable, and FP16 for TensorRT 11 asks for the `trt` extra, not torch's `export`."""
import sys

import pytest

from edgeseg import envinfo
from edgeseg.bench import variants
from edgeseg.errors import EdgesegError


@pytest.fixture
def broken_cuda_install(tmp_path, monkeypatch):
    """tensorrt and pycuda packages that import, with a pycuda.driver that cannot load libcuda (a
    pycuda built on another machine, or no NVIDIA driver), as installed distributions."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("__version__ = '10.3.0'\n")
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text("raise ImportError('libcuda.so.1: cannot open shared object file')\n")
    (tmp_path / "pycuda-2026.1.dist-info").mkdir()
    (tmp_path / "pycuda-2026.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pycuda\nVersion: 2026.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ("tensorrt", "pycuda", "pycuda.driver")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    yield tmp_path
    for name in names:  # the fakes imported here must not outlive the test
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def test_tensorrt_cells_need_a_loading_pycuda_driver(broken_cuda_install):
    assert "pycuda.driver" in variants._runnable("tensorrt")


def test_info_says_why_pycuda_is_unusable(broken_cuda_install):
    assert envinfo.collect()["pycuda"] == "2026.1 (unavailable: libcuda.so.1: cannot open shared object file)"


def test_fp16_variant_without_onnxslim_points_to_the_trt_extra(tmp_path, monkeypatch):
    import edgeseg.assets
    from pathlib import Path

    from edgeseg.export.engine import _fp16_variant

    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import onnxslim -> ImportError
    with pytest.raises(EdgesegError, match="onnxslim is needed for the FP16 ONNX") as info:
        _fp16_variant(Path(edgeseg.assets.__file__).parent / "classifier.onnx", tmp_path)
    assert info.value.hint == "pip install 'edgeseg[trt]'"
