"""edgeseg bench: the timing loop, the matrix, the PyTorch baseline, the document, the CLI and --compare."""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.bench.measure import Measurement, Settings, measure
from edgeseg.bench.suite import SCHEMA, Options, ratios, run_bench, sample_feed
from edgeseg.bench.variants import plan
from edgeseg.cli import app
from edgeseg.edge.backends import open_backend
from edgeseg.edge.backends.base import Backend
from edgeseg.edge.card import card_path, read_card
from edgeseg.errors import EdgesegError

QUICK = Settings(warmup_s=0.0, duration_s=0.0, iterations=3)


class _Sleeper(Backend):
    """A backend whose first call is slow (allocation) and the others take `seconds`."""

    kind = "sleeper"

    def __init__(self, card, seconds):
        super().__init__(Path("sleeper.onnx"), card)
        self.seconds, self.calls = seconds, 0

    def _activate_impl(self):
        pass

    def _io_specs_impl(self):
        return [self.card.input], [self.card.output]

    def _infer_impl(self, feed):
        self.calls += 1
        time.sleep(0.25 if self.calls == 1 else self.seconds)
        self.timings = {"compute": self.seconds}
        return {}

    def _deactivate_impl(self):
        pass


@pytest.fixture(scope="module")
def family(tiny_models, tiny_checkpoints, tmp_path_factory):
    """The tiny FP32 models with their checkpoints beside them (the PyTorch cells need them)."""
    folder = tmp_path_factory.mktemp("family")
    found = {}
    for task, onnx in tiny_models.items():
        for src in (onnx, card_path(onnx), tiny_checkpoints[task]):
            shutil.copy(src, folder / Path(src).name)
        found[task] = folder / onnx.name
    return found


def test_measure_runs_at_least_iterations_and_duration(tiny_models):
    card = read_card(tiny_models["classifier"])
    with open_backend(tiny_models["classifier"]) as backend:
        counted = measure(backend, sample_feed(card, 2), Settings(warmup_s=0.0, duration_s=0.0, iterations=7))
        timed = measure(backend, sample_feed(card, 1), Settings(warmup_s=0.1, duration_s=0.3, iterations=1))
    assert counted.iterations == 7 and counted.batch == 2
    assert counted.throughput == pytest.approx(7 * 2 / counted.wall_s)
    assert timed.wall_s >= 0.3 and timed.iterations > 1 and timed.warmup_iterations >= 1
    latency = timed.latency_ms()
    assert set(latency) == {"host", "compute"}  # a CPU backend reports no copies
    assert latency["host"]["min"] <= latency["host"]["median"] <= latency["host"]["p99"] <= latency["host"]["max"]
    assert latency["compute"]["median"] <= latency["host"]["median"]


def test_warm_up_is_left_out_and_unstable_runs_are_flagged(tiny_models):
    card = read_card(tiny_models["classifier"])
    backend = _Sleeper(card, 0.01)
    with backend:
        result = measure(backend, sample_feed(card, 1), Settings(warmup_s=0.0, duration_s=0.0, iterations=5))
    assert result.warmup_iterations == 1 and result.iterations == 5
    assert max(result.host) < 0.2  # the slow first call is not a sample
    assert not Measurement(batch=1, host=[0.0100, 0.0101, 0.0099, 0.0100], wall_s=0.04).unstable
    assert Measurement(batch=1, host=[0.01, 0.01, 0.05, 0.01], wall_s=0.08).unstable


def test_settings_refuse_nonsense():
    with pytest.raises(EdgesegError):
        Settings(iterations=0)
    with pytest.raises(EdgesegError):
        Settings(duration_s=-1)


def test_sample_feed_is_the_runtime_preprocessing(tiny_models):
    card = read_card(tiny_models["segmenter"])
    feed = sample_feed(card, 3)[card.input.name]
    assert feed.shape == (3, 1, card.preprocess.height, card.preprocess.width) and feed.dtype == np.float32
    assert feed.flags.c_contiguous and not np.allclose(feed[0], feed[1])


