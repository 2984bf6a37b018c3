"""Model update without stopping (edgeseg.edge.swap, Inspector.update, run --models-from):
swaps under a streaming run lose no frame and process none twice, every record names the pair
that made it, a header record marks each swap, and a broken pair is rolled back.

Pairs are real ONNX models: the tiny fixtures, re-exported with other weights (other sha256), one
whose segmenter answers NaN and one whose classifier raises inside ONNX Runtime on frames darker
than mid-grey (a data-dependent Reshape), so it passes warm-up and fails on live frames."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_media import frames, write_video
from edgeseg import Inspector
from edgeseg.edge.card import read_card, write_card
from edgeseg.edge.records import validate_record
from edgeseg.edge.sinks import JsonlSink
from edgeseg.edge.sources import Frame
from edgeseg.edge.swap import ModelWatcher
from edgeseg.files import sha256

onnx = pytest.importorskip("onnx")
ROLES = ("classifier", "segmenter")


def _copy_pair(pair, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for path in pair:  # the card last: a watcher takes the pair once its card names what is there
        for f in (path, path.with_name(f"{path.stem}.golden.npz"), path.with_suffix(".json")):
            if f.exists():
                shutil.copy2(f, folder / f.name)
    return tuple(folder / path.name for path in pair)


def _reexported(checkpoints, folder: Path, seed: int):
    """The tiny pair with every weight scaled by a seeded factor near 1, exported again."""
    torch = pytest.importorskip("torch")
    from edgeseg.export.torch_onnx import torch_to_onnx

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    pair = []
    for role in ROLES:
        payload = torch.load(checkpoints[role], weights_only=False)
        for key, value in payload["state_dict"].items():
            if value.is_floating_point() and "running_var" not in key:
                value.mul_(1.0 + 0.2 * torch.rand(value.shape, generator=generator))
        torch.save(payload, folder / f"{role}.pt")
        pair.append(torch_to_onnx(folder / f"{role}.pt", folder / f"{role}.onnx").onnx)
    return tuple(pair)


def _rewritten(pair, folder: Path, role: str, edit):
    """A copy of `pair` whose `role` model's graph went through `edit`, with its card re-stamped."""
    out = _copy_pair(pair, folder)
    path = out[ROLES.index(role)]
    model = onnx.load(str(path))
    edit(model.graph)
    onnx.save(model, str(path))
    write_card(path, read_card(pair[ROLES.index(role)], verify=False))
    return out


def _nan_weights(graph):
    last = graph.initializer[-1]
    values = onnx.numpy_helper.to_array(last).copy()
    values[...] = np.nan
    last.CopyFrom(onnx.numpy_helper.from_array(values, last.name))


