"""OpenVINO backend behind the protocol: every model form edgeseg writes, the IR build, the
compiled-model cache, settings, backend selection, and the ONNX Runtime note on the `trt` INT8."""
import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

ov = pytest.importorskip("openvino")

from edgeseg.cli import app  # noqa: E402
from edgeseg.edge.backends import auto_backend, open_backend  # noqa: E402
from edgeseg.edge.backends import openvino as ov_backend  # noqa: E402
from edgeseg.edge.backends.openvino import OpenVINOBackend, default_cache_dir, inexact_int8_reason, symmetric_int8_exact  # noqa: E402
from edgeseg.edge.card import card_path, read_card  # noqa: E402
from edgeseg.edge.registry import BackendOptions, OpenVINOOptions  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402

NO_CACHE = BackendOptions(openvino=OpenVINOOptions(cache_dir=None))

runner = CliRunner()


def _input(card, batch, seed=0):
    spec = card.preprocess
    return np.random.default_rng(seed).standard_normal((batch, 1, spec.height, spec.width)).astype(np.float32)


def _ort(path, x):
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, read_card(path)) as backend:
        return backend.infer({backend.card.input.name: x})[backend.card.output.name].copy()


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def qdq(tiny_models, tiny_calibration, tmp_path_factory):
    """{flavour: QDQ ONNX} of the tiny segmenter."""
    from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path

    folder = tmp_path_factory.mktemp("qdq")
    seg = tiny_models["segmenter"]
    return {f: onnx_to_qdq(seg, tiny_calibration, folder / qdq_path(seg, f).name, flavour=f).path for f in ("cpu", "trt")}


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_fp32_onnx_matches_onnx_runtime_at_every_batch(tiny_models, task, tmp_path):
    path = tiny_models[task]
    backend = open_backend(path, "openvino", BackendOptions(openvino=OpenVINOOptions(cache_dir=tmp_path)))
    assert isinstance(backend, OpenVINOBackend) and backend.reuses_output_buffers
    with backend:
        assert [s.name for s in backend.inputs] == [backend.card.input.name] and backend.outputs[0].name == backend.card.output.name
        assert backend.max_batch is None and backend.runs_on == "cpu"
        assert "f32 float" in backend.describe()  # FP32 stays FP32 even where the CPU has bf16
        for batch in (1, 3, 2):
            x = _input(backend.card, batch, seed=batch)
            got = backend.infer({backend.card.input.name: x})[backend.card.output.name]
            np.testing.assert_allclose(got, _ort(path, x), rtol=1e-3, atol=1e-4)
            assert set(backend.timings) == {"compute"}


def test_both_qdq_flavours_compute_what_onnx_runtime_computes_and_fp16_stays_close(tiny_models, qdq, tmp_path):
    """The QDQ graphs are the same fake-quantised model on both runtimes (OpenVINO's int8 kernels
    round differently, hence a tolerance); the FP16 variant runs in the device's reduced float."""
    from edgeseg.export.fp16 import onnx_to_fp16

    seg = tiny_models["segmenter"]
    fp16 = onnx_to_fp16(seg, tmp_path / "segmenter.fp16.onnx").onnx
    x = _input(read_card(seg), 2, seed=4)
    for path, reference in ((qdq["cpu"], qdq["cpu"]), (qdq["trt"], qdq["trt"]), (fp16, seg)):
        got = _openvino_or_refused(path, x)
        if got is not None:
            want = _ort(reference, x)
            assert got.shape == want.shape and _rel(got, want) < 0.05, path.name


def _openvino_or_refused(path, x):
    """OpenVINO's output for `x`, or None where the product says OpenVINO computes this model
    wrongly on this CPU (then activation must refuse it, naming the fix): either way no wrong
    answer passes silently, on AVX2, AVX-512-VNNI and AMX alike."""
    backend = open_backend(path, "openvino", NO_CACHE)
    if inexact_int8_reason(backend.card):
        with pytest.raises(EdgesegError, match="saturates.*--flavour cpu"):
            backend.activate()
        return None
    with backend:
        assert backend.card.artifact.precision in ("int8", "fp16", "fp32")
        return backend.infer({backend.card.input.name: x})[backend.card.output.name].copy()


