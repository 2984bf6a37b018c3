"""An output that is a symbolic link is written through it, and the run says which file it wrote."""
import os

from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app


def test_a_linked_output_is_written_through_and_named(tiny_models, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames(4, height=64, width=320))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "line.jsonl"
    real.write_text("yesterday\n")
    link = tmp_path / "run.jsonl"
    link.symlink_to(real)
    models = ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    result = CliRunner().invoke(app, ["run", "--source", str(clip), *models, "--jsonl", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and len(real.read_text().splitlines()) == 5  # header + 4 frames, through the link
    assert f"note: jsonl {link} is a symbolic link: the file written is {os.path.realpath(real)}" in " ".join(result.stderr.split())
