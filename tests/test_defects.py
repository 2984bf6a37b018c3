"""`edgeseg run --save-defects DIR`: every gated frame as a lossless PNG, a crop per defect box and
an index line with its record; nothing before the first gated frame; earlier files kept."""
import json
import time

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.edge.defects import INDEX_NAME, crop_box
from edgeseg.edge.records import validate_record

STRIPS = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects") / "strips"
    root.mkdir()
    for i, image in enumerate(frames(STRIPS, height=64, width=320, seed=3)):
        cv2.imwrite(str(root / f"strip {i}.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))  # a space: made file-name safe
    return root


def _run(tiny_models, source, out, *extra):
    args = ["run", "--source", str(source), "--classifier", str(tiny_models["classifier"])]
    args += ["--segmenter", str(tiny_models["segmenter"]), "--save-defects", str(out), "--json", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _index(out):
    return [json.loads(line) for line in (out / INDEX_NAME).read_text().splitlines()]


def test_every_gated_frame_is_saved_raw_with_its_crops_and_record(tiny_models, folder, tmp_path):
    out = tmp_path / "review"
    report = _run(tiny_models, folder, out, "--gate", "0")
    assert report["outputs"]["defects"] == str(out)
    header, *entries = _index(out)
    validate_record(header)
    assert header["type"] == "header" and len(entries) == report["frames"] == STRIPS
    written = {p.name for p in out.iterdir()}
    crops = 0
    for i, entry in enumerate(entries):
        record = entry["record"]
        validate_record(record)
        assert record["item"] == f"strip {i}.png" and record["frame"] == i and record["gated"]
        assert entry["image"].startswith(f"strip_{i}_f{i:06d}_") and entry["image"].endswith("Z.png")
        raw = cv2.imread(str(folder / record["item"]), cv2.IMREAD_UNCHANGED)
        saved = cv2.imread(str(out / entry["image"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(saved, raw)  # the raw frame, losslessly
        boxes = [(name, box) for name, entry_ in record["classes"].items() for box in entry_["boxes"]]
        assert sorted((c["class"], c["box"]) for c in entry["crops"]) == sorted(boxes)
        for crop in entry["crops"]:
            x, y, w, h = crop["crop"]
            assert crop["crop"] == crop_box(raw.shape, crop["box"])
            assert np.array_equal(cv2.imread(str(out / crop["file"]), cv2.IMREAD_UNCHANGED), raw[y : y + h, x : x + w])
            written.discard(crop["file"])
            crops += 1
        written.discard(entry["image"])
    assert written == {INDEX_NAME}  # nothing else, no temporary files left
    assert crops > 0, "the tiny segmenter found no defect: the crops went untested"


def test_nothing_is_written_before_the_first_gated_frame(tiny_models, folder, tmp_path):
    out = tmp_path / "review"
    report = _run(tiny_models, folder, out, "--gate", "1.01")
    assert report["gated"] == 0 and not out.exists()


def test_a_second_run_adds_to_the_folder_and_keeps_the_first(tiny_models, tmp_path):
    clip = write_video(tmp_path / "line cam.avi", frames(3))
    out = tmp_path / "review"
    _run(tiny_models, clip, out, "--gate", "0")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != INDEX_NAME}
    first_index = (out / INDEX_NAME).read_bytes()
    _run(tiny_models, clip, out, "--gate", "0")
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert (out / INDEX_NAME).read_bytes().startswith(first_index)
    lines = _index(out)
    assert [line.get("type") for line in lines] == ["header", None, None, None, "header", None, None, None]
    names = [line["image"] for line in lines if "image" in line]
    assert len(set(names)) == 6 and all(name.startswith("line_cam_f00000") for name in names)


def test_a_file_given_as_the_folder_is_refused(tiny_models, folder, tmp_path):
    blocker = tmp_path / "review"
    blocker.write_text("a file")
    args = ["run", "--source", str(folder), "--classifier", str(tiny_models["classifier"])]
    result = CliRunner().invoke(app, [*args, "--segmenter", str(tiny_models["segmenter"]), "--save-defects", str(blocker)])
    assert result.exit_code == 1 and "is a file, not a folder" in result.stderr
    assert blocker.read_text() == "a file"


def test_a_full_disk_keeps_whole_files_and_whole_index_lines(tmp_path):
    from full_disk import tiny_tmpfs

    from edgeseg.edge.defects import DefectSink
    from edgeseg.edge.postprocess import FrameResult, Segmentation
    from edgeseg.edge.sources import Frame
    from edgeseg.errors import EdgesegError

    rng = np.random.default_rng(0)
    with tiny_tmpfs(tmp_path, size="256k") as disk:
        sink = DefectSink(disk / "review")
        with pytest.raises(EdgesegError, match="disk full writing .* free there"):
            for i in range(100):  # incompressible 64 KiB frames: the disk fills within a few
                image = rng.integers(0, 256, (128, 512), dtype=np.uint8)
                frame = Frame(i, image, time.perf_counter(), "cam", item=None, captured_at=1.7e9 + i)  # completed: now
                segmentation = Segmentation(areas={"1": 0})
                sink.write(frame, FrameResult(i, "cam", frame.timestamp, 128, 512, 0.9, True, segmentation, gate=0.5))
        sink.close()
        entries = _index(disk / "review")
        assert 0 < len(entries) < 100
        names = sorted(p.name for p in (disk / "review").iterdir())
        assert names == sorted([INDEX_NAME] + [e["image"] for e in entries])  # no partial PNG, no temp file
        for entry in entries:
            validate_record(entry["record"])
            assert cv2.imread(str(disk / "review" / entry["image"]), cv2.IMREAD_UNCHANGED).shape == (128, 512)


def test_long_input_names_are_shortened_and_stay_unique(tiny_models, tmp_path):
    folder = tmp_path / "strips"
    folder.mkdir()
    names = ["x" * 236 + "a.png", "x" * 236 + "b.png", "short.png"]  # 240 characters: the filesystem's limit is 255
    for name, image in zip(names, frames(len(names), height=64, width=320, seed=4)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    out = tmp_path / "review"
    report = _run(tiny_models, folder, out, "--gate", "0")
    header, *entries = _index(out)
    assert report["frames"] == len(entries) == len(names)  # no name stopped the run
    assert sorted(e["record"]["item"] for e in entries) == sorted(names)
    files = [e["image"] for e in entries] + [c["file"] for e in entries for c in e["crops"]]
    assert len(set(files)) == len(files) and all(len(name.encode()) <= 200 for name in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(files + [INDEX_NAME])
    images = {e["record"]["item"]: e["image"] for e in entries}
    assert images["short.png"].startswith("short_f") and images[names[0]].startswith("x" * 80)
