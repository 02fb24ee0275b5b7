"""AST policy applied to a candidate before a container is spent on it.

The candidate is hostile; the container (and the host-side verification of every result) is the security
boundary. This check is defence in depth: it makes the common escapes fail fast, for free, with a reason that
names the line, so the LLM can act on it. Each rule rejects what a network definition never needs and an
escape always does:

- Imports beyond ALLOWED_IMPORTS; `from M import *` and private names.
- Builtins that reach the interpreter (eval, exec, open, __import__, getattr, vars...).
- Dunder attributes other than `__init__` and dunder names other than `__name__`: the ladder from any object
  to `__subclasses__`, `__globals__` and `__builtins__`. `match` class patterns read attributes too
  (`case object(__class__=c)`), and mapping patterns read keys: dunder/private ones are rejected there as well.
- Private attributes only on `self`/`cls`, and those two names only as the first parameter of a function:
  any other binding (`self = torch`, `for cls in ...`, `lambda x, self: ...`, `except E as self`) would
  launder an arbitrary object into them. Private names of tensors and storages are rejected even on `self`,
  since `Net.helper(tensor)` passes a tensor as `self` (`_typed_storage()` maps files).
- An allowlist of namespaces: an attribute chain rooted at an imported name (`torch.X.Y`, `nn.X`, `F.X`, or a
  `from M import x`) is resolved against the real modules on the host by static lookups (no candidate code
  runs, and torch's lazy submodules are not imported). It is rejected when a step is a module outside
  ALLOWED_NAMESPACES (torch.utils, torch.jit, torch.ops, torch.library, torch.hub, torch.package, torch.cuda,
  torch.backends, torch.fx, torch.onnx, torch.distributed, torch.storage... reach files, serialisation, native
  code or operator registration), one of BANNED_CALLABLES (torch.load/save/from_file/compile...,
  typing.get_type_hints and functools.singledispatch evaluate strings, functools.update_wrapper/wraps read
  attributes named by strings), or a `register_*` hook on torch itself (nn.Module's registration methods stay
  allowed on `self`). An allowlist, because torch grows namespaces faster than a denylist could follow. A chain
  that does not resolve on the host is let through: it fails at run time with an AttributeError the repair
  loop reads. ALLOWED_LEAVES lets a harmless query through (`torch.cuda.is_available()` in demo code). If
  torch cannot be imported on the host, FALLBACK_DENIED names the known-bad namespaces.
- A module is usable only through such a chain: `m = torch`, `f(torch.nn)`, `[F]` are rejected, or the
  chain check could be side-stepped through a variable; so is one name imported as two different objects.
- Attribute names that reach the OS, files, raw memory, numpy or frames from any object (`.os`, `.numpy`,
  `.tofile`, `.untyped_storage`, `.data_ptr`, `.set_`, `.cr_frame`, `.f_builtins`, `*Storage`...), by name,
  since the type of a local is unknown statically.
- async code (a coroutine's frame leads to builtins), `global`/`nonlocal`, format strings that read
  attributes (`'{0.__globals__}'.format`), and assignments to attributes of imported names (monkey-patching
  torch could fake a result).

The namespace and callable lists, and the static lookups that resolve a chain, are in tools/torch_names.py.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from nasloop.tools.torch_names import ALLOWED_IMPORTS, resolve, tensor_private_names

BANNED_NAMES = frozenset({
    "eval", "exec", "open", "__import__", "compile", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "input", "breakpoint", "exit", "quit", "help", "memoryview", "__builtins__", "__loader__",
    "__spec__",
})
# Attribute names, on any object, that lead to the operating system, the importer, files, raw memory, numpy
# (whose arrays write files) or interpreter frames.
BANNED_ATTRS = frozenset({
    "os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "shutil", "pathlib", "io",
    "pickle", "marshal", "gc", "inspect", "threading", "multiprocessing", "signal", "resource", "system",
    "popen", "load", "save", "load_library", "hub", "cpp_extension", "compile", "format_map", "environ",
    "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame", "func_globals", "mro",
    "f_builtins", "f_code", "f_trace", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code",
    "tofile", "fromfile", "from_file", "frombuffer", "numpy", "untyped_storage", "storage", "data_ptr", "set_",
    "share_memory_", "share_memory", "from_dlpack", "to_dlpack", "get_device_module",
    # TorchScript compiles source strings the policy never sees (torch.from_file inside one read files)
    "jit", "script", "CompilationUnit", "ScriptFunction", "ScriptModule", "JITException", "import_ir_module",
    "DisableTorchFunction", "DisableTorchFunctionSubclass", "LoggerBase", "StorageBase", "default_generator",
})
SELF_NAMES = ("self", "cls")
_FORMAT_ATTR = re.compile(r"\{[^{}]*[.\[]\s*_")


@dataclass(frozen=True)
class Violation:
    """Why the candidate was rejected: `kind` is syntax_error or invalid_code."""

    kind: str
    reason: str


@dataclass(frozen=True)
class _Context:
    """Whole-module facts the node checks need."""

    aliases: dict[str, str]  # name bound by an import -> dotted path of the object it names
    parents: dict[int, ast.AST]  # id(node) -> parent node
    first_params: frozenset[int]  # ids of the ast.arg nodes that are the first parameter of a function
    conflicts: frozenset[str]  # names imported as two different objects: a chain could not be resolved


def check_source(source: str) -> Violation | None:
    """Return the first policy violation of `source`, or None when it may run in the sandbox."""
    try:
        tree = ast.parse(source, filename="candidate.py")
    except SyntaxError as exc:
        where = f" (candidate.py:{exc.lineno})" if exc.lineno else ""
        return Violation("syntax_error", f"SyntaxError: {exc.msg}{where}")
    except ValueError as exc:  # e.g. null bytes
        return Violation("syntax_error", f"cannot parse the candidate: {exc}")

    ctx = _context(tree)
    nodes = list(ast.walk(tree))
    # Imports first, so that an import outside the allowlist is the reason given, whatever else is wrong.
    for node in sorted(nodes, key=lambda n: not isinstance(n, (ast.Import, ast.ImportFrom))):
        bad = _check_node(node, ctx)
        if bad:
            return Violation("invalid_code", f"{bad} (candidate.py:{getattr(node, 'lineno', '?')})")
    bad_assignment = _module_assignment(nodes, ctx)
    if bad_assignment:
        return Violation("invalid_code", bad_assignment)

    if not any(isinstance(n, ast.ClassDef) and n.name == "Net" and _is_module_subclass(n) for n in tree.body):
        return Violation("invalid_code", "no top-level 'class Net(nn.Module)' in the code")
    for node in tree.body:
        missing = _undefined_attributes(node) if isinstance(node, ast.ClassDef) else None
        if missing:
            return Violation("invalid_code", missing)
    net = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net")
    no_forward = missing_forward(net)
    return Violation("invalid_code", no_forward) if no_forward else None


def missing_forward(cls: ast.ClassDef) -> str | None:
    """A Net straight on nn.Module with no class-level forward: nn.Module's own raises NotImplementedError at
    the first call, which the pre-flight cannot tell from a meta-device limit, so without this the net would
    fail only in training and get no repair. A forward written inside another method is named."""
    if not cls.bases or not all(_attr_name(b) == "Module" for b in cls.bases):
        return None  # Sequential and local bases bring their own forward
    if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "forward" for n in cls.body) or \
            any(isinstance(t, ast.Name) and t.id == "forward" for n in cls.body if isinstance(n, ast.Assign)
                for t in n.targets):
        return None
    nested = next((n for n in ast.walk(cls) if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
    where = (f": the def forward at candidate.py:{nested.lineno} is inside another method, indent it as a method "
             f"of {cls.name}") if nested else ": write forward(self, x) using the layers __init__ defines"
    return f"{cls.name} has no forward method{where}"


def _context(tree: ast.AST) -> _Context:
    aliases: dict[str, str] = {}
    parents: dict[int, ast.AST] = {}
    first: set[int] = set()
    conflicts: set[str] = set()
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            positional = node.args.posonlyargs + node.args.args
            if positional:
                first.add(id(positional[0]))
        for name, path in _import_bindings(node).items():
            if aliases.setdefault(name, path) != path:
                conflicts.add(name)
    return _Context(aliases, parents, frozenset(first), frozenset(conflicts))


def _import_bindings(node: ast.AST) -> dict[str, str]:
    """Names an allowed import binds, each with the dotted path of the object it names."""
    if isinstance(node, ast.Import):
        return {(a.asname or a.name.split(".")[0]): (a.name if a.asname else a.name.split(".")[0])
                for a in node.names if a.name in ALLOWED_IMPORTS}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ALLOWED_IMPORTS - {"__future__"}:
        return {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names if a.name != "*"}
    return {}


def _module_assignment(nodes: list[ast.AST], ctx: _Context) -> str | None:
    """Assignments whose target is an attribute of an imported module or name (monkey-patching)."""
    for node in nodes:
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            root = _attr_root(t)
            if isinstance(t, (ast.Attribute, ast.Subscript)) and root in ctx.aliases:
                kind = "module" if resolve(tuple(ctx.aliases[root].split(".")))[1] else "name"
                return (f"assigning to an attribute of the imported {kind} '{root}' is not allowed "
                        f"(candidate.py:{getattr(node, 'lineno', '?')})")
    return None


# What nn.Module itself provides to `self.` (methods and the `training` flag).
MODULE_ATTRS = frozenset({
    "training", "add_module", "apply", "bfloat16", "buffers", "children", "cpu", "cuda", "double", "eval",
    "extra_repr", "float", "forward", "get_buffer", "get_parameter", "get_submodule", "half", "load_state_dict",
    "modules", "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
    "register_buffer", "register_module", "register_parameter", "register_forward_hook",
    "register_forward_pre_hook", "requires_grad_", "state_dict", "to", "train", "type", "zero_grad",
})
_REGISTER = ("add_module", "register_module", "register_buffer", "register_parameter")


def undefined_attributes(cls: ast.ClassDef) -> tuple[list[str], set[str], dict[str, int]]:
    """(attributes used in __init__/forward but never assigned, attributes assigned, first-use lines).
    Empty when it cannot be known: a base other than nn.Module, or layers registered under computed names."""
    if not cls.bases or not all(_attr_name(b) == "Module" for b in cls.bases):
        return [], set(), {}
    assigned = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assigned |= {t.id for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    uses: dict[str, ast.Attribute] = {}
    runs = {id(n) for f in cls.body if isinstance(f, ast.FunctionDef) and f.name in ("__init__", "forward")
            for n in ast.walk(f)}  # uses in other methods may never run: only these two always do
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and _is_self(node.value):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                assigned.add(node.attr)
            elif id(node) in runs:
                uses.setdefault(node.attr, node)
        elif isinstance(node, ast.Call) and _attr_name(node.func) in _REGISTER and node.args:
            name = node.args[0]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                return [], set(), {}  # attributes named at run time: cannot tell
            assigned.add(name.value)
    missing = sorted((n for n in uses if n not in assigned and n not in MODULE_ATTRS), key=lambda n: uses[n].lineno)
    return missing, assigned, {n: uses[n].lineno for n in missing}


def _undefined_attributes(cls: ast.ClassDef) -> str | None:
    """The commonest slip of small models: `self.pool` used in forward but never assigned."""
    missing, assigned, lines = undefined_attributes(cls)
    if not missing:
        return None
    names = ", ".join(f"self.{n}" for n in missing)
    defined = ", ".join(sorted(a for a in assigned if not a.startswith("_") and a != "forward")) or "nothing"
    return (f"{cls.name} uses {names} but never assigns {'it' if len(missing) == 1 else 'them'} "
            f"(first use: candidate.py:{lines[missing[0]]}); {cls.name} defines: {defined}. Define each layer in "
            f"__init__ or stop using it")


def _attr_name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _check_node(node: ast.AST, ctx: _Context) -> str | None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        twice = next((n for n in _import_bindings(node) if n in ctx.conflicts), None)
        return _check_import(node) or (twice and f"the name '{twice}' is imported as two different objects")
    if isinstance(node, ast.Name):
        return _check_name(node, ctx)
    if isinstance(node, ast.Attribute):
        return _check_attribute(node, ctx)
    if isinstance(node, ast.arg):
        return _rebinds_self(node.arg) if id(node) not in ctx.first_params else None
    if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.ExceptHandler)):
        return _rebinds_self(node.name)
    if isinstance(node, ast.pattern):
        return _check_pattern(node)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _FORMAT_ATTR.search(node.value):
        return "format strings that read attributes are not allowed"
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return f"'{type(node).__name__.lower()}' statements are not allowed"
    if isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
        return "async code is not allowed (a network needs none)"
    return None


def _check_import(node: ast.Import | ast.ImportFrom) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                return f"import of '{alias.name}' is not allowed (allowed: {_allowed()})"
            bad = _rebinds_self(alias.asname or alias.name.split(".")[0])
            if bad:
                return bad
        return None
    mod = "." * node.level + (node.module or "")
    if mod not in ALLOWED_IMPORTS:
        return f"import from '{mod}' is not allowed (allowed: {_allowed()})"
    for alias in node.names:
        if alias.name == "*" or alias.name in BANNED_ATTRS or alias.name.startswith("_") and mod != "__future__":
            return f"'from {mod} import {alias.name}' is not allowed"
        bad = _rebinds_self(alias.asname or alias.name)
        if not bad and mod != "__future__":
            bad = resolve((*mod.split("."), alias.name))[0]
        if bad:
            return bad
    return None


def _check_name(node: ast.Name, ctx: _Context) -> str | None:
    if node.id in BANNED_NAMES:
        return f"use of '{node.id}' is not allowed"
    if node.id.startswith("__") and node.id.endswith("__") and node.id != "__name__":
        return f"use of the dunder name '{node.id}' is not allowed"
    if not isinstance(node.ctx, ast.Load):
        return _rebinds_self(node.id)
    if node.id in ctx.aliases and not _inside_chain(node, ctx):
        return _check_chain(node.id, (), ctx)
    return None


def _check_attribute(node: ast.Attribute, ctx: _Context) -> str | None:
    a = node.attr
    if a.startswith("__") and a.endswith("__") and a != "__init__":
        return f"access to the dunder attribute '.{a}' is not allowed"
    if a.startswith("_") and not (a.startswith("__") and a.endswith("__")):
        if not _is_self(node.value):
            return f"access to the private attribute '.{a}' is not allowed (only on self)"
        if a in tensor_private_names():
            return f"access to '.{a}' is not allowed: it is a private attribute of tensors, even on self"
    if a in BANNED_ATTRS or a.endswith("Storage"):
        return f"access to '.{a}' is not allowed"
    if a == "format" and not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
        return "'.format' is allowed only on a string literal (a format built at run time can read attributes)"
    if _inside_chain(node, ctx):
        return None  # the outermost attribute of the chain checks the whole chain
    attrs: list[str] = []
    inner: ast.expr = node
    while isinstance(inner, ast.Attribute):
        attrs.insert(0, inner.attr)
        inner = inner.value
    if isinstance(inner, ast.Name) and inner.id in ctx.aliases:
        return _check_chain(inner.id, tuple(attrs), ctx)
    return None


def _check_chain(root: str, attrs: tuple[str, ...], ctx: _Context) -> str | None:
    """`root.a.b` where root is an imported name: resolved on the host; a module may not be used as a value."""
    path = (*ctx.aliases[root].split("."), *attrs)
    reason, is_module = resolve(path)
    if reason:
        return reason
    if is_module:
        spelled = ".".join((root, *attrs))
        return f"the module '{spelled}' may only be used through its attributes ({spelled}.name), not as a value"
    return None


def _check_pattern(node: ast.pattern) -> str | None:
    """`match` patterns read attributes (class patterns) and keys (mapping patterns), and bind names."""
    if isinstance(node, ast.MatchClass):
        for name in node.kwd_attrs:
            if name.startswith("_"):
                return f"a class pattern may not read the dunder or private attribute '{name}'"
    elif isinstance(node, ast.MatchMapping):
        for key in node.keys:
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith("_"):
                return f"a mapping pattern may not read the dunder or private key '{key.value}'"
        return _rebinds_self(node.rest)
    elif isinstance(node, (ast.MatchAs, ast.MatchStar)):
        return _rebinds_self(node.name)
    return None


def _rebinds_self(name: str | None) -> str | None:
    if name in SELF_NAMES:
        return (f"binding the name '{name}' is not allowed: '{name}' may only be the first parameter of a "
                f"function (private attributes are allowed on it)")
    return None


def _allowed() -> str:
    return ", ".join(sorted(m for m in ALLOWED_IMPORTS if m != "__future__"))


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in SELF_NAMES


def _inside_chain(node: ast.AST, ctx: _Context) -> bool:
    """Whether `node` is the object of an attribute access (`node.x`), i.e. not the end of its chain."""
    parent = ctx.parents.get(id(node))
    return isinstance(parent, ast.Attribute) and parent.value is node


def _attr_root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_module_subclass(cls: ast.ClassDef) -> bool:
    """`class Net(nn.Module)`, `(torch.nn.Module)`, `(Module)` — or a subclass of a local Module class."""
    for base in cls.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name == "Module" or name.endswith("Module") or name in ("Sequential", "ModuleList"):
            return True
    return bool(cls.bases)  # a locally defined base: the harness checks issubclass for real