def test_the_trt_int8_flavour_is_refused_and_not_picked_where_openvino_would_saturate(qdq, monkeypatch):
    """The rule itself, on every machine: x86 without VNNI/AMX saturates symmetric int8."""
    assert not symmetric_int8_exact(["avx", "avx2", "fma"])
    assert symmetric_int8_exact(["avx2", "avx512_vnni"]) and symmetric_int8_exact(["avx2", "avx_vnni"]) and symmetric_int8_exact(["asimd"])
    import onnxruntime

    cpu_only = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    for exact in (False, True):
        monkeypatch.setattr(ov_backend, "symmetric_int8_exact", lambda simd=None, exact=exact: exact)
        trt_card, cpu_card = read_card(qdq["trt"]), read_card(qdq["cpu"])
        # the cpu flavour has 8-bit weights where it was made on an exact CPU, 7-bit elsewhere: never wrong where made
        assert bool(inexact_int8_reason(trt_card)) is not exact
        assert bool(inexact_int8_reason(cpu_card)) is (not exact and cpu_card.artifact.weight_bits == 8)
        seven_bit = dataclasses.replace(trt_card, artifact=dataclasses.replace(trt_card.artifact, weight_bits=7))
        assert not inexact_int8_reason(seven_bit)  # 255 x 64 x 2 fits int16: 7-bit weights never saturate
        assert not inexact_int8_reason(trt_card, device="GPU")
        if cpu_only:
            assert auto_backend(qdq["trt"], trt_card) == ("openvino" if exact else "onnxruntime")
            assert auto_backend(qdq["cpu"], cpu_card) == ("onnxruntime" if inexact_int8_reason(cpu_card) else "openvino")
        if not exact:
            with pytest.raises(EdgesegError, match="saturates"):
                open_backend(qdq["trt"], "openvino", NO_CACHE).activate()


