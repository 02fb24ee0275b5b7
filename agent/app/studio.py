"""The graphs that `langgraph dev` / LangGraph Studio loads (named in langgraph.json), and the factory
that lets a parent graph name the data set and the LLM in its task.

A Studio run is a search like `nasloop search`: its task's fields are the CLI's options (same names with
underscores, same defaults, same checks), its collaborators are built by the same `search_deps`, and it
writes a run directory under `runs_dir`, so `nasloop replay` and `nasloop report` work on it. The input is
typed (`StudioInput`): Studio renders a form with every default. Loading is instant: the data set, the
sandbox and the run directory are created at the run's first step, the model at its first LLM call. One
set of collaborators (and one run directory) per Studio thread; without a thread, per distinct task.
The graphs have no checkpointer of their own (the server brings one): `graph` is the default loop,
`evolution_graph` the evolution strategy.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import sys
import threading
from typing import Annotated, Any, Literal, Optional

from pydantic import Field
from typing_extensions import TypedDict

from nasloop.agent.app.options import add_data_args, add_sandbox_args, add_train_args
from nasloop.agent.app.search import DEFAULT_ITERATIONS, add_search_args, search_deps
from nasloop.agent.deps import Deps, complete_task
from nasloop.agent.graph import build_graph
from nasloop.agent.llm.client import make_clients

# The options a Studio form offers (any other option of `nasloop search` may be set in the task's JSON too).
STUDIO_FIELDS = ("dataset", "iterations", "llm", "improver_llm", "generator_llm", "sandbox", "train_subset",
                 "test_subset", "min_steps", "batch_size", "max_params", "max_flops", "timeout", "repairs",
                 "target_accuracy", "temperature", "fidelity", "proxy", "population", "plain", "runs_dir")
# What Studio's defaults come from when the environment names them (the server's own environment).
ENV_DEFAULTS = {"dataset": "NASLOOP_DATASET", "llm": "NASLOOP_LLM", "sandbox": "NASLOOP_SANDBOX"}


def search_parser() -> argparse.ArgumentParser:
    """`nasloop search`'s options, without the CLI around them."""
    p = argparse.ArgumentParser(add_help=False)
    add_search_args(p)
    add_data_args(p)
    add_train_args(p)
    add_sandbox_args(p)
    return p


def _defaults() -> dict[str, Any]:
    defaults = vars(search_parser().parse_args([]))
    defaults["iterations"] = DEFAULT_ITERATIONS
    defaults.update({k: os.environ[env] for k, env in ENV_DEFAULTS.items() if os.environ.get(env)})
    return defaults


def _field(action: argparse.Action, default: Any) -> Any:
    """The typed, documented form field for one CLI option."""
    if action.nargs == 0:  # a switch
        kind: Any = bool
    elif action.choices:
        kind = Literal[tuple(action.choices)]  # type: ignore[valid-type]
    else:
        kind = float if action.type is float else str if action.type is None else int
    if default is None:
        kind = Optional[kind]
    return Annotated[kind, Field(default=default, description=(action.help or "").replace("%%", "%") or None)]


def studio_task_schema() -> type:
    """The task as a typed dict whose fields are the CLI's options (JSON schema with defaults for Studio)."""
    actions = {a.dest: a for a in search_parser()._actions}
    defaults = _defaults()
    task = TypedDict(  # type: ignore[misc]
        "SearchTask", {name: _field(actions[name], defaults[name]) for name in STUDIO_FIELDS}, total=False)
    task.__doc__ = "What to search: the options of `nasloop search` (--train-subset is train_subset)."
    return task


StudioTask = studio_task_schema()


# Spelled as a call: a class body's annotations are strings under `from __future__ import annotations`, and a
# loader that runs this file without registering it as a module could not resolve them.
StudioInput = TypedDict("StudioInput", {"task": StudioTask}, total=False)  # type: ignore[misc, valid-type]
StudioInput.__doc__ = "What a Studio run (or a parent graph) sends."


def search_args(task: dict) -> argparse.Namespace:
    """The CLI's options with the task's values (unknown keys, such as the task facts, are not options)."""
    args = argparse.Namespace(**_defaults())
    for key, value in task.items():
        if value is not None and hasattr(args, key) and key != "resume":
            setattr(args, key, list(value) if isinstance(value, (list, tuple)) else value)
    args.fidelity = args.fidelity or ("proxy" if args.strategy == "evolution" else "train")
    return args


class _Lazy:
    """Creates the wrapped object on first attribute access (a GGUF loads in seconds, not at import)."""

    def __init__(self, factory):
        self._factory, self._obj = factory, None

    def __getattr__(self, name: str):
        if self._obj is None:
            self._obj = self._factory()
        return getattr(self._obj, name)


def _lazy_clients(*specs_and_settings: Any) -> tuple[Any, Any]:
    both = functools.cache(lambda: make_clients(*specs_and_settings))
    return _Lazy(lambda: both()[0]), _Lazy(lambda: both()[1])


_RUNS: dict[tuple[str, str], Deps] = {}
# the graph's task: the data set's facts and the budget (nasloop search's make_task makes the same)
TASK_KEYS = ("dataset", "description", "num_classes", "in_channels", "image_size", "max_params", "steps_text",
             "iterations", "target_accuracy")
_RUNS_LOCK = threading.Lock()


def _thread_id() -> str:
    from langgraph.config import get_config

    try:
        return str(get_config().get("configurable", {}).get("thread_id") or "")
    except RuntimeError:  # called outside a graph run
        return ""


def deps_for_task(task: dict) -> Deps:
    """Collaborators for a task such as {"dataset": "digits", "iterations": 5, "llm": "..."}: built once per
    thread and task, with a new run directory. The seed step completes the task with the data set's facts;
    the completed task finds the same collaborators."""
    thread = _thread_id()
    key = _key(thread, task)
    with _RUNS_LOCK:
        if key not in _RUNS:
            deps, evaluator, store = search_deps(search_args(task), clients=_lazy_clients)
            completed = complete_task(task, evaluator)  # what fork needs to start a run from the records
            store.update_config(lambda cfg: cfg.update(studio_thread=thread or None,
                                                       task={k: v for k, v in completed.items() if k in TASK_KEYS}))
            print(f"nasloop: run {store.path} (thread {thread or '-'})", file=sys.stderr)
            _RUNS[key] = _RUNS[_key(thread, completed)] = deps
        return _RUNS[key]


def _key(thread: str, task: dict) -> tuple[str, str]:
    return thread, json.dumps(vars(search_args(task)), sort_keys=True, default=str)


def close_runs() -> None:
    """Stop the runs' sandboxes (a warm container each) and forget them: at the server's exit, or a test's."""
    with _RUNS_LOCK:
        for deps in {id(d): d for d in _RUNS.values()}.values():
            close = getattr(getattr(deps.evaluator, "sandbox", None), "close", None)
            if callable(close):
                close()
        _RUNS.clear()


atexit.register(close_runs)


def evolution_deps_for_task(task: dict) -> Deps:
    return deps_for_task({**task, "strategy": "evolution"})


graph = build_graph(deps_for_task, input_schema=StudioInput)
evolution_graph = build_graph(evolution_deps_for_task, strategy="evolution", input_schema=StudioInput)
