"""Fix `imports` (stage source): a module the code uses under its usual name (`F.relu`, `nn.Conv2d`,
`math.sqrt`) but never imports gets its import. The 1.5B model sometimes drops `import torch.nn.functional
as F` when it rewrites the head of a file; the net then fails at its first forward with a NameError that a
repair rarely connects to the top of the file (seed 44 of a CIFAR-10 search ended on one).
"""
from __future__ import annotations

import ast

from nasloop.agent.python_source import parse_source

# The names the Generator's instructions allow, and the import each stands for.
USUAL = {"torch": "import torch", "nn": "import torch.nn as nn", "F": "import torch.nn.functional as F",
         "math": "import math"}


def add_missing_imports(code: str) -> tuple[str, str]:
    """Returns (code with the missing imports added after the last top-level import, what was added)."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = [USUAL[name] for name in USUAL if name in used and name not in bound]
    if not missing:
        return code, ""
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    at = max((n.end_lineno or n.lineno for n in imports), default=0)
    lines = code.splitlines(keepends=True)
    lines[at:at] = [m + "\n" for m in missing]
    return "".join(lines), "added " + "; ".join(missing)
