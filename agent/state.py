"""Graph state: only what the next step needs. Everything that grows with the run lives in the run store.

- `task`:     what to search for (data set description, budget, target) — set once by the caller.
- `best`:     the best net so far (iteration, accuracy, params, flops, code).
- `window`:   the memory: the last K (problem, suggestion, outcome) triples, failures included.
- `last`:     the latest candidate (iteration, code, outcome) for the Improver to diagnose.
- `proposal`: the Improver's {problem, suggestion} on its way to the Generator.
- `candidate`:the Generator's code (or why there is none) on its way to the Evaluator.
- `iteration`, `counts`: counters (next iteration number; outcomes by class).
- `proposals`, `batch` (with several workers only): the round's proposals on their way to the fanned-out
  candidates, and the candidates' results on their way to `merge` (which folds them in candidate order).
- `population`, `parent` (evolution strategy only): the members as small references (iteration,
  fitness, params: their code is in the run store), and the member being mutated now, with its code.
"""
from __future__ import annotations

from typing import Annotated, Any, Callable

from typing_extensions import TypedDict  # pydantic (JSON schemas for Studio) needs this one on 3.11

DEFAULT_K = 5


class Triple(TypedDict, total=False):
    """One memory entry, as the Improver sees it."""

    iteration: int
    problem: str
    suggestion: str
    outcome: str  # an outcome class
    diagnosis: str
    accuracy: float
    score: float  # the proxy score, when candidates are scored instead of (or before) being trained
    parent: int  # evolution: the iteration of the member that was mutated
    delta: float  # evolution: the child's fitness minus its parent's
    over_budget: bool  # the pre-flight refused it for its parameters or FLOPs (a BudgetError)
    change: dict  # the typed change's {operator, target}: not shown, it holds the Improver off a repeat


def window_add(left: list[Triple] | None, right: list[Triple] | Triple | None, k: int = DEFAULT_K) -> list[Triple]:
    """Append triples and keep the last `k` (oldest first). Failures are kept like successes."""
    items = list(left or [])
    if right:
        items.extend(right if isinstance(right, list) else [right])
    return items[-k:]


def count_add(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Add per-class counters."""
    out = dict(left or {})
    for key, v in (right or {}).items():
        out[key] = out.get(key, 0) + v
    return out


def batch_add(left: list[dict] | None, right: list[dict] | None) -> list[dict]:
    """Collect the fanned-out candidates' results (in whatever order they finish); None empties it."""
    return [] if right is None else [*(left or []), *right]


def window_reducer(k: int) -> Callable[[Any, Any], list[Triple]]:
    """A reducer bound to window size `k`."""

    def reduce(left, right):
        return window_add(left, right, k)

    reduce.__name__ = f"window_add_k{k}"
    return reduce


class InputState(TypedDict, total=False):
    """What a caller (the CLI or a parent graph) sends."""

    task: dict


class BatchState(TypedDict, total=False):
    """What one fanned-out candidate hands back to the parent graph: its result, for `merge`."""

    batch: list[dict]


class OutputState(TypedDict, total=False):
    """What a caller gets back."""

    best: dict | None
    window: list[Triple]
    counts: dict[str, int]
    iteration: int
    population: list[dict]  # evolution only


def make_state(k: int = DEFAULT_K) -> type:
    """The full state schema with a window of size `k`."""
    return TypedDict(  # type: ignore[operator]
        f"NASState_k{k}",
        {
            "task": dict,
            "best": dict | None,
            "window": Annotated[list[Triple], window_reducer(k)],
            "last": dict | None,
            "proposal": dict | None,
            "candidate": dict | None,
            "iteration": int,
            "counts": Annotated[dict[str, int], count_add],
            "population": list[dict],
            "parent": dict | None,
            "proposals": list[dict] | None,
            "batch": Annotated[list[dict], batch_add],
        },
        total=False,
    )


State = make_state(DEFAULT_K)
