"""Parsing Python source in the host, one parse at a time.

The fan-out runs several candidates' nodes at once in LangGraph's thread pool, and the AST constructor of
CPython 3.11 keeps its recursion depth per interpreter, not per thread: where a garbage collection inside one
`ast.parse` lets another thread parse, the first fails with "SystemError: AST constructor recursion depth
mismatch" (CPython gh-106905) and its candidate's node crashes. Every parse in the host goes through
`parse_source` and its lock; a parse of a candidate takes about a millisecond, so the lock costs nothing.
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse_source(code: str) -> ast.Module:
    """`ast.parse(code)`, never while another thread parses."""
    with _LOCK:
        return ast.parse(code)
