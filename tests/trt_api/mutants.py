"""Plant realistic TensorRT-path mistakes one at a time and report which the tests catch.

``python tests/trt_api/mutants.py [--versions 10.3.0,11.4.0.106] [--only N,M]`` (from the repo root, in
the venv). First the contract tests run once unchanged (they must pass; their models are kept under
a temporary basetemp); then for each mutant: apply it to the source, run the contract scenarios on
every version (tests/trt_api/contract.py, the models from the first run), the CPU unit tests of
the TensorRT path and the name/signature suite (tests/test_trt_api.py), revert the file, and
record caught / missed. Prints a caught/missed table by file; exit 0 always (it measures).
The source is restored in a `finally`, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
UNIT_TESTS = ["tests/test_trt_compat.py", "tests/test_trt_calibrator.py", "tests/test_trt_api.py"]


@dataclass(frozen=True)
class Mutant:
    file: str
    kind: str
    edits: Tuple[Tuple[str, str], ...]  # (exact text, replacement), each found exactly once


def m(file: str, kind: str, *edits: Tuple[str, str]) -> Mutant:
    return Mutant(file, kind, tuple(edits))


BACKEND, ENGINE, CALIB, COMPAT = "edge/backends/tensorrt.py", "export/engine.py", "calibration/trt_calibrator.py", "edge/trt_compat.py"
CUDA = "edge/cuda_context.py"
MUTANTS: List[Mutant] = [
    # -- runtime: arity / argument types, ordering, sizing, shapes ------------------------------------
    m(BACKEND, "stream object where a handle is expected", ("execute_async_v3(self._stream.handle)", "execute_async_v3(self._stream)")),
    m(BACKEND, "stream synchronised before the device-to-host copies",
      ("computed.record(self._stream)\n", "computed.record(self._stream)\n        self._stream.synchronize()\n"),
      ("copied_out.record(self._stream)\n        self._stream.synchronize()\n", "copied_out.record(self._stream)\n")),
    m(BACKEND, "output shape read from the engine (-1) instead of the context",
      ("shape = tuple(self._context.get_tensor_shape(b.name))", "shape = tuple(self._engine.get_tensor_shape(b.name))")),
    m(BACKEND, "buffers sized from the profile's min shape", ("int(np.prod(high)), dtype, mapped", "int(np.prod(low)), dtype, mapped")),
    m(BACKEND, "shapes set at the profile's min before sizing outputs",
      ("self._set_shape(name, self._profile(name)[1])", "self._set_shape(name, self._profile(name)[0])")),
    m(BACKEND, "set_tensor_address arguments swapped",
      ("set_tensor_address(name, binding.address)", "set_tensor_address(binding.address, name)")),
    m(BACKEND, "device-to-host copy with source and destination swapped",
      ("cuda.memcpy_dtoh_async(view, b.device, self._stream)", "cuda.memcpy_dtoh_async(b.device, view, self._stream)")),
    m(BACKEND, "pagelocked outputs handed out without a copy",
      ("if not b.is_input and not b.registered:", "if not b.is_input and b.registered:")),
    m(BACKEND, "DLA core not set on the runtime", ("runtime.DLA_core = core", "pass")),
    m(BACKEND, "profile shape queried without the profile index",
      ("self._engine.get_tensor_profile_shape(name, 0)", "self._engine.get_tensor_profile_shape(name)")),
    m(BACKEND, "device buffers not freed on deactivate", ("            if b.device is not None:\n                b.device.free()\n", "")),
    m(BACKEND, "feed written into the pinned input after its async copy is enqueued (race)",
      ('                np.copyto(b.host[: array.size].reshape(array.shape), array, casting="same_kind")\n', ""),
      ("                cuda.memcpy_htod_async(b.device, b.host[: feed[b.name].size], self._stream)\n",
       "                cuda.memcpy_htod_async(b.device, b.host[: feed[b.name].size], self._stream)\n"
       '                np.copyto(b.host[: feed[b.name].size].reshape(feed[b.name].shape), feed[b.name], casting="same_kind")\n')),
    # -- build: options on the branch the version takes, profiles, DLA -----------------------------------
    m(ENGINE, "FP16 requested by precision name (reaches 11.x)", ('if "FP16" in plan.builder_flags:', 'if options.precision == "fp16":')),
    m(ENGINE, "INT8 flag left out for QDQ on weakly typed networks", ('    if "INT8" in plan.builder_flags:\n        config_args["int8"] = True\n', "")),
    m(ENGINE, "profile opt and max swapped", ("min=low, opt=opt, max=high", "min=low, opt=high, max=opt")),
    m(ENGINE, "GPU fallback flag set with a wrong arity", ("set_flag(trt.BuilderFlag.GPU_FALLBACK)", "set_flag(trt.BuilderFlag.GPU_FALLBACK, True)")),
    m(ENGINE, "DLA core passed as text", ("builder_config.DLA_core = options.dla_core", "builder_config.DLA_core = str(options.dla_core)")),
    m(ENGINE, "strongly typed parse left out", ('network_args["strongly_typed"] = True', "pass")),
    m(ENGINE, "FP32 ONNX parsed where the FP16 variant is planned",
      ('model = _fp16_variant(source, scratch) if plan.onnx == "fp16" else source', "model = source")),
    # -- calibrator: overrides and base initialisation ---------------------------------------------------
    m(CALIB, "binding base __init__ not called", ("base.__init__(self)  # required by the pybind trampoline", "pass")),
    m(CALIB, "get_batch override with the wrong signature",
      ("def get_batch(self, names: List[str]) -> Optional[List[int]]:\n            return self._owner._get_batch(names)",
       "def get_batch(self) -> Optional[List[int]]:\n            return self._owner._get_batch([self._owner.input_name])")),
    m(CALIB, "read_calibration_cache override with an extra parameter",
      ("def read_calibration_cache(self) -> Optional[bytes]:", "def read_calibration_cache(self, length: int) -> Optional[bytes]:")),
    m(CALIB, "device allocation returned instead of its pointer", ("return [int(self._device)]", "return [self._device]")),
    m(CALIB, "batch copied with host and device swapped", ("cuda.memcpy_htod, self._device, batch", "cuda.memcpy_htod, batch, self._device")),
    m(CALIB, "batch size reported as the whole shape", ("return self._owner.batch_shape[0]", "return self._owner.batch_shape")),
    # -- version decisions ----------------------------------------------------------------------------------
    m(COMPAT, "FP16 builder flag planned on 11.x", ('return PrecisionPlan("fp16", "fp16", True, (), False)', 'return PrecisionPlan("fp16", "fp16", True, ("FP16",), False)')),
    m(COMPAT, "implicit INT8 offered on 11.x", ("implicit_int8=parsed[0] < 11", "implicit_int8=parsed[0] <= 11")),
    m(COMPAT, "QDQ on weak typing planned without the INT8 flag", ('return PrecisionPlan("int8", "qdq", False, ("INT8",), False)', 'return PrecisionPlan("int8", "qdq", False, (), False)')),
    m(COMPAT, "DLA core read from the wrong card flag", ('if name == "dla_core":', 'if name == "dla":')),
    m(COMPAT, "version compatibility offered on 8.5", ("version_compatible=parsed[:2] >= (8, 6)", "version_compatible=parsed[:2] >= (8, 5)")),
    # -- Jetson ------------------------------------------------------------------------------------------
    m(COMPAT, "platform not compared", ("reason = _platform_mismatch(artifact, flags, platform) if platform is not None else None", "reason = None")),
    m(COMPAT, "workspace fractions of integrated and discrete GPUs swapped", ("(4 if integrated else 2)", "(2 if integrated else 4)")),
    m(ENGINE, "DLA placement from the wrong query", ("if not config.can_run_on_DLA(layer)]", "if not config.can_run_on_DLA(layer.name)]")),
    m(ENGINE, "dynamic profile accepted for DLA", ("if self.dla_core is not None and not low == opt == high:", "if False:")),
    m(ENGINE, "timing cache shared across versions and GPUs",
      ("timing_cache=options.timing_cache and keyed_timing_cache(options.timing_cache, trt.__version__, gpu)", "timing_cache=options.timing_cache")),
    m(BACKEND, "platform left out of the load check",
      ("gpu.compute_capability if gpu else None, host_platform(gpu)", "gpu.compute_capability if gpu else None")),
    # -- Jetson zero copy: mapped pinned memory ------------------------------------------------------------
    m(BACKEND, "mapped buffer bound by its host address instead of its device pointer", ("int(host.base.get_device_pointer())", "host.ctypes.data")),
    m(BACKEND, "zero-copy host buffers pinned without DEVICEMAP", ("dtype, mapped=self.zero_copy)", "dtype)")),
    m(CUDA, "zero copy chosen wherever host memory can be mapped (discrete GPUs too)",
      ("return self.integrated and self.maps_host_memory", "return self.maps_host_memory")),
    # -- one execution-context scratch shared by the engines ---------------------------------------------
    m(BACKEND, "scratch never given to the context (set_device_memory forgotten)",
      ("            trt_compat.bind_scratch(self._context, scratch, self._scratch_size)\n", "")),
    m(BACKEND, "scratch bound once, not again after another engine grew it", ("if scratch != self._scratch_bound:", "if self._scratch_bound is None:")),
    m(BACKEND, "context created with its own device memory",
      ("trt_compat.context_without_scratch(trt, self._engine)", "self._engine.create_execution_context()")),
    m(BACKEND, "each engine in a CUDA thread of its own (nothing shared)", ("CudaThread.shared(self.device)", "CudaThread(self.device)")),
    m(CUDA, "shared scratch sized by the first engine only", ("if self._scratch is None or nbytes > self._scratch_bytes:", "if self._scratch is None:")),
    m(CUDA, "smaller scratch not freed when it grows",
      ("            if self._scratch is not None:\n                self._scratch.free()\n                self._scratch = None\n", "")),
    m(COMPAT, "8.x context creation on every version",
      ('    if hasattr(trt, "ExecutionContextAllocationStrategy"):  # 10.0+\n        return engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)\n', "")),
    m(COMPAT, "STATIC allocation strategy (the context allocates its own scratch)",
      ("trt.ExecutionContextAllocationStrategy.USER_MANAGED", "trt.ExecutionContextAllocationStrategy.STATIC")),
    m(COMPAT, "scratch size from the 8.x property on every version",
      ('int(engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size)', "int(engine.device_memory_size)")),
    m(COMPAT, "10.x scratch bound without its size", ("context.set_device_memory(address, size)", "context.set_device_memory(address)")),
]


def apply(mutant: Mutant) -> str:
    """Mutate the file; returns the original text (to restore)."""
    path = REPO / mutant.file
    original = text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutant {mutant.kind!r}: {old!r} occurs {text.count(old)} times in {mutant.file}")
        text = text.replace(old, new)
    path.write_text(text)
    return original


def contract_failures(requests: Dict[str, Path], workers: int) -> List[str]:
    def one(item: Tuple[str, Path]) -> List[str]:
        version, request = item
        result = subprocess.run([sys.executable, str(REPO / "tests/trt_api/contract.py"), str(request)],
                                env=envs.ensure(version).env([REPO]), capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return [f"{version}: contract.py crashed"]
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        return [f"{version} {name}: {why}" for name, why in outcome.items() if why]

    with ThreadPoolExecutor(workers) as pool:
        return [f for found in pool.map(one, requests.items()) for f in found]


def unit_failures() -> List[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *UNIT_TESTS], cwd=REPO, capture_output=True, text=True)
    return [] if result.returncode == 0 else [line for line in result.stdout.splitlines() if line.startswith("FAILED")][:1] or ["unit tests failed"]


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=",".join(envs.TENSORRT))
    parser.add_argument("--only", default="", help="mutant numbers, e.g. 1,5")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(list(argv) or None)
    versions = args.versions.split(",")
    chosen = [int(n) for n in args.only.split(",") if n] or list(range(1, len(MUTANTS) + 1))
    with tempfile.TemporaryDirectory(prefix="edgeseg-mutants-") as base:
        started = time.perf_counter()
        baseline = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_trt_contract.py", f"--basetemp={base}"],
                                  cwd=REPO, capture_output=True, text=True)
        if baseline.returncode != 0:
            print(baseline.stdout[-3000:])
            raise SystemExit("the contract tests fail on the unchanged source: fix that first")
        print(f"baseline contract tests: {time.perf_counter() - started:.0f} s")
        requests = {v: next(Path(base).glob(f"contract-{v}*")) / "request.json" for v in versions}
        rows = []
        for number in chosen:
            mutant = MUTANTS[number - 1]
            original = apply(mutant)
            try:
                failed = contract_failures(requests, args.workers) + unit_failures()
            finally:
                (REPO / mutant.file).write_text(original)
            rows.append((number, mutant, failed))
            print(f"{number:2d} {'caught' if failed else 'MISSED'} {mutant.file}: {mutant.kind}" + (f"  <- {failed[0][:160]}" if failed else ""), flush=True)
    by_file: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
    for _, mutant, failed in rows:
        by_file[mutant.file][0 if failed else 1] += 1
    print("\n| file | planted | caught | missed |\n|---|---|---|---|")
    for file, (caught, missed) in sorted(by_file.items()):
        print(f"| {file} | {caught + missed} | {caught} | {missed} |")
    total = sum(c for c, _ in by_file.values())
    print(f"| all | {len(rows)} | {total} | {len(rows) - total} |\n\ncaught {total}/{len(rows)} = {100 * total / max(len(rows), 1):.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
