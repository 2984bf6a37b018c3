"""A user's own models on the one-step road: third-party architectures (tests/thirdparty.py, plain
torch, trained briefly so they predict real masks) through `deploy --factory` and `deploy model.onnx`,
3-channel and NHWC ONNX through `export --onnx` and the runtime, and hints that name the fix."""
import json
import shlex
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import thirdparty as tp
from edgeseg.calibration.accuracy import classifier_probabilities, load_validation, segmenter_scores
from edgeseg.cli import app
from edgeseg.edge.backends import BackendOptions, open_backend
from edgeseg.edge.card import read_card
from edgeseg.edge.preprocess import preprocess
from edgeseg.errors import EdgesegError
from edgeseg.export.outside import adopt_onnx
from edgeseg.lazy import available

BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(not available("openvino"), reason="openvino not installed"))]
CONTRACT = ["--height", str(tp.SIZE[0]), "--width", str(tp.SIZE[1]), "--mean", str(tp.MEAN), "--std", str(tp.STD)]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """{"segmenter"|"classifier": (module, state-dict path)}: the third-party models, trained once."""
    folder = tmp_path_factory.mktemp("thirdparty")
    models = {}
    for task in ("segmenter", "classifier"):
        model = tp.fit(task)
        torch.save(model.state_dict(), folder / f"{task}_weights.pt")
        models[task] = (model, folder / f"{task}_weights.pt")
    return models


@pytest.fixture(scope="session")
def strips(tmp_path_factory):
    """A Severstal-layout folder of synthetic strips: calibration and validation data."""
    from edgeseg.data.synth import write_synthetic

    folder = tmp_path_factory.mktemp("strips")
    write_synthetic(folder, 24, seed=11)
    return folder


