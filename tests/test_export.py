"""Export: checkpoint / user model / outside ONNX -> checked ONNX + card; FP16 variant; bad input."""
import json
import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.card import card_path, read_card
from edgeseg.edge.preprocess import preprocess
from edgeseg.errors import EdgesegError
from edgeseg.export.fp16 import onnx_to_fp16
from edgeseg.export.outside import adopt_onnx
from edgeseg.export.parity import FP16_TOLERANCE, FP32_ATOL, FP32_TOLERANCE, compare, onnx_session
from edgeseg.export.torch_onnx import factory_to_onnx, torch_to_onnx
from edgeseg.export.contract import user_contract
from edgeseg.models import load_checkpoint


def _frames(spec, count, seed):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (256, 1600), dtype=np.uint8) for _ in range(count)]
    return np.concatenate([preprocess(f, spec) for f in frames])


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("task", ["classifier", "segmenter"])
def test_exported_model_matches_pytorch_at_any_batch(tiny_models, tiny_checkpoints, task):
    path = tiny_models[task]
    card = read_card(path)
    model = onnx.load(str(path))
    assert card.task == task and card.input.name == "image" and card.output.name == "logits"
    assert card.input.shape[0] == "batch" and card.artifact.opset == 17
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert sorted(os.listdir(path.parent)) == sorted(f"{t}.{ext}" for t in tiny_models for ext in ("onnx", "json", "golden.npz"))
    assert card.source.checkpoint_sha256 == load_checkpoint(tiny_checkpoints[task])[1].sha256
    # Fresh inputs, a batch size never seen at export: independent of the export's own parity check.
    torch_model, meta = load_checkpoint(tiny_checkpoints[task])
    batch = _frames(meta.preprocess, 3, seed=123)
    ours = onnx_session(path).run(None, {"image": batch})[0]
    with torch.no_grad():
        reference = torch_model(torch.from_numpy(batch)).numpy()
    assert ours.shape == reference.shape == ((3, 4, 64, 320) if task == "segmenter" else (3, 1))
    assert _rel_l2(reference, ours) < FP32_TOLERANCE


def test_export_report_prints_parity_under_threshold(tiny_checkpoints, tmp_path):
    report = torch_to_onnx(tiny_checkpoints["segmenter"], tmp_path / "seg.onnx")
    assert {p.inputs for p in report.parity} == {"strips", "random"}
    for p in report.parity:
        assert p.ok and p.rel_l2 < FP32_TOLERANCE and p.max_abs < 1e-3 and p.samples > 0
    assert report.seconds > 0 and report.card == card_path(tmp_path / "seg.onnx")


def test_parity_passes_on_relative_or_absolute_error_and_never_on_nan():
    logits = np.linspace(-4, 4, 50, dtype=np.float32)
    assert compare("c", "i", logits, logits * (1 + 5e-5), FP32_TOLERANCE, FP32_ATOL).ok
    assert not compare("c", "i", logits, logits * (1 + 5e-3), FP32_TOLERANCE, FP32_ATOL).ok
    near_zero = np.full(4, 1e-3, dtype=np.float32)  # relative error is meaningless here, absolute is tiny
    shifted = compare("c", "i", near_zero, near_zero + 5e-6, FP32_TOLERANCE, FP32_ATOL)
    assert shifted.rel_l2 > FP32_TOLERANCE and shifted.ok
    broken = logits.copy()
    broken[3] = np.nan
    assert not compare("c", "i", logits, broken, 1.0, 1.0).ok


