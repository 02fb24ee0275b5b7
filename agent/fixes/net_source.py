"""The base net's source as the loop's edits see it (agent/fixes/changes.py): its `Net` class's `__init__`
and `forward`, which statement defines or calls a layer, what feeds a call, and the pending edits (spans
replaced, lines added) that make the edited code in one pass.
"""
from __future__ import annotations

import ast
from typing import Callable

from nasloop.agent.fixes.ast_tools import replace_spans
from nasloop.agent.python_source import parse_source, source_segment


class NetSource:
    """The base net's class: its __init__ and forward, and the pending edits (spans first, then new lines)."""

    def __init__(self, code: str, init: ast.FunctionDef, forward: ast.FunctionDef):
        self.code, self.init, self.forward = code, init, forward
        self.spans: list[tuple[ast.AST, str]] = []
        self.lines: list[tuple[int, str]] = []  # (after line, text) in __init__
        self.names = {n.attr for n in ast.walk(init) if isinstance(n, ast.Attribute)}

    @classmethod
    def parse(cls, code: str) -> "NetSource | None":
        try:
            tree = parse_source(code)
        except (SyntaxError, ValueError):
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == "Net":
                methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
                if "__init__" in methods and "forward" in methods:
                    return cls(code, methods["__init__"], methods["forward"])
        return None

    def definition(self, name: str) -> ast.Assign | None:
        """The one-line `self.<name> = ...` statement directly in __init__."""
        found = [s for s in self.init.body if isinstance(s, ast.Assign) and len(s.targets) == 1
                 and self_attr(s.targets[0]) == name and s.lineno == s.end_lineno]
        return found[0] if len(found) == 1 else None

    def call(self, name: str) -> tuple[ast.Call, str] | None:
        """The one call of `self.<name>` in forward, on one line, with one plain-name argument (which a
        shortcut may read again), and that argument's name."""
        calls = [n for n in ast.walk(self.forward) if isinstance(n, ast.Call) and self_attr(n.func) == name]
        if len(calls) != 1:
            return None
        c = calls[0]
        if c.lineno != c.end_lineno or c.keywords or len(c.args) != 1 or not isinstance(c.args[0], ast.Name):
            return None
        return c, c.args[0].id

    def fed_by(self, found: tuple[ast.Call, str], before: str) -> bool:
        """Whether the call's input is the output of `self.<before>` (the layer traced just before it, whose
        shape the edit takes as the input's): its argument is last assigned in the statement of forward that
        calls `before`, or after it. Not so for a shortcut (`x = x + self.conv2_shortcut(identity)`, traced
        after conv2's norm): a residual around it built from that row's shape failed its pre-flight in a
        CIFAR-10 search (seed 44, at c205380), and the Generator's repair failed too."""
        call, arg = found
        body, at = self.forward.body, self.statement(call)
        if at is None:
            return False

        def calls(stmt: ast.stmt, name: str) -> bool:
            return any(isinstance(n, ast.Call) and self_attr(n.func) == name for n in ast.walk(stmt))

        def assigns(stmt: ast.stmt) -> bool:
            return any(isinstance(n, ast.Name) and n.id == arg and isinstance(n.ctx, ast.Store) for n in ast.walk(stmt))

        fed = max((i for i in range(at) if calls(body[i], before)), default=None)
        last = max((i for i in range(at) if assigns(body[i])), default=None)
        return fed is not None and last is not None and last >= fed

    def reads_input(self, found: tuple[ast.Call, str]) -> bool:
        """Whether the call's argument is forward's input, as passed in: its first parameter, not assigned
        before the statement that calls it (the first layer of a net whose input the table does not trace)."""
        call, arg = found
        params, body, at = self.forward.args.args, self.forward.body, self.statement(call)
        if at is None or len(params) < 2 or params[1].arg != arg:
            return False
        return not any(isinstance(n, ast.Name) and n.id == arg and isinstance(n.ctx, ast.Store)
                       for s in body[:at] for n in ast.walk(s))

    def statement(self, node: ast.AST) -> int | None:
        """The index of the statement of forward's body that holds `node`."""
        return next((i for i, s in enumerate(self.forward.body) if any(n is node for n in ast.walk(s))), None)

    def fresh(self, name: str) -> str:
        """An attribute name the net does not use yet."""
        n, out = 1, name
        while out in self.names:
            n, out = n + 1, f"{name}{n}"
        self.names.add(out)
        return out

    def add_layer(self, after: ast.Assign, name: str, layer: str) -> None:
        indent = " " * after.col_offset
        self.lines.append((after.end_lineno or after.lineno, f"{indent}self.{name} = {layer}\n"))

    def segment(self, node: ast.AST) -> str:
        return source_segment(self.code, node) or ""

    def result(self, note: str) -> tuple[str | None, str]:
        """The edited code, if it still parses, and the note."""
        if not (self.spans or self.lines):
            return None, ""
        code, _ = replace_spans(self.code, self.spans)
        lines = code.splitlines(keepends=True)
        # bottom up; of the lines after one line, the last added first, so they read in the order added
        for _, (after, text) in sorted(enumerate(self.lines), key=lambda x: (x[1][0], x[0]), reverse=True):
            lines.insert(after, text)
        code = "".join(lines)
        try:
            parse_source(code)
        except SyntaxError:
            return None, ""
        return code, note


def self_attr(node: ast.AST) -> str | None:
    """X where `node` is `self.X`."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def applies(stmt: ast.stmt, func: Callable[[ast.expr], bool]) -> str | None:
    """V where `stmt` is `V = <func>(V)` on one line (keywords allowed), else None."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Call) and stmt.lineno == stmt.end_lineno and func(stmt.value.func)):
        return None
    args = stmt.value.args
    var = stmt.targets[0].id
    return var if len(args) == 1 and isinstance(args[0], ast.Name) and args[0].id == var else None
