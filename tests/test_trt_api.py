"""TensorRT API conformance: every TensorRT / polygraphy / pycuda name edgeseg reaches, checked
against the real bindings of each supported TensorRT (imported on a stub library, see
tests/trt_api/envs.py), on the branch edgeseg's own version decisions take there; polygraphy's own
TensorRT uses on the paths edgeseg drives, for every polygraphy release, prove the floor in
pyproject. This checks names, signatures and version logic, not behaviour (nothing can run).

Environments are cached (~/.cache/edgeseg/trt-api, built by `.ci/run` through
tests/trt_api/envs.py); without the registry the tests skip, saying so. TensorRT 8.5.3.1 (JetPack 5,
a 550 MB wheel for Python 3.8) runs only with EDGESEG_TRT_API_SLOW=1.
"""
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from trt_api import envs, suite
from trt_api.extract import extract_source

pytestmark = pytest.mark.trt_api

VERSIONS = list(envs.TENSORRT) + (list(envs.SLOW) if os.environ.get("EDGESEG_TRT_API_SLOW") == "1" else [])
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def polygraphy_floor(extra: str) -> str:
    """The `polygraphy>=X` floor of a pyproject extra."""
    text = PYPROJECT.read_text()
    block = re.search(rf"^{extra} = \[(.*?)\]$", text, re.M | re.S).group(1)
    return re.search(r'"polygraphy>=([\d.]+)"', block).group(1)


@pytest.fixture(scope="session")
def environments():
    try:
        return {version: envs.ensure(version) for version in VERSIONS}
    except envs.Unavailable as exc:
        pytest.skip(f"TensorRT bindings environments unavailable: {exc}")


@pytest.fixture(scope="session")
def polygraphy_sites():
    try:
        return {version: envs.polygraphy(version) for version in envs.POLYGRAPHY}
    except envs.Unavailable as exc:
        pytest.skip(f"polygraphy releases unavailable: {exc}")


@pytest.fixture(scope="session")
def edgeseg_uses():
    extractors = suite.edgeseg_extractors()
    return {"tensorrt": suite.uses_of(extractors, "tensorrt"), "polygraphy": suite.uses_of(extractors, "polygraphy"),
            "pycuda": suite.uses_of(extractors, "pycuda")}


@pytest.fixture(scope="session")
def reports(environments, polygraphy_sites, edgeseg_uses):
    """{tensorrt version: {polygraphy release: report}} for every release the suite knows (one
    subprocess per TensorRT version)."""
    releases = [(site, suite.polygraphy_request(site, edgeseg_uses["polygraphy"])) for site in polygraphy_sites.values()]
    uses = edgeseg_uses["tensorrt"] + edgeseg_uses["polygraphy"]
    return {version: suite.run_check(environment, uses, releases)["releases"] for version, environment in environments.items()}


def test_the_extractor_finds_what_the_code_calls(edgeseg_uses):
    """Derived, not listed: the named-tensor API, the builder's config and pycuda's stream are found."""
    names = {u.name() for u in edgeseg_uses["tensorrt"]}
    assert "tensorrt.IExecutionContext.execute_async_v3()" in names and "tensorrt.ICudaEngine.create_execution_context()" in names
    assert "tensorrt.IBuilderConfig.set_flag()" in names and "tensorrt.MemoryPoolType.WORKSPACE" in names
    assert {"CreateConfig", "network_from_onnx_path", "engine_bytes_from_network"} <= {u.steps[0][1] for u in edgeseg_uses["polygraphy"]}
    assert "pycuda.driver.Stream().synchronize()" in {u.name() for u in edgeseg_uses["pycuda"]}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("release", ["floor", "newest"])
def test_every_name_edgeseg_reaches_exists(version, release, reports):
    """edgeseg's TensorRT names, and its polygraphy calls and keywords, on the runtime floor and
    the newest polygraphy: none missing where edgeseg's decisions reach them."""
    report = reports[version][polygraphy_floor("trt") if release == "floor" else envs.POLYGRAPHY[-1]]
    assert suite.failures(report) == []
    assert suite.failures(report, "polygraphy") == []
    counts = Counter(r["status"] for r in report["edgeseg"])
    assert counts["ok"] >= 40, counts  # the chains really resolved on the bindings
    assert counts["unresolved"] <= 2, [r["detail"] for r in report["edgeseg"] if r["status"] == "unresolved"]


def test_version_decisions_choose_the_branch(reports):
    """The platform queries are reached up to 10.x and not on 11.x (trt_compat.features)."""
    for trt, by_release in reports.items():
        report = by_release[envs.POLYGRAPHY[-1]]
        status = {r["status"] for r in report["edgeseg"] if "platform_has_fast" in str(r["use"]["steps"])}
        assert status == ({"not reached"} if trt.startswith("11.") else {"ok"}), (trt, status)