def test_fp16_variant_has_fp16_weights_fp32_io_and_stays_close(tiny_models, tmp_path):
    source = tmp_path / "segmenter.onnx"
    source.write_bytes(tiny_models["segmenter"].read_bytes())
    card_path(source).write_bytes(card_path(tiny_models["segmenter"]).read_bytes())
    report = onnx_to_fp16(source)
    assert report.onnx == tmp_path / "segmenter.fp16.onnx" and report.precision == "fp16"
    half = onnx.load(str(report.onnx))
    kinds = {init.data_type for init in half.graph.initializer if len(init.dims) == 4}  # conv weights
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    card = read_card(report.onnx)
    assert card.artifact.precision == "fp16" and card.source.onnx_sha256 == read_card(source).artifact.sha256
    batch = _frames(card.preprocess, 2, seed=7)
    full = onnx_session(source).run(None, {"image": batch})[0]
    reduced = onnx_session(report.onnx).run(None, {"image": batch})[0]
    assert reduced.dtype == np.float32
    assert 0 < _rel_l2(full, reduced) < FP16_TOLERANCE  # FP16 rounding is real, and small


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_onnx_is_one_line_error(tiny_models, tmp_path, damage):
    bad = tmp_path / "bad.onnx"
    data = tiny_models["segmenter"].read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x08\x07not onnx at all", "empty": b""}[damage])
    with pytest.raises(EdgesegError) as info:
        adopt_onnx(bad, tmp_path / "out" / "seg.onnx", task="segmenter")
    assert "bad.onnx" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / "seg.onnx").exists()


def test_checkpoint_of_another_architecture_writes_nothing(tiny_checkpoints, tmp_path):
    payload = torch.load(tiny_checkpoints["segmenter"], weights_only=True)
    payload["model"]["base_width"] = 8
    wrong = tmp_path / "wrong.pt"
    torch.save(payload, wrong)
    with pytest.raises(EdgesegError, match="do not fit the ResUNet"):
        torch_to_onnx(wrong, tmp_path / "seg.onnx")
    assert not (tmp_path / "seg.onnx").exists()


def test_impossible_input_size_is_refused(tiny_checkpoints, tmp_path):
    with pytest.raises(EdgesegError, match="not divisible by 16"):
        torch_to_onnx(tiny_checkpoints["segmenter"], tmp_path / "seg.onnx", size=(250, 1600))
    assert not list(tmp_path.iterdir())


def test_user_factory_whose_graph_differs_from_eager_fails_parity_and_writes_nothing(tmp_path, monkeypatch):
    (tmp_path / "usernet.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        y = self.conv(x).mean((2, 3))\n"
        "        return y + 1 if torch.jit.is_tracing() else y  # exports something else than it computes\n"
        "def honest():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 1))\n"
        "def cheat():\n"
        "    return Net()\n"
    )
    monkeypatch.chdir(tmp_path)
    contract = user_contract("classifier", (32, 160))
    weights = tmp_path / "w.pt"
    honest = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 1))
    torch.save(honest.state_dict(), weights)
    report = factory_to_onnx("usernet:honest", weights, tmp_path / "ok" / "classifier.onnx", contract)
    assert all(p.ok for p in report.parity) and read_card(report.onnx).source.factory == "usernet:honest"
    with pytest.raises(EdgesegError, match="parity failed"):
        factory_to_onnx("usernet:cheat", None, tmp_path / "bad" / "classifier.onnx", contract)
    assert not (tmp_path / "bad" / "classifier.onnx").exists()


