"""Training: metrics on hand-made masks, losses, and tiny real runs (checkpoint, resume, seed, bad input)."""
import json

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.training.metrics import (
    SegmentationScorer,
    apply_thresholds,
    best_defect_threshold,
    classification_metrics,
    dice,
    mean_dice,
    roc_auc,
)

# --- metrics on hand-made masks -------------------------------------------------------------------


def test_kaggle_dice_conventions():
    empty = np.zeros((4, 5), np.uint8)
    two = empty.copy()
    two[0, :2] = 1
    shifted = empty.copy()
    shifted[0, 1:3] = 1
    assert dice(empty, empty) == 1.0  # empty prediction on an empty mask scores 1
    assert dice(empty, two) == 0.0 and dice(two, empty) == 0.0
    assert dice(two, two) == 1.0
    assert dice(shifted, two) == pytest.approx(0.5)  # 2*1 / (2+2)
    per_class, mean = mean_dice(np.stack([two, empty])[None], np.stack([shifted, empty])[None])
    assert per_class == [pytest.approx(0.5), 1.0] and mean == pytest.approx(0.75)


def test_apply_thresholds_drops_small_components():
    prob = np.zeros((2, 20, 20), np.float32)
    prob[0, 2:8, 2:8] = 0.9  # 36 px
    prob[0, 15, 15] = 0.9  # 1 px speck
    prob[1, 10:12, 10:12] = 0.55
    masks = apply_thresholds(prob, [0.5, 0.6], [10, 0])
    assert masks[0].sum() == 36 and masks[0, 15, 15] == 0
    assert masks[1].sum() == 0  # 0.55 is not above 0.6


def test_scorer_chooses_thresholds_that_remove_false_alarms():
    truth = np.zeros((2, 32, 32), np.uint8)
    truth[0, 4:20, 4:20] = 1
    prob = np.zeros((2, 32, 32), np.float32)
    prob[0, 4:20, 4:20] = 0.8
    prob[0, 28:30, 28:30] = 0.9  # 4 px false alarm next to a real defect
    prob[1, 0:3, 0:3] = 0.65  # 9 px false alarm on an empty class
    scorer = SegmentationScorer(2, probabilities=(0.5, 0.7), min_areas=(0, 16, 512))
    scorer.add(prob, truth)
    result = scorer.result()
    assert result["thresholds"]["min_area"] == [16, 16]
    assert result["dice_per_class"] == [1.0, 1.0]
    assert result["dice_where_defect"] == 1.0  # class 0 of the one image has a defect
    assert result["empty_predicted_empty"] == 1.0  # class 1 is empty and predicted empty
    untuned = dice(prob[0] > 0.5, truth[0])
    assert result["mean_dice_untuned"] == pytest.approx((untuned + 0.0) / 2)
    # what the scorer promises is what apply_thresholds delivers
    t = result["thresholds"]
    assert mean_dice(apply_thresholds(prob, t["probability"], t["min_area"])[None], truth[None])[1] == 1.0


def test_classification_metrics_by_hand():
    probs = np.array([0.9, 0.8, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0])
    m = classification_metrics(probs, labels, 0.5)
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5, 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered right
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 1])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert best_defect_threshold(np.array([0.2, 0.35, 0.4, 0.9]), np.array([0, 0, 1, 1])) in (0.4,)


def test_losses_prefer_the_right_answer():
    torch = pytest.importorskip("torch")
    from edgeseg.training.losses import segmentation_loss

    target = torch.zeros(2, 4, 16, 16)
    target[:, 1, 4:10, 4:10] = 1
    good = (target * 2 - 1) * 20
    for name in ("bce-dice", "focal-tversky"):
        loss = segmentation_loss(name)
        assert float(loss(good, target)) < 0.05 < float(loss(-good, target))
    with pytest.raises(EdgesegError, match="unknown loss"):
        segmentation_loss("l2")


# --- tiny real training runs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from edgeseg.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("tiny_data")
    write_synthetic(root, 10, seed=4)
    return root


