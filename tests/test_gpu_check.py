"""benchmarks/gpu_check.sh's non-CUDA part, so the script a bare GPU machine runs cannot rot: the
dry run lists every prerequisite (what the machine must provide, what the repository carries),
writes its JSON to the folder given, and the output folder is never inside the repository."""
import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def gpu_check(*args, out_env=None):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    if out_env:
        env["OUT"] = str(out_env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_dry_run_reports_every_prerequisite_and_writes_its_json(tmp_path):
    """--out defaults to $OUT (the device tool's output folder)."""
    out = tmp_path / "gpu check"
    result = gpu_check("--dry-run", out_env=out)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] if line.split()[1] != "carried:" else line.split()[2]
              for line in result.stderr.splitlines() if line.startswith(("  ok ", "  MISSING "))}
    machine = {"nvcc", "cuda.h", "g++", "Python.h", "numpy", "torch", "onnx", "onnxruntime", "cv2"}
    carried = {"pycuda", "siphash24", "pytools", "platformdirs", "mako", "pytest", "typer", "rich", "wheel", "setuptools"}
    assert machine | carried <= listed, (machine | carried) - listed
    assert "not needed: TensorRT, an installed pycuda, internet access" in result.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["schema"] == "edgeseg.gpu-check/1"
    assert report["missing_prerequisites"] == result.stderr.count("  MISSING ")
    assert report["environment"]["edgeseg"]  # the fold step imported edgeseg and described the machine


def test_output_must_be_given_and_outside_the_repository(tmp_path):
    inside = gpu_check("--dry-run", "--out", str(SCRIPT.parent / "results"))
    assert inside.returncode == 2 and "inside the repository" in inside.stderr
    nowhere = gpu_check("--dry-run")
    assert nowhere.returncode == 2 and "pass --out DIR or set $OUT" in nowhere.stderr
    assert not (SCRIPT.parent / "results" / "gpu_check.json").exists()
