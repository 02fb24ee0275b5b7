"""Fix `inplace` (stage source): `x += self.residual(x)` in forward becomes `x = x + self.residual(x)`.
"""
from __future__ import annotations

import ast

from nasloop.agent.fixes.ast_tools import replace_spans
from nasloop.agent.python_source import parse_source, source_segment

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_LOOSE = (ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Lambda, ast.NamedExpr)  # need brackets after an operator


def fix_inplace(code: str) -> tuple[str, str]:
    """Deterministic repair of the residual connection small models write: an augmented assignment in
    forward (`x += self.residual(x)`) changes in place a tensor autograd saved for the backward pass, and
    training fails at its first step ("one of the variables needed for gradient computation has been modified
    by an inplace operation": a CIFAR-10 search, seed 45, where the repair did not see it either). Out of
    place (`x = x + ...`) is the same sum. Only one-line statements on a plain name, in methods named forward."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    edits: list[tuple[ast.AugAssign, str]] = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "forward"):
        for stmt in ast.walk(fn):
            if (isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and type(stmt.op) in _OPS
                    and stmt.lineno == stmt.end_lineno):
                value = source_segment(code, stmt.value) or ""
                value = f"({value})" if isinstance(stmt.value, _LOOSE) else value
                edits.append((stmt, f"{stmt.target.id} = {stmt.target.id} {_OPS[type(stmt.op)]} {value}"))
    if not edits:
        return code, ""
    code, notes = replace_spans(code, edits)
    return code, "in-place update in forward made out of place: " + ", ".join(notes)
