"""ONNX Runtime backend behind the protocol: specs at activation, IO binding, errors, factory rules."""
import json
import shutil

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from edgeseg.edge.backends import artifact_backend, open_backend  # noqa: E402
from edgeseg.edge.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from edgeseg.edge.card import card_path, read_card  # noqa: E402
from edgeseg.edge.registry import BackendOptions, OnnxRuntimeOptions  # noqa: E402
from edgeseg.errors import EdgesegError  # noqa: E402


def _input(card, batch, seed=0):
    spec = card.preprocess
    return np.random.default_rng(seed).standard_normal((batch, 1, spec.height, spec.width)).astype(np.float32)


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_specs_come_from_the_session_and_outputs_match_plain_onnxruntime(tiny_models, task):
    path = tiny_models[task]
    backend = open_backend(path, "onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend) and not backend.is_active
    with backend:
        assert backend.is_active
        assert [s.name for s in backend.inputs] == [backend.card.input.name]
        assert backend.outputs[0].name == backend.card.output.name
        assert backend.max_batch is None  # dynamic batch
        assert "CPUExecutionProvider" in backend.describe()
        reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in (1, 3, 3, 2):  # batch changes re-bind the outputs
            x = _input(backend.card, batch, seed=batch)
            got = backend.infer({backend.card.input.name: x})[backend.card.output.name]
            want = reference.run(None, {backend.card.input.name: x})[0]
            assert got.shape == want.shape and got.shape[0] == batch
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert set(backend.timings) == {"compute"} and backend.timings["compute"] > 0
    assert not backend.is_active


def test_outputs_survive_the_next_call(tiny_models):
    with open_backend(tiny_models["classifier"], "onnxruntime") as backend:
        name_in, name_out = backend.card.input.name, backend.card.output.name
        first = backend.infer({name_in: _input(backend.card, 1, seed=1)})[name_out]
        kept = first.copy()
        backend.infer({name_in: _input(backend.card, 1, seed=2)})
        assert not backend.reuses_output_buffers and np.array_equal(first, kept)


def test_options_reach_the_session(tiny_models):
    with open_backend(tiny_models["segmenter"], "onnxruntime") as backend:  # edgeseg's default: no spin-waiting
        assert backend._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    backend = open_backend(
        tiny_models["segmenter"],
        "onnxruntime",
        BackendOptions(OnnxRuntimeOptions(intra_op_threads=1, graph_optimization="basic", providers=["CPUExecutionProvider"], allow_spinning=True)),
    )
    with backend:
        assert backend.describe().endswith("(CPUExecutionProvider)")
        options = backend._session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(EdgesegError, match="graph optimisation"):
        open_backend(tiny_models["segmenter"], "onnxruntime", BackendOptions(OnnxRuntimeOptions(graph_optimization="max")))
    with pytest.raises(EdgesegError, match="no CUDAExecutionProvider|no TensorrtExecutionProvider"):
        missing = "TensorrtExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CUDAExecutionProvider"
        open_backend(tiny_models["segmenter"], "onnxruntime", BackendOptions(OnnxRuntimeOptions(providers=[missing]))).activate()


def test_infer_before_activate_is_a_programming_error(tiny_models):
    with pytest.raises(RuntimeError, match="before activate"):
        open_backend(tiny_models["classifier"]).infer({})


def _copy_model(tiny_models, task, folder):
    target = folder / f"{task}.onnx"
    shutil.copy(tiny_models[task], target)
    shutil.copy(card_path(tiny_models[task]), card_path(target))
    return target


def test_a_card_that_disagrees_with_the_model_is_refused_at_activation(tiny_models, tmp_path):
    target = _copy_model(tiny_models, "segmenter", tmp_path)
    data = json.loads(card_path(target).read_text())
    data["input"]["name"] = "pixels"
    card_path(target).write_text(json.dumps(data))
    backend = open_backend(target)
    with pytest.raises(EdgesegError, match="names input 'pixels'"):
        backend.activate()
    assert not backend.is_active
    data["input"]["name"] = read_card(tiny_models["segmenter"]).input.name
    data["output"]["shape"][1] = 7
    card_path(target).write_text(json.dumps(data))
    with pytest.raises(EdgesegError, match="has shape"):
        open_backend(target).activate()


def test_a_corrupt_onnx_is_one_clear_error(tiny_models, tmp_path):
    target = _copy_model(tiny_models, "classifier", tmp_path)
    target.write_bytes(target.read_bytes()[:200])
    backend = OnnxRuntimeBackend(target, read_card(target, verify=False))
    with pytest.raises(EdgesegError, match="ONNX Runtime cannot load"):
        backend.activate()


def test_a_model_changed_after_its_card_is_refused(tiny_models, tmp_path):
    target = _copy_model(tiny_models, "classifier", tmp_path)
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(EdgesegError, match="does not match its card"):
        open_backend(target)


def test_factory_picks_by_artifact_and_refuses_the_wrong_backend(tiny_models, tmp_path):
    assert artifact_backend("m.fp16.engine") == "tensorrt" and artifact_backend("m.onnx") == "onnxruntime"
    assert artifact_backend("m.fp32.xml") == "openvino"
    with pytest.raises(EdgesegError, match="TensorRT backend runs engines"):
        open_backend(tiny_models["classifier"], backend="tensorrt")
    with pytest.raises(EdgesegError, match="unknown backend"):
        open_backend(tiny_models["classifier"], backend="coreml")
    with pytest.raises(EdgesegError, match="not found"):
        open_backend(tmp_path / "missing.onnx")
    engine = tmp_path / "classifier.fp16.engine"
    engine.write_bytes(b"plan")
    data = json.loads(card_path(tiny_models["classifier"]).read_text())
    data["artifact"] = {"format": "tensorrt", "path": engine.name}
    card_path(engine).write_text(json.dumps(data))
    with pytest.raises(EdgesegError, match="ONNX Runtime cannot run it"):
        open_backend(engine, backend="onnxruntime")
