"""Deterministic fixes of the slips small models make in generated networks.

Each takes code and returns (code, note): the note says
what was changed and is recorded with the candidate, so a fix is never hidden; an empty note means the
code is returned unchanged. Only the loop with escapes on applies them (the plain loop stays the paper's).

- `adopt_net`: the only nn.Module of a reply, under another name, becomes `Net`.
- `autofix`: surplus closing brackets (the one that closed a layer call too early).
- `restore_definitions`: layer definitions a rewrite dropped while forward still uses them.
- `fix_layer_slips`: a layer used where a tensor belongs in forward.
- `fix_float_sizes`: a fractional layer size (`nn.Linear(8192 * 1.5, 10)`).
- `drop_example_usage`: module-level code that runs on import (`net = Net()`).
- pre-flight-guided shape fixes: agent/fixes/shapes.py.
"""
from __future__ import annotations

import re

from nasloop.agent.llm.parsing import CODE_FENCE


_MODULE_CLASS = re.compile(r"^class ([A-Za-z_]\w*)\((?:nn|torch\.nn)\.Module\):", re.MULTILINE)


def adopt_net(text: str) -> tuple[str | None, str]:
    """Deterministic repair of a renamed network: a reply whose code block defines exactly one
    `nn.Module` subclass, under another name (`class ModifiedNet(nn.Module)`), gets it renamed to `Net`.
    Returns (code, what was changed), or (None, "") when there is no such block."""
    for lang, body in CODE_FENCE.findall(text or ""):
        names = _MODULE_CLASS.findall(body)
        if lang.lower() in ("", "python", "py", "python3") and len(names) == 1 and names[0] != "Net" \
                and not re.search(r"\bNet\b", body):
            return re.sub(rf"\b{names[0]}\b", "Net", body).strip() + "\n", f"class {names[0]} renamed to Net"
    return None, ""


def autofix(code: str, max_fixes: int = 40) -> tuple[str, str]:
    """Deterministic repair of the syntax slip small models make most: surplus closing brackets.

    Removes surplus `)`/`]`/`}` on a line Python reports as "unmatched" (which ones: see `_drop_surplus`),
    until the module parses or nothing more can be done. Returns (code, what was changed) — the change is recorded, never hidden."""
    import ast

    fixed = 0
    lines = code.splitlines(keepends=True)
    for _ in range(max_fixes):
        try:
            ast.parse("".join(lines))
            break
        except SyntaxError as exc:
            m = re.match(r"unmatched '([)\]}])'", exc.msg or "")
            if not m or not exc.lineno or exc.lineno > len(lines):
                break
            i = exc.lineno - 1
            line = _drop_surplus(lines[i], m.group(1))
            if line is None:
                break
            fixed += len(lines[i]) - len(line)
            lines[i] = line
    if not fixed:
        return code, ""
    out = "".join(lines)
    try:
        ast.parse(out)
    except SyntaxError:
        return code, ""  # only keep a fix that yields a module that parses
    return out, f"removed {fixed} unmatched closing bracket(s)"


def _drop_surplus(line: str, bracket: str) -> str | None:
    """`line` without its surplus `bracket`s (as many as it has more closing than opening ones, at least
    one). Small models close a layer call too early (`nn.Linear(128 * (4)) * 4, 10)`): removing the last
    bracket would leave a tuple or arithmetic on a layer, so when the line is a statement of its own,
    the removal that makes its value one call with the most arguments wins; otherwise (or on a tie) the
    latest brackets go."""
    import ast
    from itertools import combinations

    opening = {")": "(", "]": "[", "}": "{"}[bracket]
    spots = [j for j, ch in enumerate(line) if ch == bracket]
    surplus = max(1, line.count(bracket) - line.count(opening))
    if len(spots) < surplus or surplus > 3:
        return None

    def without(drop: tuple[int, ...]) -> str:
        return "".join(ch for j, ch in enumerate(line) if j not in drop)

    def rank(drop: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        try:
            stmt = ast.parse(without(drop).strip()).body
        except SyntaxError:
            return (-1, drop)
        value = getattr(stmt[0], "value", None) if len(stmt) == 1 else None
        if isinstance(value, ast.Call):
            return (2 + len(value.args) + len(value.keywords), drop)
        return (0 if isinstance(value, (ast.Tuple, ast.BinOp)) else 1, drop)

    return without(max(combinations(spots, surplus), key=rank))


def restore_definitions(code: str, base: str) -> tuple[str, str]:
    """Deterministic repair of the other slip small models make most: a rewrite that drops layer
    definitions (`self.conv3 = ...`) but keeps their uses in forward. A dropped definition that the base
    network (the one the Generator was asked to change) has on one line is put back at the end of the
    candidate's __init__; a shape that no longer fits is then the pre-flight's to report.
    Returns (code, what was restored) — recorded like every fix."""
    import ast

    from nasloop.tools.static_check import undefined_attributes

    try:
        tree, base_tree = ast.parse(code), ast.parse(base)
    except SyntaxError:
        return code, ""
    base_defs = {cls.name: _init_assignments(cls, base) for cls in base_tree.body if isinstance(cls, ast.ClassDef)}
    lines = code.splitlines(keepends=True)
    inserts: list[tuple[int, list[str]]] = []
    restored: list[str] = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        missing = undefined_attributes(cls)[0]
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        found = [(name, base_defs.get(cls.name, {}).get(name)) for name in missing]
        found = [(name, text) for name, text in found if text]
        if init is None or not init.body or not found:
            continue
        indent = " " * init.body[0].col_offset
        inserts.append((init.body[-1].end_lineno or 0, [f"{indent}{text}\n" for _, text in found]))
        restored += [f"{cls.name}.{name}" for name, _ in found]
    if not restored:
        return code, ""
    for after, new in sorted(inserts, reverse=True):
        lines[after:after] = new
    out = "".join(lines)
    try:
        ast.parse(out)
    except SyntaxError:
        return code, ""
    return out, f"restored dropped definition(s) from the base network: {', '.join(restored)}"


def _init_assignments(cls, source: str) -> dict[str, str]:
    """`self.X = ...` statements on one line in the class's __init__, by X."""
    import ast

    init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    out: dict[str, str] = {}
    for stmt in (init.body if init else []):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Attribute)
                and isinstance(stmt.targets[0].value, ast.Name) and stmt.targets[0].value.id == "self"
                and stmt.lineno == stmt.end_lineno):
            out.setdefault(stmt.targets[0].attr, ast.get_source_segment(source, stmt) or "")
    return out


