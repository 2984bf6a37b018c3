"""The newcomer's road through the CLI: names applied, every printed hint runnable, one name per concept."""
import json
import re
import shlex
import shutil

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.edge.artifacts import built_path
from edgeseg.edge.card import read_card
from edgeseg.edge.registry import auto_backend

HINT = re.compile(r"`(edgeseg [^`]+)`|next: (edgeseg .+)$", re.M)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def hints(text):
    """The `edgeseg ...` commands a message tells the user to type."""
    return [(a or b).strip() for a, b in HINT.findall(text)]


def run_hint(command, cwd, monkeypatch):
    """Run a printed hint as typed, from `cwd` (hints use the default folders)."""
    monkeypatch.chdir(cwd)
    words = shlex.split(command)
    assert words[0] == "edgeseg"
    return CliRunner().invoke(app, words[1:])


def test_export_classes_name_the_card_and_the_records(tiny_checkpoints, tmp_path):
    result = invoke("export", "-c", tiny_checkpoints["segmenter"], "-c", tiny_checkpoints["classifier"],
                    "--classes", "pits,crack,scratch,patch", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert read_card(tmp_path / "segmenter.onnx").classes == ["pits", "crack", "scratch", "patch"]
    assert read_card(tmp_path / "classifier.onnx").classes == ["defect"]
    jsonl = tmp_path / "frames.jsonl"
    run = invoke("run", "--classifier", tmp_path / "classifier.onnx", "--segmenter", tmp_path / "segmenter.onnx",
                 "--max-frames", 2, "--gate", 0, "--jsonl", jsonl, "--json")
    assert run.exit_code == 0, run.output
    record = json.loads(jsonl.read_text().splitlines()[-1])
    assert set(record["classes"]) == {"pits", "crack", "scratch", "patch"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--classes", "a,b"], "4 output maps"),
        (["--classes", "a,,b,c"], "non-empty"),
    ],
)
def test_export_classes_that_cannot_apply_are_refused_as_usage_errors(tiny_checkpoints, tmp_path, args, message):
    result = invoke("export", "-c", tiny_checkpoints["segmenter"], *args, "--out", tmp_path)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "segmenter.onnx").exists()
    only_classifier = invoke("export", "-c", tiny_checkpoints["classifier"], "--classes", "x", "--out", tmp_path)
    assert only_classifier.exit_code == 2 and "segmenter" in only_classifier.output


def test_every_hint_the_flow_prints_runs(tmp_path, monkeypatch):
    """data synth -> train (prints the export command) -> export; bench without INT8 models
    (prints the calibrate command) -> calibrate; bench PyTorch rows with the checkpoint moved
    (prints the cp command). Each printed command is run as printed and must succeed."""
    monkeypatch.chdir(tmp_path)
    assert invoke("data", "synth", "--count", 8, "--json").exit_code == 0  # -> data/train
    train = invoke("train", "classifier", "--epochs", 1, "--base-width", 4, "--input-size", "32x208", "--batch", 4, "--threads", 1)
    assert train.exit_code == 0, train.output
    printed = hints(train.output)
    assert printed == ["edgeseg export -c runs/classifier/classifier.pt --out models"]
    exported = run_hint(printed[0], tmp_path, monkeypatch)
    assert exported.exit_code == 0, exported.output
    onnx = tmp_path / "models" / "classifier.onnx"
    assert onnx.is_file()
    assert hints(exported.output) == ["edgeseg build-engine models/classifier.onnx --out models"]
    built = run_hint(hints(exported.output)[0], tmp_path, monkeypatch)
    assert built.exit_code == 0, built.output
    target = auto_backend(build=True)  # this machine's build target: the artifact name follows it
    assert built_path(onnx, tmp_path / "models", "fp32", target).is_file(), built.output

    bench = invoke("bench", onnx, "-b", "onnxruntime", "-p", "int8", "--duration", 0.05, "--iterations", 2, "--warmup", 0,
                   "--max-frames", 0, "--out", tmp_path / "b1")
    calibrate = [h for h in hints(bench.output) if h.startswith("edgeseg calibrate")]
    assert calibrate, bench.output
    done = run_hint(calibrate[0], tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "models" / "classifier.int8.cpu.qdq.onnx").is_file()
    (build,) = [h for h in hints(done.output) if h.startswith("edgeseg build-engine")]
    built = run_hint(build, tmp_path, monkeypatch)
    assert built.exit_code == 0, built.output
    assert built_path(onnx, tmp_path / "models", "int8", target).is_file(), built.output

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(onnx, moved)
    shutil.copy(onnx.with_suffix(".json"), moved)
    shutil.move(str(tmp_path / "runs" / "classifier" / "classifier.pt"), str(moved / "kept.pt"))
    torch_row = invoke("bench", moved / "classifier.onnx", "-b", "pytorch", "-p", "fp32", "--duration", 0.05, "--iterations", 2,
                       "--warmup", 0, "--max-frames", 0, "--out", tmp_path / "b2")
    assert "not beside it" in torch_row.output
    shutil.move(str(moved / "kept.pt"), str(tmp_path / "runs" / "classifier" / "classifier.pt"))
    copy = re.search(r"`(cp [^`]+)`", torch_row.output)
    assert copy, torch_row.output
    source, target = shlex.split(copy.group(1))[1:]
    shutil.copy(source, target)  # what `cp` does
    again = invoke("bench", moved / "classifier.onnx", "-b", "pytorch", "-p", "fp32", "--duration", 0.05, "--iterations", 2,
                   "--warmup", 0, "--max-frames", 0, "--out", tmp_path / "b3", "--json")
    assert again.exit_code == 0, again.output
    assert "not beside it" not in again.output


