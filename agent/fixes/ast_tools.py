"""AST helpers several fixes share: a class's one-line layer definitions, the size arguments of
sized layers, and constant arithmetic.
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from nasloop.agent.python_source import source_segment


def init_assignments(cls, source: str) -> dict[str, str]:
    """`self.X = ...` statements on one line in the class's __init__, by X."""
    init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    out: dict[str, str] = {}
    for stmt in (init.body if init else []):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Attribute)
                and isinstance(stmt.targets[0].value, ast.Name) and stmt.targets[0].value.id == "self"
                and stmt.lineno == stmt.end_lineno):
            out.setdefault(stmt.targets[0].attr, source_segment(source, stmt) or "")
    return out


# Layer -> (how many leading positional arguments are sizes, their keywords; the input size comes first).
SIZE_ARGS = {"Conv1d": (2, ("in_channels", "out_channels")), "Conv2d": (2, ("in_channels", "out_channels")),
             "Linear": (2, ("in_features", "out_features")), "BatchNorm1d": (1, ("num_features",)),
             "BatchNorm2d": (1, ("num_features",))}


def init_methods(tree: ast.Module) -> list[ast.FunctionDef]:
    """The `__init__` of every top-level class."""
    return [f for cls in tree.body if isinstance(cls, ast.ClassDef)
            for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]


def layer_call(init: ast.FunctionDef, name: str, kind: str) -> tuple[ast.Assign, ast.Call] | None:
    """The first `self.<name> = <...>.<kind>(...)` statement directly in `init`, and its call."""
    for node in init.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call)):
            continue
        target, call = node.targets[0], node.value
        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                and target.value.id == "self" and target.attr == name
                and getattr(call.func, "attr", getattr(call.func, "id", "")) == kind):
            return node, call
    return None


def size_arg(call: ast.Call, keyword: str, pos: int) -> ast.expr | None:
    """A layer call's size argument, by keyword or at position `pos`."""
    arg = next((k.value for k in call.keywords if k.arg == keyword), None)
    return call.args[pos] if arg is None and len(call.args) > pos else arg


def replace_spans(code: str, edits: list[tuple[Any, str]]) -> tuple[str, list[str]]:
    """`code` with each (node, text) edit's one-line source span replaced by text (ast's columns are byte
    offsets), and an "old -> new" note per edit, in source order."""
    lines = code.splitlines(keepends=True)
    notes = []
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        raw = lines[node.lineno - 1].encode()
        notes.append(f"{raw[node.col_offset:node.end_col_offset].decode()} -> {text}")
        lines[node.lineno - 1] = (raw[:node.col_offset] + text.encode() + raw[node.end_col_offset:]).decode()
    return "".join(lines), notes[::-1]


def tensor_function(func) -> bool:
    """A call that takes tensors: `torch.*`, `F.*` or a layer of the net (`self.fc`), never `isinstance` & co."""
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in ("torch", "F", "self")


def constant(node, floats: bool = False) -> int | float | None:
    """The value of arithmetic on number literals (`128 // 2 ** 3`), else None. Only integers unless
    `floats` (then float literals and `/` too)."""
    ops: dict[type, Callable[[Any, Any], Any]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Pow: operator.pow, **({ast.Div: operator.truediv} if floats else {})}
    kinds = (int, float) if floats else int
    if isinstance(node, ast.Constant) and isinstance(node.value, kinds) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        left, right = constant(node.left, floats), constant(node.right, floats)
        if (left is not None and right is not None
                and not (isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0)
                and not (isinstance(node.op, ast.Pow) and not 0 <= right <= 16)):
            return ops[type(node.op)](left, right)
    return None
