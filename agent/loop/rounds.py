"""The nodes of a round with several workers (LoopOptions.workers > 1, agent/graph.py): `propose` asks the
Improver for one proposal per candidate, each fanned-out candidate ends in `report`, and `merge` folds the
round's results into the state in candidate order, as if they had been evaluated one after another."""
from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from nasloop.agent.loop import record
from nasloop.agent.loop.nodes import DepsSource, improve, setup, survivors

PENDING = "pending (tried in parallel now)"  # the outcome a sibling's change shows while the round runs


def round_size(state: dict, workers: int) -> int:
    """Candidates in the next round: one per worker, within the iteration budget."""
    return max(1, min(workers, state["task"]["iterations"] - state.get("iteration", 1) + 1))


def propose(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Several workers, loop strategy: the round's proposals, one per candidate, asked in candidate order
    (so a seeded run is reproducible); each call sees the changes already chosen for this round as pending
    memory entries, so the candidates try different changes."""
    deps, _ = setup(source, state, runtime)
    it = state.get("iteration", 1)
    proposals: list[dict] = []
    pending: list[dict] = []
    changed: dict = {}
    for j in range(round_size(state, deps.options.workers)):
        update = improve(source, {**state, **changed, "iteration": it + j, "round": pending}, runtime)
        changed = {"task": update["task"]} if "task" in update else changed
        p = update["proposal"]
        proposals.append(p)
        pending.append({"iteration": it + j, "problem": p["problem"][:300], "suggestion": p["suggestion"][:300],
                        "outcome": PENDING, **({"change": p["change"]} if p.get("change") else {})})
    return {"proposals": proposals, **changed}


def report(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """The last step of one fanned-out candidate: hand its result to the parent graph's `merge`."""
    last = state["last"]
    best = state.get("best") or {}
    member = None
    if last.get("fitness") is not None:
        member = {"iteration": last["iteration"], "fitness": last["fitness"], "params": last["outcome"].get("params")}
    return {"batch": [{"iteration": last["iteration"], "triple": (state.get("window") or [])[-1], "last": last,
                       "counts": {last["outcome"]["kind"]: 1, "evaluated": 1}, "member": member,
                       "best": best if best.get("iteration") == last["iteration"] else None}]}


def merge(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Fold a round's results into the state in candidate order, whichever worker finished first: the
    memory, the counters, the best net (and the population) come out as if evaluated one after another."""
    deps, _ = setup(source, state, runtime)
    items = sorted(state.get("batch") or [], key=lambda b: b["iteration"])
    if not items:
        return {"batch": None, "proposals": None}
    best, improved = state.get("best"), False
    population = list(state.get("population") or [])
    counts: dict[str, int] = {}
    for b in items:
        for key, n in b["counts"].items():
            counts[key] = counts.get(key, 0) + n
        new = record.best_fitness(b["best"]) if b["best"] else None
        old = record.best_fitness(best)
        if new is not None and (old is None or new > old):
            best, improved = b["best"], True
        if b["member"] is not None:
            m = b["member"]
            population = survivors(population, m["iteration"], m["fitness"], m["params"], deps.options.population)
    update: dict[str, Any] = {"batch": None, "proposals": None, "window": [b["triple"] for b in items],
                              "counts": counts, "iteration": items[-1]["iteration"] + 1, "last": items[-1]["last"]}
    if improved and best is not None:
        update["best"] = best
        if deps.store is not None and best.get("code"):
            deps.store.save_best(best["code"])  # the branches wrote theirs in the order they finished
    if deps.options.strategy == "evolution":
        update["population"] = population
    return update
