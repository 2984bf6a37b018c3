"""`run --save-uncertain`: the frames near the gate, or with unsure masks, kept in the Severstal
layout with the model's own masks as rows, at a bounded rate; `edgeseg train` reads them back."""
import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.data.severstal import scan
from edgeseg.edge.card import read_card
from edgeseg.edge.postprocess import FrameResult, Segmentation
from edgeseg.edge.sources import Frame
from edgeseg.edge.uncertain import UncertainSink


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    """A clip of 12 full-size 256x1600 strips (the size `edgeseg train` reads)."""
    return write_video(tmp_path_factory.mktemp("uncertain") / "strips.avi", frames(12, height=256, width=1600))


def _run(tiny_models, clip, *args):
    command = ["run", "--source", str(clip), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"]), "--json", *args]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _frames(jsonl):
    return [r for r in map(json.loads, jsonl.read_text().splitlines()) if r["type"] == "frame"]


def test_frames_near_the_gate_are_kept_and_no_others(tiny_models, strips, tmp_path):
    probe = _frames_of(tiny_models, strips, tmp_path / "probe.jsonl")
    ranked = sorted(r["defect_probability"] for r in probe)
    gate = ranked[-1] + 0.01  # no frame reaches the segmenter: only the gate decides
    band = round(gate - ranked[len(ranked) // 2], 6) + 1e-6
    folder = tmp_path / "relabel"
    report = _run(tiny_models, strips, "--gate", str(gate), "--save-uncertain", str(folder), "--uncertain-band", str(band), "--uncertain-rate", "0")
    expected = {r["frame"] for r in probe if abs(r["defect_probability"] - gate) <= band}
    kept = {int(p.stem.split("_f")[1][:6]) for p in (folder / "train_images").glob("*.png")}
    assert kept == expected and 0 < len(kept) < len(probe)
    assert report["uncertain"]["reasons"] == {"gate": len(kept), "mask": 0}
    assert (folder / "train.csv").read_text() == "ImageId,ClassId,EncodedPixels\n"  # nothing segmented: clean strips


def _frames_of(tiny_models, clip, jsonl):
    _run(tiny_models, clip, "--jsonl", str(jsonl))
    return _frames(jsonl)


def test_unsure_masks_are_kept_with_the_model_masks_and_train_reads_them(tiny_models, strips, tmp_path):
    folder, jsonl = tmp_path / "relabel", tmp_path / "run.jsonl"
    args = ["--gate", "0", "--jsonl", str(jsonl), "--save-uncertain", str(folder), "--uncertain-band", "0.2", "--uncertain-pixels", "0.05", "--uncertain-rate", "0"]
    report = _run(tiny_models, strips, *args)
    records = {r["frame"]: r for r in _frames(jsonl)}
    assert report["uncertain"]["reasons"]["mask"] >= 1
    data = scan(folder)
    assert len(data.samples) == report["uncertain"]["kept"] and not data.problems
    for sample in data.samples:  # each kept strip carries the model's own masks, in the project's RLE
        record = records[int(sample.image_id.split("_f")[1][:6])]
        assert sample.rles == tuple(record["classes"][c]["rle"] for c in ("1", "2", "3", "4"))
    assert any(sample.has_defect for sample in data.samples)
    again = _run(tiny_models, strips, *args[:2], *args[4:])  # a second run adds to the same folder
    assert len(scan(folder).samples) == 2 * len(data.samples) == report["uncertain"]["kept"] + again["uncertain"]["kept"]
    assert (folder / "train.csv").read_text().count("ImageId,ClassId") == 1
    train = CliRunner().invoke(app, [
        "train", "segmenter", "--data", str(folder), "--out", str(tmp_path / "model"), "--epochs", "1", "--base-width", "4",
        "--batch", "4", "--threads", "1", "--input-size", "64x400", "--crop", "32x64", "--val-fraction", "0.25",
    ])
    assert train.exit_code == 0, train.output
    assert (tmp_path / "model" / "segmenter.pt").is_file()


def test_the_rate_bounds_what_is_kept(tiny_models, tmp_path):
    """60 a minute: of uncertain frames captured every 0.25 s over 3 s, one a second is kept."""
    sink = UncertainSink(tmp_path / "relabel", read_card(tiny_models["segmenter"]), band=0.1, per_minute=60)
    start = time.perf_counter()
    for i in range(12):
        frame = Frame(i, np.full((256, 1600, 3), 90, np.uint8), start + 0.25 * i, "line", captured_at=time.time())
        result = FrameResult(i, "line", frame.timestamp, 256, 1600, 0.52, False, Segmentation(areas={c: 0 for c in "1234"}), gate=0.5)
        sink.write(frame, result)
    sink.close()
    assert sink.frames == 3 and len(list((tmp_path / "relabel" / "train_images").glob("*.png"))) == 3
    assert sink.warning == ""


def test_options_are_checked(tiny_models, strips, tmp_path):
    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    for option, value in (("--uncertain-band", "0.7"), ("--uncertain-pixels", "0")):
        result = CliRunner().invoke(app, ["run", "--source", str(strips), *models, "--save-uncertain", str(tmp_path / "x"), option, value])
        assert result.exit_code == 2 and option in result.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("ImageId_ClassId,EncodedPixels\n")
    result = CliRunner().invoke(app, ["run", "--source", str(strips), *models, "--save-uncertain", str(tmp_path / "other")])
    assert result.exit_code == 1 and "folder of its own" in result.output
