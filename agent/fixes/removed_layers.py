"""Fix `removed-layers` (stage source): a layer "removed" by setting it to None. Called still, it becomes
`nn.Identity()`; never read, its None and the guards around it go.
"""
from __future__ import annotations

import ast

from nasloop.agent.fixes.ast_tools import replace_spans
from nasloop.agent.python_source import parse_source


def keep_removed_layers(code: str) -> tuple[str, str]:
    """Deterministic repair of how the 1.5B model removes a layer. Told "Remove normalisation from bn2", it
    set `self.bn2 = None` in __init__ and kept `x = self.bn2(x)` in forward (CIFAR-10 search, seed 45:
    'NoneType' object is not callable, and the repair told so came back the same): a layer assigned None and
    called anywhere in the class becomes `nn.Identity()`, what the removal meant. Or it wrote
    `if self.bn3 is not None: self.bn3 = None` into forward (seed 44): the net trained and became the best,
    and four of the next rewrites moved that guard into __init__, before any self.bn3 ("'Net' object has no
    attribute 'bn3'"). A guard whose body only sets the layers it tests to None goes, and so does a
    `self.X = None` nothing reads."""
    if "None" not in code:  # each step acts on a `self.X = None`: no parse (a fifth of a scripted run's host time)
        return code, ""
    notes = []
    for step in (_drop_none_guards, _drop_unread_nones, _identity_for_called_nones):
        code, note = step(code)
        notes += [note] if note else []
    return code, "; ".join(notes)


def _drop_none_guards(code: str) -> tuple[str, str]:
    """`if self.X is not None: self.X = None` (any test on self.X; a body of such assignments) goes."""
    tree = _parse(code)
    if tree is None:
        return code, ""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and not node.orelse and node.body and all(_sets_none(s) for s in node.body):
            tested = {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute) and _self_attr(n)}
            if {s.targets[0].attr for s in node.body} <= tested:  # type: ignore[attr-defined]
                spans.append((node.lineno, node.end_lineno or node.lineno))
    return _without_lines(code, spans, "a guard that only sets the layer it tests to None")


def _drop_unread_nones(code: str) -> tuple[str, str]:
    """`self.X = None` where nothing in the module reads self.X goes."""
    tree = _parse(code)
    if tree is None:
        return code, ""
    read = {n.attr for n in ast.walk(tree) if _self_attr(n) and isinstance(n.ctx, ast.Load)}  # type: ignore[attr-defined]
    spans = [(s.lineno, s.end_lineno or s.lineno) for s in ast.walk(tree)
             if isinstance(s, ast.Assign) and _sets_none(s) and s.targets[0].attr not in read]  # type: ignore[attr-defined]
    return _without_lines(code, spans, "a layer set to None that nothing reads")


def _identity_for_called_nones(code: str) -> tuple[str, str]:
    """`self.X = None` where self.X is called somewhere becomes `self.X = nn.Identity()`."""
    tree = _parse(code)
    if tree is None:
        return code, ""
    edits: list[tuple[ast.Constant, str]] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        called = {n.func.attr for n in ast.walk(cls) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and _self_attr(n.func)}
        for stmt in ast.walk(cls):
            if _sets_none(stmt) and stmt.targets[0].attr in called:  # type: ignore[attr-defined]
                edits.append((stmt.value, stmt.targets[0].attr))  # type: ignore[attr-defined]
    if not edits:
        return code, ""
    names = ", ".join(f"self.{name}" for _, name in edits)
    code, _ = replace_spans(code, [(value, "nn.Identity()") for value, _ in edits])
    return code, f"a layer set to None but still called is nn.Identity(): {names}"


def _without_lines(code: str, spans: list[tuple[int, int]], what: str) -> tuple[str, str]:
    """The code without the given (first, last) line spans, if it still parses."""
    if not spans:
        return code, ""
    lines = code.splitlines(keepends=True)
    gone = sorted({i for first, last in spans for i in range(first - 1, last)})
    out = "".join(line for i, line in enumerate(lines) if i not in set(gone))
    if _parse(out) is None:
        return code, ""
    return out, f"{what} removed (line{'s' if len(gone) > 1 else ''} {', '.join(str(i + 1) for i in gone)})"


def _sets_none(node: ast.AST) -> bool:
    return (isinstance(node, ast.Assign) and len(node.targets) == 1 and _self_attr(node.targets[0])
            and isinstance(node.value, ast.Constant) and node.value.value is None)


def _self_attr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _parse(code: str) -> ast.Module | None:
    try:
        return parse_source(code)
    except SyntaxError:
        return None