def test_plan_expands_fp32_models_and_says_why_a_cell_cannot_run(family, tmp_path):
    cells = plan([family["segmenter"]], scratch=tmp_path)
    by_label = {c.label: c for c in cells}
    assert set(by_label) == {f"{b} {p}" for b in ("tensorrt", "onnxruntime", "openvino", "pytorch") for p in ("fp32", "fp16", "int8")}
    assert by_label["onnxruntime fp32"].artifact == family["segmenter"]
    assert by_label["onnxruntime fp16"].artifact.name == "segmenter.fp16.onnx"  # made on the fly
    assert read_card(by_label["onnxruntime fp16"].artifact).artifact.precision == "fp16"
    assert "calibrate" in by_label["onnxruntime int8"].skipped  # no QDQ model beside it yet
    assert "TensorRT" in by_label["tensorrt fp16"].skipped
    assert by_label["pytorch fp32"].artifact.suffix == ".pt"
    assert "CUDA" in by_label["pytorch fp16"].skipped and "INT8" in by_label["pytorch int8"].skipped
    assert by_label["openvino fp16"].artifact == by_label["onnxruntime fp16"].artifact  # OpenVINO reads the same ONNX
    with pytest.raises(EdgesegError, match="unknown backend"):
        plan([family["segmenter"]], backends=["coreml"])


