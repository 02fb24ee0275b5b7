"""Deterministic fixes guided by the pre-flight's shape trace (agent/loop/fidelity.py runs them in a loop, one
layer per pre-flight): the size argument of the Conv2d/BatchNorm2d/Linear the trace names; a copy for a
layer `forward` applies to two input sizes; a global pool and flatten before a Linear given a feature map.
Fix `shapes` (stage pre-flight); like every fix it returns (code, note) and the note is recorded.
"""
from __future__ import annotations

import ast
import re

from nasloop.agent.fixes.ast_tools import SIZE_ARGS, constant, init_methods, layer_call, replace_spans, size_arg
from nasloop.agent.python_source import parse_source, source_segment

SIZED = ("Conv2d", "BatchNorm1d", "BatchNorm2d", "Linear")


def failing_layer(failure: dict) -> tuple[str, str, list[int]] | None:
    """(name, type, input shape) of the layer the pre-flight caught failing, from the outcome's structured
    `failure` record: a direct attribute of the net (not a nested `features.3`) of a type with a size."""
    layer = failure.get("layer") if isinstance(failure, dict) else None
    if not isinstance(layer, dict):
        return None
    name, kind, got = layer.get("name"), layer.get("type"), layer.get("in")
    if not (isinstance(name, str) and name.isidentifier() and kind in SIZED and isinstance(got, list)
            and got and all(isinstance(d, int) for d in got)):
        return None
    return name, kind, got


def fix_shapes(code: str, failure: dict) -> tuple[str, str]:
    """Deterministic repair of a channel mismatch the pre-flight located: when the shape trace says layer
    `self.X` (a Conv2d, BatchNorm2d or Linear) got an input of C channels (or, for Linear, C features),
    and its size argument in `__init__` is a number, arithmetic on numbers (`128 // 2`) or one of
    `__init__`'s own parameters (`in_channels` misused for an inner layer), it becomes C. Only statements
    directly in `__init__` are touched (never inside a loop or a branch). One layer per call; the candidate
    is then pre-flighted again. Returns (code, what was changed)."""
    found = failing_layer(failure)
    if found is None:
        return code, ""
    name, kind, got = found
    want = got[0] if kind != "Linear" else _product(got)
    failed_line = failure.get("line") if failure.get("function") == "forward" else None
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    if kind == "Linear" and len(got) == 3:
        return _pool_before(code, tree, name, failed_line, "x".join(map(str, got)))
    if kind.startswith("BatchNorm") and _norm_for(got) not in (None, kind):
        return _norm_kind(code, tree, name, kind, got)
    keyword, pos = SIZE_ARGS[kind][1][0], 0
    for init in init_methods(tree):
        params = {a.arg for a in init.args.args + init.args.kwonlyargs} - {"self"}
        found = layer_call(init, name, kind)
        if found is not None:
            node, call = found
            arg = size_arg(call, keyword, pos)
            if arg is None or not (constant(arg) is not None or isinstance(arg, ast.Name) and arg.id in params):
                return code, ""
            if constant(arg) == want or arg.lineno != arg.end_lineno:
                return code, ""
            lines = code.splitlines(keepends=True)
            line = lines[arg.lineno - 1]
            b = len(line.encode()[:arg.col_offset].decode())  # ast offsets are in bytes
            e = len(line.encode()[:arg.end_col_offset].decode())
            cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and init in c.body)
            site = _second_use(cls, name, failed_line, lines)
            if site is not None and node.lineno == node.end_lineno:
                # one layer applied to two input sizes: the failing use gets its own copy, sized for it
                copy = _fresh_name(cls, name, code)
                lines[site - 1] = lines[site - 1].replace(f"self.{name}(", f"self.{copy}(")
                text = line[:b] + str(want) + line[e:]
                t = text.index(f"self.{name}")
                lines.insert(node.lineno, text[:t] + f"self.{copy}" + text[t + len(f"self.{name}"):])
                return "".join(lines), (f"self.{name} = nn.{kind}(...) is used on two input sizes: the use on "
                                        f"line {site} gets its own self.{copy} with {keyword} {want}")
            lines[arg.lineno - 1] = line[:b] + str(want) + line[e:]
            return "".join(lines), (f"self.{name} = nn.{kind}(...): {keyword} {line[b:e]} -> {want} "
                                    f"(the input it gets)")
    return code, ""


