"""Triton: the model repository (parsed with Triton's own ModelConfig protobuf), and the cascade on a
real tritonserver on 127.0.0.1 (nvidia-pytriton's, Python backend, started and stopped here)."""
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from edge_media import frames, write_video
from edgeseg.edge.backends import open_backend
from edgeseg.edge.card import Artifact, read_card, write_card
from edgeseg.edge.cascade import LocalCascade
from edgeseg.edge.pipeline import Pipeline
from edgeseg.edge.records import validate_record
from edgeseg.edge.sinks import JsonlSink
from edgeseg.edge.sources import SourceOptions, open_source
from edgeseg.errors import EdgesegError
from edgeseg.files import sha256
from edgeseg.serve.repository import RepositoryOptions, engines_to_triton_repository, onnx_to_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install 'edgeseg[triton]'")
from google.protobuf import text_format  # noqa: E402  (tritonclient's dependency)

EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main()"]
VOLATILE = ("latency_ms", "captured_at", "monotonic_s")  # clocks differ between runs; nothing else may


def _config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _same(remote, local):
    """Records equal but for the classes' mean probability, which may differ in the 6th decimal:
    pytriton's server runs NumPy 1 / OpenCV 4.10 (its stub predates NumPy 2), this side NumPy 2."""

    def split(records):
        records = json.loads(json.dumps(records))  # a copy
        return records, [c.pop("mean_probability") for r in records for c in r["classes"].values()]

    (remote, remote_means), (local, local_means) = split(remote), split(local)
    assert remote == local
    assert [m is None for m in remote_means] == [m is None for m in local_means]
    assert [m for m in remote_means if m is not None] == pytest.approx([m for m in local_means if m is not None], abs=2e-6)


