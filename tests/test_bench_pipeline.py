"""The pipeline benchmark runs end to end (figures are not asserted: benchmarks are not timed tests)."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pipeline.py"


def test_bench_pipeline_writes_json_and_markdown(tiny_models, tmp_path):
    command = [sys.executable, str(SCRIPT), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--frames", "4", "--repeats", "1", "--out", str(tmp_path), "--name", "smoke"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["checks"]["same_gate_decisions"] is True  # the bare loops and the pipeline agree
    assert data["checks"]["always_ran_every_frame"] is True
    assert data["config"]["defective_frames"] == 1 and data["config"]["frame_size"] == [256, 1600]
    assert set(data["figures"]) == {"pipeline_vs_bare_video", "pipeline_vs_bare_memory", "gating_vs_always"}
    assert set(data["fps_runs"]) == {"bare_video", "bare_memory", "pipeline", "always"}
    assert data["machine"]["cpu"]["logical_cores"] >= 1 and "onnxruntime" in data["machine"]
    assert "pipeline / bare loop reading the video" in (tmp_path / "smoke.md").read_text()
