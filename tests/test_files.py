"""edgeseg.files: staged sink outputs, files of whole lines, output-path checks, the one full-disk message."""
import errno
import os

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.edge.sinks import JsonlSink
from edgeseg.files import LineFile, StagedOutput, atomic_output, check_output_paths, disk_full_as_error
from full_disk import fill, tiny_tmpfs


def test_staged_output_creates_nothing_until_written(tmp_path):
    target = tmp_path / "new" / "deeper" / "run.jsonl"
    staged = StagedOutput(target)
    assert not (tmp_path / "new").exists()
    staged.discard()
    assert not (tmp_path / "new").exists()


def test_staged_output_keeps_the_previous_file_until_commit(tmp_path):
    target = tmp_path / "run.mp4"
    target.write_bytes(b"previous run")
    staged = StagedOutput(target)
    temp = staged.temp
    assert temp.parent == tmp_path and temp.name.startswith(".") and temp.suffix == ".mp4"
    temp.write_bytes(b"this run")
    assert target.read_bytes() == b"previous run"
    staged.discard()
    assert target.read_bytes() == b"previous run" and not temp.exists()
    staged = StagedOutput(target)
    staged.temp.write_bytes(b"this run")
    assert staged.commit() == target
    assert target.read_bytes() == b"this run" and list(tmp_path.iterdir()) == [target]


def test_line_file_appends_whole_lines_on_a_fresh_line(tmp_path):
    target = tmp_path / "run.jsonl"
    target.write_text("one\n")
    lines = LineFile(target, append=True)
    assert target.read_text() == "one\n"  # nothing is opened before the first write
    lines.write(b"two\n")
    lines.close()
    assert target.read_text() == "one\ntwo\n"
    target.write_text('{"cut off')  # a power loss in the middle of a line
    for _ in range(2):
        lines = LineFile(target, append=True)
        lines.write(b"new\n")
        lines.close()
    assert target.read_text() == '{"cut off\nnew\nnew\n'
    fresh = LineFile(tmp_path / "fresh.jsonl", append=True)  # appending to nothing creates it
    fresh.write(b"x\n")
    fresh.close()
    assert (tmp_path / "fresh.jsonl").read_text() == "x\n"


def test_staged_folder_merges_into_an_existing_one(tmp_path):
    target = tmp_path / "defects"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")
    staged = StagedOutput(target)
    staged.temp.mkdir()
    (staged.temp / "new.png").write_bytes(b"new")
    staged.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.png", "old.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["defects"]


def test_staged_output_refuses_unwritable_folders(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(EdgesegError, match="is not a folder"):
        StagedOutput(blocker / "run.jsonl")
    with pytest.raises(EdgesegError, match="only files can be appended"):
        JsonlSink(tmp_path, append=True)


def test_failed_append_leaves_the_target_byte_for_byte(tmp_path):
    with tiny_tmpfs(tmp_path, "256k") as disk:
        target = disk / "run.jsonl"
        target.write_bytes(b"earlier\n" * 1000)
        before = target.read_bytes()
        lines = LineFile(target, append=True)
        fill(disk, leave=20_000)
        with pytest.raises(EdgesegError, match=r"disk full writing .*run\.jsonl \(\d+(\.\d)? (B|KiB) free there\)"):
            lines.write(b"x" * 99_999 + b"\n")
        lines.close()
        assert target.read_bytes() == before


def test_atomic_output_reports_a_full_disk_and_leaves_nothing(tmp_path):
    with tiny_tmpfs(tmp_path, "128k") as disk:
        with pytest.raises(EdgesegError, match=r"disk full writing .*model\.onnx"):
            with atomic_output(disk / "model.onnx") as tmp:
                tmp.write_bytes(b"\1" * 1_000_000)
        assert sorted(p.name for p in disk.iterdir()) == []


def test_dev_full_is_a_full_disk():
    with pytest.raises(EdgesegError, match="disk full writing /dev/full"):
        with disk_full_as_error("/dev/full"):
            with open("/dev/full", "wb") as handle:
                handle.write(b"x")
                handle.flush()
    with pytest.raises(OSError) as other:  # any other error stays itself
        with disk_full_as_error("x"):
            raise OSError(errno.EACCES, "denied")
    assert other.value.errno == errno.EACCES


def test_output_paths_must_differ_from_the_source_and_each_other(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    items = [tmp_path / "strips" / f"{i}.png" for i in range(2)]
    check_output_paths([clip], {"--jsonl": tmp_path / "a.jsonl", "--video": tmp_path / "a.mp4", "--submission": None})
    with pytest.raises(EdgesegError, match="--video .*clip.mp4 is an input of this run"):
        check_output_paths([clip], {"--video": tmp_path / "." / "clip.mp4"})
    os.symlink(clip, tmp_path / "link.mp4")
    with pytest.raises(EdgesegError, match="--jsonl .*link.mp4 is an input"):
        check_output_paths([clip], {"--jsonl": tmp_path / "link.mp4"})
    with pytest.raises(EdgesegError, match="--video .*1.png is an input"):
        check_output_paths(items, {"--video": items[1]})
    with pytest.raises(EdgesegError, match="--save-defects .*strips holds the input"):
        check_output_paths(items, {"--save-defects": tmp_path / "strips"})
    with pytest.raises(EdgesegError, match="--jsonl and --video are the same file"):
        check_output_paths([clip], {"--jsonl": tmp_path / "x", "--video": tmp_path / "x"})
    with pytest.raises(EdgesegError, match="--jsonl .* lies inside the --save-defects folder"):
        check_output_paths([], {"--save-defects": tmp_path / "d", "--jsonl": tmp_path / "d" / "x.jsonl"})


def test_devices_are_written_directly_and_symlinks_stay_symlinks(tmp_path):
    staged = StagedOutput("/dev/null")
    assert staged.direct and staged.temp == __import__("pathlib").Path("/dev/null")
    staged.commit()
    staged.discard()
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    staged = StagedOutput(link)
    staged.temp.write_text("new\n")
    staged.commit()
    assert link.is_symlink() and real.read_text() == "new\n"
