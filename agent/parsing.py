"""Reading LLM replies that small models get slightly wrong.

Generator fixes (recorded, never hidden): surplus closing brackets; layer definitions dropped in a rewrite.

Improver: a JSON object {problem, suggestion} (a reflection's {lesson, suggestion} reads the same) — also accepted with single quotes (Python literal),
inside a code fence, or as `problem: ... / suggestion: ...` lines. Generator: one python code block
defining `class Net`. Anything unreadable returns an error string instead of raising, so the loop can
record it as an outcome.
"""
from __future__ import annotations

import ast
import json
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def parse_improver(text: str) -> tuple[dict | None, str]:
    """({'problem', 'suggestion'}, '') or (None, why it could not be read)."""
    text = (text or "").strip()
    if not text:
        return None, "the Improver returned an empty reply"
    for blob in _json_candidates(text):
        for loader in (json.loads, ast.literal_eval):
            try:
                data = loader(blob)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(data, dict):
                got = _pick(data)
                if got:
                    return got, ""
    lines = dict(re.findall(r"(?im)^\W*(problem|suggestion)\W*[:=]\s*(.+)$", text))
    lower = {k.lower(): v.strip().strip('",') for k, v in lines.items()}
    if lower.get("suggestion"):
        return {"problem": lower.get("problem", ""), "suggestion": lower["suggestion"]}, ""
    return None, f"the Improver's reply has no readable {{problem, suggestion}} JSON: {text[:120]!r}"


def _json_candidates(text: str) -> list[str]:
    """Substrings that may be the JSON object: fenced blocks, then the outermost braces."""
    out = [m.group(2) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start:end + 1])
    out.append(text)
    return out


def _pick(data: dict) -> dict | None:
    norm = {str(k).lower().strip(): v for k, v in data.items()}
    sugg = norm.get("suggestion") or norm.get("suggestions") or norm.get("change")
    if isinstance(sugg, list):
        sugg = " ".join(str(s) for s in sugg)
    if not sugg or not str(sugg).strip():
        return None
    prob = norm.get("problem") or norm.get("lesson") or norm.get("diagnosis") or ""
    if isinstance(prob, list):
        prob = " ".join(str(p) for p in prob)
    return {"problem": str(prob).strip(), "suggestion": str(sugg).strip()}


def extract_code(text: str) -> tuple[str | None, str]:
    """(python source defining Net, '') or (None, why not)."""
    text = text or ""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    with_net = [body for lang, body in blocks if lang in ("", "python", "py", "python3") and "class Net" in body]
    if with_net:
        return max(with_net, key=len).strip() + "\n", ""
    if "class Net" in text and "```" not in text:
        return text.strip() + "\n", ""
    if not text.strip():
        return None, "the Generator returned an empty reply"
    if blocks:
        return None, "the Generator's code block does not define class Net"
    return None, "the Generator's reply contains no ```python code block with class Net"


def autofix(code: str, max_fixes: int = 40) -> tuple[str, str]:
    """Deterministic repair of the syntax slip small models make most: surplus closing brackets.

    Removes the last `)`/`]`/`}` on a line Python reports as "unmatched", until the module parses or
    nothing more can be done. Returns (code, what was changed) — the change is recorded, never hidden."""
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
            j = lines[i].rfind(m.group(1))
            if j < 0:
                break
            lines[i] = lines[i][:j] + lines[i][j + 1:]
            fixed += 1
    if not fixed:
        return code, ""
    out = "".join(lines)
    try:
        ast.parse(out)
    except SyntaxError:
        return code, ""  # only keep a fix that yields a module that parses
    return out, f"removed {fixed} unmatched closing bracket(s)"


def restore_definitions(code: str, base: str) -> tuple[str, str]:
    """Deterministic repair of the other slip small models make most: a rewrite that drops layer
    definitions (`self.conv3 = ...`) but keeps their uses in forward. A dropped definition that the base
    network (the one the Generator was asked to change) has on one line is put back at the end of the
    candidate's __init__; a shape that no longer fits is then the pre-flight's to report.
    Returns (code, what was restored) — recorded like every fix."""
    import ast

    from tools.static_check import undefined_attributes

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


_FAILED_LAYER = re.compile(r"✗ ([A-Za-z_]\w*) (Conv2d|BatchNorm2d|Linear)\(.*\bgot ([\dx]+)")
_SIZE_ARG = {"Conv2d": ("in_channels", 0), "BatchNorm2d": ("num_features", 0), "Linear": ("in_features", 0)}


def fix_shapes(code: str, diagnosis: str) -> tuple[str, str]:
    """Deterministic repair of a channel mismatch the pre-flight located: when the shape trace says layer
    `self.X` (a Conv2d, BatchNorm2d or Linear) got an input of C channels (or, for Linear, C features),
    and its size argument in `__init__` is a number, arithmetic on numbers (`128 // 2`) or one of
    `__init__`'s own parameters (`in_channels` misused for an inner layer), it becomes C. Only statements
    directly in `__init__` are touched (never inside a loop or a branch). One layer per call; the candidate
    is then pre-flighted again. Returns (code, what was changed)."""
    import ast

    m = _FAILED_LAYER.search(diagnosis or "")
    if not m:
        return code, ""
    name, kind, got = m.group(1), m.group(2), [int(d) for d in m.group(3).split("x") if d]
    want = got[0] if kind != "Linear" else _product(got)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, ""
    keyword, pos = _SIZE_ARG[kind]
    inits = [f for cls in tree.body if isinstance(cls, ast.ClassDef)
             for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
    for init in inits:
        params = {a.arg for a in init.args.args + init.args.kwonlyargs} - {"self"}
        for node in init.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call)):
                continue
            target, call = node.targets[0], node.value
            if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self" and target.attr == name
                    and getattr(call.func, "attr", getattr(call.func, "id", "")) == kind):
                continue
            arg = next((k.value for k in call.keywords if k.arg == keyword), None)
            if arg is None and len(call.args) > pos:
                arg = call.args[pos]
            fixable = arg is not None and (_constant_int(arg) is not None
                                           or isinstance(arg, ast.Name) and arg.id in params)
            if not fixable or _constant_int(arg) == want or arg.lineno != arg.end_lineno:
                return code, ""
            lines = code.splitlines(keepends=True)
            line = lines[arg.lineno - 1]
            b = len(line.encode()[:arg.col_offset].decode())  # ast offsets are in bytes
            e = len(line.encode()[:arg.end_col_offset].decode())
            lines[arg.lineno - 1] = line[:b] + str(want) + line[e:]
            return "".join(lines), (f"self.{name} = nn.{kind}(...): {keyword} {line[b:e]} -> {want} "
                                    f"(the input it gets)")
    return code, ""


def _constant_int(node) -> int | None:
    """The value of an integer literal or of arithmetic on literals (`128 // 2`), else None."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        left, right = _constant_int(node.left), _constant_int(node.right)
        if left is not None and right is not None and not (isinstance(node.op, ast.FloorDiv) and right == 0):
            return ops[type(node.op)](left, right)
    return None


def _product(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