def _outside_onnx(path, nhwc=False):
    """A segmentation ONNX edgeseg did not write: other tensor names, fixed batch 1, sigmoid inside."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x.permute(0, 3, 1, 2) if nhwc else x))

    torch.manual_seed(1)
    example = torch.zeros((1, 48, 160, 1) if nhwc else (1, 1, 48, 160))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Net(), (example,), str(path), dynamo=False, opset_version=13, input_names=["input.1"], output_names=["out"])
    return path


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_outside_onnx_gets_a_card_with_its_real_tensor_names(tmp_path, layout):
    source = _outside_onnx(tmp_path / "theirs.onnx", nhwc=layout == "NHWC")
    report = adopt_onnx(source, tmp_path / "models" / "segmenter.onnx", task="segmenter", activation="none",
                        classes=["a", "b", "c"], mean=0.4, std=0.2, layout=layout)
    card = read_card(report.onnx)
    assert card.input.name == "input.1" and card.output.name == "out"
    assert card.input.shape == ([1, 48, 160, 1] if layout == "NHWC" else [1, 1, 48, 160]) and card.output.shape == [1, 3, 48, 160]
    assert (card.preprocess.height, card.preprocess.width, card.preprocess.mean) == (48, 160, 0.4)
    assert (card.preprocess.channels, card.preprocess.layout) == (1, layout)
    assert card.classes == ["a", "b", "c"] and card.output_activation == "none"
    assert card.thresholds == {"probability": [0.5] * 3, "min_area": [0] * 3}
    assert report.onnx.read_bytes() == source.read_bytes()  # an untouched copy: preprocess feeds its layout
    frame = _frames(card.preprocess, 1, seed=3)
    probabilities = onnx_session(report.onnx).run([card.output.name], {card.input.name: frame})[0]
    assert probabilities.shape == (1, 3, 48, 160) and 0 <= probabilities.min() <= probabilities.max() <= 1


def test_outside_onnx_contract_that_cannot_fit_is_refused(tmp_path):
    source = _outside_onnx(tmp_path / "theirs.onnx")
    with pytest.raises(EdgesegError, match="takes height 48, not 64"):
        adopt_onnx(source, tmp_path / "m" / "s.onnx", task="segmenter", size=(64, 160))
    with pytest.raises(EdgesegError, match="classifier must output one defect score"):
        adopt_onnx(source, tmp_path / "m" / "s.onnx", task="classifier")
    with pytest.raises(EdgesegError, match="has no input 'image'"):
        adopt_onnx(source, tmp_path / "m" / "s.onnx", task="segmenter", input_name="image")


def test_export_refuses_to_overwrite_a_json_that_is_not_a_card(tiny_checkpoints, tmp_path):
    (tmp_path / "segmenter.json").write_text(json.dumps({"dice": 0.9}))
    with pytest.raises(EdgesegError, match="not an edgeseg model card"):
        torch_to_onnx(tiny_checkpoints["segmenter"], tmp_path / "segmenter.onnx")
    assert json.loads((tmp_path / "segmenter.json").read_text()) == {"dice": 0.9}


def test_cli_exports_both_models_with_fp16_as_json(tiny_checkpoints, tmp_path):
    result = CliRunner().invoke(app, ["export", "-c", str(tiny_checkpoints["classifier"]), "-c",
                                      str(tiny_checkpoints["segmenter"]), "--out", str(tmp_path), "--fp16", "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    names = sorted(os.path.basename(r["onnx"]) for r in reports)
    assert names == ["classifier.fp16.onnx", "classifier.onnx", "segmenter.fp16.onnx", "segmenter.onnx"]
    assert all(p["ok"] for r in reports for p in r["parity"])
    for name in names:
        read_card(tmp_path / name)


def test_cli_outside_onnx_round_trips_through_its_own_card(tmp_path):
    source = _outside_onnx(tmp_path / "theirs.onnx")
    runner = CliRunner()
    first = runner.invoke(app, ["export", "--onnx", str(source), "--task", "segmenter", "--activation", "none",
                                "--classes", "x,y,z", "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["export", "--onnx", str(source), "--card", str(tmp_path / "a" / "segmenter.json"),
                                "--out", str(tmp_path / "b"), "--name", "theirs"])
    assert again.exit_code == 0, again.output
    card = read_card(tmp_path / "b" / "theirs.onnx")
    assert card.classes == ["x", "y", "z"] and card.output_activation == "none" and card.input.name == "input.1"


@pytest.mark.parametrize("case", ["truncated", "unwritable", "two-sources"])
def test_cli_bad_input_is_one_line_and_nonzero(tiny_models, tiny_checkpoints, tmp_path, case):
    if case == "truncated":
        bad = tmp_path / "cut.onnx"
        bad.write_bytes(tiny_models["segmenter"].read_bytes()[:2000])
        args, code = ["export", "--onnx", str(bad), "--task", "segmenter", "--out", str(tmp_path / "o")], 1
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("")
        args, code = ["export", "-c", str(tiny_checkpoints["segmenter"]), "--out", str(blocker / "sub")], 1
    else:
        args, code = ["export", "-c", str(tiny_checkpoints["segmenter"]), "--onnx", str(tiny_models["segmenter"])], 2
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code
    assert "Traceback" not in result.output
    if code == 1:
        assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