def _records(path: Path):
    """The frame records of a JSONL (each schema-checked), without their clocks."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validate_record(record)
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records if r["type"] == "frame"]


# -- the repository --------------------------------------------------------------------------------
def test_onnx_repository_configs_parse_as_triton_model_configs(tiny_models, tmp_path):
    repo = onnx_to_triton_repository(tiny_models["classifier"], tiny_models["segmenter"], tmp_path / "repo", RepositoryOptions(max_batch=6, queue_delay_us=500))
    for task in ("classifier", "segmenter"):
        card = read_card(tiny_models[task])
        config = _config(repo / task / "config.pbtxt")
        assert config.name == task and config.platform == "onnxruntime_onnx" and config.max_batch_size == 6
        assert (config.input[0].name, list(config.input[0].dims)) == (card.input.name, card.input.shape[1:])
        assert config.input[0].data_type == model_config_pb2.TYPE_FP32
        assert (config.output[0].name, list(config.output[0].dims)) == (card.output.name, card.output.shape[1:])
        assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 6]
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert sha256(repo / task / "1" / "model.onnx") == sha256(tiny_models[task])
    cascade = _config(repo / "cascade" / "config.pbtxt")
    assert cascade.backend == "python" and cascade.max_batch_size == 6
    assert cascade.input[0].data_type == model_config_pb2.TYPE_UINT8 and list(cascade.input[0].dims) == [-1, -1]
    assert cascade.output[0].data_type == model_config_pb2.TYPE_STRING
    card = json.loads(cascade.parameters["segmenter_card"].string_value)
    assert card == read_card(tiny_models["segmenter"]).to_dict()
    assert cascade.parameters["classifier_max_batch"].string_value == "6"
    assert (repo / "cascade" / "1" / "model.py").read_text().count("from edgeseg.serve.cascade import TritonPythonModel") == 1


def test_stand_in_repository_serves_the_onnx_on_the_python_backend(tiny_models, tmp_path):
    repo = onnx_to_triton_repository(tiny_models["classifier"], tiny_models["segmenter"], tmp_path / "repo", RepositoryOptions(stand_in=True))
    config = _config(repo / "segmenter" / "config.pbtxt")
    assert config.backend == "python" and not config.platform
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert read_card(repo / "segmenter" / "1" / "model.onnx").task == "segmenter"  # card beside it, hash checked


def test_engine_repository_takes_max_batch_from_the_profile(tiny_models, tmp_path):
    engines = {}
    for task, high in (("classifier", 16), ("segmenter", 4)):
        card = read_card(tiny_models[task])
        plan = tmp_path / f"{task}.fp16.engine"
        plan.write_bytes(b"serialized plan bytes of " + task.encode())  # the writer copies, never parses
        spec = card.preprocess
        card.artifact = Artifact(format="tensorrt", profile={"min": [1, 1, spec.height, spec.width], "max": [high, 1, spec.height, spec.width]})
        write_card(plan, card)
        engines[task] = plan
    repo = engines_to_triton_repository(engines["classifier"], engines["segmenter"], tmp_path / "repo")
    for task, high in (("classifier", 16), ("segmenter", 4)):
        config = _config(repo / task / "config.pbtxt")
        assert config.platform == "tensorrt_plan" and config.max_batch_size == high
        assert config.default_model_filename == "model.plan" and (repo / task / "1" / "model.plan").read_bytes() == engines[task].read_bytes()
    assert _config(repo / "cascade" / "config.pbtxt").parameters["classifier_max_batch"].string_value == "16"
    with pytest.raises(EdgesegError, match="not TensorRT engines"):
        engines_to_triton_repository(engines["classifier"], engines["segmenter"], tmp_path / "other", RepositoryOptions(stand_in=True))
    with pytest.raises(EdgesegError, match="but the other model is not"):
        onnx_to_triton_repository(tiny_models["classifier"], engines["segmenter"], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_repository_refuses_swapped_models_and_a_used_folder(tiny_models, tmp_path):
    with pytest.raises(EdgesegError, match="given as the classifier"):
        onnx_to_triton_repository(tiny_models["segmenter"], tiny_models["classifier"], tmp_path / "repo")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(EdgesegError, match="not an empty folder"):
        onnx_to_triton_repository(tiny_models["classifier"], tiny_models["segmenter"], used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]  # no staging folder left behind


@pytest.mark.parametrize(
    "url, address",
    [("grpc://10.0.0.5:9001", "10.0.0.5:9001"), ("localhost:8001", "localhost:8001"), ("grpc://triton", "triton:8001")],
)
def test_grpc_address_from_url(url, address):
    from edgeseg.edge.triton import grpc_address

    assert grpc_address(url) == address


@pytest.mark.parametrize("url", ["http://host:8000", "grpc://host:port", "grpc://host:8001/v2", "grpc://host:99999", "grpc://host:0"])
def test_grpc_address_refuses_other_urls(url):
    from edgeseg.edge.triton import grpc_address

    with pytest.raises(EdgesegError):
        grpc_address(url)


# -- a real server ---------------------------------------------------------------------------------
def _server_or_skip():
    from edgeseg.serve import server as triton

    try:
        install = triton.find_tritonserver()
        triton.prepare_server_environment(install)  # `edgeseg serve --prepare`
        env = triton.server_environment(install)
    except EdgesegError as exc:
        pytest.skip(f"no Triton server to test against: {exc}")
    return triton, install, env


def _start(repo: Path, log: Path):
    triton, install, env = _server_or_skip()
    server = triton.TritonServer(repo, install, env, grpc_port=triton.free_port(), http_port=triton.free_port(), log=log)
    return server.start()


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory):
    """A tritonserver with the tiny cascade (stand-ins), a batching window wide enough for four
    clients on a loaded 2-core machine to land in one batch."""
    folder = tmp_path_factory.mktemp("triton")
    repo = onnx_to_triton_repository(
        tiny_models["classifier"], tiny_models["segmenter"], folder / "repo", RepositoryOptions(stand_in=True, queue_delay_us=20000)
    )
    server = _start(repo, folder / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton_clips")
    return [write_video(folder / f"clip{i}.avi", frames(8, seed=i)) for i in range(4)]


def _local(models, clip, jsonl, gate=None):
    with open_source(str(clip), SourceOptions()) as source, JsonlSink(jsonl) as sink:
        # ONNX Runtime, as the stand-ins run (auto could pick OpenVINO here)
        Pipeline(source, LocalCascade(open_backend(models["classifier"], "onnxruntime"), open_backend(models["segmenter"], "onnxruntime"), gate=gate), [sink]).run()
    return _records(jsonl)


def _remote(url, clip, jsonl, gate=None, options=None, cascades=None, on_result=None):
    from edgeseg.edge.triton import TritonCascade

    cascade = TritonCascade(url, reconnect_s=60.0, gate=gate)
    if cascades is not None:
        cascades.append(cascade)
    with open_source(str(clip), options or SourceOptions()) as source, JsonlSink(jsonl) as sink:
        report = Pipeline(source, cascade, [sink], on_result=on_result).run()
    return report


def _stats(server, model):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url.split("://")[1]) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_served_repository_loads_every_model(served):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(served.grpc_url.split("://")[1]) as client:
        assert all(client.is_model_ready(name) for name in ("classifier", "segmenter", "cascade"))
        config = client.get_model_config("cascade", as_json=True)["config"]
        # A client that is not edgeseg: one frame straight to the cascade, one valid record back.
        image = frames(1)[0][:, :, 0]
        tensor = grpcclient.InferInput("IMAGE", [1, *image.shape], "UINT8")
        tensor.set_data_from_numpy(image[None])
        answer = client.infer("cascade", [tensor])
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["max_queue_delay_microseconds"] == "20000"
    record = json.loads(answer.as_numpy("RECORD")[0, 0])
    validate_record(record)
    assert record["size"] == list(image.shape) and record["gate"] == read_card(served.repository / "classifier" / "1" / "model.onnx").thresholds["defect"]


def test_four_clients_get_the_records_of_local_runs_in_shared_batches(served, tiny_models, clips, tmp_path):
    gates = [None, 0.0, None, 0.0]  # 0.0: every frame segmented, so the segmenter batches too
    expected = [_local(tiny_models, clip, tmp_path / f"local{i}.jsonl", gate) for i, (clip, gate) in enumerate(zip(clips, gates))]
    before = {model: _stats(served, model) for model in ("cascade", "classifier", "segmenter")}
    errors = []

    def client(i):
        try:
            _remote(served.grpc_url, clips[i], tmp_path / f"remote{i}.jsonl", gates[i])
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for i in range(4):
        _same(_records(tmp_path / f"remote{i}.jsonl"), expected[i])
    assert all(r["gated"] for r in expected[1]) and any(c["area"] for r in expected[1] for c in r["classes"].values())  # masks compared too
    for model in ("cascade", "classifier", "segmenter"):
        after = _stats(served, model)
        batched = {size: count - before[model].get(size, 0) for size, count in after.items() if size > 1}
        assert sum(batched.values()) > 0, f"{model}: Triton formed no batch above 1 ({after})"


def test_inspector_on_triton_gives_the_local_records_for_a_batch_above_max_batch(served, tiny_models):
    """Ten frames to a cascade of max_batch_size 8: split in requests the server accepts, each
    record what the local cascade makes of the same frame."""
    from edgeseg.inspector import Inspector

    images = [image[:, :, 0] for image in frames(10, seed=5)]
    with Inspector(backend="triton", url=served.grpc_url, gate=0.0) as remote:
        got = remote(images)
    with Inspector(tiny_models["classifier"], tiny_models["segmenter"], backend="onnxruntime", gate=0.0) as local:
        expected = local(images)
    assert [r["frame"] for r in got] == list(range(10)) and all(r["gated"] for r in got)
    _same([{k: v for k, v in r.items() if k not in VOLATILE} for r in got], [{k: v for k, v in r.items() if k not in VOLATILE} for r in expected])


def test_killed_server_gives_each_client_one_error_and_a_reconnect(tiny_models, clips, tmp_path, caplog):
    repo = onnx_to_triton_repository(tiny_models["classifier"], tiny_models["segmenter"], tmp_path / "repo", RepositoryOptions(stand_in=True))
    server = _start(repo, tmp_path / "server.log")
    cascades, errors = [], []
    done = [0, 0, 0, 0]
    # Paced like a 5 fps camera but never dropping (a file source): the streams are still going when the server dies.
    options = SourceOptions(rate=5.0)

    def client(i):
        try:
            on_result = lambda _result: done.__setitem__(i, done[i] + 1)  # noqa: E731
            _remote(server.grpc_url, clips[i], tmp_path / f"remote{i}.jsonl", options=options, cascades=cascades, on_result=on_result)
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="edgeseg.edge.triton")
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while min(done) < 2 and time.monotonic() < deadline and not errors:
            time.sleep(0.02)
        assert max(done) < 8, done  # mid-stream
        server.kill()
        time.sleep(1.0)
        server.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        server.stop()
    assert not errors, errors
    assert [c.reconnects for c in cascades] == [1, 1, 1, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("lost the Triton server") for m in messages) == 4
    assert sum(m.startswith("reconnected to the Triton server") for m in messages) == 4
    for i in range(4):  # no frame lost, none different
        _same(_records(tmp_path / f"remote{i}.jsonl"), _local(tiny_models, clips[i], tmp_path / f"local{i}.jsonl"))


def test_benchmark_reports_fps_latency_and_batches_per_client_count(tiny_models, run_benchmark):
    _server_or_skip()
    result = run_benchmark("bench_triton.py", "--classifier", tiny_models["classifier"], "--segmenter", tiny_models["segmenter"], "--clients", 1, 2, "--frames", 3, "--rounds", 1)
    assert [row["clients"] for row in result["levels"]] == [1, 2]
    for row in result["levels"]:
        assert row["fps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 and row["frames"] == 3 * row["clients"]
        assert sum(int(size) * count for size, count in row["batches"]["cascade"].items()) == row["frames"]  # JSON keys are text


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path):
    from edgeseg.serve.server import free_port

    result = subprocess.run(
        [*EDGESEG, "run", "--backend", "triton", "--url", f"grpc://127.0.0.1:{free_port()}", "--max-frames", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot use the Triton cascade" in result.stderr and "edgeseg serve" in result.stderr and "Traceback" not in result.stderr


def test_url_without_the_triton_backend_is_a_usage_error():
    result = subprocess.run([*EDGESEG, "run", "--url", "grpc://h:1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--url is for --backend triton" in result.stderr


def test_serve_command_serves_run_and_stops_on_ctrl_c(tiny_models, clips, tmp_path):
    triton, _, _ = _server_or_skip()
    grpc_port, http_port = triton.free_port(), triton.free_port()
    command = [*EDGESEG, "serve", "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--repository", str(tmp_path / "repo"), "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()  # printed once the server is ready
        assert line.strip() == f"edgeseg run --backend triton --url grpc://127.0.0.1:{grpc_port}", serve.stderr.read() if not line else line
        jsonl = tmp_path / "remote.jsonl"
        run = subprocess.run(
            [*EDGESEG, *line.split()[1:], "--source", str(clips[0]), "--jsonl", str(jsonl)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        _same(_records(jsonl), _local(tiny_models, clips[0], tmp_path / "local.jsonl"))
    finally:
        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=60)
    stderr = serve.stderr.read()
    assert code == 130, stderr
    assert "stand-ins" in stderr and "SIGINT: Triton stopped" in stderr
    assert not triton.TritonServer(tmp_path / "repo", None, {}, http_port=http_port).ready()  # nothing left listening


def test_missing_server_pieces_are_one_line_with_the_fix(tmp_path):
    from edgeseg.serve.server import TritonInstall, find_tritonserver, server_environment

    with pytest.raises(EdgesegError, match="not an executable file") as missing:
        find_tritonserver(tmp_path / "tritonserver")
    assert "nvidia-pytriton" in str(missing.value)
    stubs = tmp_path / "stubs"
    install = TritonInstall(binary=tmp_path / "tritonserver", backends=tmp_path / "backends", stubs=stubs)
    with pytest.raises(EdgesegError, match="links the system libpython") as no_python:
        server_environment(install, python=tmp_path / "python3.11", cache=tmp_path / "cache")
    assert "apt-get install" in str(no_python.value) and not (tmp_path / "cache").exists()


def test_serve_write_only_writes_a_repository_for_a_stock_server(tiny_models, tmp_path):
    from typer.testing import CliRunner

    from edgeseg.cli import app

    args = ["serve", "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"]), "--write-only"]
    result = CliRunner().invoke(app, [*args, "--repository", str(tmp_path / "repo"), "--instance-kind", "cpu", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    config = _config(tmp_path / "repo" / "segmenter" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert CliRunner().invoke(app, args).exit_code == 2  # --write-only without --repository


def _processes() -> Dict[int, Tuple[int, str]]:
    """pid -> (parent pid, state) of every process alive now (zombies count as gone)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            found[int(stat.parent.name)] = (int(ppid), state)
    return found


