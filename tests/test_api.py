"""The public Python API (edgeseg.Inspector) as a user calls it: the README's examples run as
written, on the bundled demo models and synthetic strips; one frame, a batch and a stream agree."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edgeseg import assets
from edgeseg.data.clip import strip_frames, write_clip
from edgeseg.edge.records import validate_record
from edgeseg.errors import EdgesegError, UsageError
from edgeseg.inspector import Inspector

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_examples():
    """The ```python blocks of the README's "Python API" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def strips():
    """Two synthetic strips, the first with a defect, the second clean, and a clip of eight."""
    images, defective = strip_frames(8, 0.5, seed=4)
    return [images[defective.index(True)], images[defective.index(False)]], images


def test_readme_examples_run_as_written(strips, tmp_path, monkeypatch):
    (defect, clean), clip = strips
    cv2.imwrite(str(tmp_path / "strip.png"), defect)
    cv2.imwrite(str(tmp_path / "clean.png"), clean)
    write_clip(clip, tmp_path / "line.mp4")
    monkeypatch.chdir(tmp_path)
    blocks = _api_examples()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    for record in records:
        validate_record(record)
    assert [r["type"] for r in records] == ["header"] + ["frame"] * 5
    assert records[0]["gate"] == 0.2 and records[0]["source"] == "line.mp4"


def test_a_frame_a_batch_and_a_stream_give_the_same_results(strips, tmp_path):
    (defect, clean), clip = strips
    folder = tmp_path / "strips"
    folder.mkdir()
    for i, image in enumerate(clip):
        cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    collected = []
    with Inspector(assets.CLASSIFIER, assets.SEGMENTER, backend="onnxruntime", gate=0.0) as inspector:
        one = [inspector(image) for image in clip]
        batch = inspector(list(clip))
        report = inspector.stream(str(folder), on_result=collected.append)
        assert inspector.cascade.is_active  # a stream leaves an inspector the caller opened open
    assert not inspector.cascade.is_active
    assert report["frames"] == len(clip) == len(collected) and report["gated"] == len(clip)
    assert [r["frame"] for r in one + batch] == list(range(2 * len(clip)))
    for single, batched, streamed in zip(one, batch, collected):
        validate_record(single)
        assert single["size"] == [256, 1600] and single["source"] == "array"
        assert batched["defect_probability"] == pytest.approx(single["defect_probability"], abs=1e-6)
        assert streamed.defect_probability == pytest.approx(single["defect_probability"], abs=1e-6)
        areas = {name: c["area"] for name, c in single["classes"].items()}
        assert {name: c["area"] for name, c in batched["classes"].items()} == areas == streamed.segmentation.areas
    assert any(sum(r["classes"][c]["area"] for c in r["classes"]) for r in one)  # masks compared, not only zeros


def test_gate_decides_per_inspector_and_per_call():
    image = strip_frames(1, 1.0, seed=1)[0][0]
    with Inspector(assets.CLASSIFIER, assets.SEGMENTER, gate=1.01) as inspector:
        assert not inspector(image)["gated"]
        assert inspector(image, gate=0.0)["gated"]
        inspector.gate = 0.0
        assert inspector(image)["gated"] and inspector.header("x")["gate"] == 0.0
        with pytest.raises(EdgesegError, match="gate must be"):
            inspector.gate = -1


def test_stop_before_the_stream_ends_it_at_once(strips, tmp_path):
    clip = write_clip(strips[1], tmp_path / "line.mp4")
    inspector = Inspector(assets.CLASSIFIER, assets.SEGMENTER)
    inspector.stop("not today")
    report = inspector.stream(clip)
    assert report["frames"] == 0 and report["stopped_by"] == "not today"
    assert inspector.stream(clip, max_frames=2)["frames"] == 2  # the next stream runs


def test_usage_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="needs a classifier and a segmenter"):
        Inspector(assets.CLASSIFIER)
    with pytest.raises(UsageError, match="url is for backend 'triton'"):
        Inspector(assets.CLASSIFIER, assets.SEGMENTER, url="grpc://h:1")
    with pytest.raises(UsageError, match="models come from the server"):
        Inspector(assets.CLASSIFIER, assets.SEGMENTER, backend="triton")
    with pytest.raises(EdgesegError, match="not found"):
        Inspector(tmp_path / "missing.onnx", assets.SEGMENTER)
    with Inspector(assets.CLASSIFIER, assets.SEGMENTER) as inspector:
        with pytest.raises(UsageError, match="numpy uint8 image"):
            inspector("strip.png")
        assert inspector([]) == []


def test_import_edgeseg_stays_light_and_the_api_torch_free():
    code = (
        "import sys, edgeseg\n"
        "light = not {'numpy', 'edgeseg.inspector'} & set(sys.modules)\n"
        "from edgeseg import Inspector\n"
        "sys.exit(0 if light and 'torch' not in sys.modules and Inspector.__module__ == 'edgeseg.inspector' else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
