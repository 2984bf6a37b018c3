"""`edgeseg run --submission out.csv`: a Kaggle Severstal submission the data reader reads back,
row for row the masks of the same run's JSONL; refused (exit 2) where images have no file."""
import csv
import json

import cv2
import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.data.severstal import read_annotations
from edgeseg.edge.records import validate_record
from edgeseg.edge.rle import decode

STRIPS = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("submission") / "test_images"
    root.mkdir()
    for i, image in enumerate(frames(STRIPS, height=64, width=320, seed=5)):
        cv2.imwrite(str(root / f"{i:04x}_a.jpg"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    (root / "0002_a.jpg").write_bytes(b"not a jpeg")  # unreadable: no row, the others still named right
    return root


def _run(tiny_models, source, *extra):
    args = ["run", "--source", str(source), "--classifier", str(tiny_models["classifier"])]
    return CliRunner().invoke(app, [*args, "--segmenter", str(tiny_models["segmenter"]), *extra])


@pytest.mark.parametrize("gate", ["0.5", "0", "1.01"])
def test_submission_round_trips_through_the_reader_and_matches_the_jsonl(tiny_models, folder, tmp_path, gate):
    submission, jsonl = tmp_path / "submission.csv", tmp_path / "run.jsonl"
    result = _run(tiny_models, folder, "--submission", str(submission), "--jsonl", str(jsonl), "--gate", gate, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["submission"] == str(submission)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()][1:]
    for record in records:
        validate_record(record)
    classes = list(records[0]["classes"])
    with open(submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ImageId_ClassId", "EncodedPixels"]
    expected = [[f"{r['item']}_{k}", r["classes"][name]["rle"]] for r in records for k, name in enumerate(classes, 1)]
    assert rows[1:] == expected  # one row per image x class, in run order, gated-out frames included
    assert "0002_a.jpg" not in {r["item"] for r in records} and len(records) == STRIPS - 1
    annotations, problems, _malformed = read_annotations(submission)
    assert problems == []
    for record in records:
        height, width = record["size"]
        for k, name in enumerate(classes, 1):
            rle = annotations.get(record["item"], {}).get(k, "")
            entry = record["classes"][name]
            assert rle == entry["rle"] and int(decode(rle, (height, width)).sum()) == entry["area"]
            if not record["gated"]:
                assert rle == ""
    if gate == "0":
        assert any(rle for image in annotations.values() for rle in image.values()), "no mask: the RLE round trip went untested"


def test_submission_refuses_a_video_and_a_loop_with_one_line(tiny_models, folder, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("earlier,result\n")
    clip = write_video(tmp_path / "clip.avi", frames(3))
    for args in ([clip], [folder, "--loop"]):
        result = _run(tiny_models, *args, "--submission", str(submission))
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == ["error: --submission needs an image folder or glob as --source, read once (no --loop)"]
    assert submission.read_text() == "earlier,result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "submission.csv"]  # no staged leftovers


def test_a_full_disk_leaves_nothing_under_the_final_name(tmp_path):
    from full_disk import tiny_tmpfs

    import numpy as np

    from edgeseg.edge.postprocess import FrameResult, Segmentation
    from edgeseg.edge.sources import Frame
    from edgeseg.edge.submission import SubmissionSink
    from edgeseg.errors import EdgesegError

    rle = " ".join(f"{1 + 4 * i} 2" for i in range(4000))  # ~40 KB per row
    with tiny_tmpfs(tmp_path, size="256k") as disk:
        target = disk / "submission.csv"
        target.write_text("earlier,result\n")
        sink = SubmissionSink(target, ["1", "2", "3", "4"])
        with pytest.raises(EdgesegError, match="disk full writing .*submission.csv"):
            for i in range(100):
                frame = Frame(i, np.zeros((8, 8), np.uint8), float(i), "strips", item=f"{i:03d}.jpg", captured_at=1.7e9)
                segmentation = Segmentation(areas={"1": 8000, "2": 0, "3": 0, "4": 0}, rle={"1": rle})
                sink.write(frame, FrameResult(i, "strips", float(i), 256, 1600, 0.9, True, segmentation, gate=0.5))
        assert 0 < sink.frames < 100  # some rows fitted before the disk filled
        sink.close()
        assert target.read_text() == "earlier,result\n" and sorted(p.name for p in disk.iterdir()) == ["submission.csv"]
        assert sink.written is None and sink.kept == 0 and "was not written" in sink.problem


def test_file_names_with_line_breaks_commas_and_quotes_stay_in_their_field(tiny_models, tmp_path):
    folder = tmp_path / "strips"
    folder.mkdir()
    names = ["cr\rname.png", "comma,name.png", 'quote"name.png', "plain.png"]
    for name, image in zip(names, frames(len(names), height=64, width=320, seed=7)):
        cv2.imwrite(str(folder / name), image)
    submission = tmp_path / "submission.csv"
    result = _run(tiny_models, folder, "--submission", str(submission), "--gate", "0")
    assert result.exit_code == 0, result.output
    with open(submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 1 + 4 * len(names) and all(len(row) == 2 for row in rows)
    assert sorted({row[0].rsplit("_", 1)[0] for row in rows[1:]}) == sorted(names)


def test_submission_and_defect_paths_are_checked_against_the_source_and_the_other_outputs(tiny_models, folder, tmp_path):
    out = tmp_path / "out.csv"
    cases = [
        (["--submission", out, "--jsonl", out], "--jsonl and --submission are the same file"),
        (["--save-defects", folder], f"--save-defects {folder} holds the input"),
        (["--submission", tmp_path / "review" / "s.csv", "--save-defects", tmp_path / "review"], "lies inside the --save-defects folder"),
    ]
    for extra, message in cases:
        result = _run(tiny_models, folder, *map(str, extra))
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [] and len(list(folder.iterdir())) == STRIPS
