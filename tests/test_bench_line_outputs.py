"""benchmarks/bench_line_outputs.py runs as a user would and measures every arm it was given."""


def test_line_outputs_benchmark_measures_each_set_of_options(run_benchmark):
    result = run_benchmark("bench_line_outputs.py", "--repeats", "1", "--max-frames", "3", "--outputs", "--metrics 127.0.0.1:0", "--gate 0")
    assert set(result["results"]) == {"none", "--metrics 127.0.0.1:0", "--gate 0", "all together"}
    for arm, runs in result["runs"].items():
        assert len(runs) == 1 and runs[0]["fps"] > 0 and runs[0]["processing_ms"] > 0, arm
    assert result["results"]["none"]["cost"] == 0.0 and result["machine"]["cpu"]
