"""The multi-camera benchmark runs end to end (figures are not asserted: benchmarks are not timed tests)."""
from edge_media import frames, write_video


def test_bench_multicam_writes_json_and_markdown(tiny_models, run_benchmark, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames(4))
    data = run_benchmark(
        "bench_multicam.py", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"],
        "--clip", clip, "--cameras", "1,2", "--frames", 3, "--repeats", 1, "--backends", "onnxruntime",
    )
    rows = {(r["cameras"], r["mode"]): r for r in data["rows"]}
    assert set(rows) == {(1, "one_process"), (1, "separate"), (2, "one_process"), (2, "separate")}
    for (cameras, _), row in rows.items():
        assert len(row["per_camera"]) == cameras and row["fps"] > 0 and row["fps_end_to_end"] > 0
        assert all(c["g2g_p99_ms"] >= c["g2g_p50_ms"] > 0 for c in row["per_camera"])
    assert rows[(2, "separate")]["batch_mean"] == 1.0 and rows[(2, "one_process")]["batch_mean"] > 1.0
    assert {r["cameras"] for r in data["ratios"]} == {1, 2}
    assert "one process / separate processes" in (tmp_path / "smoke.md").read_text()
