"""The conformance suite's driver: extract what edgeseg (and the polygraphy it calls) reaches, run
check.py inside each version's environment, and read pycuda's names from its sources.

Scanned edgeseg files are `EDGESEG_FILES`; polygraphy is scanned in `POLYGRAPHY_FILES`, from the
classes edgeseg's own polygraphy calls name (``network_from_onnx_path`` is polygraphy's funcified
``NetworkFromOnnxPath``), following calls by name (``self.m()``, ``super().m()``, ``trt_util.f()``,
module functions, other funcified loaders) to every function they can reach.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .envs import Environment
from .extract import Extractor, Use, extract

REPO = Path(__file__).resolve().parents[2]
EDGESEG_FILES = [
    "edge/trt_compat.py",
    "edge/backends/tensorrt.py",
    "edge/cuda_context.py",
    "export/engine.py",
    "calibration/trt_calibrator.py",
    "edgeseg/envinfo.py",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "edgeseg" / "bench").glob("*.py")),
]
POLYGRAPHY_FILES = ("loader.py", "config.py", "profile.py", "util.py")
CHECK = Path(__file__).with_name("check.py")


def edgeseg_extractors(files: Sequence[str] = EDGESEG_FILES) -> List[Extractor]:
    return [extract(REPO / f, f) for f in files]


def uses_of(extractors: Iterable[Extractor], prefix: str) -> List[Use]:
    return [u for e in extractors for u in e.uses if u.root.split(".")[0] == prefix]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def polygraphy_request(site: Path, edgeseg_polygraphy: List[Use]) -> Dict[str, Any]:
    """What check.py needs for polygraphy at `site`: its reachable TensorRT uses, its classes'
    __init__ defaults and bases, and the keywords each class is constructed with."""
    folder = site / "polygraphy" / "backend" / "trt"
    extractors = {name: extract(folder / name, f"polygraphy/backend/trt/{name}") for name in POLYGRAPHY_FILES}
    classes: Dict[str, str] = {}  # class -> file
    functions: Dict[str, Set[str]] = defaultdict(set)  # bare function/method name -> labels
    for file, extractor in extractors.items():
        for cls in extractor.init_defaults:
            classes[cls] = file
        for label in {u.function for u in extractor.uses} | {c.function for c in extractor.calls}:
            functions[label.split(".")[-1]].add(label)
    funcified = {_snake(cls): cls for cls in classes}
    bases = {cls: b for e in extractors.values() for cls, b in e.bases.items()}

    def entry(cls: str) -> Set[str]:
        return {label for labels in functions.values() for label in labels if label.startswith(cls + ".")}

    def lineage(cls: str) -> List[str]:
        chain, todo = [], [cls]
        while todo:
            name = todo.pop(0)
            if name in classes and name not in chain:
                chain.append(name)
                todo.extend(bases.get(name, []))
        return chain

    passed: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    todo: List[str] = []
    for use in edgeseg_polygraphy:
        first = use.steps[0][1] if use.steps and use.steps[0][0] == "attr" else ""
        cls = funcified.get(first, first if first in classes else "")
        if cls:
            todo.extend(entry(cls))
            if len(use.steps) > 1 and use.steps[1][0] == "call":
                passed[cls].extend(asdict(k) for k in use.keywords)
    calls = [c for e in extractors.values() for c in e.calls]
    reached: Set[str] = set()
    while todo:
        label = todo.pop()
        if label in reached:
            continue
        reached.add(label)
        owner = label.split(".")[0] if "." in label else ""
        for call in (c for c in calls if c.function == label):
            head, _, name = call.callee.rpartition(".")
            name = name or call.callee
            targets: Set[str] = set()
            if head == "self":
                targets = {f"{c}.{name}" for c in lineage(owner)}
            elif head == "super()":
                targets = {f"{c}.{name}" for c in lineage(owner)[1:]}
            elif head in ("", "trt_util") and name in funcified or name in classes:
                cls = funcified.get(name, name)
                targets = entry(cls)
                passed[cls].extend(dict(asdict(k), caller=owner) for k in call.keywords)
            elif head in ("", "trt_util"):
                targets = {l for l in functions.get(name, set()) if "." not in l}
            todo.extend(t for t in targets if t in set().union(*functions.values()))
    uses = [asdict(u) for e in extractors.values() for u in e.uses if u.function in reached and u.root == "tensorrt"]
    defaults = {cls: d for e in extractors.values() for cls, d in e.init_defaults.items()}
    params = {cls: d for e in extractors.values() for cls, d in e.init_params.items()}
    return {"uses": uses, "init_defaults": defaults, "init_params": params, "passed": passed, "bases": bases, "reached": sorted(reached)}


def run_check(environment: Environment, edgeseg: List[Use], polygraphy: Sequence[Tuple[Path, Optional[Dict[str, Any]]]] = ()) -> Dict[str, Any]:
    """check.py's report for one TensorRT environment: {"tensorrt": version, "releases":
    {polygraphy version ("" without one): {"edgeseg": [...], "polygraphy": [...]}}}. `polygraphy`:
    (site, polygraphy_request or None) per release, all checked in the one process."""
    request = {"edgeseg": [asdict(u) for u in edgeseg], "polygraphy": [{"site": str(s), "request": r} for s, r in polygraphy]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
    result = subprocess.run(
        [environment.python, str(CHECK), handle.name], env=environment.env([REPO]), capture_output=True, text=True, timeout=300
    )
    Path(handle.name).unlink()
    if result.returncode != 0:
        raise RuntimeError(f"check.py failed on TensorRT {environment.version}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def failures(report: Dict[str, Any], part: str = "edgeseg") -> List[str]:
    """"file:line what" for every required name that is missing, in one release's report."""
    return [f"{r['use']['file']}:{r['use']['line']} {r['detail']}" for r in report.get(part, []) if r["status"] == "missing"]


