"""Fix `brackets` (stage source): surplus closing brackets, the syntax slip small models make most.
"""
from __future__ import annotations

import ast
import re
from itertools import combinations

from nasloop.agent.python_source import parse_source


def autofix(code: str, max_fixes: int = 40) -> tuple[str, str]:
    """Deterministic repair of the syntax slip small models make most: surplus closing brackets.

    Removes surplus `)`/`]`/`}` on a line Python reports as "unmatched" (which ones: see `_drop_surplus`),
    until the module parses or nothing more can be done. Returns (code, what was changed) — the change is recorded, never hidden."""
    fixed = 0
    lines = code.splitlines(keepends=True)
    for _ in range(max_fixes):
        try:
            parse_source("".join(lines))
            break
        except SyntaxError as exc:
            m = re.match(r"unmatched '([)\]}])'", exc.msg or "")
            if not exc.lineno or exc.lineno > len(lines):
                break
            i = exc.lineno - 1
            if m:
                line = _drop_surplus(lines[i], m.group(1), _surplus("".join(lines), m.group(1)))
            elif (exc.msg or "").startswith("unexpected indent"):
                i, line = _closed_early(lines, i)
            else:
                break
            if line is None:
                break
            fixed += len(lines[i]) - len(line)
            lines[i] = line
    if not fixed:
        return code, ""
    out = "".join(lines)
    try:
        parse_source(out)
    except SyntaxError:
        return code, ""  # only keep a fix that yields a module that parses
    return out, f"removed {fixed} unmatched closing bracket(s)"


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _surplus(code: str, bracket: str) -> int:
    """How many more `bracket`s than their openers the code has (outside comments, roughly): a line of
    closers alone (`))` ending a Sequential) holds one surplus, not two."""
    text = re.sub(r"#[^\n]*", "", code)
    return text.count(bracket) - text.count(_PAIRS[bracket])


def _closed_early(lines: list[str], i: int) -> tuple[int, str | None]:
    """(the line before the unexpectedly indented line `i`, without its surplus closers) where that line closed
    its statement early: it ends with a comma and closes more brackets than it opens. The 1.5B model wrote
    `nn.Conv2d(128, 512, 3, stride=2, padding=1)),` as the first item of an nn.Sequential (seed 45): the
    Sequential ends there, the next item is an unexpected indent, and its `))` one more than it needs."""
    j = next((k for k in range(i - 1, -1, -1) if lines[k].strip()), None)
    if j is None:
        return i, None
    body = lines[j].split("#")[0].rstrip()
    extra = sum(body.count(c) - body.count(o) for c, o in _PAIRS.items())
    if not body.endswith(",") or extra <= 0 or not re.search(r"[)\]}]{%d},$" % extra, body):
        return i, None
    cut = len(body) - 1 - extra
    return j, lines[j][:cut] + lines[j][len(body) - 1:]


def _drop_surplus(line: str, bracket: str, total: int | None = None) -> str | None:
    """`line` without its surplus `bracket`s (as many as it has more closing than opening ones, at least
    one). Small models close a layer call too early (`nn.Linear(128 * (4)) * 4, 10)`): removing the last
    bracket would leave a tuple or arithmetic on a layer, so when the line is a statement of its own,
    the removal that makes its value one call with the most arguments wins; otherwise (or on a tie) the
    latest brackets go."""
    opening = {")": "(", "]": "[", "}": "{"}[bracket]
    spots = [j for j, ch in enumerate(line) if ch == bracket]
    surplus = max(1, min(line.count(bracket) - line.count(opening), total or 99))
    if len(spots) < surplus or surplus > 3:
        return None

    def without(drop: tuple[int, ...]) -> str:
        return "".join(ch for j, ch in enumerate(line) if j not in drop)

    def rank(drop: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        try:
            stmt = parse_source(without(drop).strip()).body
        except SyntaxError:
            return (-1, drop)
        value = getattr(stmt[0], "value", None) if len(stmt) == 1 else None
        if isinstance(value, ast.Call):
            return (2 + len(value.args) + len(value.keywords), drop)
        return (0 if isinstance(value, (ast.Tuple, ast.BinOp)) else 1, drop)

    return without(max(combinations(spots, surplus), key=rank))