def _descendants(pid: int) -> List[int]:
    processes, tree, frontier = _processes(), [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in processes.items() if ppid == parent]
        tree += children
        frontier += children
    return tree


def test_a_killed_serve_leaves_no_server_stub_or_shared_memory(tiny_models, tmp_path):
    """SIGKILL gives `edgeseg serve` no chance to clean up: the kernel stops tritonserver (a
    parent-death signal), which ends its Python stubs and removes their shared memory."""
    triton, _, _ = _server_or_skip()
    grpc_port, http_port = triton.free_port(), triton.free_port()
    command = [*EDGESEG, "serve", "--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"])]
    command += ["--repository", str(tmp_path / "repo"), "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()  # printed once the server is ready
        assert line.startswith("edgeseg run --backend triton"), serve.stderr.read() if not line else line
        tree = _descendants(serve.pid)
        servers = [pid for pid in tree if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver")]
        assert len(servers) == 1 and len(tree) >= 3  # the server and the stubs of its Python models
        arguments = Path(f"/proc/{servers[0]}/cmdline").read_bytes().decode().split("\0")
        prefix = next(a.split("shm-region-prefix-name=")[1] for a in arguments if "shm-region-prefix-name=" in a)
        assert list(Path("/dev/shm").glob(f"{prefix}*"))  # the stubs' regions, while serving
    finally:
        serve.kill()
        serve.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(tree) & set(_processes()):
        time.sleep(0.2)
    left = set(tree) & set(_processes())
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left]
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))
    assert not triton.TritonServer(tmp_path / "repo", None, {}, http_port=http_port).ready()