# -- pycuda -------------------------------------------------------------------------------------------------
_CLASS = re.compile(r'py::class_<.*?>\s*\(\s*"(\w+)"', re.S)
_MEMBER = re.compile(r'\.(?:def|def_static|add_property|def_readonly|def_readwrite|staticmethod)\s*\(\s*"(\w+)"|\.DEF_SIMPLE_(?:METHOD|RO_MEMBER)(?:_WITH_ARGS)?\s*\(\s*(\w+)')
_NAMED_CLASS = re.compile(r'py::class_<[^>]*>\s*(\w+)\s*\(\s*"(\w+)"')
_CONSTANT = re.compile(r'(\w+)\.attr\s*\(\s*"(\w+)"\s*\)\s*=')
_FUNCTION = re.compile(r'py::def\s*\(\s*"(\w+)"|(?:DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?|DECLARE_EXC)\s*\(\s*(\w+)')


def pycuda_names(sources: Path) -> Dict[str, Set[str]]:
    """{"": module functions and classes, "Stream": its members, ...} of pycuda.driver, read from
    the C++ wrapper (src/wrapper/*.cpp: each ``py::class_<...>("Name")`` statement with its .def /
    DEF_SIMPLE_METHOD / add_property / staticmethod members, a ``py::class_<...> var("Name")`` with
    its later ``var.attr("MEMBER") = ...`` constants (host_alloc_flags); py::def and
    DEF_SIMPLE_FUNCTION functions; DECLARE_EXC exceptions) and pycuda/driver.py's own top-level definitions (it re-exports the extension)."""
    names: Dict[str, Set[str]] = defaultdict(set)
    for cpp in sorted((sources / "src" / "wrapper").glob("*.cpp")):
        variables: Dict[str, str] = {}
        for statement in cpp.read_text(errors="replace").split(";"):
            found = _CLASS.search(statement)
            if found:
                names[""].add(found.group(1))
                names[found.group(1)].update(a or b for a, b in _MEMBER.findall(statement[found.end():]))
            named = _NAMED_CLASS.search(statement)
            if named:
                variables[named.group(1)] = named.group(2)
                names[""].add(named.group(2))
            for variable, member in _CONSTANT.findall(statement):
                if variable in variables:
                    names[variables[variable]].add(member)
            names[""].update(a or b for a, b in _FUNCTION.findall(statement))
    driver = (sources / "pycuda" / "driver.py").read_text()
    names[""].update(re.findall(r"^def (\w+)", driver, re.M))
    names[""].update(re.findall(r"^(\w+) = ", driver, re.M))
    names[""].update(re.findall(r"^class (\w+)", driver, re.M))
    return names