def test_build_engine_writes_an_ir_with_its_card(tiny_models, qdq, tmp_path):
    out = tmp_path / "ir"
    result = runner.invoke(app, ["build-engine", str(tiny_models["segmenter"]), "--backend", "openvino", "--precision", "fp32", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    xml = out / "segmenter.fp32.xml"
    assert [r["artifact"] for r in json.loads(result.stdout)] == [str(xml)] and xml.with_suffix(".bin").is_file()
    card = read_card(xml)
    assert card.artifact.format == "openvino" and card.artifact.weights == "segmenter.fp32.bin"
    assert auto_backend(xml, card) == "openvino"
    x = _input(card, 2, seed=3)
    with open_backend(xml, options=NO_CACHE) as backend:
        assert backend.max_batch == 8  # build-engine's default batch range 1..8
        got = backend.infer({card.input.name: x})[card.output.name]
    np.testing.assert_allclose(got, _ort(tiny_models["segmenter"], x), rtol=1e-3, atol=1e-4)
    with pytest.raises(EdgesegError, match="OpenVINO IR; ONNX Runtime cannot run it"):
        open_backend(xml, "onnxruntime")

    result = runner.invoke(app, ["build-engine", str(qdq["trt"]), "--backend", "openvino", "--precision", "int8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    int8 = read_card(out / "segmenter.int8.xml")
    assert int8.artifact.precision == "int8" and int8.artifact.flavour == "trt"
    got = _openvino_or_refused(out / "segmenter.int8.xml", x)
    assert got is None or _rel(got, _ort(qdq["trt"], x)) < 0.05

    weights = xml.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(EdgesegError, match="weights changed"):
        open_backend(xml).activate()


def test_compiled_models_are_cached_where_configured(tiny_models, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    for _ in range(2):
        with OpenVINOBackend(tiny_models["classifier"], read_card(tiny_models["classifier"]), cache_dir=cache):
            pass
    blobs = list(cache.glob("*/*.blob"))
    assert len(blobs) == 1  # the second activation imported the first one's blob
    rewritten = tmp_path / "rewritten"  # the same name, other bytes: compiled again, never the old blob
    rewritten.mkdir()
    for suffix in (".onnx", ".json", ".golden.npz"):
        shutil.copy2(tiny_models["classifier"].with_name("classifier" + suffix), rewritten)
    model = rewritten / "classifier.onnx"
    model.write_bytes(model.read_bytes())
    with OpenVINOBackend(model, read_card(model), cache_dir=cache):
        pass
    assert len(list(cache.glob("*/*.blob"))) == 2
    monkeypatch.setenv("EDGESEG_OPENVINO_CACHE", "off")
    assert default_cache_dir() is None
    monkeypatch.setenv("EDGESEG_OPENVINO_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("EDGESEG_OPENVINO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgeseg" / "openvino"


def test_settings_reach_the_compiled_model_and_bad_ones_are_refused(tiny_models):
    path, card = tiny_models["segmenter"], read_card(tiny_models["segmenter"])
    with OpenVINOBackend(path, card, hint="THROUGHPUT", threads=1, streams=1, cache_dir=None, profiling=True) as backend:
        assert backend.compiled.get_property("NUM_STREAMS") == 1 and backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert "THROUGHPUT" in backend.describe()
        backend.infer({card.input.name: _input(card, 1)})
        layers = backend.profile()
        assert any(key.startswith("Convolution") for key in layers) and all(ms > 0 for ms in layers.values())
    for bad, match in (({"hint": "FAST"}, "performance hint"), ({"threads": -1}, "thread"), ({"streams": 0}, "streams"), ({"precision": "int4"}, "precision")):
        with pytest.raises(EdgesegError, match=match):
            OpenVINOBackend(path, card, **bad)
    if "NPU" not in ov.Core().available_devices:
        with pytest.raises(EdgesegError, match="no device 'NPU'.*available: CPU"):
            OpenVINOBackend(path, card, device="NPU", cache_dir=None).activate()


def test_a_corrupt_model_is_one_error(tiny_models, tmp_path):
    target = tmp_path / "classifier.onnx"
    target.write_bytes(tiny_models["classifier"].read_bytes()[:200])
    shutil.copy(card_path(tiny_models["classifier"]), card_path(target))
    with pytest.raises(EdgesegError, match="OpenVINO cannot load"):
        OpenVINOBackend(target, read_card(target, verify=False), cache_dir=None).activate()


def test_auto_picks_openvino_for_onnx_on_a_cpu_machine_but_not_for_ort_artifacts(tiny_models, tmp_path):
    import onnxruntime

    cpu_only = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    assert auto_backend(tiny_models["classifier"], read_card(tiny_models["classifier"])) == ("openvino" if cpu_only else "onnxruntime")
    result = runner.invoke(app, ["build-engine", str(tiny_models["classifier"]), "--backend", "onnxruntime", "--precision", "fp32", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ort_artifact = tmp_path / "classifier.fp32.ort.onnx"
    assert auto_backend(ort_artifact, read_card(ort_artifact)) == "onnxruntime"
    with pytest.raises(EdgesegError, match="optimised offline by ONNX Runtime"):
        open_backend(ort_artifact, "openvino")


def test_run_and_info_on_openvino(tiny_models, tmp_path):
    from edge_media import frames, write_video

    clip = write_video(tmp_path / "clip.mp4", frames(4))
    args = ["run", "--source", str(clip), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"]), "--gate", "0"]
    result = runner.invoke(app, args + ["--backend", "openvino", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 4 and all(name.startswith("openvino") for name in report["backends"].values())
    info = runner.invoke(app, ["info", "--json"])
    assert {"device": "CPU"}.items() <= json.loads(info.stdout)["openvino"]["devices"][0].items()


def test_onnx_runtime_names_the_faster_file_for_the_tensorrt_int8_form_once(qdq, caplog, monkeypatch):
    from edgeseg.edge.backends import onnxruntime as ort_backend
    from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend

    for exact in (True, False):  # OpenVINO is advised only where it computes the trt flavour right
        monkeypatch.setattr(ort_backend, "_warned", set())  # other tests of this session ran these files
        monkeypatch.setattr(ov_backend, "symmetric_int8_exact", lambda simd=None, exact=exact: exact)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgeseg"):
            for _ in range(2):
                with OnnxRuntimeBackend(qdq["trt"], read_card(qdq["trt"])) as backend:
                    assert qdq["cpu"].name in backend.describe()
            with OnnxRuntimeBackend(qdq["cpu"], read_card(qdq["cpu"])) as backend:
                assert "TensorRT form" not in backend.describe()
        warnings = [r.getMessage() for r in caplog.records if "TensorRT form" in r.getMessage()]
        assert len(warnings) == 1 and qdq["cpu"].name in warnings[0] and ("--backend openvino" in warnings[0]) is exact
