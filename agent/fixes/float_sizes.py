"""Fix `float-sizes` (stage source): a fractional layer size (`nn.Linear(8192 * 1.5, 10)`) becomes an integer.
"""
from __future__ import annotations

import ast

from nasloop.agent.fixes.ast_tools import SIZE_ARGS, constant, replace_spans
from nasloop.agent.python_source import parse_source


def fix_float_sizes(code: str) -> tuple[str, str]:
    """Deterministic repair of a fractional layer size (`nn.Linear(8192 * 1.5, 10)`: "widen by 50 %" taken
    literally): a size argument of a Conv, Linear or BatchNorm that is arithmetic on numbers with a float
    or a true division becomes its integer value; one on names (`in_channels * 1.5`) is wrapped in int()."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    edits: list[tuple[ast.expr, str]] = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and call.func.attr in SIZE_ARGS):
            continue
        count, names = SIZE_ARGS[call.func.attr]
        for arg in call.args[:count] + [k.value for k in call.keywords if k.arg in names]:
            if arg.lineno != arg.end_lineno or not any(
                    isinstance(n, ast.Constant) and isinstance(n.value, float) or isinstance(n, ast.Div)
                    for n in ast.walk(arg)):
                continue
            value = constant(arg, floats=True)
            edits.append((arg, str(int(value)) if value is not None else f"int({ast.unparse(arg)})"))
    if not edits:
        return code, ""
    code, notes = replace_spans(code, edits)
    return code, "fractional layer size: " + ", ".join(notes)