def _raise_on_dark_frames(graph):
    """logits -> Reshape(logits, [-1, 1 + (mean(image) < 0)]): one logit per image cannot fill two
    columns, so ONNX Runtime raises on a frame darker than mid-grey (normalised mean < 0)."""
    from onnx import TensorProto, helper

    output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{name}_raw" if name == output else name for name in node.output]
    graph.initializer.extend(
        [helper.make_tensor("base_shape", TensorProto.INT64, [2], [-1, 1]), helper.make_tensor("dark_col", TensorProto.INT64, [2], [0, 1]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [-1e-3])]
    )
    graph.node.extend(
        [
            helper.make_node("ReduceMean", [graph.input[0].name], ["mean"], keepdims=0),
            helper.make_node("Less", ["mean", "zero"], ["dark"]),
            helper.make_node("Cast", ["dark"], ["dark_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["dark_i", "dark_col"], ["extra"]),
            helper.make_node("Add", ["base_shape", "extra"], ["shape"]),
            helper.make_node("Reshape", [f"{output}_raw", "shape"], [output]),
        ]
    )


@pytest.fixture(scope="module")
def pairs(tiny_models, tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    a = (tiny_models["classifier"], tiny_models["segmenter"])
    return {
        "A": a,
        "B": _reexported(tiny_checkpoints, root / "B", seed=1),
        "C": _reexported(tiny_checkpoints, root / "C", seed=2),
        "nan": _rewritten(a, root / "nan", "segmenter", _nan_weights),
        "crash": _rewritten(a, root / "crash", "classifier", _raise_on_dark_frames),
    }


def _shas(pair):
    return {role: sha256(path) for role, path in zip(ROLES, pair)}


def _records(path: Path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validate_record(record)
    return records


def _check_stream(records, count):
    """Every frame once, in order; each frame names the pair of the header before it. Returns
    the pairs (sha dicts) of the headers in order and the frames each produced."""
    assert [r["frame"] for r in records if r["type"] == "frame"] == list(range(count))
    pairs, produced = [], []
    for record in records:
        if record["type"] == "header":
            pairs.append({role: m["sha256"] for role, m in record["models"].items()})
            produced.append(0)
        else:
            assert record["model_sha256"] == pairs[-1]
            produced[-1] += 1
    return pairs, produced


def test_three_swaps_and_a_rollback_lose_no_frame(pairs, tmp_path):
    count = 90
    video = write_video(tmp_path / "line.avi", frames(count, 64, 320))
    inspector = Inspector(*pairs["A"], backend="onnxruntime", threads=1)
    plan = {10: ("B", 0), 25: ("nan", 0), 40: ("C", 4), 60: ("A", 0)}
    answers = {}

    def drive(result):  # on the output thread: the stream waits while the new pair loads and is verified
        step = plan.get(result.index)
        if step is not None:
            answers[step[0]] = inspector.update(*pairs[step[0]], shadow=step[1])

    with inspector, JsonlSink(tmp_path / "out.jsonl") as sink:
        report = inspector.stream(str(video), [sink], on_result=drive)
        assert inspector.ready and inspector.model_sha256 == _shas(pairs["A"])
    assert report["frames"] == count and not inspector.ready
    assert {name: event.kind for name, event in answers.items()} == {"B": "verified", "nan": "rolled_back", "C": "verified", "A": "verified"}
    assert "failed verification" in answers["nan"].reason and "not a number" in answers["nan"].reason
    headers, produced = _check_stream(_records(tmp_path / "out.jsonl"), count)
    assert headers == [_shas(pairs[name]) for name in ("A", "B", "C", "A")]
    assert all(n > 0 for n in produced)  # each pair made frames: every swap happened mid-stream
    kinds = [event["kind"] for event in report["model_updates"]]
    assert kinds == ["verified", "swapped", "rolled_back", "verified", "swapped", "verified", "swapped"]
    shadowed = report["model_updates"][4]
    assert shadowed["models"] == _shas(pairs["C"]) and shadowed["shadow"]["frames"] == 4
    assert 0.0 <= shadowed["shadow"]["gate_agreement"] <= 1.0 and 0.0 <= shadowed["shadow"]["dice"] <= 1.0


def test_a_pair_that_fails_on_live_frames_is_rolled_back_and_its_batch_rerun(pairs, tmp_path):
    """Verified on a mid-grey frame only (a custom `verify`), the crashing classifier reaches the
    live frames: while shadowing it is dropped; swapped in, its first batch is re-run on the old
    pair. Either way no frame is lost and none names it."""
    count = 30
    dark = [(image * 0.3).astype(np.uint8) for image in frames(count, 64, 320)]
    video = write_video(tmp_path / "dark.avi", dark)
    inspector = Inspector(*pairs["A"], backend="onnxruntime", threads=1)
    mid_grey = np.full((64, 320), 128, np.uint8)
    inspector.verify = lambda cascade, _live: cascade.results([Frame(0, mid_grey, time.perf_counter(), "grey")], gate=0.0)
    events = []
    plan = {5: 2, 15: 0}  # frame -> shadow frames

    def drive(result):
        if result.index in plan:
            inspector.update(*pairs["crash"], shadow=plan[result.index], on_event=events.append)

    with JsonlSink(tmp_path / "out.jsonl") as sink:
        report = inspector.stream(str(video), [sink], on_result=drive)
    headers, _ = _check_stream(_records(tmp_path / "out.jsonl"), count)
    assert headers == [_shas(pairs["A"])]  # the crashing pair never produced a frame
    assert [e.kind for e in events] == ["verified", "rolled_back", "verified", "swapped", "rolled_back"]
    assert events[1].reason.startswith("failed while shadowing") and events[4].reason.startswith("failed on its first live frames")
    assert "Reshape" in events[4].reason or "reshape" in events[4].reason
    assert [e["kind"] for e in report["model_updates"]] == [e.kind for e in events]
    assert inspector.model_sha256 == _shas(pairs["A"])


def test_shadowing_a_copy_of_the_running_pair_agrees_fully(pairs, tmp_path):
    copy = _copy_pair(pairs["A"], tmp_path / "copy")
    images = [image for image in frames(6, 64, 320)]
    with Inspector(*pairs["A"], backend="onnxruntime", threads=1, gate=0.0) as inspector:
        assert inspector.update(*copy, shadow=3).kind == "verified"
        records = [inspector(image) for image in images]
    swapped = inspector.updates[-1]
    assert swapped.kind == "swapped" and swapped.paths["classifier"] == str(copy[0])
    assert swapped.shadow == {"frames": 3, "gate_agreement": 1.0, "dice": 1.0}
    assert all(r["model_sha256"] == _shas(pairs["A"]) for r in records)


def test_an_incompatible_or_missing_pair_is_refused_before_loading(pairs, tmp_path):
    with Inspector(*pairs["A"], backend="onnxruntime", threads=1) as inspector:
        missing = inspector.update(tmp_path / "none.onnx", pairs["A"][1])
        swapped_roles = inspector.update(pairs["A"][1], pairs["A"][0])
        assert inspector.ready and inspector.model_sha256 == _shas(pairs["A"])
    assert missing.kind == "rolled_back" and "could not be opened" in missing.reason and "none.onnx" in missing.reason
    assert swapped_roles.kind == "rolled_back" and "segmenter model but was given as the classifier" in swapped_roles.reason


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _headers(path: Path):
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [{role: m["sha256"] for role, m in r["models"].items()} for r in lines if r["type"] == "header"]


def test_run_models_from_swaps_a_copied_pair_and_sighup_reloads(pairs, tmp_path):
    """`edgeseg run --models-from DIR`: a pair copied in (cards last) is swapped in without
    stopping; SIGHUP checks DIR at once (here: the pair running already); a broken pair copied in
    is rolled back with a warning and the run goes on."""
    video = write_video(tmp_path / "line.avi", frames(20, 64, 320))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", str(video), "--loop", "--rate", "20",
               "--classifier", str(pairs["A"][0]), "--segmenter", str(pairs["A"][1]), "--backend", "onnxruntime", "--threads", "1",
               "--models-from", str(incoming), "--jsonl", str(out), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="200"))
    stderr: list = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    said = lambda text: any(text in line for line in stderr)  # noqa: E731
    try:
        _wait_for(lambda: _headers(out), 120, "the first header")
        for path in pairs["B"]:  # artifact first, card last, as a deployment copies them
            shutil.copy2(path, incoming / path.name)
        for path in pairs["B"]:
            shutil.copy2(path.with_suffix(".json"), incoming / path.with_suffix(".json").name)
        _wait_for(lambda: _shas(pairs["B"]) in _headers(out), 120, "the swap to the copied pair")
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: said("are the running pair already"), 60, "the reload on SIGHUP")
        shutil.copy2(pairs["nan"][1], incoming / "segmenter.onnx")
        shutil.copy2(pairs["nan"][1].with_suffix(".json"), incoming / "segmenter.json")
        _wait_for(lambda: said("model update rolled back"), 120, "the rollback of the broken pair")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=120)
        reader.join(timeout=10)
    assert process.returncode == 0, "".join(stderr)[-2000:]
    report = json.loads(stdout)
    assert [e["kind"] for e in report["model_updates"]] == ["verified", "swapped", "rolled_back"]
    assert "not a number" in report["model_updates"][-1]["reason"]
    assert _headers(out) == [_shas(pairs["A"]), _shas(pairs["B"])]
    frames_by = [r["model_sha256"] for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "frame"]
    assert frames_by[-1] == _shas(pairs["B"])


