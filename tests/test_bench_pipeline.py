"""The pipeline benchmark runs end to end (figures are not asserted: benchmarks are not timed tests)."""

import pytest


def test_bench_pipeline_writes_json_and_markdown(tiny_models, run_benchmark, tmp_path):
    data = run_benchmark("bench_pipeline.py", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"], "--frames", 4, "--repeats", 1)
    assert data["checks"]["same_gate_decisions"] is True  # the bare loops and the pipeline agree
    assert data["checks"]["always_ran_every_frame"] is True
    assert data["config"]["defective_frames"] == 1 and data["config"]["frame_size"] == [256, 1600]
    assert set(data["figures"]) == {"pipeline_vs_bare_video", "pipeline_vs_bare_memory", "gating_vs_always"}
    assert set(data["fps_runs"]) == {"bare_video", "bare_memory", "pipeline", "always"}
    assert data["machine"]["cpu"]["logical_cores"] >= 1 and "onnxruntime" in data["machine"]
    assert "pipeline / bare loop reading the video" in (tmp_path / "smoke.md").read_text()


def test_bench_pipeline_on_openvino_compares_with_a_bare_openvino_loop(tiny_models, run_benchmark):
    pytest.importorskip("openvino")
    data = run_benchmark(
        "bench_pipeline.py", "--backend", "openvino", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"],
        "--frames", 4, "--repeats", 1,
    )
    assert data["config"]["backend"] == "openvino" and all(name.startswith("openvino") for name in data["config"]["backends"].values())
    assert data["checks"]["same_gate_decisions"] is True  # same compiled model, same decisions as the bare loops
