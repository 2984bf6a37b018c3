"""Model cards are validated on load: a mutated card is one EdgesegError line naming the card file,
the field and the fix, never a traceback and never a silent run (issue 20 item 2)."""
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.card import ModelCard, read_card
from edgeseg.errors import EdgesegError

ASSETS = Path(__file__).resolve().parents[1] / "edgeseg" / "assets"


def _copy(task: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in (ASSETS / f"{task}.onnx", ASSETS / f"{task}.json"):
        shutil.copy(path, folder / path.name)
    return folder / f"{task}.onnx"


def _mutate(model: Path, change: Callable[[Dict[str, Any]], None]) -> Path:
    card = model.with_suffix(".json")
    data = json.loads(card.read_text())
    change(data)
    card.write_text(json.dumps(data))  # json.dumps writes NaN as the bare token Python's json reads back
    return card


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    keys = path.split(".")

    def change(data: Dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


NAN = float("nan")
SEGMENTER = {
    "probability NaN": ("thresholds.probability", [NAN] * 4),
    "probability strings": ("thresholds.probability", ["a", "b", "c", "d"]),
    "probability null": ("thresholds.probability", None),
    "probability above 1": ("thresholds.probability", [1.5] * 4),
    "probability count": ("thresholds.probability", [0.5] * 3),
    "min_area NaN": ("thresholds.min_area", [NAN] * 4),
    "min_area 1e18": ("thresholds.min_area", [1e18] * 4),
    "min_area negative": ("thresholds.min_area", [-1] * 4),
    "mean NaN": ("preprocess.mean", NAN),
    "std NaN": ("preprocess.std", NAN),
    "std infinite": ("preprocess.std", float("inf")),
    "height zero": ("preprocess.height", 0),
    "classes ints": ("classes", [1, 2, 3, 4]),
    "classes not a list": ("classes", "1234"),
    "input shape strings": ("input.shape", "NCHW"),
    "activation": ("output_activation", "softmax"),
    "precision": ("artifact.precision", "int4"),
    "format": ("artifact.format", "pytorch"),
    "sha256 not text": ("artifact.sha256", 12),
}
CLASSIFIER = {
    "defect x": ("thresholds.defect", "x"),
    "defect null": ("thresholds.defect", None),
    "defect NaN": ("thresholds.defect", NAN),
    "mean NaN": ("preprocess.mean", NAN),
}


@pytest.mark.parametrize("case", sorted(SEGMENTER))
def test_a_mutated_segmenter_card_is_refused_naming_the_field(case, tmp_path):
    field, value = SEGMENTER[case]
    model = _copy("segmenter", tmp_path)
    card = _mutate(model, _set(field, value))
    with pytest.raises(EdgesegError) as caught:
        read_card(model, verify=False)
    message = str(caught.value)
    assert str(card) in message and field in message and caught.value.hint, message
    assert "\n" not in message


@pytest.mark.parametrize("case", sorted(CLASSIFIER))
def test_a_mutated_classifier_card_is_refused_naming_the_field(case, tmp_path):
    field, value = CLASSIFIER[case]
    model = _copy("classifier", tmp_path)
    card = _mutate(model, _set(field, value))
    with pytest.raises(EdgesegError) as caught:
        read_card(model, verify=False)
    assert str(card) in str(caught.value) and field in str(caught.value) and caught.value.hint


def test_a_card_of_an_unknown_schema_is_refused(tmp_path):
    model = _copy("segmenter", tmp_path)
    _mutate(model, _set("schema", "edgeseg.card/99"))
    with pytest.raises(EdgesegError, match="schema"):
        read_card(model, verify=False)


def test_a_deeply_nested_card_is_one_line_not_a_recursion_traceback(tmp_path):
    model = _copy("segmenter", tmp_path)
    depth = 200_000
    model.with_suffix(".json").write_text("[" * depth + "]" * depth)
    with pytest.raises(EdgesegError) as caught:
        read_card(model, verify=False)
    assert str(model.with_suffix(".json")) in str(caught.value)


def test_run_with_a_nan_threshold_card_exits_1_with_one_line(tmp_path):
    models = tmp_path / "m"
    classifier, segmenter = _copy("classifier", models), _copy("segmenter", models)
    _mutate(segmenter, _set("thresholds.probability", [NAN] * 4))
    clip = ASSETS / "demo_clip.mp4"
    result = CliRunner().invoke(app, ["run", "--classifier", str(classifier), "--segmenter", str(segmenter),
                                      "--source", str(clip), "--max-frames", "2", "--backend", "onnxruntime"])
    assert result.exit_code == 1, result.output
    assert "thresholds.probability" in result.output and "Traceback" not in result.output


def test_every_shipped_card_loads_and_round_trips():
    for path in sorted(ASSETS.glob("*.json")):
        data = json.loads(path.read_text())
        if not str(data.get("schema", "")).startswith("edgeseg.card/"):
            continue  # metrics files, not cards
        card = read_card(path.with_suffix(".onnx"))
        assert ModelCard.from_dict(card.to_dict()).to_dict() == card.to_dict() == data


def test_a_card_from_a_triton_config_is_validated_and_names_where_it_came_from():
    from edgeseg.edge.card import card_json, parse_card

    card = read_card(ASSETS / "classifier.onnx")
    assert parse_card(card_json(card, indent=None), "classifier_card").to_dict() == card.to_dict()
    data = card.to_dict()
    data["thresholds"]["defect"] = NAN
    with pytest.raises(EdgesegError, match="classifier_card: thresholds.defect"):
        parse_card(json.dumps(data), "classifier_card")
    with pytest.raises(ValueError):  # a card holding a NaN is never written
        card_json(replace(card, thresholds={"defect": NAN}))