# What a pycuda call returns, where the C++ wrapper's Python name differs from the C++ type it
# returns (pycuda doc/source/driver.rst): followed so members of the result are checked too.
PYCUDA_RETURNS = {"retain_primary_context": "Context", "make_context": "Context", "mem_alloc": "DeviceAllocation", "Device": "Device"}


def check_pycuda(names: Dict[str, Set[str]], uses: List[Use]) -> List[Dict[str, Any]]:
    """pycuda.driver chains: a module name must be a function or class of pycuda.driver; a member of a
    class or of an object made by calling one (or a PYCUDA_RETURNS function) must be that class's."""
    results = []
    for use in uses:
        status, detail = "ok", use.name()
        kind, current = "module", ""
        if use.root != "pycuda.driver":
            status, detail = "unresolved", f"{use.name()}: not pycuda.driver"
        for step in use.steps if status == "ok" else []:
            if step[0] == "attr":
                if kind == "value":
                    status, detail = "unresolved", f"{use.name()}: past {current} not typed in the sources"
                    break
                pool = names[""] if kind == "module" else names[current]
                if step[1] not in pool:
                    status = "probe" if use.probe else "missing"
                    detail = f"pycuda.driver{'.' + current if current else ''} has no {step[1]!r}"
                    break
                is_class = kind == "module" and step[1] in names and step[1][:1].isupper()
                kind, current = ("class" if is_class else "member"), step[1]
            elif step[0] == "call":
                returned = current if kind == "class" else PYCUDA_RETURNS.get(current, "")
                kind, current = ("object", returned) if returned else ("value", current)
        results.append({"use": asdict(use), "status": status, "detail": detail})
    return results


# -- the table ---------------------------------------------------------------------------------------------
def table(reports: Dict[str, Dict[str, Dict[str, Any]]], release: str, pycuda: Optional[List[Dict[str, Any]]] = None) -> str:
    """Markdown: TensorRT version x module x names checked (ok / not reached / tolerated or probe /
    unresolved) x result, for one polygraphy release; pycuda (version-independent) last."""
    lines = ["| TensorRT | module | names | ok | not reached | probe/tolerated | unresolved | result |", "|---|---|---|---|---|---|---|---|"]

    def row(trt: str, module: str, results: List[Dict[str, Any]]) -> None:
        counts = Counter(r["status"] for r in results)
        result = "FAIL " + str(counts["missing"]) if counts["missing"] else "pass"
        lines.append(f"| {trt} | {module} | {len(results)} | {counts['ok']} | {counts['not reached']} | "
                     f"{counts['probe'] + counts['tolerated']} | {counts['unresolved']} | {result} |")

    for trt, by_release in reports.items():
        report = by_release[release]
        by_file: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
        for r in report["edgeseg"]:
            by_file[r["use"]["file"]].append(r)
        for file in sorted(by_file):
            row(trt, file, by_file[file])
        row(trt, f"polygraphy {release} internals", report.get("polygraphy", []))
    if pycuda is not None:
        row("any", "pycuda 2026.1 (sources)", pycuda)
    return "\n".join(lines)


def main() -> int:
    """Print the table for every TensorRT environment: `cd tests && python -m trt_api.suite [release]`."""
    from . import envs

    extractors = edgeseg_extractors()
    polygraphy_uses = uses_of(extractors, "polygraphy")
    release = sys.argv[1] if len(sys.argv) > 1 else envs.POLYGRAPHY[-1]
    sites = [(envs.polygraphy(release), polygraphy_request(envs.polygraphy(release), polygraphy_uses))]
    versions = list(envs.TENSORRT) + (list(envs.SLOW) if os.environ.get("EDGESEG_TRT_API_SLOW") == "1" else [])
    reports = {v: run_check(envs.ensure(v), uses_of(extractors, "tensorrt") + polygraphy_uses, sites)["releases"] for v in versions}
    print(table(reports, release, check_pycuda(pycuda_names(envs.pycuda_sources()), uses_of(extractors, "pycuda"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