_STATELESS = re.compile(r"(Max|Avg|AdaptiveAvg|AdaptiveMax)Pool[123]d|ReLU6?|LeakyReLU|GELU|SiLU|Sigmoid|Tanh|"
                        r"Hardswish|ELU|Mish|Flatten|Dropout[123]?d?|Identity|Softmax|Upsample")


def fix_layer_slips(code: str) -> tuple[str, str]:
    """Deterministic repair of a layer used where a tensor belongs, in `forward`: `x = nn.AdaptiveAvgPool2d(1)`
    (a parameter-free layer built but never applied: becomes `nn.AdaptiveAvgPool2d(1)(x)`) and
    `x = torch.flatten(self.pool, 1)` (a layer of the net passed as an argument: becomes `self.pool(x)`).
    `x` is the name the statement assigns, and only when it already holds a tensor (forward's input or an
    earlier assignment). Returns (code, what was changed)."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, ""
    edits: list[tuple[int, int, str]] = []  # (line, column in bytes, text to insert)
    notes: list[str] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        layers = set(_init_assignments(cls, code))
        fwd = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
        if fwd is None:
            continue
        tensors = {a.arg for a in fwd.args.args[1:]}
        for stmt in fwd.body:
            target = stmt.targets[0].id if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                                            and isinstance(stmt.targets[0], ast.Name)) else None
            if target in tensors:
                value = stmt.value
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                        and isinstance(value.func.value, ast.Name) and value.func.value.id == "nn"
                        and _STATELESS.fullmatch(value.func.attr)):
                    edits.append((value.end_lineno, value.end_col_offset, f"({target})"))
                    notes.append(f"nn.{value.func.attr}(...) -> nn.{value.func.attr}(...)({target})")
                for call in (n for n in ast.walk(value) if isinstance(n, ast.Call) and _tensor_function(n.func)):
                    for arg in call.args:
                        if (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name)
                                and arg.value.id == "self" and arg.attr in layers):
                            edits.append((arg.end_lineno, arg.end_col_offset, f"({target})"))
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
        ast.parse(out)
    except SyntaxError:
        return code, ""
    return out, "layer used as a tensor: " + ", ".join(dict.fromkeys(notes))


def drop_example_usage(code: str) -> tuple[str, str]:
    """Deterministic repair of module-level code the candidate runs when imported (`net = Net()`,
    `fix_module(net)`, `print(...)`: an "example usage" small models append): top-level calls, and
    assignments whose value calls a class or function the module defines, are removed. Definitions,
    imports and constants stay."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, ""
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}

    def runs(stmt: ast.stmt) -> bool:
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


# Layer -> (how many leading positional arguments are sizes, their keywords; the input size comes first).
SIZE_ARGS = {"Conv1d": (2, ("in_channels", "out_channels")), "Conv2d": (2, ("in_channels", "out_channels")),
             "Linear": (2, ("in_features", "out_features")), "BatchNorm1d": (1, ("num_features",)),
             "BatchNorm2d": (1, ("num_features",))}


def fix_float_sizes(code: str) -> tuple[str, str]:
    """Deterministic repair of a fractional layer size (`nn.Linear(8192 * 1.5, 10)`: "widen by 50 %" taken
    literally): a size argument of a Conv, Linear or BatchNorm that is arithmetic on numbers with a float
    or a true division becomes its integer value; one on names (`in_channels * 1.5`) is wrapped in int()."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, ""
    edits: list[tuple[ast.AST, str]] = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr in SIZE_ARGS):
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
    lines = code.splitlines(keepends=True)
    notes = []
    for arg, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        raw = lines[arg.lineno - 1].encode()
        notes.append(f"{raw[arg.col_offset:arg.end_col_offset].decode()} -> {text}")
        lines[arg.lineno - 1] = (raw[:arg.col_offset] + text.encode() + raw[arg.end_col_offset:]).decode()
    return "".join(lines), "fractional layer size: " + ", ".join(reversed(notes))


def _tensor_function(func) -> bool:
    """A call that takes tensors: `torch.*`, `F.*` or a layer of the net (`self.fc`), never `isinstance` & co."""
    import ast

    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in ("torch", "F", "self")


def constant(node, floats: bool = False) -> int | float | None:
    """The value of arithmetic on number literals (`128 // 2 ** 3`), else None. Only integers unless
    `floats` (then float literals and `/` too)."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Pow: operator.pow, **({ast.Div: operator.truediv} if floats else {})}
    kinds = (int, float) if floats else int
    if isinstance(node, ast.Constant) and isinstance(node.value, kinds) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        left, right = constant(node.left, floats), constant(node.right, floats)
        if (left is not None and right is not None
                and not (isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0)
                and not (isinstance(node.op, ast.Pow) and not 0 <= right <= 16)):
            return ops[type(node.op)](left, right)
    return None