def test_plan_takes_a_qdq_model_as_given_and_refuses_a_replaced_checkpoint(family, tiny_models, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for src in (tiny_models["classifier"], card_path(tiny_models["classifier"])):
        shutil.copy(src, folder / src.name)
    (folder / "classifier.pt").write_bytes(b"not the exported checkpoint")
    cells = {c.label: c for c in plan([folder / "classifier.onnx"], backends=["pytorch"], precisions=["fp32"])}
    assert "sha256 differs" in cells["pytorch fp32"].skipped
    fp16 = plan([family["classifier"]], backends=["onnxruntime"], precisions=["fp16"], scratch=tmp_path)[0].artifact
    as_given = plan([fp16])  # an ONNX given as is runs on both ONNX backends
    assert [(c.backend, c.precision, c.artifact) for c in as_given] == [("onnxruntime", "fp16", fp16), ("openvino", "fp16", fp16)]


def test_an_engine_given_alone_counts_flops_from_its_source_onnx(family, tmp_path):
    """Planning only (no TensorRT here): the engine's cell names its source ONNX and why it cannot run."""
    from dataclasses import replace

    from edgeseg.edge.card import Artifact, write_card

    for src in (family["segmenter"], card_path(family["segmenter"])):
        shutil.copy(src, tmp_path / src.name)
    card = read_card(tmp_path / "segmenter.onnx")
    card.artifact = Artifact(format="tensorrt", precision="fp16", tensorrt_version="10.3.0")
    card.source = replace(card.source, onnx="segmenter.onnx")
    engine = tmp_path / "segmenter.fp16.engine"
    engine.write_bytes(b"plan bytes are never read while planning")
    write_card(engine, card)
    (cell,) = plan([engine])
    assert (cell.backend, cell.precision, cell.reference) == ("tensorrt", "fp16", tmp_path / "segmenter.onnx")
    assert "TensorRT" in cell.skipped


def test_torch_backend_matches_onnx_runtime(family):
    cells = {c.label: c for c in plan([family["segmenter"]], backends=["onnxruntime", "pytorch"], precisions=["fp32"])}
    card = read_card(family["segmenter"])
    feed = sample_feed(card, 2)
    with cells["pytorch fp32"].open() as torch_backend, cells["onnxruntime fp32"].open() as ort_backend:
        eager = torch_backend.infer(feed)[card.output.name]
        exported = ort_backend.infer(feed)[card.output.name]
        assert torch_backend.runs_on == "cpu" and "compute" in torch_backend.timings
    assert eager.shape == exported.shape
    np.testing.assert_allclose(eager, exported, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def document(family, tmp_path_factory):
    from edgeseg.data.synth import write_synthetic

    validation = write_synthetic(tmp_path_factory.mktemp("val"), 6, seed=5).root
    cells = plan(list(family.values()), backends=["onnxruntime", "pytorch"], precisions=["fp32", "int8"])
    options = Options(settings=QUICK, batches=(1, 2), validation=validation, pipeline_frames=4, prevalence=0.5)
    return run_bench(cells, options)


def test_document_holds_every_cell_with_its_figures(document, family):
    from edgeseg.bench.flops import onnx_flops

    assert document["schema"] == SCHEMA and not document["interrupted"]
    env = document["environment"]
    assert env["cpu"]["logical_cores"] >= 1 and env["onnxruntime"]["version"]
    measured = [r for r in document["results"] if "throughput" in r]
    assert {(r["name"], r["backend"], r["batch"]) for r in measured} == {
        (n, b, k) for n in ("classifier", "segmenter") for b in ("onnxruntime", "pytorch") for k in (1, 2)
    }
    skipped = [r for r in document["results"] if "skipped" in r]
    assert {(r["backend"], r["precision"]) for r in skipped} == {("onnxruntime", "int8"), ("pytorch", "int8")}
    for r in measured:
        assert r["iterations"] >= 3 and r["throughput"] > 0 and r["latency_ms"]["host"]["count"] == r["iterations"]
        assert r["gflops_per_run"] == pytest.approx(onnx_flops(family[r["name"]], batch=r["batch"]).total / 1e9)
        assert r["efficiency"] == pytest.approx(r["gflops_per_s"] / document["matmul"]["cpu"]["gflops"])
    assert document["ratios"]["segmenter b2"]["onnxruntime fp32"] == pytest.approx(1.0)


def test_accuracy_columns_match_the_accuracy_report(document, family):
    from edgeseg.calibration.accuracy import Variant, accuracy_report, load_validation

    report = accuracy_report([Variant("fp32", family)], load_validation(document["settings"]["validation"]))
    rows = {(r["name"], r["backend"]): r for r in document["results"] if r.get("batch") == 1 and "accuracy" in r}
    expected = report.rows["fp32"]
    for backend in ("onnxruntime", "pytorch"):  # same weights: same masks and decisions
        assert rows[("segmenter", backend)]["accuracy"]["mean_dice"] == pytest.approx(expected["segmenter"]["mean_dice"], abs=1e-6)
        assert rows[("classifier", backend)]["accuracy"]["recall"] == pytest.approx(expected["classifier"]["recall"])


def test_pipeline_rows_run_the_cascade_at_the_prevalence(document):
    pipes = {(p["backend"], p["precision"]): p for p in document["pipeline"]}
    assert set(pipes) == {("onnxruntime", "fp32"), ("pytorch", "fp32")}
    for p in pipes.values():
        assert p["frames"] == 4 and p["defective_frames"] == 2 and p["fps"] > 0
        assert p["latency_ms"]["glass_to_glass"]["count"] == 4


def test_repeats_interleave_rounds_and_pair_the_ratios(family):
    cells = plan([family["classifier"]], backends=["onnxruntime", "pytorch"], precisions=["fp32"])
    order = []
    options = Options(settings=Settings(warmup_s=0.0, duration_s=0.0, iterations=5), repeats=3, pipeline_frames=0)
    document = run_bench(cells, options, order.append)
    assert order == [
        "classifier onnxruntime fp32 batch 1 round 1/3", "classifier pytorch fp32 batch 1 round 1/3",
        "classifier pytorch fp32 batch 1 round 2/3", "classifier onnxruntime fp32 batch 1 round 2/3",
        "classifier onnxruntime fp32 batch 1 round 3/3", "classifier pytorch fp32 batch 1 round 3/3",
    ]  # fmt: skip
    rows = {r["backend"]: r for r in document["results"]}
    for row in rows.values():
        assert len(row["throughput_rounds"]) == 3 and row["iterations"] == 3 * 2  # ceil(5 / 3) per round
    paired = sorted(a / b for a, b in zip(rows["pytorch"]["throughput_rounds"], rows["onnxruntime"]["throughput_rounds"]))
    assert document["ratios"]["classifier b1"]["pytorch fp32"] == pytest.approx(paired[1])


def test_ratios_divide_by_the_baseline_of_the_same_model_and_batch():
    rows = [
        {"name": "s", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "throughput": 10.0},
        {"name": "s", "backend": "onnxruntime", "precision": "int8", "batch": 1, "throughput": 19.0},
        {"name": "s", "backend": "pytorch", "precision": "fp32", "batch": 1, "throughput": 2.5},
        {"name": "s", "backend": "onnxruntime", "precision": "int8", "batch": 4, "throughput": 50.0},
    ]
    table = ratios(rows, "onnxruntime fp32")
    assert table == {"s b1": {"onnxruntime fp32": 1.0, "onnxruntime int8": 1.9, "pytorch fp32": 0.25}}


def test_ctrl_c_keeps_what_was_measured(family):
    cells = plan([family["classifier"]], backends=["onnxruntime"], precisions=["fp32"])
    calls = []

    def step(description):
        calls.append(description)
        if len(calls) == 2:
            raise KeyboardInterrupt

    document = run_bench(cells, Options(settings=QUICK, batches=(1, 2), pipeline_frames=0), step)
    assert document["interrupted"]
    assert [r["batch"] for r in document["results"]] == [1]


runner = CliRunner()


def test_cli_writes_json_markdown_and_chart_then_compares(family, tmp_path):
    args = ["bench", str(family["classifier"]), "-b", "onnxruntime", "-p", "fp32", "--warmup", "0", "--duration", "0", "--iterations", "3", "--frames", "0", "--out", str(tmp_path)]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == SCHEMA
    assert json.loads((tmp_path / "bench.json").read_text())["results"] == document["results"]
    assert "| classifier | onnxruntime | fp32 | 1 |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").stat().st_size > 1000

    same = runner.invoke(app, ["bench", "--compare", str(tmp_path / "bench.json"), str(tmp_path / "bench.json")])
    assert same.exit_code == 0, same.output
    steady = json.loads((tmp_path / "bench.json").read_text())
    row = steady["results"][0]
    row["throughput_rounds"], row["latency_ms"]["host"]["cv"] = [100.0, 101.0, 99.0], 0.02  # a quiet machine
    host = row["latency_ms"]["host"]
    host["count"], host["p99"] = 200, host["median"] * 1.02
    row["throughput"] = 100.0
    (tmp_path / "steady.json").write_text(json.dumps(steady))
    slower = json.loads(json.dumps(steady))
    slow = slower["results"][0]
    slow["throughput"], slow["throughput_rounds"] = 50.0, [50.0, 50.5, 49.5]
    slow["latency_ms"]["host"]["median"] *= 2
    slow["latency_ms"]["host"]["p99"] *= 2
    (tmp_path / "slower.json").write_text(json.dumps(slower))
    flagged = runner.invoke(app, ["bench", "--compare", str(tmp_path / "steady.json"), str(tmp_path / "slower.json")])
    assert flagged.exit_code == 1 and "REGRESSION" in flagged.stdout and "3 regression(s)" in flagged.stderr
    # the same slowdown measured on a machine whose own runs vary by 120 %: noise, not a regression
    for document in (steady, slower):
        document["results"][0]["latency_ms"]["host"]["cv"] = 1.2
        document["results"][0]["throughput_rounds"] = None
    (tmp_path / "noisy_a.json").write_text(json.dumps(steady))
    (tmp_path / "noisy_b.json").write_text(json.dumps(slower))
    noisy = runner.invoke(app, ["bench", "--compare", str(tmp_path / "noisy_a.json"), str(tmp_path / "noisy_b.json")])
    assert noisy.exit_code == 0 and "within noise" in noisy.stdout


def test_compare_reports_accuracy_and_missing_cells_apart_and_refuses_unusable_files(tmp_path):
    from edgeseg.bench.compare import compare, load

    host = {"median": 10.0, "p99": 12.0, "cv": 0.01}
    row = {"name": "s", "backend": "tensorrt", "precision": "fp16", "batch": 1, "throughput": 100.0, "throughput_rounds": [100.0, 100.5],
           "latency_ms": {"host": host}, "accuracy": {"images": 10, "mean_dice": 0.9}}
    old = {"schema": SCHEMA, "results": [row], "pipeline": []}
    new = {"schema": SCHEMA, "results": [dict(row, throughput=98.0)], "pipeline": []}
    assert not compare(old, new, 0.05).regressions
    worse_dice = {"schema": SCHEMA, "results": [dict(row, accuracy={"images": 10, "mean_dice": 0.8})], "pipeline": []}
    assert [c.metric for c in compare(old, worse_dice, 0.05).regressions] == ["mean_dice"]
    skipped = {"name": "s", "backend": "tensorrt", "precision": "fp16", "batch": 1, "skipped": "no engine"}
    lost = compare(old, {"schema": SCHEMA, "results": [skipped], "pipeline": []})
    assert lost.changes == [] and lost.missing_in_b == ["s tensorrt fp16 b1"] and not lost.regressions
    (tmp_path / "lost.json").write_text(json.dumps({"schema": SCHEMA, "results": [skipped], "pipeline": []}))
    (tmp_path / "old.json").write_text(json.dumps(old))
    listed = runner.invoke(app, ["bench", "--compare", str(tmp_path / "old.json"), str(tmp_path / "lost.json")])
    assert listed.exit_code == 0 and "missing in B" in listed.stderr and "REGRESSION" not in listed.stdout

    (tmp_path / "other.json").write_text(json.dumps({"schema": "something/1"}))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "no_results.json").write_text(json.dumps({"schema": SCHEMA}))
    no_latency = dict(row)
    del no_latency["latency_ms"]
    (tmp_path / "no_latency.json").write_text(json.dumps({"schema": SCHEMA, "results": [no_latency]}))
    (tmp_path / "pipeline_text.json").write_text(json.dumps({"schema": SCHEMA, "results": [row], "pipeline": "fast"}))
    (tmp_path / "pipeline_rows.json").write_text(json.dumps({"schema": SCHEMA, "results": [row], "pipeline": [3]}))
    cases = (("other.json", "not an edgeseg bench result"), ("broken.json", "not readable JSON"), ("missing.json", "not found"),
             ("no_results.json", "no results"), ("no_latency.json", "has no latency_ms"),
             ("pipeline_text.json", "pipeline is not a list"), ("pipeline_rows.json", "a pipeline row is not an object"))
    for name, message in cases:
        with pytest.raises(EdgesegError, match=message):
            load(tmp_path / name)
        result = runner.invoke(app, ["bench", "--compare", str(tmp_path / "old.json"), str(tmp_path / name)])
        assert result.exit_code == 2, (name, result.output)
        assert name in result.stderr and message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_compare_takes_a_run_whose_machine_is_unknown(tmp_path):
    host = {"median": 10.0, "p99": 12.0, "cv": 0.01}
    row = {"name": "s", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "throughput": 100.0, "latency_ms": {"host": host}}
    for name, environment in (("a.json", None), ("b.json", "a laptop")):
        (tmp_path / name).write_text(json.dumps({"schema": SCHEMA, "results": [row], "pipeline": [], "environment": environment}))
    result = runner.invoke(app, ["bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code == 0 and "Traceback" not in result.output and result.exception is None, result.output


def test_cli_says_when_nothing_can_run(family):
    result = runner.invoke(app, ["bench", str(family["classifier"]), "-b", "tensorrt"])
    assert result.exit_code == 1 and "nothing to benchmark here" in result.stderr
    assert "pip install edgeseg[trt]" in result.stderr  # the message's brackets are text, not rich markup


@pytest.mark.gpu
def test_torch_backend_on_cuda_times_copies_and_matches_cpu(family):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    cell = plan([family["segmenter"]], backends=["pytorch"], precisions=["fp32"], torch_device="cuda")[0]
    card = read_card(family["segmenter"])
    feed = sample_feed(card, 2)
    with cell.open(device="cpu") as cpu, cell.open(device="cuda") as gpu:
        expected, got = cpu.infer(feed)[card.output.name], gpu.infer(feed)[card.output.name]
        assert gpu.runs_on == "cuda" and set(gpu.timings) == {"h2d", "compute", "d2h"}
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)


def test_repeat_benchmark_compares_real_runs(run_benchmark):
    """benchmarks/bench_repeat.py (the false-alarm check of `bench --compare`, timing-dependent,
    so a benchmark) runs as a user would and records what the comparison said."""
    data = run_benchmark("bench_repeat.py", "--runs", "2", "--duration", "0.1")
    (comparison,) = data["comparisons"]
    assert comparison["runs"] == [0, 1] and comparison["exit_code"] == (1 if comparison["regressions"] else 0)
    assert len(comparison["flagged"]) == comparison["regressions"]

