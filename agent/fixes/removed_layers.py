"""Fix `removed-layers` (stage source): a layer "removed" as `self.bn2 = None` that forward still calls
becomes `nn.Identity()`.
"""
from __future__ import annotations

import ast


def keep_removed_layers(code: str) -> tuple[str, str]:
    """Deterministic repair of how the 1.5B model removes a layer: told "Remove normalisation from bn2", it
    set `self.bn2 = None` in __init__ and kept `x = self.bn2(x)` in forward (CIFAR-10 search, seed 45:
    'NoneType' object is not callable, and the repair told so came back the same). A layer assigned None and
    called anywhere in the class becomes `nn.Identity()`: what the removal meant, in one edit."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, ""
    lines = code.splitlines(keepends=True)
    edits: list[tuple[ast.Constant, str]] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        called = {n.func.attr for n in ast.walk(cls) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and _self_attr(n.func)}
        for stmt in ast.walk(cls):
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and _self_attr(stmt.targets[0])
                    and isinstance(stmt.value, ast.Constant) and stmt.value.value is None
                    and stmt.targets[0].attr in called):  # type: ignore[attr-defined]
                edits.append((stmt.value, stmt.targets[0].attr))  # type: ignore[attr-defined]
    if not edits:
        return code, ""
    for value, _ in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        raw = lines[value.lineno - 1].encode()
        lines[value.lineno - 1] = (raw[:value.col_offset] + b"nn.Identity()" + raw[value.end_col_offset:]).decode()
    names = ", ".join(f"self.{name}" for _, name in edits)
    return "".join(lines), f"a layer set to None but still called is nn.Identity(): {names}"


def _self_attr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
