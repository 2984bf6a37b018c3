"""benchmarks/bench_line_outputs.py runs as a user would, measures every arm it was given and
uses each output while the run goes: its /metrics is scraped, its view stream is read and its
verdicts reach a real OPC UA server."""
import pytest


def test_line_outputs_benchmark_measures_each_set_of_options(run_benchmark):
    pytest.importorskip("asyncua")
    metrics, view, opcua = "--metrics 127.0.0.1:{port}", "--view 127.0.0.1:{port}", "--opcua {opcua}"
    result = run_benchmark("bench_line_outputs.py", "--repeats", "1", "--max-frames", "12", "--warmup", "0", "--scrape-interval", "0.2", "--outputs", metrics, view, opcua)
    assert set(result["results"]) == {"none", metrics, view, opcua, "all together"}
    for arm, runs in result["runs"].items():
        assert len(runs) == 1 and runs[0]["fps"] > 0 and runs[0]["fps_steady"] > 0 and runs[0]["cpu_s"] > 0 and runs[0]["frames"] == 12, arm
    assert result["results"]["none"]["cost"] == 0.0 and result["machine"]["cpu"]
    delivered = {arm: figures["delivered"] for arm, figures in result["results"].items()}
    assert delivered["none"] == {"scrapes": 0, "view_frames": 0, "opcua_acknowledged": 0}
    assert delivered[metrics]["scrapes"] >= 1 and delivered[view]["view_frames"] >= 1
    assert delivered[opcua]["opcua_acknowledged"] == 12  # every verdict reached the server
    assert delivered["all together"]["scrapes"] >= 1 and delivered["all together"]["view_frames"] >= 1
    assert delivered["all together"]["opcua_acknowledged"] == 12
