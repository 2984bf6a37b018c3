"""Golden sets: every artifact keeps a few frames with the outputs it gave where it was made, and
`edgeseg verify` / the start of `edgeseg run` refuse one that no longer reproduces them.

Real ONNX models (the tiny exported ones), real frames (synthetic strips of the calibration
fixture), a real perturbation (an initializer of the ONNX changed after its card was written)."""
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.edge.artifacts import card_path, golden_path
from edgeseg.edge.card import CARD_SCHEMA, read_card, write_card
from edgeseg.edge.golden import MAX_GOLDEN_BYTES, read_golden
from edgeseg.edge.registry import LOCAL_BACKENDS
from edgeseg.edge.rle import decode
from edgeseg.edge.verify import FAILED, NO_GOLDEN, PASSED, GoldenMismatch, verify_artifact
from edgeseg.export.golden import add_golden
from edgeseg.files import model_files, sha256
from edgeseg.inspector import Inspector

ROLES = ("classifier", "segmenter")


@pytest.fixture(scope="module")
def golden_folder(tiny_models, tiny_calibration, tmp_path_factory):
    """The tiny models copied into a folder, each with a golden set from the calibration strips."""
    folder = tmp_path_factory.mktemp("golden")
    for role in ROLES:
        for file in (f for f in model_files(tiny_models[role]) if f.is_file()):
            shutil.copy(file, folder / file.name)
        add_golden(folder / tiny_models[role].name, list(tiny_calibration.frames), tiny_calibration.names)
    return folder


@pytest.fixture
def models(golden_folder, tmp_path):
    """A fresh copy of the golden models per test (tests perturb them): {role: path}."""
    for file in golden_folder.iterdir():
        shutil.copy(file, tmp_path / file.name)
    return {role: tmp_path / f"{role}.onnx" for role in ROLES}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("golden_clip") / "clip.mp4", frames(3))


def _perturb(model, delta=2.0):
    """Add `delta` to the bias of the model's output layer and rewrite the ONNX, refreshing the
    sha256 in its card (as a tampered copy would): only the golden check can notice."""
    graph = onnx.load(str(model))
    names = {init.name: i for i, init in enumerate(graph.graph.initializer)}
    bias = next(name for name in reversed(graph.graph.node[-1].input) if name in names)
    index = names[bias]
    values = numpy_helper.to_array(graph.graph.initializer[index]) + np.float32(delta)
    graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, bias))
    onnx.save(graph, str(model))
    card = json.loads(card_path(model).read_text())
    card["artifact"]["sha256"] = sha256(model)
    card_path(model).write_text(json.dumps(card))


def _models(paths):
    return ["--classifier", str(paths["classifier"]), "--segmenter", str(paths["segmenter"])]


def test_the_card_describes_a_small_golden_set_of_defective_and_clean_frames(golden_folder, tiny_calibration):
    for role in ROLES:
        model = golden_folder / f"{role}.onnx"
        card = read_card(model)
        assert card.schema == CARD_SCHEMA and card.golden is not None and card.measured is not None
        assert card.golden.file == golden_path(model).name and golden_path(model).stat().st_size <= MAX_GOLDEN_BYTES
        assert 2 <= len(card.golden.frames) <= 4 and set(card.golden.frames) <= set(tiny_calibration.names)
        assert card.measured.backend in LOCAL_BACKENDS and card.measured.version and card.measured.device
        stored, outputs = read_golden(model, card)
        assert stored.shape == (len(card.golden.frames), card.preprocess.height, card.preprocess.width) and stored.dtype == np.uint8
        scores = outputs.probabilities.reshape(len(stored), -1).mean(axis=1)
        assert scores[0] > scores[1]  # the most defective frame first, the cleanest second
    card = read_card(golden_folder / "segmenter.onnx")
    stored, outputs = read_golden(golden_folder / "segmenter.onnx", card)
    masks = [decode(rle, stored.shape[1:]) for row in outputs.masks for rle in row]  # RLE, one per class and frame
    assert len(masks) == len(card.classes) * len(stored) and any(mask.any() for mask in masks)