@pytest.mark.slow
def test_data_synth_prints_the_flow_s_training_command_and_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synth = invoke("data", "synth", "--count", 8, "--out", "strips")
    assert synth.exit_code == 0, synth.output
    (command,) = hints(synth.output)
    assert command == "edgeseg train classifier --base-width 8 --input-size 64x400 --data strips"
    trained = run_hint(command, tmp_path, monkeypatch)
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "runs" / "classifier" / "classifier.pt").is_file()


def test_bench_hints_for_bundled_models_write_beside_the_user_s_work(tiny_models, tmp_path, monkeypatch):
    """A model in edgeseg's bundled assets (here: a folder standing for it) lacks its INT8 model:
    bench's command writes it to ./engines, not into the package, and bench then finds it there."""
    from edgeseg.bench import variants

    bundled = tmp_path / "assets"
    bundled.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_models["classifier"].with_suffix(suffix), bundled)
    monkeypatch.setattr(variants, "BUNDLED", bundled.resolve())
    monkeypatch.chdir(tmp_path)
    assert invoke("data", "synth", "--count", 8, "--json").exit_code == 0
    args = ["bench", bundled / "classifier.onnx", "-b", "onnxruntime", "-p", "int8", "--duration", 0.05, "--iterations", 2, "--warmup", 0,
            "--max-frames", 0, "--out", "b"]
    missing = invoke(*args)
    (calibrate,) = [h for h in hints(" ".join(missing.output.split())) if h.startswith("edgeseg calibrate")]
    assert calibrate.endswith("--out engines"), calibrate
    done = run_hint(calibrate, tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in bundled.iterdir()) == ["classifier.json", "classifier.onnx"]
    found = invoke(*args, "--json")
    assert found.exit_code == 0, found.output
    (cell,) = json.loads(found.stdout)["results"]
    assert "throughput" in cell and cell["precision"] == "int8"


def test_the_flow_s_working_folders_are_ignored_by_git_and_the_package_s_are_not():
    """A user who runs the README flow inside a clone sees no untracked file (git status)."""
    import subprocess
    from pathlib import Path

    from edgeseg.layout import BENCH_DIR, DATA_DIR, MODELS_DIR, RUNS_DIR
    from edgeseg.bench.variants import ENGINES_DIR

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    made = [str(DATA_DIR / "train.csv"), str(RUNS_DIR / "classifier" / "classifier.pt"), str(MODELS_DIR / "calibration.npz"),
            str(BENCH_DIR / "bench.json"), str(ENGINES_DIR / "classifier.fp16.engine")]
    code = ["edgeseg/data/synth.py", "edgeseg/bench/report.py", "edgeseg/models/__init__.py", "benchmarks/results/bench_cpu.json"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *made, *code], cwd=root, capture_output=True, text=True)
    assert result.stdout.split() == made
