"""The host parses candidates' code in several threads at once (the fan-out); a parse must not fail because
another thread parsed while it ran (CPython 3.11's AST constructor keeps one recursion depth for all
threads). The race is made to happen: a garbage collection inside the first parse starts a second parse in
another thread and waits for it, as LangGraph's thread pool can."""
from __future__ import annotations

import ast
import gc
import sys
import threading

from nasloop.agent.python_source import parse_source

CODE = "class Net:\n    def forward(self, x):\n        return self.fc(self.pool(self.conv(x)))\n"


def test_a_parse_survives_another_threads_parse_during_its_garbage_collection() -> None:
    started, results = threading.Event(), {}

    def inside_the_first_parse(phase: str, _info: dict) -> None:
        # A collection whose caller is ast.parse runs inside the C parse (building the tree's objects).
        if phase == "start" and not started.is_set() and sys._getframe(1).f_code is ast.parse.__code__:
            started.set()
            other.join(timeout=0.5)  # the second parse runs now, unless a lock holds it back

    def second() -> None:
        started.wait()
        results["second"] = type(parse_source(CODE)).__name__

    other = threading.Thread(target=second)
    other.start()
    threshold = gc.get_threshold()
    gc.callbacks.append(inside_the_first_parse)
    gc.set_threshold(1)
    try:
        results["first"] = type(parse_source(CODE)).__name__
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(inside_the_first_parse)
        started.set()
        other.join()
    assert started.is_set() and results == {"first": "Module", "second": "Module"}


def test_source_segment_is_the_stdlibs_for_every_node_of_every_candidate() -> None:
    """`source_segment` reads the lines once; it must give what `ast.get_source_segment` gives, non-ASCII
    text and Windows line ends included."""
    from pathlib import Path

    from nasloop.agent.python_source import source_segment

    sources = [p.read_text() for p in sorted((Path(__file__).parent.parent / "candidates").glob("*.py"))]
    sources.append('x = "größe ✓"\r\nclass Net:\r\n    def f(self):\r\n        return ("ü",\r\n                1)\r\n')
    nodes = 0
    for code in sources:
        try:
            tree = ast.parse(code)
        except SyntaxError:  # the candidates of syntax errors
            continue
        for node in ast.walk(tree):
            assert source_segment(code, node) == ast.get_source_segment(code, node), (code[:60], ast.dump(node)[:80])
            nodes += 1
    assert nodes > 5000