def test_polygraphy_floor_works_on_every_tensorrt_and_the_release_below_does_not(reports):
    floor, releases = polygraphy_floor("trt"), list(envs.POLYGRAPHY)
    assert floor in releases, f"the floor {floor} must be a release the suite checks"
    broken = {
        (trt, poly): suite.failures(report, "polygraphy") + suite.failures(report)
        for trt, by_release in reports.items() for poly, report in by_release.items()
    }
    assert {k: v for k, v in broken.items() if k[1] == floor and v} == {}
    below = releases[releases.index(floor) - 1]
    assert any(v for k, v in broken.items() if k[1] == below), f"polygraphy {below} shows no failure: the floor {floor} is not proven"
    newer = releases[releases.index(floor):]
    assert not any(v for k, v in broken.items() if k[1] in newer), "a release above the floor fails"


def test_tests_floor_is_the_first_with_simple_compare_func(polygraphy_sites):
    """The tests compare with SimpleCompareFunc; the dev floor is the first release that has it, and
    is not below the runtime floor."""
    floor, releases = polygraphy_floor("dev"), list(envs.POLYGRAPHY)
    has = {v: "class SimpleCompareFunc" in (polygraphy_sites[v] / "polygraphy" / "comparator" / "compare.py").read_text() for v in releases}
    assert has[floor] and not has[releases[releases.index(floor) - 1]]
    assert releases.index(floor) >= releases.index(polygraphy_floor("trt"))


def test_a_wrong_attribute_is_reported(environments):
    """BuilderFlag.FP16 is gone in 11: reached there it fails; under the code's own FP16 decision it is
    not reached on 11 and passes on 10."""
    snippet = '''
def configure(trt, builder_config, plan):
    if "FP16" in plan.builder_flags:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    builder_config.set_flag(trt.BuilderFlag.FP16)
'''
    uses = [u for u in extract_source(snippet, "snippet.py").uses if u.steps[-1] == ["attr", "FP16"]]
    assert [u.line for u in uses] == [4, 5]
    for version in ("10.16.1.11", "11.4.0.106"):
        report = suite.run_check(environments[version], uses)["releases"][""]
        status = [r["status"] for r in report["edgeseg"]]
        if version.startswith("11."):
            assert status == ["not reached", "missing"]
            assert suite.failures(report) == ["snippet.py:5 tensorrt.BuilderFlag has no 'FP16'"]
        else:
            assert status == ["ok", "ok"]


def test_a_wrong_keyword_is_reported(environments, polygraphy_sites):
    snippet = '''
from polygraphy.backend.trt import CreateConfig
def config(trt, engine):
    engine.get_tensor_profile_shape(name="x", profile_index=0, extra=1)
    return CreateConfig(fp16=True, fastest=True)
'''
    newest = envs.POLYGRAPHY[-1]
    report = suite.run_check(environments["10.3.0"], extract_source(snippet).uses, [(polygraphy_sites[newest], None)])
    fails = suite.failures(report["releases"][newest])
    assert len(fails) == 2 and "extra" in fails[0] and "fastest" in fails[1], fails


@pytest.fixture(scope="session")
def pycuda_names():
    try:
        return suite.pycuda_names(envs.pycuda_sources())
    except envs.Unavailable as exc:
        pytest.skip(f"pycuda sources unavailable: {exc}")


def test_every_pycuda_name_edgeseg_uses_is_in_pycuda_2026_1(pycuda_names, edgeseg_uses):
    results = suite.check_pycuda(pycuda_names, edgeseg_uses["pycuda"])
    assert [r["detail"] for r in results if r["status"] == "missing"] == []
    assert sum(r["status"] == "ok" for r in results) >= 15
    wrong = extract_source("import pycuda.driver as cuda\ncuda.Stream().sync()\ncuda.mem_alloc_async(1)\n").uses
    assert [r["status"] for r in suite.check_pycuda(pycuda_names, wrong)] == ["missing", "missing"]


def test_implicit_int8_calibrator_bases_exist_where_edgeseg_offers_them(environments):
    """The calibrator classes trt_calibrator looks up by name (ALGORITHMS) and the methods its
    binding subclass overrides, required wherever trt_compat.features says implicit INT8 exists."""
    import ast

    from edgeseg.calibration import trt_calibrator
    from trt_api.extract import Use

    tree = ast.parse(Path(trt_calibrator.__file__).read_text())
    overridden = sorted(
        f.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == "_Calibrator"
        for f in c.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("__")
    )
    assert overridden == ["get_batch", "get_batch_size", "read_calibration_cache", "write_calibration_cache"]
    guard = [{"field": "feats.implicit_int8"}]
    uses = [Use("tensorrt", [["attr", base], ["attr", method]], "calibration/trt_calibrator.py", 0, guard)
            for base in trt_calibrator.ALGORITHMS.values() for method in overridden]
    for version, environment in environments.items():
        report = suite.run_check(environment, uses)["releases"][""]
        statuses = {r["status"] for r in report["edgeseg"]}
        assert statuses == ({"not reached"} if version.startswith("11.") else {"ok"}), (version, suite.failures(report))
