"""Fix `definitions` (stage source): layer definitions a rewrite dropped while `forward` still uses
them are restored from the network the Generator was asked to change.
"""
from __future__ import annotations

import ast

from nasloop.agent.fixes.ast_tools import init_assignments
from nasloop.tools.static_check import undefined_attributes
from nasloop.agent.python_source import parse_source


def restore_definitions(code: str, base: str) -> tuple[str, str]:
    """Deterministic repair of the other slip small models make most: a rewrite that drops layer
    definitions (`self.conv3 = ...`) but keeps their uses in forward. A dropped definition that the base
    network (the one the Generator was asked to change) has on one line is put back where the base has it:
    before the next definition both have, else at the end of __init__. Appended at the end, the layers of a
    seed-45 net ended up after the ones forward uses later; the next rewrite copied that order, lost its place
    and skipped from __init__ into forward's last lines. A shape that no longer fits is the pre-flight's.
    Returns (code, what was restored) — recorded like every fix."""

    try:
        tree, base_tree = parse_source(code), parse_source(base)
    except SyntaxError:
        return code, ""
    base_defs = {cls.name: init_assignments(cls, base) for cls in base_tree.body if isinstance(cls, ast.ClassDef)}
    lines = code.splitlines(keepends=True)
    inserts: dict[int, list[str]] = {}
    restored: list[str] = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        missing = undefined_attributes(cls)[0]
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        base_layers = base_defs.get(cls.name, {})
        found = [name for name in base_layers if name in missing]  # in the base's order
        if init is None or not init.body or not found:
            continue
        indent = " " * init.body[0].col_offset
        for name in found:
            inserts.setdefault(_position(init, list(base_layers), name), []).append(f"{indent}{base_layers[name]}\n")
        restored += [f"{cls.name}.{name}" for name in found]
    if not restored:
        return code, ""
    for at in sorted(inserts, reverse=True):
        lines[at:at] = inserts[at]
    out = "".join(lines)
    try:
        parse_source(out)
    except SyntaxError:
        return code, ""
    return out, f"restored dropped definition(s) from the base network: {', '.join(restored)}"


def _position(init: ast.FunctionDef, order: list[str], name: str) -> int:
    """The line index to restore `name` at: before the candidate's definition of the first layer the base
    defines after it, else after the candidate's `__init__`."""
    defined: dict[str, int] = {}
    for stmt in init.body:
        for target in (stmt.targets if isinstance(stmt, ast.Assign) else []):
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                defined.setdefault(target.attr, stmt.lineno - 1)
    later = next((defined[n] for n in order[order.index(name) + 1:] if n in defined), None)
    return later if later is not None else init.body[-1].end_lineno or 0
