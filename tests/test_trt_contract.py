"""TensorRT contract by use: edgeseg's build (onnx_to_engine through the real polygraphy), load and
infer (TensorRTBackend) and implicit-INT8 calibration (TrtCalibrator) run, on every supported
TensorRT, against stand-ins that take their contract from the real bindings (pybind11 signatures,
enums, calibrator bases) and a CUDA model where async work happens at synchronisation, device
buffers have their allocated sizes and output shapes follow the execution context
(tests/trt_api/bindings.py, scenarios in tests/trt_api/contract.py). One subprocess per version.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trt_api import envs

pytestmark = pytest.mark.trt_api

CONTRACT = Path(__file__).resolve().parent / "trt_api" / "contract.py"
VERSIONS = list(envs.TENSORRT)
SCENARIOS = [
    "fp32_build_load_infer",
    "fp16_on_this_version",
    "int8_qdq",
    "implicit_int8_calibrates",
    "calibrator_overrides_match_the_base",
    "dla_engine_runs_on_its_core",
    "pagelocked_fallback",
    "discrete_gpu_copies",
    "engines_share_one_scratch",
    "jetson_platform_is_recorded_and_checked",
    "timing_cache_per_version_and_gpu",
]


@pytest.fixture(scope="module")
def models(tiny_models, tiny_calibration, tmp_path_factory):
    """The tiny segmenter's FP32 ONNX, its symmetric (trt) QDQ model and the calibration set."""
    from edgeseg.calibration.qdq import onnx_to_qdq, qdq_path

    folder = tmp_path_factory.mktemp("contract_models")
    fp32 = tiny_models["segmenter"]
    qdq = onnx_to_qdq(fp32, tiny_calibration, folder / qdq_path(fp32, "trt").name, flavour="trt").path
    return {"fp32": str(fp32), "qdq": str(qdq), "calibration": str(tiny_calibration.path)}


def run_contract(version, request, folder):
    """{scenario: None | failure} from contract.py inside TensorRT `version`'s environment."""
    try:
        environment = envs.ensure(version)
    except envs.Unavailable as exc:
        pytest.skip(f"TensorRT {version} bindings unavailable: {exc}")
    request_file = folder / "request.json"
    request_file.write_text(json.dumps(dict(request, out=str(folder))))
    result = subprocess.run(
        [sys.executable, str(CONTRACT), str(request_file)], env=environment.env([CONTRACT.parents[2]]),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcomes(models, tmp_path_factory):
    return {v: run_contract(v, models, tmp_path_factory.mktemp(f"contract-{v}")) for v in VERSIONS}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("version", VERSIONS)
def test_contract(outcomes, version, scenario):
    assert outcomes[version][scenario] is None, outcomes[version][scenario]
