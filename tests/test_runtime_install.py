"""A runtime-only install (no torch): train and export answer with one line of install advice."""
import subprocess
import sys

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