def _config(task, data, out, **overrides):
    from edgeseg.training.loop import TrainConfig

    base = dict(task=task, data=str(data), out=str(out), epochs=1, batch_size=4, model={"base_width": 4}, val_fraction=0.2, seed=0)
    if task == "segmenter":
        base.update(input_size=(64, 400), crop=(32, 64))
    else:
        base.update(input_size=(32, 208))
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.parametrize("task", ["segmenter", "classifier"])
def test_tiny_run_writes_a_loadable_checkpoint(tiny_data, tmp_path, task):
    torch = pytest.importorskip("torch")
    from edgeseg.models import load_checkpoint
    from edgeseg.training.loop import train

    result = train(_config(task, tiny_data, tmp_path), threads=1, show_progress=False)
    assert result.best_epoch == 1
    payload = torch.load(tmp_path / f"{task}.pt", weights_only=True)
    assert payload["task"] == task
    model, meta = load_checkpoint(tmp_path / f"{task}.pt")
    assert meta.preprocess.height in (64, 32) and 0 < meta.preprocess.mean < 1
    if task == "segmenter":
        assert len(meta.thresholds["probability"]) == 4 and len(meta.thresholds["min_area"]) == 4
        assert model(torch.zeros(1, 1, 64, 400)).shape == (1, 4, 64, 400)
        assert 0 <= meta.metrics["mean_dice"] <= 1
    else:
        assert 0 < meta.thresholds["defect"] < 1
        assert set(meta.metrics) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["best_epoch"] == 1 and report["history"][0]["val"] == report["best"]


def test_resume_continues_the_epoch_count(tiny_data, tmp_path):
    from edgeseg.models.checkpoint import read_payload
    from edgeseg.training.loop import train

    train(_config("classifier", tiny_data, tmp_path, epochs=1), threads=1, show_progress=False)
    first = read_payload(tmp_path / "classifier.last.pt")
    assert first["extra"]["epoch"] == 1
    # resume keeps the saved options (batch size 4) even if others are passed; only epochs extends
    train(_config("classifier", tiny_data, tmp_path, epochs=2, batch_size=99), resume=True, threads=1, show_progress=False)
    second = read_payload(tmp_path / "classifier.last.pt")
    assert second["extra"]["epoch"] == 2
    assert [h["epoch"] for h in second["extra"]["history"]] == [1, 2]
    assert second["extra"]["train_config"]["batch_size"] == 4
    assert second["extra"]["optimizer"]["state"]  # optimizer moments carried on
    with pytest.raises(EdgesegError, match="already finished 2 of 2"):
        train(_config("classifier", tiny_data, tmp_path, epochs=2), resume=True, threads=1, show_progress=False)
    with pytest.raises(EdgesegError, match="nothing to resume"):
        train(_config("classifier", tiny_data, tmp_path / "new"), resume=True, threads=1, show_progress=False)


