"""The accuracy contract on what ships: the gate scores the built artifact as a cascade (per-class
Dice through the gate, gate decisions against FP32), INT8 beyond the budget keeps its most
sensitive layers in float by itself, and nothing beyond the budget is left to deploy."""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from edgeseg.calibration.qdq import fold_batchnorm, onnx_to_qdq, quantized_op_counts
from edgeseg.cli import app
from edgeseg.data.synth import write_synthetic
from edgeseg.edge.backends import openvino as ov_backend
from edgeseg.edge.card import read_card, write_card
from edgeseg.steps import BudgetMissed, calibrate


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    """(calibration folder, validation folder) of synthetic Severstal strips, different seeds."""
    root = tmp_path_factory.mktemp("contract_strips")
    write_synthetic(root / "calib", 12, seed=21)
    write_synthetic(root / "val", 16, seed=22)
    return root / "calib", root / "val"


def _copy_model(model, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for file in (model, model.with_suffix(".json")):
        shutil.copyfile(file, folder / file.name)
    return folder / model.name


def _outlier_channel(path, factor=3000.0):
    """Rewrite the FP32 classifier at `path` so that it computes the same function but its INT8
    form does not: one output channel of the last stage's first conv is scaled up by `factor`
    and the next conv's weights for that channel down by it (the Relu between them commutes with
    a positive scale). That channel alone then sets the activation range every other channel of
    the tensor is quantised with, as an outlier channel does in a real network. Returns the name
    of the conv reading the tensor: the layer INT8 ruins."""
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    readers = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs = []
    for first in nodes:
        relu = readers.get(first.output[0], [])
        if first.op_type != "Conv" or len(relu) != 1 or relu[0].op_type != "Relu":
            continue
        second = readers.get(relu[0].output[0], [])
        if len(second) == 1 and second[0].op_type == "Conv":
            pairs.append((first, second[0]))
    first, second = pairs[-2]
    weights = {init.name: init for init in model.graph.initializer}

    def scaled(name, index, axis, by):
        array = numpy_helper.to_array(weights[name]).copy()
        array[(slice(None),) * axis + (index,)] *= by
        weights[name].CopyFrom(numpy_helper.from_array(array, name))

    scaled(first.input[1], 0, 0, factor)
    if len(first.input) > 2:
        scaled(first.input[2], 0, 0, factor)
    scaled(second.input[1], 0, 1, 1.0 / factor)
    onnx.save(model, str(path))
    write_card(path, read_card(path, verify=False))  # the card of the rewritten file
    return second.name


@pytest.fixture(scope="module")
def flipping_classifier(strips, tmp_path_factory):
    """The bundled (trained) demo classifier made hostile to INT8 (`_outlier_channel`): the same
    FP32 decisions, but its plain INT8 form flips some of them."""
    from edgeseg import assets

    source = assets.classifier_onnx()
    model = _copy_model(source, tmp_path_factory.mktemp("flipping"))
    ruined = _outlier_channel(model)
    x = np.random.default_rng(0).random((2, 1, 64, 400), dtype=np.float32)
    run = lambda m: ort.InferenceSession(str(m), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    assert np.allclose(run(source), run(model), rtol=1e-3, atol=1e-4)  # FP32 unchanged
    return model, ruined


def test_gate_fails_a_classifier_whose_int8_flips_decisions_and_the_search_keeps_the_layer_float(flipping_classifier, strips, tmp_path):
    model, ruined = flipping_classifier
    out = tmp_path / "plain"
    with pytest.raises(BudgetMissed) as missed:
        calibrate(strips[0], [model], out, count=12, flavours=["trt"], backend="onnxruntime", validation=strips[1],
                  max_gate_disagreement=0.0, max_float_layers=0)
    report = missed.value.report
    assert report.rows["int8-trt"]["classifier"]["decision_flips"] > 0
    assert [(m.task, m.metric) for m in report.misses] == [("classifier", "decision_agreement")]
    assert report.misses[0].layers[0].node == ruined  # the sensitivity ranking names the ruined layer first
    assert not list(out.glob("*.int8.*")) and not list(out.glob(".edgeseg-*"))  # nothing deployable left, no staging
    assert json.loads((out / "accuracy.json").read_text())["within_budget"] is False

    out = tmp_path / "searched"
    done = calibrate(strips[0], [model], out, count=12, flavours=["trt"], backend="onnxruntime", validation=strips[1],
                     max_gate_disagreement=0.0, max_float_layers=8)
    search = done.accuracy.searches[0]
    assert search.within_budget and search.attempts[0].float_layers == 1 and not search.attempts[0].misses
    assert search.float_layers == {"classifier": [ruined]}  # the fewest: that one layer
    assert done.accuracy.rows["int8-trt"]["classifier"]["decision_flips"] == 0 and not done.accuracy.misses
    (built,) = done.built.artifacts
    assert built.artifact == out / "classifier.int8.ort.onnx" and built.artifact.is_file()
    assert read_card(built.artifact).artifact.float_layers == [ruined] == read_card(out / "classifier.int8.trt.qdq.onnx").artifact.float_layers
    saved = json.loads((out / "accuracy.json").read_text())
    assert saved["float_search"][0]["float_layers"] == {"classifier": [ruined]} and saved["float_search"][0]["sensitivity"][0]["node"] == ruined
    assert saved["models"]["int8-trt"]["classifier"] == str(built.artifact)  # scored: the artifact that ships
    assert not list(out.glob(".edgeseg-*"))


def _negated_output(path):
    """Tamper with a built artifact as a bad copy or a miscompiling converter would: its output
    negated (every defect decision turned around), its card re-stamped so it still loads."""
    model = onnx.load(str(path))
    output = model.graph.output[0].name
    producer = next(node for node in model.graph.node if output in node.output)
    producer.output[list(producer.output).index(output)] = f"{output}_raw"
    model.graph.node.append(helper.make_node("Neg", [f"{output}_raw"], [output], name="tampered"))
    onnx.save(model, str(path))
    write_card(path, read_card(path, verify=False))


def test_the_gate_scores_the_built_artifact_not_the_model_it_came_from(tiny_models, tiny_calibration, strips, tmp_path, monkeypatch):
    from edgeseg.export import engine

    folder = tmp_path / "models"
    model = _copy_model(tiny_models["classifier"], folder)
    calibrate(tiny_calibration.path, [model], folder, flavours=["cpu"])
    args = ["build-engine", str(model), "--backend", "onnxruntime", "--precision", "int8", "--out", str(folder),
            "--validation", str(strips[1]), "--max-gate-disagreement", "0.0"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    assert read_card(folder / "classifier.int8.ort.onnx").artifact.float_layers is None
    scored = json.loads(result.stdout)["accuracy"]
    assert scored["results"]["int8 built"]["classifier"]["decision_flips"] == 0
    assert scored["models"]["int8 built"] == {"classifier": str(folder / "classifier.int8.ort.onnx")}

    real = engine.onnx_to_ort

    def tampering(onnx_path, out_dir, options):
        built = real(onnx_path, out_dir, options)
        _negated_output(built.artifact)
        return built

    monkeypatch.setattr(engine, "onnx_to_ort", tampering)
    (folder / "classifier.int8.ort.onnx").unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "accuracy budget missed" in result.output and "decision_agreement" in result.output
    assert "gate flips" in result.output  # the table, with the flips of the artifact as built
    assert not (folder / "classifier.int8.ort.onnx").exists() and not list(folder.glob(".edgeseg-*"))
    assert (folder / "classifier.int8.cpu.qdq.onnx").is_file()  # the QDQ model it came from is not what was scored


def test_a_class_beyond_budget_fails_deploy_with_the_table_and_nothing_deployable(tiny_checkpoints, strips, tmp_path):
    out = tmp_path / "models"
    args = ["deploy", str(tiny_checkpoints["classifier"]), str(tiny_checkpoints["segmenter"]), "--precision", "int8",
            "--data", str(strips[0]), "--validation", str(strips[1]), "--count", "8", "--backend", "onnxruntime",
            "--max-dice-drop", "-1.01", "--max-gate-disagreement", "1", "--max-float-layers", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "cascade dice 1" in result.output and "cascade Dice per class" in result.output
    assert not list(out.glob("*.int8.*")) and not list(out.glob(".edgeseg-*"))
    saved = json.loads((out / "accuracy.json").read_text())
    assert saved["budget"] == {"max_dice_drop": -1.01, "max_gate_disagreement": 1.0}
    assert {m["metric"] for m in saved["budget_misses"]} == {"dice 1", "dice 2", "dice 3", "dice 4"}
    assert saved["models"]["int8-cpu"]["segmenter"].endswith("segmenter.int8.ort.onnx")  # the built artifact was scored
    assert sorted(Path(p).name for p in saved["removed"]) == ["classifier.int8.cpu.qdq.onnx", "segmenter.int8.cpu.qdq.onnx"]


def test_batchnorm_after_a_conv_is_folded_before_quantising(tiny_models, tiny_calibration, tmp_path):
    """An outside model keeps Conv -> BatchNormalization: no BatchNormalization is quantised (or left)."""
    model = _copy_model(tiny_models["classifier"], tmp_path / "bn")
    graph = onnx.load(str(model))
    conv = next(node for node in graph.graph.node if node.op_type == "Conv")
    channels = next(numpy_helper.to_array(i) for i in graph.graph.initializer if i.name == conv.input[1]).shape[0]
    rng = np.random.default_rng(0)
    params = {"scale": rng.uniform(0.5, 2, channels), "bias": rng.normal(0, 0.3, channels), "mean": rng.normal(0, 0.3, channels), "var": rng.uniform(0.5, 2, channels)}
    graph.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), f"bn_{k}") for k, v in params.items())
    raw = f"{conv.output[0]}_before_bn"
    bn = helper.make_node("BatchNormalization", [raw, "bn_scale", "bn_bias", "bn_mean", "bn_var"], [conv.output[0]], name="bn", epsilon=1e-5)
    conv.output[0] = raw
    graph.graph.node.insert(list(graph.graph.node).index(conv) + 1, bn)
    onnx.save(graph, str(model))
    write_card(model, read_card(model, verify=False))

    x = tiny_calibration.frames[:2, None].astype(np.float32) / 255.0  # any input: folding is exact
    x = np.ascontiguousarray(x[:, :, :32, :160])
    unfolded = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    folded = onnx.load(str(model))
    assert fold_batchnorm(folded) == 1 and not [n for n in folded.graph.node if n.op_type == "BatchNormalization"]
    same = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.allclose(same, unfolded, rtol=1e-4, atol=1e-5)
    for flavour in ("cpu", "trt"):
        result = onnx_to_qdq(model, tiny_calibration, tmp_path / f"bn.{flavour}.qdq.onnx", flavour=flavour)
        quantised = onnx.load(str(result.path))
        assert "BatchNormalization" not in quantized_op_counts(quantised)
        assert not [n for n in quantised.graph.node if n.op_type == "BatchNormalization"]
        assert result.first_batch_rel_l2 < 0.2


@pytest.mark.parametrize("exact", [True, False])
def test_weight_range_follows_the_cpu_int8_exactness(tiny_models, tiny_calibration, tmp_path, monkeypatch, exact):
    """8-bit cpu-flavour weights where int8 dot products are exact (VNNI, AMX, ARM), 7-bit
    (reduce_range) where AVX2 would saturate them; trt keeps 8 bits for TensorRT. Both branches
    on any machine: the CPU check is replaced."""
    monkeypatch.setattr(ov_backend, "symmetric_int8_exact", lambda simd=None: exact)
    bits = {}
    for flavour in ("cpu", "trt"):
        result = onnx_to_qdq(tiny_models["segmenter"], tiny_calibration, tmp_path / f"s.{flavour}.qdq.onnx", flavour=flavour)
        model = onnx.load(str(result.path))
        producers = {out: node for node in model.graph.node for out in node.output}
        convs = [node for node in model.graph.node if node.op_type == "Conv" and node.input[1] in producers]
        widest = 0
        for conv in convs:  # the int8 weight values behind each quantised Conv's DequantizeLinear
            dq = producers[conv.input[1]]
            source = producers.get(dq.input[0])
            name = source.input[0] if source is not None else dq.input[0]
            init = next(i for i in model.graph.initializer if i.name == name)
            values = numpy_helper.to_array(init)
            if values.dtype == np.int8:
                widest = max(widest, int(np.abs(values.astype(np.int32)).max()))
        bits[flavour] = read_card(result.path).artifact.weight_bits
        if flavour == "cpu" and convs:
            assert widest > 64 if exact else 0 < widest <= 64
    assert bits == {"cpu": 8 if exact else 7, "trt": 8}
    card = read_card(tmp_path / "s.cpu.qdq.onnx")
    assert not ov_backend.inexact_int8_reason(card)  # never wrong on the machine it was made for


def test_float_search_finds_the_fewest_layers_by_doubling_then_bisection():
    """The search alone, over a ranking of 16 layers where any 5 or more of the top ones in float
    bring the flips within budget: tries 1, 2, 4, 8, then bisects to 5 (not 8, not all 16)."""
    from edgeseg.calibration.accuracy import Budget, LayerError, Variant, float_search

    class Flips:  # scores a variant by how many of the ranked layers it keeps float
        row = {"classifier": {"decision_agreement": 1.0}}

        def score(self, variant, progress=None):
            return {"classifier": {"decision_agreement": 1.0 if variant.models["float"] >= 5 else 0.5}}

    ranked = [LayerError(f"conv{i}", "Conv", 1.0, 1.0 / (i + 1), "classifier") for i in range(16)]
    made = []

    def make(float_layers, number):
        made.append(float_layers.get("classifier", []))
        return [Variant("int8-cpu", {"float": len(made[-1])})]

    search, variants, _ = float_search(make, Flips(), Budget(max_gate_disagreement=0.0), ranked)
    assert [a.float_layers for a in search.attempts] == [1, 2, 4, 8, 6, 5]
    assert search.within_budget and search.float_layers == {"classifier": [f"conv{i}" for i in range(5)]}
    assert variants[0].models == {"float": 5}

    search, _, _ = float_search(make, Flips(), Budget(max_gate_disagreement=0.0), ranked[:3])  # never enough
    assert [a.float_layers for a in search.attempts] == [1, 2, 3] and not search.within_budget
