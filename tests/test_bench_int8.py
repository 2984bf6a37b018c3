"""The INT8 benchmark runs end to end on given models (figures are not asserted: benchmarks are not timed tests)."""


def test_bench_int8_writes_json_and_markdown(tiny_models, run_benchmark, tmp_path):
    data = run_benchmark("bench_int8.py", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"], "--repeats", 2, "--iterations", 1)
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