def test_watcher_waits_for_complete_files_and_reload_forces_a_check(pairs, tmp_path):
    offered = []
    folder = tmp_path / "incoming"
    folder.mkdir()
    paths = (folder / "classifier.onnx", folder / "segmenter.onnx")
    running = _shas(pairs["A"])
    with ModelWatcher(*paths, lambda c, s: offered.append((c, s)), lambda: running, interval=0.05, settle=0.2):
        for path in pairs["B"]:
            shutil.copy2(path, folder / path.name)  # the cards are not there yet
            golden = path.with_name(f"{path.stem}.golden.npz")
            if golden.exists():
                shutil.copy2(golden, folder / golden.name)
        time.sleep(0.6)
        assert offered == []
        for path in pairs["B"]:
            shutil.copy2(path.with_suffix(".json"), folder / path.with_suffix(".json").name)
        _wait_for(lambda: offered, 10, "the offer of the complete pair")
        time.sleep(0.4)
        assert offered == [paths]  # offered once, not at every poll
    running = _shas(pairs["B"])
    with ModelWatcher(*paths, lambda c, s: offered.append((c, s)), lambda: running, poll=False) as watcher:
        _copy_pair(pairs["C"], folder)
        time.sleep(0.3)
        assert len(offered) == 1  # no polling: only reload() looks
        watcher.reload()
        _wait_for(lambda: len(offered) == 2, 10, "the reload")