def test_verify_passes_unmodified_models_and_names_the_frame_of_a_perturbed_one(models):
    result = CliRunner().invoke(app, ["verify", *map(str, models.values()), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and [r["status"] for r in report["results"]] == [PASSED, PASSED]

    _perturb(models["segmenter"])
    result = CliRunner().invoke(app, ["verify", *map(str, models.values()), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    classifier, segmenter = report["results"]
    assert not report["ok"] and classifier["status"] == PASSED and segmenter["status"] == FAILED
    assert segmenter["frame"] in read_card(models["segmenter"]).golden.frames
    assert segmenter["probability_difference"] > segmenter["tolerance"]["probability"]

    result = CliRunner().invoke(app, ["verify", str(models["segmenter"])])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "error:" in line]
    assert len(lines) == 1 and str(models["segmenter"]) in lines[0] and "golden frame" in lines[0] and "re-export" in lines[0]


def test_verify_warns_about_a_model_without_golden_set(models):
    card = read_card(models["classifier"])
    card.golden = card.measured = None
    write_card(models["classifier"], card)
    result = CliRunner().invoke(app, ["verify", str(models["classifier"])])
    assert result.exit_code == 0, result.output
    assert "no golden set" in result.output
    golden_path(models["segmenter"]).unlink()  # the card names it: copied without it
    result = verify_artifact(models["segmenter"])
    assert result.status == NO_GOLDEN and "missing" in result.message


def test_a_changed_golden_file_or_artifact_fails_verify(models):
    golden = golden_path(models["classifier"])
    golden.write_bytes(golden.read_bytes() + b"\0")
    assert verify_artifact(models["classifier"]).status == FAILED
    models["segmenter"].write_bytes(models["segmenter"].read_bytes() + b"\0")  # card not refreshed
    result = verify_artifact(models["segmenter"])
    assert result.status == FAILED and "sha256" in result.message


def test_run_refuses_a_perturbed_model_before_any_output_and_accepts_it_unmodified(models, clip, tmp_path):
    jsonl = tmp_path / "frames.jsonl"
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(models), "--jsonl", str(jsonl)])
    assert result.exit_code == 0, result.output
    header = json.loads(jsonl.read_text().splitlines()[0])
    assert {role: header["models"][role]["verify"] for role in ROLES} == {"classifier": PASSED, "segmenter": PASSED}

    _perturb(models["classifier"])
    jsonl.unlink()
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(models), "--jsonl", str(jsonl)])
    assert result.exit_code == 1
    assert "golden frame" in result.output and str(models["classifier"]) in result.output
    assert not jsonl.exists()  # refused before any sink opened

    result = CliRunner().invoke(app, ["run", "--source", str(clip), *_models(models), "--jsonl", str(jsonl), "--skip-verify"])
    assert result.exit_code == 0, result.output
    header = json.loads(jsonl.read_text().splitlines()[0])
    assert {header["models"][role]["verify"] for role in ROLES} == {"skipped"}


def test_inspector_verifies_only_when_asked(models):
    _perturb(models["segmenter"])
    with pytest.raises(GoldenMismatch, match="golden frame"):
        Inspector(models["classifier"], models["segmenter"], verify=True)
    inspector = Inspector(models["classifier"], models["segmenter"])
    assert inspector.header("x")["models"]["segmenter"]["verify"] == "skipped"


def test_a_build_records_its_own_golden_set_from_its_source_frames(models, tmp_path):
    from edgeseg.export.engine import BuildOptions, onnx_to_ort

    built = onnx_to_ort(models["classifier"], tmp_path / "built", BuildOptions(precision="fp32")).artifact
    card, source = read_card(built), read_card(models["classifier"])
    assert card.golden is not None and card.golden.file == golden_path(built).name
    assert set(card.golden.frames) == set(source.golden.frames) and card.measured.backend == "onnxruntime"
    assert verify_artifact(built).status == PASSED


def test_a_card_written_for_other_bytes_drops_the_golden_set(models, tmp_path):
    card = read_card(models["classifier"])
    other = tmp_path / "other.onnx"
    shutil.copy(models["classifier"], other)
    write_card(other, card)  # another artifact's name
    assert read_card(other).golden is None and read_card(other).measured is None
    write_card(models["classifier"], read_card(models["classifier"]))  # the same bytes: kept
    assert read_card(models["classifier"]).golden is not None
    models["segmenter"].write_bytes(models["classifier"].read_bytes())  # swapped
    write_card(models["segmenter"], read_card(models["segmenter"], verify=False))  # changed bytes: dropped
    assert read_card(models["segmenter"]).golden is None


def test_export_and_calibrate_record_golden_sets(tiny_checkpoints, tiny_calibration, tmp_path):
    from edgeseg.steps import calibrate, export

    onnx_path = export([tiny_checkpoints["classifier"]], tmp_path).onnx[0]
    card = read_card(onnx_path)
    assert card.golden is not None and all(name.startswith("synthetic strip") for name in card.golden.frames)  # no --images
    qdq = calibrate(tiny_calibration.path, [onnx_path], tmp_path, flavours=["cpu"]).models[0].path
    card = read_card(qdq)
    assert card.golden is not None and set(card.golden.frames) <= set(tiny_calibration.names)
    assert card.golden.tolerance["probability"] > read_card(onnx_path).golden.tolerance["probability"]  # INT8's
    assert verify_artifact(qdq).status == PASSED
