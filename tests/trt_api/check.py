"""Check extracted uses against the TensorRT bindings importable in THIS process (run by the suite in
a subprocess inside one version's environment: ``python check.py request.json``; prints JSON).

Resolution follows each chain on the real objects: module attributes, class members (methods,
properties, enum members), and what a call returns, read from the pybind11 signature in the
method's ``__doc__`` (``deserialize_cuda_engine(self: Runtime, ...) -> ICudaEngine``); iterating an
object is its ``__getitem__``'s return type. Keywords are checked against those signatures (or
``inspect.signature`` for Python callables such as polygraphy's). A chain the real objects cannot
type further (a plain Python return value) is reported "unresolved", never passed silently.

Whether a use is *required* on this version follows edgeseg's own decisions: for every precision
and calibration `trt_compat.plan_precision` accepts on this version, the use's conditions are
evaluated three-valued (true / false / unknown) with `trt_compat.features(version)`, that plan,
``hasattr`` on the real bindings, and polygraphy's ``mod.version(trt.__version__)`` comparisons and
``self.x`` values (from its ``__init__`` defaults and the keywords the caller passes); a use is
required when some plan makes none of its conditions false. A missing name in a required use is
"missing" (a failure), unless the code tolerates it (``except AttributeError``).
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from edgeseg.errors import EdgesegError


def _trt_compat() -> Any:
    """edgeseg's version decisions: the installed package, or (an interpreter edgeseg is not
    installed for, e.g. Python 3.8 for TensorRT 8.5) the source file itself."""
    try:
        from edgeseg.edge import trt_compat as module
    except ImportError:
        import importlib.util
        from pathlib import Path

        path = Path(__file__).resolve().parents[2] / "edge" / "trt_compat.py"
        spec = importlib.util.spec_from_file_location("edgeseg_trt_compat", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look their module up
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


trt_compat = _trt_compat()

UNKNOWN = None  # a condition that may go either way
NOT_KNOWN = object()  # a value this checker does not know (None is a value)
# Settings polygraphy reads that are fixed for TensorRT (not TensorRT-RTX) builds.
KNOWN = {"config.USE_TENSORRT_RTX": False}
_SIGNATURE = re.compile(r"^(?:\d+\. )?(\w*)\((.*)\)(?: -> (.+))?$")
# An option a user asks for is refused before any build where the version lacks it
# (trt_compat.check_portability_options), so code under it is reached only where the feature exists.
IMPLIED = {"options.version_compatible": "version_compatible", "options.hardware_compatible": "hardware_compatible"}


# -- pybind11 signatures -------------------------------------------------------------------------------
def _split(params: str) -> List[str]:
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[(" and 1 or 0
        depth -= char in "])" and 1 or 0
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + ([current.strip()] if current.strip() else [])


def signatures(obj: Any) -> List[Tuple[List[str], Optional[str]]]:
    """[(parameter names, return type text)] of every overload a pybind11 docstring lists."""
    found: List[Tuple[List[str], Optional[str]]] = []
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return found  # Python code: inspect.signature knows better than its docstring
    for line in (getattr(obj, "__doc__", None) or "").splitlines():
        match = _SIGNATURE.match(line.strip())
        if not match or match.group(2) == "*args, **kwargs":
            continue
        names = [p.split(":")[0].split("=")[0].strip() for p in _split(match.group(2))]
        found.append(([n for n in names if n and n != "self"], match.group(3)))
    return found


def _funcified_class(func: Any) -> Any:
    """`network_from_onnx_path` -> polygraphy's NetworkFromOnnxPath (mod.export(funcify=True))."""
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    name = "".join(part.title() for part in getattr(func, "__name__", "").split("_"))
    candidates = [getattr(m, name, None) for m in (module, sys.modules.get("polygraphy.backend.trt")) if m is not None]
    return next((c for c in candidates if inspect.isclass(c)), None)


def _pybind(cls: Any) -> bool:
    """A class defined by the TensorRT extension (its members are all on the class)."""
    return inspect.isclass(cls) and type(cls).__name__ == "pybind11_type"


