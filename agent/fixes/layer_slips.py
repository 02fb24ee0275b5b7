"""Fix `layer-slips` (stage source): a layer used where a tensor belongs in `forward`.
"""
from __future__ import annotations

import ast
import re

from nasloop.agent.fixes.ast_tools import init_assignments, tensor_function
from nasloop.agent.python_source import parse_source

_STATELESS = re.compile(r"(Max|Avg|AdaptiveAvg|AdaptiveMax)Pool[123]d|ReLU6?|LeakyReLU|GELU|SiLU|Sigmoid|Tanh|"
                        r"Hardswish|ELU|Mish|Flatten|Dropout[123]?d?|Identity|Softmax|Upsample")


def fix_layer_slips(code: str) -> tuple[str, str]:
    """Deterministic repair of a layer used where a tensor belongs, in `forward`: `x = nn.AdaptiveAvgPool2d(1)`
    (a parameter-free layer built but never applied: becomes `nn.AdaptiveAvgPool2d(1)(x)`) and
    `x = torch.flatten(self.pool, 1)` (a layer of the net passed as an argument: becomes `self.pool(x)`).
    `x` is the name the statement assigns, and only when it already holds a tensor (forward's input or an
    earlier assignment). Returns (code, what was changed)."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    edits: list[tuple[int, int, str]] = []  # (line, column in bytes, text to insert)
    notes: list[str] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        layers = set(init_assignments(cls, code))
        fwd = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
        if fwd is None:
            continue
        tensors = {a.arg for a in fwd.args.args[1:]}
        for stmt in fwd.body:
            target = stmt.targets[0].id if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                                            and isinstance(stmt.targets[0], ast.Name)) else None
            if target in tensors and isinstance(stmt, ast.Assign):
                value = stmt.value
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                        and isinstance(value.func.value, ast.Name) and value.func.value.id == "nn"
                        and _STATELESS.fullmatch(value.func.attr)):
                    edits.append((value.end_lineno or 0, value.end_col_offset or 0, f"({target})"))
                    notes.append(f"nn.{value.func.attr}(...) -> nn.{value.func.attr}(...)({target})")
                for call in (n for n in ast.walk(value) if isinstance(n, ast.Call) and tensor_function(n.func)):
                    for arg in call.args:
                        if (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name)
                                and arg.value.id == "self" and arg.attr in layers):
                            edits.append((arg.end_lineno or 0, arg.end_col_offset or 0, f"({target})"))
                            notes.append(f"self.{arg.attr} passed as a tensor -> self.{arg.attr}({target})")
            if target:
                tensors.add(target)
    if not edits:
        return code, ""
    lines = code.splitlines(keepends=True)
    for lineno, col, text in sorted(set(edits), reverse=True):
        raw = lines[lineno - 1].encode()
        lines[lineno - 1] = (raw[:col] + text.encode() + raw[col:]).decode()
    out = "".join(lines)
    try:
        parse_source(out)
    except SyntaxError:
        return code, ""
    return out, "layer used as a tensor: " + ", ".join(dict.fromkeys(notes))
