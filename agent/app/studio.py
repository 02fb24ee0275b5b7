"""The graph that `langgraph dev` / LangGraph Studio loads (named in langgraph.json), and the factory
that lets a parent graph name the data set and the LLM in its task.

Loading is instant: the data set, the sandbox and the LLMs are created on first use, from the task:
`dataset`, `llm`, `sandbox` and `train_subset` (with environment fallbacks NASLOOP_DATASET, NASLOOP_LLM,
NASLOOP_SANDBOX), plus any field of the settings dataclasses the CLI uses too — LoopOptions (`strategy`,
`fidelity`, `proxy`, `repairs`, `fixes`, ...) and TrainSettings (`min_steps`, `batch_size`, `lr`, ...). The graphs have no checkpointer of their own:
`graph` is the default loop, `evolution_graph` the evolution strategy.
"""
from __future__ import annotations

import functools
import os
from dataclasses import fields

from nasloop.agent.graph import build_graph
from nasloop.agent.llm.client import DEFAULT_LLM, make_clients
from nasloop.agent.deps import Deps, LoopOptions
from nasloop.tools.evaluator import TrainSettings


@functools.lru_cache(maxsize=8)
def _deps(dataset: str, llm: str, sandbox: str, train_subset: int | None, settings: TrainSettings,
          options: LoopOptions) -> Deps:
    from nasloop.sandbox import make_sandbox
    from nasloop.tools.datasets import prepare
    from nasloop.tools.evaluator import Evaluator

    evaluator = Evaluator(prepare(dataset, train_subset=train_subset), make_sandbox(sandbox), settings)
    client = _Lazy(lambda: make_clients(llm, llm)[0])  # one model for both roles
    return Deps(improver=client, generator=client, evaluator=evaluator, options=options)


class _Lazy:
    """Creates the wrapped object on first attribute access (a GGUF loads in seconds, not at import)."""

    def __init__(self, factory):
        self._factory, self._obj = factory, None

    def __getattr__(self, name: str):
        if self._obj is None:
            self._obj = self._factory()
        return getattr(self._obj, name)


def deps_for_task(task: dict) -> Deps:
    """Collaborators for a task such as {"dataset": "digits", "iterations": 5, "llm": "..."}."""
    return _deps(
        task.get("dataset") or os.environ.get("NASLOOP_DATASET", "digits"),
        task.get("llm") or os.environ.get("NASLOOP_LLM", DEFAULT_LLM),
        task.get("sandbox") or os.environ.get("NASLOOP_SANDBOX", "docker"),
        task.get("train_subset"),
        from_task(TrainSettings, task),
        from_task(LoopOptions, {"fidelity": "proxy" if task.get("strategy") == "evolution" else "train", **task}),
    )


def from_task(cls, task: dict):
    """The settings dataclass `cls` with the task's values for its fields (lists become tuples: hashable)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in task.items() if k in names and v is not None})


def evolution_deps_for_task(task: dict) -> Deps:
    return deps_for_task({**task, "strategy": "evolution"})


graph = build_graph(deps_for_task)
evolution_graph = build_graph(evolution_deps_for_task, strategy="evolution")