class Resolver:
    def __init__(self, trt: Any) -> None:
        self.trt = trt

    def type_named(self, text: Optional[str]) -> Tuple[str, Any]:
        """A pybind return annotation as a kind: ("instance", cls) / ("list", cls) / ("value", None)."""
        if not text:
            return ("value", None)
        text = text.strip()
        listed = re.match(r"^(?:list|List|typing\.List)\[(.+)\]$", text)
        name = (listed.group(1) if listed else text).split(".")[-1]
        cls = getattr(self.trt, name, None)
        if inspect.isclass(cls):
            return ("list" if listed else "instance", cls)
        return ("value", None)

    def walk(self, root: str, steps: List[List[Any]], keywords: List[str]) -> Dict[str, Any]:
        """{"status": ok|missing|unresolved, "detail": ...} for one chain."""
        try:
            current: Tuple[str, Any] = ("object", importlib.import_module(root))
        except ImportError as exc:
            return {"status": "missing", "detail": f"import {root}: {exc}"}
        trail = root
        for index, step in enumerate(steps):
            kind, obj = current
            last = index == len(steps) - 1
            if step[0] == "list":
                break
            if kind == "value":
                return {"status": "unresolved", "detail": f"{trail}: a plain value, not followed further"}
            if step[0] == "attr":
                name = step[1]
                owner = obj
                if not hasattr(owner, name):
                    if kind == "instance" and not _pybind(owner):
                        return {"status": "unresolved", "detail": f"{trail}.{name}: may be set on the Python instance"}
                    return {"status": "missing", "detail": f"{trail} has no {name!r}"}
                trail += "." + name
                member = inspect.getattr_static(owner, name, None) if inspect.isclass(owner) else None
                value = getattr(owner, name)
                if isinstance(member, property):
                    fget_sigs = signatures(member.fget)
                    current = self.type_named(fget_sigs[0][1]) if fget_sigs else ("value", None)
                elif inspect.isclass(value) or inspect.ismodule(value):
                    current = ("class" if inspect.isclass(value) else "object", value)
                elif callable(value):
                    current = ("callable", value)
                elif inspect.isclass(owner) and isinstance(value, owner):  # enum member
                    current = ("instance", owner)
                else:
                    current = ("object", value) if not isinstance(value, (int, float, str, bool, type(None))) else ("value", None)
            elif step[0] == "new":
                current = ("instance", obj) if kind == "class" else ("value", None)
            elif step[0] == "call":
                names = list(keywords if last else step[1])
                if kind == "instance":
                    if last and not _pybind(obj) and callable(getattr(obj, "__call__", None)):
                        trail += "()"
                        break  # calling a Python loader object (polygraphy's CreateConfig instance)
                    if not _pybind(obj):
                        return {"status": "unresolved", "detail": f"{trail}(): calling a Python object, its result is not typed"}
                    obj, kind = obj.__call__, "callable"
                target = obj.__init__ if kind == "class" else obj
                problem = self.keywords(target, names, cls=obj if kind == "class" else None)
                if problem:
                    return {"status": "missing", "detail": f"{trail}(): {problem}"}
                trail += "()"
                if kind == "class":
                    current = ("instance", obj)
                else:
                    sigs = signatures(obj)
                    returned = self.type_named(sigs[0][1]) if sigs else ("value", None)
                    if not sigs and not last:
                        return {"status": "unresolved", "detail": f"{trail}: a Python callable's result is not typed"}
                    current = returned
            elif step[0] in ("iter", "item"):
                if kind == "list":
                    current = ("instance", obj)
                elif kind == "instance":
                    sigs = signatures(getattr(obj, "__getitem__", None))
                    returned = self.type_named(sigs[0][1]) if sigs else ("value", None)
                    if returned[0] != "instance":
                        return {"status": "unresolved", "detail": f"{trail}: items not typed"}
                    current = returned
                else:
                    return {"status": "unresolved", "detail": f"{trail}: items not typed"}
                trail += "[*]"
        return {"status": "ok", "detail": trail}

    def keywords(self, target: Any, names: List[str], cls: Any = None) -> Optional[str]:
        if not names:
            return None
        sigs = signatures(target)
        if sigs:
            if any(all(n in params for n in names) for params, _ in sigs):
                return None
            return f"no overload takes {', '.join(names)} (signatures: {'; '.join(', '.join(p) for p, _ in sigs)})"
        loader = _funcified_class(target) if cls is None else None
        if loader is not None:  # polygraphy's funcified loader: its keywords are the class's
            cls = loader
        try:
            signature = inspect.signature(cls if cls is not None else target)
        except (TypeError, ValueError):
            return None if not names else f"cannot read the signature to check {', '.join(names)}"
        params = dict(signature.parameters)

        def open_ended() -> bool:
            return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

        for klass in (cls.__mro__[1:] if inspect.isclass(cls) else ()):  # **kwargs handed to the base __init__
            if not open_ended():
                break
            if "__init__" in vars(klass) and inspect.isfunction(klass.__init__):
                params = {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
                params.update(inspect.signature(klass.__init__).parameters)
        if open_ended():
            return None
        unknown = [n for n in names if n not in params]
        return f"unknown keyword(s) {', '.join(unknown)}" if unknown else None


# -- conditions ------------------------------------------------------------------------------------------
def _not(value: Optional[bool]) -> Optional[bool]:
    return UNKNOWN if value is UNKNOWN else not value


class Scenario:
    """One way the code runs on this version: its Features, one accepted plan, polygraphy's self values."""

    def __init__(self, resolver: Resolver, feats: Any, plan: Any, version: Tuple[int, int, int]) -> None:
        self.resolver, self.feats, self.plan, self.version = resolver, feats, plan, version
        self.self_values: Dict[str, Any] = {}

    def eval(self, term: Dict[str, Any]) -> Optional[bool]:
        if "not" in term:
            return _not(self.eval(term["not"]))
        if "and" in term:
            values = [self.eval(t) for t in term["and"]]
            return False if False in values else UNKNOWN if UNKNOWN in values else True
        if "or" in term:
            values = [self.eval(t) for t in term["or"]]
            return True if True in values else UNKNOWN if UNKNOWN in values else False
        if "const" in term:
            return bool(term["const"])
        if "ifexp" in term:
            test, body, orelse = term["ifexp"]
            decided = self.eval(test)
            return UNKNOWN if decided is UNKNOWN else self.eval(body if decided else orelse)
        if "tolerated" in term:
            return True
        if "hasattr" in term:
            result = self.resolver.walk(term["hasattr"]["root"], term["hasattr"]["steps"], [])
            return {"ok": True, "missing": False}.get(result["status"], UNKNOWN)
        if "trt_version" in term:
            op, other = term["trt_version"]
            want = trt_compat.parse_version(other)
            return {"Lt": self.version < want, "LtE": self.version <= want, "Gt": self.version > want,
                    "GtE": self.version >= want, "Eq": self.version == want, "NotEq": self.version != want}.get(op, UNKNOWN)
        if "contains" in term:
            value = self.value(term["contains"][0])
            return UNKNOWN if value is NOT_KNOWN or not hasattr(value, "__contains__") else term["contains"][1] in value
        if "equals" in term:
            value = self.value(term["equals"][0])
            return UNKNOWN if value is NOT_KNOWN else value == term["equals"][1]
        if "field" in term:
            value = self.value(term["field"])
            return UNKNOWN if value is NOT_KNOWN else bool(value)
        return UNKNOWN

    def value(self, field: str) -> Any:
        head, _, rest = field.partition(".")
        if field in KNOWN:
            return KNOWN[field]
        if field in IMPLIED:
            return False if not getattr(self.feats, IMPLIED[field]) else NOT_KNOWN
        if not rest and "arg:" + head in self.self_values:
            return self.self_values["arg:" + head]
        if head in ("feats", "features") and rest and hasattr(self.feats, rest):
            return getattr(self.feats, rest)
        if head == "plan" and rest and self.plan is not None and hasattr(self.plan, rest):
            return getattr(self.plan, rest)
        if head == "self" and rest in self.self_values:
            return self.self_values[rest]
        return NOT_KNOWN

    def reached(self, guards: List[Dict[str, Any]]) -> bool:
        return all(self.eval(g) is not False for g in guards)


def scenarios(resolver: Resolver, version: str) -> List[Scenario]:
    feats = trt_compat.features(version)
    parsed = trt_compat.parse_version(version)
    plans = []
    for precision in trt_compat.PRECISIONS:
        for calibration in trt_compat.CALIBRATIONS:
            try:
                plans.append(trt_compat.plan_precision(precision, feats, calibration))
            except EdgesegError:
                continue
    return [Scenario(resolver, feats, plan, parsed) for plan in plans]


# -- the checks ------------------------------------------------------------------------------------------
def check_uses(resolver: Resolver, cases: List[Scenario], uses: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    results = []
    for use in uses:
        reached = [s for s in cases if s.reached([g for g in use["guards"] if "tolerated" not in g])]
        keywords = [k["name"] for k in use.get("keywords", []) if any(s.reached(k["guards"]) for s in reached)]
        outcome = resolver.walk(use["root"], use["steps"], keywords)
        status = outcome["status"]
        if not reached:
            status = "not reached"
        elif status == "missing" and (use["probe"] or any("tolerated" in g for g in use["guards"])):
            status = "probe" if use["probe"] else "tolerated"
        results.append({"use": use, "status": status, "detail": outcome["detail"], "keywords": keywords})
    return results


def check_polygraphy(resolver: Resolver, cases: List[Scenario], request: Dict[str, Any]) -> List[Dict[str, Any]]:
    """polygraphy's own TensorRT uses in the functions edgeseg's calls reach, per scenario: each
    class's self values are its __init__ defaults unless the caller passes that keyword."""
    results = []
    defaults = request["init_defaults"]
    passed = request["passed"]  # class -> [{"name", "guards", "value"}] from edgeseg and internal calls
    bases = request["bases"]

    def lineage(cls: str) -> List[str]:
        chain, todo = [], [cls]
        while todo:
            name = todo.pop(0)
            if name in defaults and name not in chain:
                chain.append(name)
                todo.extend(bases.get(name, []))
        return chain

    def values_for(case: Scenario) -> Dict[str, Dict[str, Any]]:
        """Each reached class's self values: a keyword its caller passes (edgeseg's, or another
        polygraphy loader's, whose ``self.x`` is looked up in that caller), else the default."""
        values: Dict[str, Dict[str, Any]] = {}
        for _ in range(4):  # callers before callees; a few rounds settle the chains polygraphy has
            for cls in passed.keys() | defaults.keys():
                own: Dict[str, Any] = {}
                for owner in reversed(lineage(cls)):
                    for attr, spec in defaults[owner].items():
                        given = [k for k in passed.get(cls, []) if k["name"] == spec["param"] and case.reached(k["guards"])]
                        if given:
                            own[attr] = _given(given[0], values)
                        else:
                            case.self_values = own
                            own[attr] = _term_value(case, spec["default"])
                for owner in lineage(cls)[:1]:
                    for param, default in request["init_params"].get(owner, {}).items():
                        given = [k for k in passed.get(cls, []) if k["name"] == param and case.reached(k["guards"])]
                        own["arg:" + param] = _given(given[0], values) if given else _term_value(case, default)
                values[cls] = own
        return values

    per_case = [values_for(case) for case in cases]
    for use in request["uses"]:
        cls = use["function"].split(".")[0] if "." in use["function"] else ""
        reached_any = False
        for case, values in zip(cases, per_case):
            case.self_values = values.get(cls, {})
            if case.reached([g for g in use["guards"] if "tolerated" not in g]):
                reached_any = True
                break
        outcome = resolver.walk(use["root"], use["steps"], [k["name"] for k in use.get("keywords", [])])
        status = outcome["status"] if reached_any else "not reached"
        if status == "missing" and (use["probe"] or any("tolerated" in g for g in use["guards"])):
            status = "probe" if use["probe"] else "tolerated"
        results.append({"use": use, "status": status, "detail": outcome["detail"]})
    return results


def _given(keyword: Dict[str, Any], values: Dict[str, Dict[str, Any]]) -> Any:
    """The value a caller passes: a constant, its own ``self.x``, or not known."""
    term = keyword["value"]
    if "self" in term:
        return values.get(keyword.get("caller", ""), {}).get(term["self"], NOT_KNOWN)
    return term["const"] if "const" in term else NOT_KNOWN


def _term_value(case: Scenario, term: Dict[str, Any]) -> Any:
    """A default's value: a constant, else the condition it is (True / False), else not known."""
    if "const" in term:
        return term["const"]
    decided = case.eval(term)
    return NOT_KNOWN if decided is UNKNOWN else decided


def _use_polygraphy(site: str) -> Any:
    """Import polygraphy from `site` (left first on sys.path: polygraphy imports lazily), dropping
    any release imported before, so one process checks every release."""
    for name in [m for m in sys.modules if m == "polygraphy" or m.startswith("polygraphy.")]:
        del sys.modules[name]
    sys.path.insert(0, site)
    return importlib.import_module("polygraphy")


def main() -> None:
    """Request: {"edgeseg": [use], "polygraphy": [{"site", "request"}]}. Report, per polygraphy
    release: edgeseg's uses (its polygraphy calls checked against that release) and the release's
    own TensorRT uses on the paths edgeseg drives."""
    request = json.loads(open(sys.argv[1]).read())
    trt = importlib.import_module("tensorrt")
    resolver = Resolver(trt)
    cases = scenarios(resolver, trt.__version__)
    out: Dict[str, Any] = {"tensorrt": trt.__version__, "plans": [c.plan.__dict__ for c in cases], "releases": {}}
    for release in request.get("polygraphy") or [{"site": None, "request": None}]:
        if release["site"]:
            polygraphy = _use_polygraphy(release["site"])
        report = {"edgeseg": check_uses(resolver, cases, request["edgeseg"])}
        if release["request"]:
            report["polygraphy"] = check_polygraphy(resolver, cases, release["request"])
        if release["site"]:
            sys.path.remove(release["site"])
        out["releases"][polygraphy.__version__ if release["site"] else ""] = report
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