def _norm_for(got: list[int]) -> str | None:
    """The batch norm that takes an input of this per-sample shape: a map (C x H x W), or features (C, or C x L)."""
    return "BatchNorm2d" if len(got) == 3 else "BatchNorm1d" if len(got) in (1, 2) else None


def _norm_kind(code: str, tree, name: str, kind: str, got: list[int]) -> tuple[str, str]:
    """A batch norm of the other dimension than its input (`✗ bn1 BatchNorm1d(32) got 32x32x32`, or a
    BatchNorm2d after a Linear) becomes the one that takes it, sized for it. The 1.5B model wrote both in one
    CIFAR-10 search (seed 45, at 46e42c2): told "Remove normalisation from bn1" it made bn1 a BatchNorm1d, and
    it put a BatchNorm2d(256) after a new Linear; each repair kept the norm, and both candidates failed."""
    want = _norm_for(got)
    for init in init_methods(tree):
        found = layer_call(init, name, kind)
        if found is None or want is None:
            continue
        node, call = found
        if node.lineno != node.end_lineno:
            return code, ""
        owner = f"{source_segment(code, call.func.value)}." if isinstance(call.func, ast.Attribute) else ""
        fixed, _ = replace_spans(code, [(call, f"{owner}{want}({got[0]})")])
        return fixed, (f"self.{name} = nn.{kind}(...) -> {want}({got[0]}): it gets a "
                       f"{'x'.join(map(str, got))} input")
    return code, ""


def _pool_before(code: str, tree, name: str, line: int | None, got: str) -> tuple[str, str]:
    """A Linear applied to a feature map (`✗ fc Linear(...) got 128x16x16`): the line of forward that
    applies it, when it is a statement of its own like `x = self.fc(x)` or `return self.fc(x)`, gets a
    global average pool and flatten before it, as the Generator's instructions ask. The Linear's size is
    then the next pre-flight's to fix."""
    if not isinstance(line, int) or not re.search(r"^import torch\b", code, re.MULTILINE):
        return code, ""
    for cls in (c for c in tree.body if isinstance(c, ast.ClassDef)):
        fwd = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
        stmt = next((st for st in (fwd.body if fwd else []) if st.lineno == line == st.end_lineno), None)
        call = next((n for n in ast.walk(stmt) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                     and n.func.attr == name and isinstance(n.func.value, ast.Name) and n.func.value.id == "self"
                     and len(n.args) == 1 and isinstance(n.args[0], ast.Name)), None) if stmt else None
        if call is None or not isinstance(call.args[0], ast.Name):
            continue
        v = call.args[0].id
        lines = code.splitlines(keepends=True)
        indent = lines[line - 1][:len(lines[line - 1]) - len(lines[line - 1].lstrip())]
        lines.insert(line - 1, f"{indent}{v} = torch.flatten(torch.nn.functional.adaptive_avg_pool2d({v}, 1), 1)\n")
        return "".join(lines), (f"inserted a global average pool and flatten before self.{name} on line {line} "
                                f"(the Linear got a {got} feature map)")
    return code, ""


def _second_use(cls, name: str, line: int | None, lines: list[str]) -> int | None:
    """The forward line that failed, when it applies `self.<name>` once and forward applies it elsewhere too."""
    fwd = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
    if not isinstance(line, int) or fwd is None:
        return None
    uses = [n.lineno for n in ast.walk(fwd) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == name and isinstance(n.func.value, ast.Name) and n.func.value.id == "self"]
    if len(uses) < 2 or uses.count(line) != 1 or line > len(lines) or lines[line - 1].count(f"self.{name}(") != 1:
        return None
    return line


def _fresh_name(cls, name: str, code: str) -> str:
    """`conv1_2` (or `_3`, ...): a layer name the class does not use yet."""
    n = 2
    while f"self.{name}_{n}" in code:
        n += 1
    return f"{name}_{n}"


def _product(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