def _onnx(model, path, example):
    """The model as a third party ships it: torch.onnx.export with its own tensor names, no card."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["pixels"], output_names=["scores"],
                          dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})
    return path


def _cascade_dice(classifier, segmenter, backend, data):
    """Per-class Dice of the whole cascade (gate included) on `data`, the artifacts run on `backend`."""
    probabilities, gate = classifier_probabilities(open_backend(classifier, backend, BackendOptions.cpu()), data)
    scores, _, classes = segmenter_scores(open_backend(segmenter, backend, BackendOptions.cpu()), data)
    empty = np.array([[float(not truth[c].any()) for c in range(len(classes))] for truth in data.truths])
    return np.where((probabilities >= gate)[:, None], scores, empty).mean(axis=0), probabilities


def test_thirdparty_models_segment_and_separate(trained, strips):
    frames, masks = tp.strips(24, seed=7)
    x = torch.from_numpy(np.concatenate([preprocess(f, tp.spec()) for f in frames]))
    with torch.no_grad():
        maps = torch.sigmoid(trained["segmenter"][0](x)).numpy() > 0.5
        scores = torch.sigmoid(trained["classifier"][0](x)).numpy()[:, 0]
    from edgeseg.training.metrics import dice

    defects = [dice(maps[i, c], masks[i, c]) for i in range(len(frames)) for c in range(tp.CLASSES) if masks[i, c].any()]
    assert np.mean(defects) > 0.1  # real masks on the defects, not the empty prediction
    defective = masks.reshape(len(masks), -1).max(axis=1) > 0
    assert scores[defective].mean() - scores[~defective].mean() > 0.2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["factory", "onnx"])
def test_deploy_int8_of_thirdparty_models_keeps_cascade_dice(trained, strips, tmp_path, source, backend):
    """`deploy --factory ... --weights ...` or `deploy their.onnx carded.onnx`: INT8 artifacts whose
    cascade per-class Dice is within 0.01 of the FP32 models', measured on the shipped artifacts."""
    out = tmp_path / "models"
    if source == "factory":
        models = []
        for task, function in (("classifier", "densenet"), ("segmenter", "resunet")):
            models += ["--factory", f"thirdparty:{function}", "--weights", str(trained[task][1])]
        models += CONTRACT
    else:  # the segmenter as shipped by its authors (no card), the classifier already described by export
        segmenter = _onnx(trained["segmenter"][0], tmp_path / "their_unet.onnx", torch.zeros((1, 1) + tp.SIZE))
        described = tmp_path / "described"
        export = CliRunner().invoke(app, ["export", "--factory", "thirdparty:densenet", "--weights", str(trained["classifier"][1]),
                                          "--task", "classifier", *CONTRACT, "--out", str(described)])
        assert export.exit_code == 0, export.output
        models = [str(segmenter), str(described / "classifier.onnx"), "--mean", str(tp.MEAN), "--std", str(tp.STD)]
    args = ["deploy", *models, "--precision", "int8", "--data", str(strips), "--count", "16", "--backend", backend, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    built = {read_card(p).task: p for p in out.iterdir() if p.suffix in (".onnx", ".xml") and ".int8." in p.name and ".qdq." not in p.name}
    assert sorted(built) == ["classifier", "segmenter"] and all(read_card(p).artifact.precision == "int8" for p in built.values())
    if source == "onnx":
        card = read_card(out / "segmenter.onnx")
        assert card.input.name == "pixels" and card.classes == ["1", "2", "3", "4"] and card.preprocess.mean == tp.MEAN
    data = load_validation(strips)
    fp32, fp32_gate = _cascade_dice(out / "classifier.onnx", out / "segmenter.onnx", "onnxruntime", data)
    int8, int8_gate = _cascade_dice(built["classifier"], built["segmenter"], backend, data)
    assert fp32_gate[data.defective].mean() - fp32_gate[~data.defective].mean() > 0.1  # the FP32 gate separates defect / clean
    assert np.abs(int8 - fp32).max() <= 0.01, f"cascade Dice per class FP32 {np.round(fp32, 4)} INT8 {np.round(int8, 4)}"
    line = next(line for line in result.output.splitlines() if "run it:" in line)
    ran = CliRunner().invoke(app, shlex.split(line.split("run it:", 1)[1])[1:] + ["--source", str(strips / "train_images"), "--max-frames", "3", "--json"])
    assert ran.exit_code == 0, ran.output


def test_deploy_fp32_takes_a_carded_onnx_as_it_is(trained, tmp_path):
    described = tmp_path / "described"
    for task, function in (("classifier", "densenet"), ("segmenter", "resunet")):
        done = CliRunner().invoke(app, ["export", "--factory", f"thirdparty:{function}", "--weights", str(trained[task][1]),
                                        "--task", task, *CONTRACT, "--out", str(described)])
        assert done.exit_code == 0, done.output
    out = tmp_path / "models"
    result = CliRunner().invoke(app, ["deploy", str(described / "segmenter.onnx"), str(described / "classifier.onnx"),
                                      "--precision", "fp32", "--backend", "onnxruntime", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for task in ("classifier", "segmenter"):
        assert (out / f"{task}.onnx").read_bytes() == (described / f"{task}.onnx").read_bytes()  # not re-exported
        assert read_card(out / f"{task}.onnx").source.factory == f"thirdparty:{'densenet' if task == 'classifier' else 'resunet'}"
        assert read_card(out / f"{task}.fp32.ort.onnx").artifact.precision == "fp32"


def _three_channel(model, channels_last):
    """The trained gray ResUNet as a 3-channel one: first-layer weights split over R, G and B, so on
    a gray frame replicated to 3 channels it computes what the gray model does."""
    wide = tp.ResUNet(in_channels=3, channels_last=channels_last)
    state = model.state_dict()
    for name in ("enc.0.body.0.weight", "enc.0.skip.weight"):
        state[name] = state[name].repeat(1, 3, 1, 1) / 3
    wide.load_state_dict(state)
    return wide.eval()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_three_channel_onnx_is_fed_its_layout_by_the_runtime(trained, strips, tmp_path, layout, backend):
    gray_model = trained["segmenter"][0]
    nhwc = layout == "NHWC"
    example = torch.zeros((1,) + (tp.SIZE + (3,) if nhwc else (3,) + tp.SIZE))
    source = _onnx(_three_channel(gray_model, nhwc), tmp_path / "rgb.onnx", example)
    result = CliRunner().invoke(app, ["export", "--onnx", str(source), "--task", "segmenter", "--layout", layout,
                                      "--mean", str(tp.MEAN), "--std", str(tp.STD), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    model = tmp_path / "m" / "segmenter.onnx"
    card = read_card(model)
    assert (card.preprocess.channels, card.preprocess.layout) == (3, layout)
    assert json.loads((tmp_path / "m" / "segmenter.json").read_text())["preprocess"]["channels"] == 3  # stated in the card
    data = load_validation(strips)
    gray = _onnx(gray_model, tmp_path / "gray.onnx", torch.zeros((1, 1) + tp.SIZE))
    adopt_onnx(gray, tmp_path / "g" / "segmenter.onnx", task="segmenter", mean=tp.MEAN, std=tp.STD)
    gray_card = read_card(tmp_path / "g" / "segmenter.onnx")
    with open_backend(model, backend, BackendOptions.cpu()) as rgb, open_backend(tmp_path / "g" / "segmenter.onnx", "onnxruntime", BackendOptions.cpu()) as plain:
        for frame in data.frames:  # the 3-channel model fed by the runtime computes what the gray one does
            a = rgb.infer({card.input.name: preprocess(frame, card.preprocess)})[card.output.name]
            b = plain.infer({gray_card.input.name: preprocess(frame, gray_card.preprocess)})[gray_card.output.name]
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    rgb_scores, rgb_masks, _ = segmenter_scores(open_backend(model, backend, BackendOptions.cpu()), data)
    gray_scores, gray_masks, _ = segmenter_scores(open_backend(tmp_path / "g" / "segmenter.onnx", "onnxruntime", BackendOptions.cpu()), data)
    disagreeing = sum(int((np.unpackbits(a) != np.unpackbits(b)).sum()) for a, b in zip(rgb_masks, gray_masks))
    assert disagreeing <= 1e-4 * sum(m.size * 8 for m in gray_masks)  # the same masks, up to float rounding at a threshold
    assert np.abs(rgb_scores.mean(axis=0) - gray_scores.mean(axis=0)).max() < 1e-3
    colour = np.dstack([data.frames[0]] * 3)  # a BGR frame of equal channels: kept as colour, the same tensor
    with open_backend(model, backend, BackendOptions.cpu()) as runner:
        a = runner.infer({card.input.name: preprocess(colour, card.preprocess)})[card.output.name]
        b = runner.infer({card.input.name: preprocess(data.frames[0], card.preprocess)})[card.output.name]
    np.testing.assert_array_equal(a, b)


def test_colour_frames_reach_a_three_channel_model_as_rgb():
    spec = tp.spec(channels=3, layout="NHWC")
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    tensor = preprocess(bgr, spec)
    assert tensor.shape == (1,) + tp.SIZE + (3,)
    blue = (1.0 - tp.MEAN) / tp.STD
    np.testing.assert_allclose(tensor[0, 0, 0], [-tp.MEAN / tp.STD, -tp.MEAN / tp.STD, blue], rtol=1e-6)
    nchw = preprocess(bgr, tp.spec(channels=3))
    np.testing.assert_array_equal(nchw[0].transpose(1, 2, 0), tensor[0])


# -- hints name the option that fixes the error ----------------------------------------------------
def _conv_onnx(path, shape, out_channels=4):
    net = torch.nn.Conv2d(shape[1] if len(shape) == 4 and shape[1] in (1, 3) else shape[-1], out_channels, 3, padding=1)
    return _onnx(net.eval(), path, torch.zeros(shape))


def _error(**kwargs):
    with pytest.raises(EdgesegError) as caught:
        adopt_onnx(**kwargs)
    return caught.value


def test_layout_hint_names_the_other_layout_never_the_one_given(tmp_path):
    nchw = _conv_onnx(tmp_path / "nchw.onnx", (1, 3, 32, 160))
    wrong = _error(onnx_path=nchw, out_path=tmp_path / "m" / "s.onnx", task="segmenter", layout="NHWC")
    assert "--layout NCHW" in wrong.hint and "--layout NHWC" not in wrong.hint

    class Last(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2), 1)

    nhwc = _onnx(Last(), tmp_path / "nhwc.onnx", torch.zeros((1, 32, 160, 3)))
    wrong = _error(onnx_path=nhwc, out_path=tmp_path / "m" / "s.onnx", task="segmenter")
    assert "--layout NHWC" in wrong.hint
    five = _onnx(Last(), tmp_path / "five.onnx", torch.zeros((1, 32, 160, 5)))
    wrong = _error(onnx_path=five, out_path=tmp_path / "m" / "s.onnx", task="segmenter", layout="NHWC")
    assert "5 channels" in wrong.message and "--layout" not in wrong.hint and "1- or 3-channel" in wrong.hint


def test_classifier_described_as_segmenter_is_told_to_use_task_classifier(trained, tmp_path):
    classifier = _onnx(trained["classifier"][0], tmp_path / "cls.onnx", torch.zeros((1, 1) + tp.SIZE))
    result = CliRunner().invoke(app, ["export", "--onnx", str(classifier), "--task", "segmenter", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "--task classifier" in result.stderr and "--classes" not in result.stderr
    maps = _conv_onnx(tmp_path / "maps.onnx", (1, 1, 32, 160), out_channels=3)
    result = CliRunner().invoke(app, ["export", "--onnx", str(maps), "--task", "segmenter", "--classes", "a,b", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "--classes" in result.stderr and "3 names" in result.stderr


def test_deploy_of_a_state_dict_names_factory_and_then_takes_it(trained, strips, tmp_path):
    weights = str(trained["segmenter"][1])
    classifier = ["--factory", "thirdparty:densenet", "--weights", str(trained["classifier"][1])]
    first = CliRunner().invoke(app, ["deploy", weights, *classifier, *CONTRACT, "--precision", "fp32", "--out", str(tmp_path / "a")])
    assert first.exit_code == 1 and f"--factory module:function --weights {weights}" in first.stderr
    again = CliRunner().invoke(app, ["deploy", *classifier, "--factory", "thirdparty:resunet", "--weights", weights, *CONTRACT,
                                     "--precision", "fp32", "--backend", "onnxruntime", "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert {read_card(tmp_path / "b" / f"{t}.onnx").task for t in ("classifier", "segmenter")} == {"classifier", "segmenter"}


def test_deploy_factory_in_three_channels_is_told_channels(trained, tmp_path):
    three = tmp_path / "rgb_weights.pt"
    torch.save(_three_channel(trained["segmenter"][0], False).state_dict(), three)
    args = ["deploy", "--factory", "thirdparty:densenet", "--weights", str(trained["classifier"][1]), "--factory", "thirdparty:rgb_resunet",
            "--weights", str(three), *CONTRACT, "--precision", "fp32", "--backend", "onnxruntime", "--out", str(tmp_path / "m")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "--channels 3" in refused.stderr