def test_same_seed_same_weights(tiny_data, tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.training.loop import train

    for name in ("a", "b", "c"):
        seed = 1 if name == "c" else 0
        train(_config("classifier", tiny_data, tmp_path / name, seed=seed), threads=1, show_progress=False)
    a, b, c = (torch.load(tmp_path / n / "classifier.last.pt", weights_only=True)["state_dict"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_input_is_skipped_counted_and_reported(tiny_data, tmp_path):
    import shutil

    import cv2
    from typer.testing import CliRunner

    from edgeseg.cli import app

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with open(data / "train.csv", "a") as handle:
        handle.write("s4_000001.jpg,2,12 x\n")
    cv2.imwrite(str(data / "train_images" / "tiny.jpg"), np.zeros((10, 10), np.uint8))
    (data / "train_images" / "zero.jpg").write_bytes(b"")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "classifier", "--data", str(data), "--out", str(out), "--epochs", "1", "--base-width", "4",
        "--input-size", "32x208", "--batch", "4", "--threads", "1", "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["skipped"]["count"] == 3
    problems = "\n".join(report["skipped"]["problems"])
    assert "non-integer" in problems and "tiny.jpg" in problems and "zero.jpg" in problems
    assert '"skipped": 3' in result.output

    result = CliRunner().invoke(app, ["train", "segmenter", "--data", str(tmp_path / "nowhere"), "--out", str(out)])
    assert result.exit_code == 1 and "train.csv" in result.output and "Traceback" not in result.output


def test_evaluate_uses_the_checkpoint_thresholds(tiny_data, tmp_path):
    from edgeseg.training.loop import evaluate, train

    train(_config("segmenter", tiny_data, tmp_path), threads=1, show_progress=False)
    metrics = evaluate(tmp_path / "segmenter.pt", tiny_data, threads=1, show_progress=False)
    assert metrics["images"] == 10 and len(metrics["dice_per_class"]) == 4
    assert metrics["mean_dice"] == pytest.approx(np.mean(metrics["dice_per_class"]))

    from typer.testing import CliRunner

    from edgeseg.cli import app

    result = CliRunner().invoke(app, ["train", "evaluate", str(tmp_path / "segmenter.pt"), "--data", str(tiny_data), "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[str(tmp_path / "segmenter.pt")]["mean_dice"] == pytest.approx(metrics["mean_dice"])


def test_bundled_demo_models_match_their_metrics():
    pytest.importorskip("torch")
    from pathlib import Path

    import edgeseg.assets
    from edgeseg.models import load_checkpoint

    assets = Path(edgeseg.assets.__file__).parent
    metrics = json.loads((assets / "demo_metrics.json").read_text())
    for name, task in (("classifier.pt", "classifier"), ("segmenter.pt", "segmenter")):
        _, meta = load_checkpoint(assets / name)
        assert meta.task == task and metrics[name]["task"] == task
        assert metrics[name]["checkpoint"]["sha256"] == meta.sha256, f"{name} changed since demo_metrics.json was measured"
    assert metrics["classifier.pt"]["accuracy"] >= 0.95
    assert metrics["segmenter.pt"]["mean_dice"] >= 0.85
    _, seg = load_checkpoint(assets / "segmenter.pt")
    assert len(seg.thresholds["probability"]) == len(seg.thresholds["min_area"]) == 4
    assert (seg.preprocess.height, seg.preprocess.width) == (256, 1600)


def test_two_runs_keep_apart_and_tables_show_both_dice(tiny_data, tmp_path):
    """Checkpoints are named by task, so `train evaluate` of a classifier and a segmenter run
    shows two tables (keyed by path), each with the Kaggle mean beside the Dice where a defect
    exists, and no Python dict text or negative zero."""
    from typer.testing import CliRunner

    from edgeseg.cli import app

    common = ["--data", str(tiny_data), "--epochs", "1", "--base-width", "4", "--batch", "4", "--threads", "1"]
    seg = CliRunner().invoke(app, ["train", "segmenter", *common, "--out", str(tmp_path / "a"), "--input-size", "64x400", "--crop", "32x64"])
    assert seg.exit_code == 0, seg.output
    assert "Kaggle mean Dice" in seg.output and "Dice where a defect exists" in seg.output
    assert "{" not in seg.output and "-0.0000" not in seg.output
    cls = CliRunner().invoke(app, ["train", "classifier", *common, "--out", str(tmp_path / "b"), "--input-size", "32x208"])
    assert cls.exit_code == 0, cls.output
    checkpoints = [tmp_path / "a" / "segmenter.pt", tmp_path / "b" / "classifier.pt"]
    assert all(path.is_file() for path in checkpoints)
    result = CliRunner().invoke(app, ["train", "evaluate", *map(str, checkpoints), "--data", str(tiny_data), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count(" on ") >= 2 and "Dice where a defect exists" in result.output and "ROC AUC" in result.output
    assert "{" not in result.output
    as_json = CliRunner().invoke(app, ["train", "evaluate", *map(str, checkpoints), "--data", str(tiny_data), "--threads", "1", "--json"])
    assert sorted(json.loads(as_json.stdout)) == sorted(map(str, checkpoints))


def test_loss_choices_are_the_losses_that_exist():
    pytest.importorskip("torch")
    import typing

    from edgeseg.commands.train import segmenter
    from edgeseg.training.losses import SEGMENTATION_LOSSES

    choice = typing.get_type_hints(segmenter, include_extras=True)["loss"].__origin__
    assert set(typing.get_args(choice)) == set(SEGMENTATION_LOSSES)


def test_metrics_json_holds_null_where_a_metric_is_not_measurable(tiny_data, tmp_path):
    """All-clean data: ROC AUC has no positive class (NaN in Python), which JSON writes as null."""
    import shutil

    from typer.testing import CliRunner

    from edgeseg.cli import app

    data = tmp_path / "clean"
    shutil.copytree(tiny_data, data)
    (data / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")  # no defects anywhere
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "classifier", "--data", str(data), "--out", str(out), "--epochs", "1", "--base-width", "4",
        "--input-size", "32x208", "--batch", "4", "--threads", "1", "--json",
    ])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"bare {constant} in JSON")

    report = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert report["best"]["roc_auc"] is None
    json.loads(result.stdout, parse_constant=refuse)
