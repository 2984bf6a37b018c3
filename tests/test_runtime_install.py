"""A runtime-only install (no torch): train and export answer with one line of install advice,
and every hint it prints runs there as printed."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# Simulates `pip install .` without the train/export extras: every `import torch` fails.
NO_TORCH = "import sys; sys.modules['torch'] = None; from edgeseg.cli import main; sys.argv = ['edgeseg'] + sys.argv[1:]; main()"


@pytest.mark.parametrize(
    "args, extra",
    [
        (["train", "classifier", "--data", "data/train"], "edgeseg[train]"),
        (["train", "evaluate", "runs/classifier/classifier.pt", "--data", "data/train"], "edgeseg[train]"),
        (["export", "-c", "runs/classifier/classifier.pt"], "edgeseg[export]"),
    ],
)
def test_torch_missing_gives_one_line_of_install_advice(tmp_path, args, extra):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "torch is needed" in lines[0] and f"pip install '{extra}'" in lines[0]
    assert "download.pytorch.org/whl/cpu" in lines[0]  # how to get the CPU-only build


def test_runtime_commands_still_work_without_torch(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, "run", "--max-frames", "2", "--json"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# `pip install .` as shipped: no torch and none of the extras (onnx, onnxslim, openvino).
RUNTIME_ONLY = NO_TORCH.replace("sys.modules['torch'] = None;", "sys.modules.update(dict.fromkeys(['torch', 'onnx', 'onnxslim', 'openvino']));")
ASSETS = Path(__file__).resolve().parent.parent / "edgeseg" / "assets"
UNPINNED_TORCH = re.compile(r"pip install torch(?!==)")


def runtime_only(*args, cwd):
    return subprocess.run([sys.executable, "-c", RUNTIME_ONLY, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_export_of_an_onnx_without_onnx_is_one_install_line(tmp_path):
    result = runtime_only("export", "--onnx", ASSETS / "segmenter.onnx", "--card", ASSETS / "segmenter.json", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "onnx is needed" in lines[0] and "pip install 'onnx>=1.14'" in lines[0] and "torch" not in lines[0]


def test_bench_hints_of_a_runtime_only_install_pin_torch_and_leave_the_package_alone(tmp_path):
    """The bundled classifier on ONNX Runtime and PyTorch in FP32 and FP16: the cells that cannot run
    say how to install what they miss (torch pinned), and no command writes into edgeseg/assets."""
    result = runtime_only("bench", ASSETS / "classifier.onnx", "-b", "onnxruntime", "-b", "pytorch", "-p", "fp32", "-p", "fp16",
                          "--duration", "0.05", "--iterations", "2", "--warmup", "0", "--max-frames", "0", "--out", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join((result.stdout + result.stderr).split())  # notes wrap at the terminal width
    assert "not run: classifier onnxruntime fp16" in said and "pip install 'onnx>=1.14'" in said
    assert "not run: classifier pytorch fp32: torch is not installed (pip install torch==2.13.0" in said
    assert not UNPINNED_TORCH.search(said), said
    assert not re.search(r"--out \S*assets", said), said


def test_the_demo_prints_the_flow_s_first_command_and_it_runs_without_torch(tmp_path):
    demo = runtime_only("run", "--max-frames", "2", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    (command,) = re.findall(r"^next: (edgeseg .+)$", demo.stdout, re.M)
    assert command == "edgeseg data synth --count 400"
    synth = runtime_only(*shlex.split(command)[1:], cwd=tmp_path)
    assert synth.returncode == 0, synth.stderr[-2000:]
    assert len(list((tmp_path / "data" / "train" / "train_images").iterdir())) == 400
