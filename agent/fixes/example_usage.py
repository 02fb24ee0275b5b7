"""Fix `example-usage` (stage source): module-level code that runs on import (`net = Net()`) is removed,
and so is module-level code that names `self` (a layer line the model wrote after the class: it can only
raise NameError on import).
"""
from __future__ import annotations

import ast

from nasloop.agent.python_source import parse_source


def drop_example_usage(code: str) -> tuple[str, str]:
    """Deterministic repair of module-level code the candidate runs when imported (`net = Net()`,
    `fix_module(net)`, `print(...)`: an "example usage" small models append): top-level calls, and
    assignments whose value calls a class or function the module defines, are removed. So are statements
    that name `self` (`self.fc = nn.Linear(128, num_classes)` after the class, seed 45 at ca2581f): outside
    a method they can never run, and they were a NameError on import. Definitions, imports and constants
    stay."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}

    def runs(stmt: ast.stmt) -> bool:
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)) \
                and any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(stmt)):
            return True
        if isinstance(stmt, ast.Expr):
            return isinstance(stmt.value, ast.Call)
        if isinstance(stmt, ast.Assign):
            return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defined
                       for n in ast.walk(stmt.value))
        return isinstance(stmt, ast.If) and "__name__" in ast.unparse(stmt.test)

    drop = [stmt for stmt in tree.body if runs(stmt)]
    if not drop:
        return code, ""
    lines = code.splitlines(keepends=True)
    for stmt in reversed(drop):
        del lines[stmt.lineno - 1:stmt.end_lineno]
    gone = ", ".join(ast.unparse(stmt).splitlines()[0][:40] for stmt in drop)
    return "".join(lines), f"removed code that runs on import: {gone}"
