"""`edgeseg info`: every probe fails soft and the parsers read the real formats."""
import json
import sys

import cv2
import numpy
import onnxruntime
from typer.testing import CliRunner

from edgeseg import envinfo
from edgeseg.cli import app
from edgeseg.commands.info import rows

# First lines of real files / tool output on a Jetson (JetPack 5.1.2 on AGX Orin).
TEGRA = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
NVPMODEL = "NV Power Mode: MAXN\n0\n"


def test_parsers_read_jetson_formats():
    assert envinfo.tegra_release(TEGRA) == "R35.4.1"
    assert envinfo.tegra_release("garbage") is None
    assert envinfo.nvpmodel_mode(NVPMODEL) == "MAXN"
    assert envinfo.nvpmodel_mode("") is None


def test_cpu_info_reads_x86_and_jetson_cpuinfo():
    x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_int8\n"
    info = envinfo.cpu_info(x86)
    assert info["model"] == "Intel(R) Xeon(R) Gold 6338"
    assert info["simd"] == ["amx_int8", "avx", "avx2", "avx512_vnni", "avx512f", "fma"]
    orin = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp\n"
    assert envinfo.cpu_info(orin)["simd"] == ["asimd", "asimddp", "asimdhp"]
    assert envinfo.cpu_info()["logical_cores"] >= 1  # this machine


def test_cuda_versions_read_as_major_minor():
    from edgeseg.edge.cuda_context import _version

    def reports(number):
        def getter(pointer):
            pointer._obj.value = number
            return 0  # cudaSuccess / CUDA_SUCCESS

        return getter

    assert _version(reports(11040)) == "11.4" and _version(reports(12020)) == "12.2"
    assert _version(lambda pointer: 35) is None  # an error code, e.g. cudaErrorInsufficientDriver


def test_opencv_gstreamer_from_this_build_and_a_jetson_build():
    here = envinfo.opencv_gstreamer(cv2.getBuildInformation())
    assert here is not None and (here.startswith("YES") or here == "NO")
    assert envinfo.opencv_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.16.3)\n") == "YES (1.16.3)"


def test_collect_reports_installed_versions():
    data = envinfo.collect()
    assert data["numpy"] == numpy.__version__
    assert data["opencv"]["version"] == cv2.__version__
    assert data["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in data["onnxruntime"]["providers"]
    json.dumps(data)  # plain data, JSON-able


def test_broken_tensorrt_is_reported_not_fatal(tmp_path, monkeypatch):
    """A tensorrt whose shared library is missing (the usual broken install) reads 'unavailable: ...'."""
    (tmp_path / "tensorrt.py").write_text("raise OSError('libnvinfer.so.8: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    value = envinfo.collect()["tensorrt"]
    assert value.startswith("unavailable:") and "libnvinfer" in value


def test_missing_module_reads_none():
    assert envinfo._soft(lambda: envinfo._module_version("edgeseg_no_such_module")) is None


def test_jetson_files_are_read_and_missing_nvpmodel_is_soft(tmp_path, monkeypatch):
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    release.write_text(TEGRA)
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    monkeypatch.setattr(envinfo, "TEGRA_RELEASE", release)
    monkeypatch.setattr(envinfo, "DEVICE_TREE_MODEL", model)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvpmodel on PATH
    jetson = envinfo.collect()["jetson"]
    assert jetson == {"model": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "R35.4.1", "power_mode": None}


def test_info_command_table_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["numpy"] == numpy.__version__
    table = runner.invoke(app, ["info"])
    assert table.exit_code == 0 and "onnxruntime" in table.stdout


def test_rows_cover_every_field_without_a_gpu():
    names = [name for name, _ in rows(envinfo.collect())]
    for expected in ("edgeseg", "python", "numpy", "opencv", "onnxruntime", "tensorrt", "pycuda", "cuda driver", "cuda runtime", "cpu"):
        assert expected in names
