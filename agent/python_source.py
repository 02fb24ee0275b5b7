"""Parsing Python source in the host, one parse at a time.

The fan-out runs several candidates' nodes at once in LangGraph's thread pool, and the AST constructor of
CPython 3.11 keeps its recursion depth per interpreter, not per thread: where a garbage collection inside one
`ast.parse` lets another thread parse, the first fails with "SystemError: AST constructor recursion depth
mismatch" (CPython gh-106905) and its candidate's node crashes. Every parse in the host goes through
`parse_source` and its lock; a parse of a candidate takes about a millisecond, so the lock costs nothing.

`source_segment` is `ast.get_source_segment` reading the source's lines once: the stdlib's splits the whole
source again for every node, and that was an eighth of the host's time per candidate (the fixes read each
layer definition's text).
"""
from __future__ import annotations

import ast
import re
import threading
from functools import lru_cache

_LOCK = threading.Lock()


def parse_source(code: str) -> ast.Module:
    """`ast.parse(code)`, never while another thread parses. The tree is shared by every caller that parses
    the same code (the fixes, the static check and the prompts each parse a candidate again: 15 parses per
    candidate, a tenth of a scripted run's host time): read it, never modify it."""
    with _LOCK:
        return _parsed(code)


@lru_cache(maxsize=32)
def _parsed(code: str) -> ast.Module:
    return ast.parse(code)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # the line ends the parser counts (no form feed)


@lru_cache(maxsize=16)
def _lines(code: str) -> tuple[bytes, ...]:
    return tuple(line.encode() for line in _LINE.findall(code))


def source_segment(code: str, node: ast.AST) -> str | None:
    """The source text of `node`, as `ast.get_source_segment(code, node)` gives it (None where the node has
    no position)."""
    try:
        first, last = node.lineno - 1, node.end_lineno - 1  # type: ignore[attr-defined]
        start, end = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]
    except AttributeError:
        return None
    if last is None or end is None:
        return None
    lines = _lines(code)
    if first == last:
        return lines[first][start:end].decode()
    return (lines[first][start:] + b"".join(lines[first + 1:last]) + lines[last][:end]).decode()
