"""Fix `forward` (stage source): a Net whose forward was written into the end of `__init__` gets it back as
a method; a Net that has its forward loses the lines of forward's work it also wrote into `__init__`.

The slip (the 1.5B model, CIFAR-10 seed 45, four iterations of twenty): the Generator copied `__init__`,
then went on with the last lines of forward (`x = torch.flatten(x, 1)`, `return self.fc(x)`) without
ever writing `def forward`, skipping the lines between. The repair, told "Net has no forward method",
wrote the same file again. The lines in `__init__` that read an `x` it never assigned are forward's:
they become `forward(self, x)`. Where they are the tail of the base network's forward, the lines the
model skipped are taken from there, so the net is the base net with the candidate's `__init__`.
"""
from __future__ import annotations

import ast

from nasloop.tools.static_check import missing_forward
from nasloop.agent.python_source import parse_source, source_segment


def restore_forward(code: str, base: str) -> tuple[str, str]:
    """(code with a `forward` method built from the forward lines in `__init__`, what was done); the code
    unchanged and "" when Net has a forward, or its `__init__` has no such lines."""
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    net = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"), None)
    init = _method(net, "__init__") if net is not None else None
    if net is None or init is None:
        return code, ""
    if not missing_forward(net):
        return _drop_stray(code, net, init)
    if _method(net, "forward", nested=True):
        return code, ""
    start = _first_forward_statement(init)
    if start is None:
        return code, ""
    moved = [s for s in init.body[start:] if not _defines_layer(s)]
    lines = code.splitlines(keepends=True)
    body = [line for s in moved for line in lines[s.lineno - 1:s.end_lineno]]
    head, note = _base_head(base, body, init.body[0].col_offset)
    method = " " * init.col_offset
    forward = [f"\n{method}def forward(self, x):\n", *head, *body]
    for s in reversed(moved):  # remove from the bottom up, so the earlier line numbers stay right
        del lines[s.lineno - 1:s.end_lineno]
    end = (init.end_lineno or 0) - sum((s.end_lineno or s.lineno) - s.lineno + 1 for s in moved)
    out = "".join(lines[:end] + forward + lines[end:])
    try:
        parse_source(out)
    except SyntaxError:
        return code, ""
    return out, f"moved {len(moved)} forward statement(s) out of Net.__init__ into forward{note}"


def _drop_stray(code: str, net: ast.ClassDef, init: ast.FunctionDef) -> tuple[str, str]:
    """A net with its forward: the `self.X = <forward's work on x>` lines the model also wrote into `__init__`
    go, where nothing reads `self.X` (seed 45, twice: `self.relu1 = F.relu(self.bn1(self.conv1(x)))` next to
    a forward doing the same; `__init__` has no `x`, so the net failed to build)."""
    start = _first_forward_statement(init)
    if start is None:
        return code, ""
    suspects = [s for s in init.body[start:] if _defines_layer(s) and _reads_x(s)]
    inside = {id(n) for s in suspects for n in ast.walk(s)}  # seed 44: self.relu2 = F.relu(self.conv2(self.relu1(x)))
    read = {n.attr for n in ast.walk(net) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
            and isinstance(n.value, ast.Name) and n.value.id == "self" and id(n) not in inside}
    stray = [s for s in suspects if s.targets[0].attr not in read]  # type: ignore[attr-defined]
    if not stray:
        return code, ""
    lines = code.splitlines(keepends=True)
    for s in reversed(stray):
        del lines[s.lineno - 1:s.end_lineno]
    out = "".join(lines)
    try:
        parse_source(out)
    except SyntaxError:
        return code, ""
    names = ", ".join(f"self.{s.targets[0].attr}" for s in stray)  # type: ignore[attr-defined]
    return out, f"removed {names} from Net.__init__: computed from an input x that __init__ does not have"


def _reads_x(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "x" and isinstance(n.ctx, ast.Load) for n in ast.walk(stmt))


def _method(cls: ast.ClassDef, name: str, nested: bool = False) -> ast.FunctionDef | None:
    """The class's method `name`; with `nested`, also one written inside another method."""
    nodes = ast.walk(cls) if nested else iter(cls.body)
    return next((n for n in nodes if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _first_forward_statement(init: ast.FunctionDef) -> int | None:
    """The index of the first statement of `__init__` that reads `x` before `__init__` assigned it, or returns
    a value: forward's work, which `__init__` cannot do (it has no input)."""
    params = {a.arg for a in init.args.args + init.args.kwonlyargs}
    assigned: set[str] = set()
    for i, stmt in enumerate(init.body):
        if isinstance(stmt, ast.Return) and stmt.value is not None:
            return i
        reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        if "x" in reads and "x" not in assigned | params:
            return i
        assigned |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return None


def _defines_layer(stmt: ast.stmt) -> bool:
    """`self.X = ...`: a layer definition, which stays in `__init__` wherever the model put it."""
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Attribute)
            and isinstance(stmt.targets[0].value, ast.Name) and stmt.targets[0].value.id == "self")


def _base_head(base: str, body: list[str], indent: int) -> tuple[list[str], str]:
    """The base forward's lines before the moved ones' first line, re-indented to `indent`, when that line is
    one of the base forward's (the model skipped from there to the end); else none."""
    try:
        tree = parse_source(base)
    except SyntaxError:
        return [], ""
    net = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"), None)
    forward = _method(net, "forward") if net is not None else None
    first = next((line.strip() for line in body if line.strip() and not line.strip().startswith("#")), "")
    if forward is None or not first:
        return [], ""
    at = next((i for i, s in enumerate(forward.body) if (source_segment(base, s) or "").strip() == first), None)
    if not at:
        return [], ""
    lines, shift = base.splitlines(), indent - forward.body[0].col_offset
    head = [(" " * shift + line if shift >= 0 else line[-shift:]) + "\n"
            for s in forward.body[:at] for line in lines[s.lineno - 1:s.end_lineno]]
    return head, f", after the {at} statement(s) of the base network's forward before them"
