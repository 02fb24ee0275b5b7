"""nasloop: LLM-driven neural architecture search as a LangGraph loop, with a sandboxed judge.

One installed import name; the repository's folders are its sub-packages (setuptools' package-dir):
    nasloop.agent    the LangGraph graph, state, nodes, LLM adapter, run store, CLI
    nasloop.tools    the evaluator, data sets, static check, outcome taxonomy
    nasloop.sandbox  where untrusted candidate code runs
    nasloop.prompts  prompt templates and seed architectures

    from nasloop import build_graph, Deps, recursion_limit_for
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_graph", "recursion_limit_for", "Deps", "InputState", "OutputState", "State"]


def __getattr__(name: str) -> Any:
    """The public API, imported on first use: `import nasloop.sandbox` alone must not pull in LangGraph."""
    if name in __all__:
        return getattr(importlib.import_module("nasloop.agent"), name)
    raise AttributeError(f"module 'nasloop' has no attribute {name!r}")
