"""What the loop's nodes are given: the LLM clients, the evaluator, the run store and the options.

`Deps.once(...)` is how every LLM call and evaluation is recorded exactly once (in the run store, or in
memory when embedded without one), so a step redone after a crash reuses what was already recorded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from nasloop.agent.fixes.registry import NAMES as FIX_NAMES
from nasloop.agent.llm.client import ChatClient
from nasloop.agent.runs.store import RunStore
from nasloop.agent.state import DEFAULT_K
from nasloop.tools.outcome import Outcome


class EvaluatorLike(Protocol):
    """`known_structures` (structure hash -> iteration) makes the pre-flight reject structural duplicates;
    it is only passed when there are some."""

    def evaluate(self, source: str, **kwargs: Any) -> Outcome: ...

    def score(self, source: str, proxies: tuple[str, ...], **kwargs: Any) -> Outcome: ...

STRATEGIES = ("loop", "evolution")
FIDELITIES = ("train", "proxy", "ladder")


@dataclass(frozen=True)
class LoopOptions:
    """Behaviour beyond the published loop; `plain()` switches all of it off (the paper's loop)."""

    repairs: int = 1  # cheap repair attempts for candidates failing the static check or the pre-flight
    escape: bool = True  # failure-loop escape (told, hotter, restart)
    repeat_check: bool = True  # a verbatim repeat of earlier code costs no container
    replace_suggestions: bool = True  # placeholder or already-tried suggestions are replaced by concrete changes
    improver_chat: bool = True  # the next diagnosis continues the Improver's conversation (up to k calls)
    k: int = DEFAULT_K  # the memory window (the graph's state holds the last k triples)
    fixes: tuple[str, ...] = FIX_NAMES  # the deterministic fix passes that run (agent/fixes/registry.py)
    streak: int = 2  # equivalent failures in a row that count as a loop
    temperature: float = 0.7  # the LLMs' base temperature (escapes raise it, bounded)
    strategy: str = "loop"  # loop (improve the best net) | evolution (mutate a population)
    fidelity: str = "train"  # train | proxy (score only) | ladder (score several variants, train the best)
    proxy: str = "naswot"  # the zero-cost proxy used by the proxy and ladder fidelities
    population: int = 8  # evolution: members kept (the worst leaves when a child joins a full population)
    tournament: int = 3  # evolution: members drawn to pick each parent
    ladder_width: int = 3  # ladder: variants generated per step
    seed: int = 0  # makes parent selection reproducible (and the same on resume)
    workers: int = 1  # candidates evaluated at once; more than one fans the graph out (agent/graph.py)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES or self.fidelity not in FIDELITIES:
            raise ValueError(f"strategy must be one of {STRATEGIES} and fidelity one of {FIDELITIES}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        unknown = set(self.fixes) - set(FIX_NAMES)
        if unknown:
            raise ValueError(f"unknown fix {', '.join(sorted(unknown))}: choose from {', '.join(FIX_NAMES)}")

    @property
    def fitness_name(self) -> str:
        """What the search maximises: the proxy's score (fidelity proxy) or the trained accuracy."""
        return self.proxy if self.fidelity == "proxy" else "accuracy"

    def fitness(self, outcome: Outcome) -> float | None:
        """The number the search ranks by; None for a failed candidate (it never joins the population)."""
        if not outcome.ok:
            return None
        value = outcome.scores.get(self.proxy) if self.fidelity == "proxy" else outcome.accuracy
        return None if value is None or math.isnan(value) else float(value)

    @classmethod
    def plain(cls) -> "LoopOptions":
        """The published loop: no repairs, escapes, repeat check, replaced suggestions, conversation or fixes."""
        return cls(repairs=0, escape=False, repeat_check=False, replace_suggestions=False, improver_chat=False, fixes=())


@dataclass
class Deps:
    """What the nodes call. `store` may be None (embedding without a run directory)."""

    improver: ChatClient
    generator: ChatClient
    evaluator: EvaluatorLike
    store: RunStore | None = None
    options: LoopOptions = field(default_factory=LoopOptions)
    _memo: dict = field(default_factory=dict)
    _codes: dict = field(default_factory=dict)
    _structures: dict = field(default_factory=dict)
    _members: dict = field(default_factory=dict)

    def recorded(self, kind: str, iteration: int, node: str) -> dict | None:
        if self.store is not None:
            return self.store.get(kind, iteration, node)
        return self._memo.get((kind, iteration, node))

    def once(self, kind: str, iteration: int, node: str, make) -> dict:
        if self.store is not None:
            return self.store.once(kind, iteration, node, make)
        key = (kind, iteration, node)
        if key not in self._memo:
            # keep only this iteration's (a repair reads the Generator's turns): no growth without a store
            self._memo = {k: v for k, v in self._memo.items() if k[1] == iteration}
            self._memo[key] = make()
        return self._memo[key]

    def earlier_code(self, key: str, iteration: int) -> dict | None:
        """The first result of an earlier iteration whose code had this `code_key`."""
        rec = self.store.first_with_code(key) if self.store is not None else self._codes.get(key)
        return rec if rec and rec.get("iteration", iteration) < iteration else None

    def remember_code(self, key: str, rec: dict) -> None:
        if self.store is None:
            self._codes.setdefault(key, rec)
            if rec.get("structure"):
                self._structures.setdefault(rec["structure"], rec.get("iteration", -1))

    def structures(self, iteration: int) -> dict[str, int]:
        """The structures (pre-flight hashes of operations and shapes) of earlier iterations: a candidate with
        one of them is a duplicate of that iteration whatever its names and layout."""
        found = self.store.structures() if self.store is not None else self._structures
        return {key: it for key, it in found.items() if 0 <= it < iteration}

    def member_code(self, iteration: int) -> str | None:
        """A population member's code: from the run store, or (no store) from memory."""
        if self.store is not None:
            return self.store.candidate_code(iteration)
        return self._members.get(iteration)

    def remember_members(self, codes: dict[int, str], keep: set[int]) -> None:
        if self.store is None:
            self._members = {i: c for i, c in {**self._members, **codes}.items() if i in keep}


def complete_task(task: dict, evaluator: Any) -> dict:
    """A task from a parent may name just the data set and budget: add what the prompts need to know."""
    if "description" in task:
        return task
    facts = evaluator.task_facts() if hasattr(evaluator, "task_facts") else {}
    return {"iterations": 1, "target_accuracy": None, **facts, **task}
