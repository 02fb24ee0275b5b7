"""Fix `definitions` (stage source): layer definitions a rewrite dropped while `forward` still uses
them are restored from the network the Generator was asked to change.
"""
from __future__ import annotations

import ast

from nasloop.agent.fixes.ast_tools import init_assignments
from nasloop.tools.static_check import undefined_attributes


def restore_definitions(code: str, base: str) -> tuple[str, str]:
    """Deterministic repair of the other slip small models make most: a rewrite that drops layer
    definitions (`self.conv3 = ...`) but keeps their uses in forward. A dropped definition that the base
    network (the one the Generator was asked to change) has on one line is put back at the end of the
    candidate's __init__; a shape that no longer fits is then the pre-flight's to report.
    Returns (code, what was restored) — recorded like every fix."""

    try:
        tree, base_tree = ast.parse(code), ast.parse(base)
    except SyntaxError:
        return code, ""
    base_defs = {cls.name: init_assignments(cls, base) for cls in base_tree.body if isinstance(cls, ast.ClassDef)}
    lines = code.splitlines(keepends=True)
    inserts: list[tuple[int, list[str]]] = []
    restored: list[str] = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        missing = undefined_attributes(cls)[0]
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        found = [(name, base_defs.get(cls.name, {}).get(name)) for name in missing]
        found = [(name, text) for name, text in found if text]
        if init is None or not init.body or not found:
            continue
        indent = " " * init.body[0].col_offset
        inserts.append((init.body[-1].end_lineno or 0, [f"{indent}{text}\n" for _, text in found]))
        restored += [f"{cls.name}.{name}" for name, _ in found]
    if not restored:
        return code, ""
    for after, new in sorted(inserts, reverse=True):
        lines[after:after] = new
    out = "".join(lines)
    try:
        ast.parse(out)
    except SyntaxError:
        return code, ""
    return out, f"restored dropped definition(s) from the base network: {', '.join(restored)}"
