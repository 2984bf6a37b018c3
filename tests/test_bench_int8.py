"""The INT8 benchmark runs end to end on given models (figures are not asserted: benchmarks are not timed tests)."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_int8.py"


def test_bench_int8_writes_json_and_markdown(tiny_models, tmp_path):
    command = [sys.executable, str(SCRIPT), "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--repeats", "2", "--iterations", "1", "--out", str(tmp_path), "--name", "smoke"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["settings"]["models"] == "given"
    for task in ("segmenter", "classifier"):
        variants = data["models"][task]["variants"]
        assert set(variants) == {"fp32", "int8-cpu", "int8-trt"}
        assert variants["fp32"]["ratio_vs_fp32"] == 1.0
        for label, v in variants.items():
            assert len(v["runs"]) == 2 and all(r > 0 for r in v["runs"])
            assert v["profile_ms_by_op"], label  # the profiler saw the operators
        assert "QLinearConv" in variants["int8-cpu"]["profile_ms_by_op"]  # the U8S8 graph is fused
        assert 0 < variants["int8-trt"]["rel_l2_vs_fp32"] < 0.5
    assert isinstance(data["target"]["met"], bool)
    assert "Target INT8 `cpu` >= 1.8x FP32 on the segmenter" in (tmp_path / "smoke.md").read_text()
