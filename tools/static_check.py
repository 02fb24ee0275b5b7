"""AST policy applied to a candidate before a container is spent on it.

It rejects what a network definition never needs and an escape always does: imports beyond the
allowlist, builtins that reach the interpreter (eval, exec, open, __import__, getattr...), dunder
attributes other than `__init__`, private attributes of anything but `self`, attribute names that lead
to the OS through torch (`torch.os`, `torch.sys`...), format strings that read attributes, and
assignments to imported modules (monkey-patching torch could fake a result). The sandbox is the
security boundary; this check makes the common escapes fail fast with a reason the LLM can act on.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

ALLOWED_IMPORTS = frozenset({
    "torch", "torch.nn", "torch.nn.functional", "math", "functools", "typing", "collections",
    "itertools", "__future__",
})
BANNED_NAMES = frozenset({
    "eval", "exec", "open", "__import__", "compile", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "input", "breakpoint", "exit", "quit", "help", "memoryview", "__builtins__", "__loader__",
    "__spec__",
})
# Attribute names that lead from torch/nn to the operating system, the importer or native code.
BANNED_ATTRS = frozenset({
    "os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "shutil", "pathlib", "io",
    "pickle", "marshal", "gc", "inspect", "threading", "multiprocessing", "signal", "resource", "system",
    "popen", "load", "save", "load_library", "hub", "cpp_extension", "compile", "format_map", "environ",
    "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame", "func_globals", "mro",
})
_FORMAT_ATTR = re.compile(r"\{[^{}]*[.\[]\s*_")


@dataclass(frozen=True)
class Violation:
    """Why the candidate was rejected: `kind` is syntax_error or invalid_code."""

    kind: str
    reason: str


def check_source(source: str) -> Violation | None:
    """Return the first policy violation of `source`, or None when it may run in the sandbox."""
    try:
        tree = ast.parse(source, filename="candidate.py")
    except SyntaxError as exc:
        return Violation("syntax_error", f"SyntaxError: {exc.msg} (candidate.py:{exc.lineno})")
    except ValueError as exc:  # e.g. null bytes
        return Violation("syntax_error", f"cannot parse the candidate: {exc}")

    modules: set[str] = set()
    for node in ast.walk(tree):
        bad = _check_node(node, modules)
        if bad:
            line = getattr(node, "lineno", "?")
            return Violation("invalid_code", f"{bad} (candidate.py:{line})")

    # Second pass: assignments whose target is an imported module (needs the full alias set).
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            root = _attr_root(t)
            if isinstance(t, (ast.Attribute, ast.Subscript)) and root in modules:
                return Violation("invalid_code", f"assigning to an attribute of the imported module '{root}' is "
                                                 f"not allowed (candidate.py:{node.lineno})")

    if not any(isinstance(n, ast.ClassDef) and n.name == "Net" and _is_module_subclass(n) for n in tree.body):
        return Violation("invalid_code", "no top-level 'class Net(nn.Module)' in the code")
    for node in tree.body:
        missing = _undefined_attributes(node) if isinstance(node, ast.ClassDef) else None
        if missing:
            return Violation("invalid_code", missing)
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


def _check_node(node: ast.AST, modules: set[str]) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                return f"import of '{alias.name}' is not allowed (allowed: {_allowed()})"
            modules.add((alias.asname or alias.name).split(".")[0])
    elif isinstance(node, ast.ImportFrom):
        mod = "." * node.level + (node.module or "")
        if mod not in ALLOWED_IMPORTS:
            return f"import from '{mod}' is not allowed (allowed: {_allowed()})"
        for alias in node.names:
            full = f"{mod}.{alias.name}"
            if alias.name == "*" or alias.name in BANNED_ATTRS or alias.name.startswith("_") and mod != "__future__":
                return f"'from {mod} import {alias.name}' is not allowed"
            if full in ALLOWED_IMPORTS:
                modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Name):
        if node.id in BANNED_NAMES:
            return f"use of '{node.id}' is not allowed"
        if node.id.startswith("__") and node.id.endswith("__") and node.id != "__name__":
            return f"use of the dunder name '{node.id}' is not allowed"
    elif isinstance(node, ast.Attribute):
        a = node.attr
        if a.startswith("__") and a.endswith("__") and a != "__init__":
            return f"access to the dunder attribute '.{a}' is not allowed"
        if a.startswith("_") and not (a.startswith("__") and a.endswith("__")) and not _is_self(node.value):
            return f"access to the private attribute '.{a}' is not allowed (only on self)"
        if a in BANNED_ATTRS:
            return f"access to '.{a}' is not allowed"
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _FORMAT_ATTR.search(node.value):
        return "format strings that read attributes are not allowed"
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        return f"'{type(node).__name__.lower()}' statements are not allowed"
    return None


def _allowed() -> str:
    return ", ".join(sorted(m for m in ALLOWED_IMPORTS if m != "__future__"))


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


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
