"""Which TensorRT / polygraphy / pycuda names a piece of Python reaches, read from its AST.

A *use* is a chain rooted at an imported module: ``trt.BuilderFlag.FP16``, ``cuda.Stream().handle``,
``CreateConfig(fp16=..., profiles=...)``. Chains are found in three ways, so a new call is picked up
without anyone listing it:

1. attribute chains on a module alias: names bound by ``import tensorrt as trt``, ``from
   polygraphy.backend.trt import CreateConfig``, ``trt = require("tensorrt", ...)`` (edgeseg.lazy),
   ``tensorrt_or_advice()`` and polygraphy's ``lazy_import_trt()`` / ``mod.lazy_import("tensorrt")``;
2. objects that flow from such a chain: ``runtime = trt.Runtime(...)``, ``self._engine =
   runtime.deserialize_cuda_engine(...)`` (every ``self.x = ...`` of a class is visible in all its
   methods), ``for layer in network``, ``a, b = [cuda.Event() for ...]``. What a call returns is not
   guessed here: the chain keeps the call and the checker follows the real pybind11 signature;
3. names in `NAMING` where the code cannot show the type (a parameter ``builder: Any``): by
   convention such a name holds that TensorRT object; a parameter named ``trt`` / ``cuda`` is the
   tensorrt / pycuda.driver module (`MODULE_PARAMETERS`); a local annotated with a TensorRT class
   (``config: "trt.IBuilderConfig" = ...``) is that class.

Keywords: explicit ``f(a=...)`` and ``f(**d)`` where ``d`` is a local dict built from a literal and
``d["key"] = ...`` assignments; each key keeps the conditions it was added under.

Every use carries the conditions that must hold to reach it (enclosing ``if``/``elif``/``else``,
``if ...: return`` before it, the left side of ``and``/``or``, conditional expressions,
comprehension filters, one-line helpers inlined), as small JSON terms the checker evaluates per
TensorRT version. A use inside ``try`` whose handler catches AttributeError and neither re-raises
nor calls a ``fail*`` helper, or inside ``contextlib.suppress(AttributeError)``, is *tolerated*
(the code survives its absence); ``getattr(x, "n", default)`` and ``hasattr(x, "n")`` are
*probes* (absence is a branch, not an error).

Standard library only: this runs in the test process, the checker in each version's environment.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

# Root modules whose names are checked, and the calls that return such a module.
ROOTS = ("tensorrt", "pycuda", "polygraphy")
MODULE_FACTORIES = {"require", "lazy_import", "import_module"}  # f("tensorrt", ...) -> the module
TENSORRT_FACTORIES = {"tensorrt_or_advice", "lazy_import_trt"}  # f() -> the tensorrt module
# A name the code does not type (an ``Any`` parameter, a tuple element) holds this TensorRT object.
NAMING = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "builder_config": "IBuilderConfig",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "layer": "ILayer",
}
# A function parameter of this name is that module (helpers that take the module as an argument).
MODULE_PARAMETERS = {"trt": "tensorrt", "cuda": "pycuda.driver"}
TOLERATED_EXCEPTIONS = {"AttributeError"}  # catching it is how code survives a missing name

Term = Dict[str, Any]
Step = List[Any]  # ["attr", name] | ["call", [keyword, ...]] | ["iter"] | ["item"] | ["new"] | ["list"]


@dataclass
class Ref:
    """A value reached from a root module through `steps`."""

    root: str
    steps: List[Step] = field(default_factory=list)

    def plus(self, *steps: Step) -> "Ref":
        """This chain extended; indexing or iterating a list the code built (``[x() for ...]``,
        marked "list") reaches its element."""
        chain = copy.deepcopy(self.steps)
        for step in steps:
            if step[0] in ("item", "iter") and chain and chain[-1][0] == "list":
                chain.pop()
            else:
                chain.append(list(step))
        return Ref(self.root, chain)


@dataclass
class Keyword:
    name: str
    guards: List[Term]
    value: Term = field(default_factory=lambda: {"field": "?"})


@dataclass
class Call:
    """A call to anything (polygraphy reads its own internal calls for reachability and values)."""

    function: str
    callee: str
    keywords: List[Keyword]


@dataclass
class Use:
    """One chain the code reaches. `keywords` belong to the final call step."""

    root: str
    steps: List[Step]
    file: str
    line: int
    guards: List[Term]
    probe: bool = False
    store: bool = False
    keywords: List[Keyword] = field(default_factory=list)
    function: str = ""

    def name(self) -> str:
        parts = [self.root]
        for step in self.steps:
            if step[0] == "attr":
                parts.append("." + step[1])
            elif step[0] == "call":
                parts.append("()")
            elif step[0] == "iter":
                parts.append("[*]")
            elif step[0] == "item":
                parts.append("[0]")
        return "".join(parts)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def _root_of(module: str) -> Optional[str]:
    return module if module.split(".")[0] in ROOTS else None


def _const_str(node: ast.AST) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _exits(body: List[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


class _Scope:
    def __init__(self, parent: Optional["_Scope"] = None) -> None:
        self.names: Dict[str, Optional[Ref]] = {}  # None: bound to something that is not a root object
        self.dicts: Dict[str, List[Keyword]] = {}
        self.parent = parent

    def lookup(self, name: str) -> Tuple[bool, Optional[Ref]]:
        """(bound anywhere in reach, what it holds)."""
        scope: Optional[_Scope] = self
        while scope is not None:
            if name in scope.names:
                return True, scope.names[name]
            scope = scope.parent
        return False, None


class Extractor(ast.NodeVisitor):
    """Collects `uses` (and, for classes, the defaults of ``self.x`` for the checker)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.uses: List[Use] = []
        self.module_scope = _Scope()
        self.scope = self.module_scope
        self.guards: List[Term] = []
        self.self_attrs: Dict[str, Ref] = {}
        self.function = ""
        self.class_name = ""
        self.calls: List[Call] = []
        self.bases: Dict[str, List[str]] = {}
        self.inline: Dict[str, Tuple[List[str], ast.AST]] = {}  # one-line nested functions, for conditions
        self.substitute: Dict[str, ast.AST] = {}
        # class name -> {__init__ parameter: term of its default}
        self.init_params: Dict[str, Dict[str, Term]] = {}
        # class name -> {attribute: {"param": name or None, "default": term}} for `self.x = default(x, D)`
        self.init_defaults: Dict[str, Dict[str, Dict[str, Any]]] = {}

    # -- resolution -------------------------------------------------------------------------------
    def resolve(self, node: ast.AST) -> Optional[Ref]:
        """The Ref an expression evaluates to, or None when it is not (known to be) a root object."""
        if isinstance(node, ast.Name):
            bound, ref = self.scope.lookup(node.id)
            if bound:
                return ref
            if node.id in NAMING:
                return Ref("tensorrt", [["attr", NAMING[node.id]], ["new"]])
            return None
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in self.self_attrs:
                return self.self_attrs[node.attr]
            base = self.resolve(node.value)
            return base.plus(["attr", node.attr]) if base else None
        if isinstance(node, ast.Call):
            module = self._module_call(node)
            if module:
                return Ref(module)
            base = self.resolve(node.func)
            if base is None:
                return None
            return base.plus(["call", [k.arg for k in node.keywords if k.arg]])
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            return base.plus(["item"]) if base else None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            element = self._comprehension_element(node)
            return element.plus(["list"]) if element else None
        return None

    def _module_call(self, node: ast.Call) -> Optional[str]:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in TENSORRT_FACTORIES:
            return "tensorrt"
        if name in MODULE_FACTORIES and node.args:
            text = _const_str(node.args[0])
            if text:
                return _root_of(text.split(">")[0].split("<")[0].split("=")[0].strip())
        return None

    def _comprehension_element(self, node: ast.AST) -> Optional[Ref]:
        saved = self.scope
        self.scope = _Scope(saved)
        for generator in node.generators:  # type: ignore[attr-defined]
            iterable = self.resolve(generator.iter)
            self._bind(generator.target, iterable.plus(["iter"]) if iterable else None)
        ref = self.resolve(node.elt)  # type: ignore[attr-defined]
        self.scope = saved
        return ref

    def _bind(self, target: ast.AST, ref: Optional[Ref]) -> None:
        if isinstance(target, ast.Name):
            self.scope.names[target.id] = ref
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._bind(element, ref.plus(["item"]) if ref else None)

    # -- emitting uses ------------------------------------------------------------------------------
    def _emit(self, node: ast.AST, ref: Ref, *, probe: bool = False, store: bool = False, keywords: Iterable[Keyword] = ()) -> None:
        self.uses.append(
            Use(ref.root, ref.steps, self.file, getattr(node, "lineno", 0), list(self.guards), probe, store, list(keywords), self.function)
        )

    def _value(self, node: ast.AST) -> Term:
        if isinstance(node, ast.Constant):
            return {"const": node.value}
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return {"self": node.attr}
        return {"field": "?"}

    def _keywords(self, node: ast.Call) -> List[Keyword]:
        found = [Keyword(k.arg, [], self._value(k.value)) for k in node.keywords if k.arg]
        for k in node.keywords:
            if k.arg is None and isinstance(k.value, ast.Name):
                found.extend(self.scope.dicts.get(k.value.id, []))
        return found

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        callee = self.field(node.func) if not isinstance(node.func, ast.Call) else "?"
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
            callee = ("super()." if getattr(node.func.value.func, "id", "") == "super" else "?") + node.func.attr
        self.calls.append(Call(self.function, callee, self._keywords(node)))
        if name in ("getattr", "hasattr") and len(node.args) >= 2 and _const_str(node.args[1]):
            base = self.resolve(node.args[0])
            if base is not None:
                probe = name == "hasattr" or len(node.args) > 2
                self._emit(node, base.plus(["attr", _const_str(node.args[1])]), probe=probe)
            for arg in node.args:
                self.visit(arg)
            return
        ref = self.resolve(node)
        if ref is not None and ref.steps and ref.steps[-1][0] == "call":
            self._emit(node, ref, keywords=self._keywords(node))
            self._visit_inner(node.func)
        else:
            self.visit(node.func)
        for arg in node.args:
            self.visit(arg)
        for keyword in node.keywords:
            self.visit(keyword.value)

    def _visit_inner(self, node: ast.AST) -> None:
        """Arguments nested inside a chain (``a.b(x).c``): the chain itself is already emitted."""
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            if isinstance(node, ast.Call):
                for arg in node.args:
                    self.visit(arg)
                for keyword in node.keywords:
                    self.visit(keyword.value)
                node = node.func
            elif isinstance(node, ast.Subscript):
                self.visit(node.slice)
                node = node.value
            else:
                node = node.value

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return  # `self.x` itself: what it holds was emitted where it was assigned
        ref = self.resolve(node)
        if ref is not None:
            self._emit(node, ref, store=isinstance(node.ctx, ast.Store))
            self._visit_inner(node.value)
        else:
            self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.generic_visit(node)

    # -- bindings -------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = _root_of(alias.name)
            if root:
                name = alias.asname or alias.name.split(".")[0]
                self.scope.names[name] = Ref(alias.name if alias.asname else alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0 and _root_of(module):
            for alias in node.names:
                if alias.name == "*":
                    continue
                self.scope.names[alias.asname or alias.name] = Ref(module, [["attr", alias.name]])

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        ref = self.resolve(node.value)
        for target in node.targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                if ref is not None:
                    self.self_attrs[target.attr] = ref
            elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                key = _const_str(target.slice)
                if key and target.value.id in self.scope.dicts:
                    self.scope.dicts[target.value.id].append(Keyword(key, list(self.guards), self._value(node.value)))
                self.visit(target)
            elif isinstance(target, ast.Name) and isinstance(node.value, ast.Dict):
                keys = [_const_str(k) for k in node.value.keys if k is not None]
                self.scope.dicts[target.id] = [
                    Keyword(k, list(self.guards), self._value(v)) for k, v in zip(keys, node.value.values) if k
                ]
                self._bind(target, None)
            elif isinstance(target, (ast.Name, ast.Tuple, ast.List)):
                self._bind(target, ref)
            else:
                self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        """``x: "trt.IBuilderConfig" = f()`` types x where the value cannot (a polygraphy loader's result)."""
        if node.value is not None:
            self.visit_Assign(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))
        annotation = node.annotation
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        typed = self.resolve(annotation) if isinstance(annotation, ast.Attribute) else None
        if typed is not None and isinstance(node.target, ast.Name):
            self.scope.names[node.target.id] = typed.plus(["new"])

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        iterable = self.resolve(node.iter)
        self._bind(node.target, iterable.plus(["iter"]) if iterable else None)
        self._block(node.body)
        self._block(node.orelse)

    def visit_With(self, node: ast.With) -> None:
        tolerant = False
        for item in node.items:
            self.visit(item.context_expr)
            context = item.context_expr
            if isinstance(context, ast.Call) and self.field(context.func).endswith("suppress"):
                tolerant |= any(self.field(a).split(".")[-1] in TOLERATED_EXCEPTIONS for a in context.args)
            if item.optional_vars is not None:
                self._bind(item.optional_vars, self.resolve(item.context_expr))
        self.guards.extend([{"tolerated": True}] if tolerant else [])
        self._block(node.body)
        if tolerant:
            self.guards.pop()

    def _comprehension(self, node: Any) -> None:
        saved, saved_guards = self.scope, list(self.guards)
        self.scope = _Scope(saved)
        for generator in node.generators:
            self.visit(generator.iter)
            iterable = self.resolve(generator.iter)
            self._bind(generator.target, iterable.plus(["iter"]) if iterable else None)
            for test in generator.ifs:
                self.visit(test)
                self.guards.append(self.term(test))
        for part in ("elt", "key", "value"):
            if hasattr(node, part):
                self.visit(getattr(node, part))
        self.scope, self.guards = saved, saved_guards

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    # -- functions and classes ----------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        saved_scope, saved_guards, saved_function = self.scope, self.guards, self.function
        # A nested function runs (if at all) where it is defined: it keeps the enclosing conditions.
        self.scope, self.guards = _Scope(saved_scope), list(saved_guards) if saved_function else []
        returned = [n for n in node.body if isinstance(n, ast.Return)]
        if saved_function and len(node.body) == 1 and returned and returned[0].value is not None:
            self.inline[node.name] = ([a.arg for a in node.args.args], returned[0].value)
        if not saved_function:  # nested functions count as part of the one they are defined in
            self.function = f"{self.class_name}.{node.name}" if self.class_name else node.name
        for arg in node.args.args + node.args.kwonlyargs:
            if arg.arg in MODULE_PARAMETERS:
                self.scope.names[arg.arg] = Ref(MODULE_PARAMETERS[arg.arg])
            elif arg.annotation is not None and getattr(arg.annotation, "id", "") != "Any":
                self.scope.names[arg.arg] = None  # typed as something else: NAMING does not apply
        self._block(node.body)
        self.scope, self.guards, self.function = saved_scope, saved_guards, saved_function

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        saved, saved_class = self.self_attrs, self.class_name
        self.self_attrs, self.class_name = {}, node.name
        self.bases[node.name] = [self.field(b).split(".")[-1] for b in node.bases]
        defaults: Dict[str, Dict[str, Any]] = {}
        for item in node.body:  # one-line helpers defined in __init__ decide its defaults
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                for helper in ast.walk(item):
                    if isinstance(helper, ast.FunctionDef) and helper is not item and len(helper.body) == 1:
                        if isinstance(helper.body[0], ast.Return) and helper.body[0].value is not None:
                            self.inline[helper.name] = ([a.arg for a in helper.args.args], helper.body[0].value)
        for item in node.body:  # first pass: what each self.x holds, in every method
            if isinstance(item, ast.FunctionDef):
                for statement in ast.walk(item):
                    if isinstance(statement, ast.Assign):
                        for target in statement.targets:
                            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                                ref = self.resolve(statement.value)
                                if ref is not None:
                                    self.self_attrs[target.attr] = ref
                                if item.name == "__init__":
                                    defaults[target.attr] = self._init_default(item, statement.value)
        self.init_defaults[node.name] = defaults
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                args = item.args.args + item.args.kwonlyargs
                values = [None] * (len(item.args.args) - len(item.args.defaults)) + list(item.args.defaults) + list(item.args.kw_defaults)
                self.init_params[node.name] = {a.arg: self.term(d) if d is not None else {"field": "?"} for a, d in zip(args, values)}
        for item in node.body:
            self.visit(item)
        self.self_attrs, self.class_name = saved, saved_class

    def _init_default(self, init: ast.FunctionDef, value: ast.AST) -> Dict[str, Any]:
        """`self.x = x` / `self.x = util.default(x, D)`: the parameter and the term for D."""
        params = {a.arg for a in init.args.args + init.args.kwonlyargs}
        if isinstance(value, ast.Name) and value.id in params:
            return {"param": value.id, "default": {"const": None}}
        if isinstance(value, ast.Call) and getattr(value.func, "attr", getattr(value.func, "id", "")) == "default" and len(value.args) == 2:
            first = value.args[0]
            if isinstance(first, ast.Name) and first.id in params:
                return {"param": first.id, "default": self.term(value.args[1])}
        return {"param": None, "default": self.term(value)}

    # -- control flow and guards --------------------------------------------------------------------
    def _block(self, body: List[ast.stmt]) -> None:
        depth = len(self.guards)
        for statement in body:
            self.visit(statement)
            if isinstance(statement, ast.If) and _exits(statement.body) and not statement.orelse:
                self.guards.append({"not": self.term(statement.test)})
        del self.guards[depth:]

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        condition = self.term(node.test)
        self.guards.append(condition)
        self._block(node.body)
        self.guards[-1] = {"not": condition}
        self._block(node.orelse)
        self.guards.pop()

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        condition = self.term(node.test)
        self.guards.append(condition)
        self.visit(node.body)
        self.guards[-1] = {"not": condition}
        self.visit(node.orelse)
        self.guards.pop()

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        depth = len(self.guards)
        for value in node.values:
            self.visit(value)
            condition = self.term(value)
            self.guards.append(condition if isinstance(node.op, ast.And) else {"not": condition})
        del self.guards[depth:]

    def visit_Try(self, node: ast.Try) -> None:
        tolerant = any(self._tolerant(handler) for handler in node.handlers)
        if tolerant:
            self.guards.append({"tolerated": True})
        self._block(node.body)
        if tolerant:
            self.guards.pop()
        for handler in node.handlers:
            if handler.type is not None:
                self.visit(handler.type)  # `except cuda.Error:` is a name the code relies on
            self._block(handler.body)
        self._block(node.orelse)
        self._block(node.finalbody)

    @staticmethod
    def _tolerant(handler: ast.ExceptHandler) -> bool:
        caught = handler.type
        names = [e for e in (caught.elts if isinstance(caught, ast.Tuple) else [caught]) if e is not None]
        if caught is not None and not any(getattr(n, "id", getattr(n, "attr", "")) in TOLERATED_EXCEPTIONS for n in names):
            return False
        for statement in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
            if isinstance(statement, ast.Raise):
                return False
            if isinstance(statement, ast.Call) and "fail" in getattr(statement.func, "attr", getattr(statement.func, "id", "")):
                return False
        return True

    # -- conditions as terms ------------------------------------------------------------------------
    def term(self, node: ast.AST) -> Term:
        """A condition as a JSON term: the checker knows feats.*, plan.*, self.*, hasattr and
        polygraphy's version comparisons; anything else is "unknown" (either way may happen)."""
        if isinstance(node, ast.Name) and node.id in self.substitute:
            return self.term(self.substitute[node.id])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.inline:
            params, body = self.inline[node.func.id]
            saved = self.substitute
            self.substitute = {**saved, **dict(zip(params, node.args))}
            try:
                return self.term(body)
            finally:
                self.substitute = saved
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return {"not": self.term(node.operand)}
        if isinstance(node, ast.BoolOp):
            return {"and" if isinstance(node.op, ast.And) else "or": [self.term(v) for v in node.values]}
        if isinstance(node, ast.Constant):
            return {"const": node.value}
        if isinstance(node, ast.IfExp):
            return {"ifexp": [self.term(node.test), self.term(node.body), self.term(node.orelse)]}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            base = self.resolve(node.args[0]) if node.args else None
            attr = _const_str(node.args[1]) if len(node.args) > 1 else None
            if base is not None and attr:
                probe = base.plus(["attr", attr])
                return {"hasattr": {"root": probe.root, "steps": probe.steps}}
        version = self._version(node)
        if version is not None:
            return {"version": version}
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = node.left, node.comparators[0]
            version_left, version_right = self._version(left), self._version(right)
            if version_left == "trt" and version_right not in (None, "trt"):
                return {"trt_version": [type(node.ops[0]).__name__, version_right]}
            if isinstance(node.ops[0], (ast.In, ast.NotIn)) and _const_str(left) is not None:
                inner = {"contains": [self.field(right), left.value]}  # type: ignore[attr-defined]
                return inner if isinstance(node.ops[0], ast.In) else {"not": inner}
            if isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)) and isinstance(right, ast.Constant):
                inner = {"equals": [self.field(left), right.value]}
                return inner if isinstance(node.ops[0], (ast.Eq, ast.Is)) else {"not": inner}
        return {"field": self.field(node)}

    def field(self, node: ast.AST) -> str:
        """Dotted text of a plain attribute chain ("feats.weak_typing", "self.fp16"), else its source."""
        parts: List[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return ".".join([node.id] + parts[::-1])
        return "?" + ast.unparse(node)[:80]

    def _version(self, node: ast.AST) -> Optional[str]:
        """polygraphy's `mod.version(trt.__version__)` -> "trt"; `mod.version("10.0")` -> "10.0"."""
        if isinstance(node, ast.Name) and node.id in self.substitute:
            return self._version(self.substitute[node.id])
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "version" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Attribute) and arg.attr == "__version__":
                return "trt"
            return _const_str(arg)
        return None


def extract(path: Path, label: Optional[str] = None) -> Extractor:
    """Run the extractor over one file (`label` names it in reports)."""
    return extract_source(Path(path).read_text(), label or str(path))


def extract_source(source: str, label: str = "<snippet>") -> Extractor:
    extractor = Extractor(label)
    extractor._block(ast.parse(source).body)
    return extractor
