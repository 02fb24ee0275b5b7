"""The search loop as a LangGraph state machine.

    START ─► seed (iteration 0: the baseline) ─┐
      │                                          ▼
      └──(resuming)──► improve ─► generate ─► evaluate ─► (budget left and target not reached?) ─► improve
                                                 ▲      ├─► repair  (failed static check / pre-flight,
                                                 └──────┘            attempts left)
                                                        └─► END

strategy="evolution" puts one node in front of improve: `select` picks the parent from the population
(tournament); improve then writes a reflection on the last mutations and the mutation to make, and
evaluate adds the child to the population and removes the worst member:

    seed ─► select ─► improve ─► generate ─► evaluate ─► select ... (repair as above)

With several workers (LoopOptions.workers = W > 1) each round fans out with LangGraph's `Send`: the
Improver writes W different proposals (`propose`, in candidate order), W copies of the candidate subgraph
(generate ─► evaluate ⇄ repair ─► report) run at once on the evaluation workers, and `merge` folds their
results in candidate order, whichever finished first. Evolution sends W tournament picks instead:

    seed ─► propose ─► candidate × W ─► merge ─► propose ...          (loop)
    seed ─► candidate × W (select ─► improve ─► generate ─► ...) ─► merge ─► candidate × W ...  (evolution)

`build_graph(...)` compiles WITHOUT a checkpointer, so a parent graph's checkpointer is inherited
(and `langgraph dev` accepts it); the CLI compiles with SqliteSaver for resume. One iteration is three
supersteps (four with select), plus two per repair: callers set `recursion_limit` with
`recursion_limit_for(iterations)`.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from nasloop.agent.deps import Deps
from nasloop.agent.loop.nodes import (DepsSource, evaluate, generate, improve, repair, seed,
                                      select)
from nasloop.agent.loop.rounds import merge, propose, report, round_size
from nasloop.agent.state import DEFAULT_K, BatchState, InputState, OutputState, make_state

STEPS_PER_ITERATION = 4  # select (evolution), improve, generate, evaluate


def make_nodes(deps: DepsSource) -> dict:
    """The node functions bound to `deps`: the collaborators themselves, a factory of them from the task
    (Studio, or a parent whose task names the data set and the LLM), or None (they come with each
    invocation as LangGraph's runtime context: `graph.invoke(inp, config, context=Deps(...))`)."""
    return {name: partial(fn, deps) for name, fn in (
        ("seed", seed), ("select", select), ("improve", improve), ("generate", generate), ("evaluate", evaluate),
        ("repair", repair), ("propose", propose), ("report", report), ("merge", merge))}


def route_start(state: dict, first: str = "improve") -> str:
    """A fresh run evaluates the seed first; a run with history goes on while budget is left."""
    return route_next(state, first) if state.get("iteration", 0) > 0 else "seed"


def route_next(state: dict, first: str = "improve") -> str:
    """Loop (back to `first`) until the iteration budget is spent or the target accuracy is reached."""
    task = state["task"]
    best = state.get("best") or {}
    target = task.get("target_accuracy")
    if target is not None and (best.get("accuracy") or 0.0) >= target:
        return END
    return END if state.get("iteration", 0) > task["iterations"] else first


def route_after_evaluate(state: dict, first: str = "improve") -> str:
    """A candidate waiting for repair goes back to the Generator; otherwise the loop goes on or ends."""
    if (state.get("candidate") or {}).get("failed"):
        return "repair"
    return route_next(state, first)


def recursion_limit_for(iterations: int, repairs: int = 1) -> int:
    """The recursion limit one invocation needs to run `iterations` iterations with up to `repairs` each
    (one more where a repair repeated an earlier net: agent/loop/fidelity.py repairs_allowed)."""
    return (STEPS_PER_ITERATION + 2 * (repairs + bool(repairs))) * (iterations + 1) + 10


SHARED = ("task", "best", "window", "last", "counts", "population")  # what each fanned-out candidate starts from


def fan_out(state: dict, workers: int, strategy: str) -> list[Send] | str:
    """One `Send` per candidate of the round (or END when the budget is spent or the target reached): each
    starts from the same state, with its own iteration number (and, for the loop, its own proposal)."""
    if route_next(state, "candidate") == END:
        return END
    it = state.get("iteration", 1)
    base = {key: state[key] for key in SHARED if key in state}
    if strategy == "evolution":
        return [Send("candidate", {**base, "iteration": it + j}) for j in range(round_size(state, workers))]
    return [Send("candidate", {**base, "iteration": it + j, "proposal": p})
            for j, p in enumerate(state.get("proposals") or [])]


def candidate_graph(nodes: dict, k: int, strategy: str):
    """One fanned-out candidate, built from the loop's own nodes: ([select ─► improve ─►] with evolution)
    generate ─► evaluate ⇄ repair ─► report. It returns only its result (`batch`) to the parent."""
    g = StateGraph(make_state(k), output_schema=BatchState)
    names = ("select", "improve", "generate") if strategy == "evolution" else ("generate",)
    for name in (*names, "evaluate", "repair", "report"):
        g.add_node(name, nodes[name])
    g.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        g.add_edge(a, b)
    g.add_edge(names[-1], "evaluate")
    g.add_conditional_edges("evaluate", lambda s: "repair" if (s.get("candidate") or {}).get("failed") else "report",
                            ["repair", "report"])
    g.add_edge("repair", "evaluate")
    g.add_edge("report", END)
    return g.compile(name="candidate")


def _fanned(g: StateGraph, nodes: dict, k: int, strategy: str, workers: int) -> None:
    """The parent graph's edges with several workers (see the module docstring)."""
    fan = partial(fan_out, workers=workers, strategy=strategy)
    first = "propose" if strategy == "loop" else "candidate"
    g.add_node("seed", nodes["seed"])
    g.add_node("candidate", candidate_graph(nodes, k, strategy))
    g.add_node("merge", nodes["merge"])
    if strategy == "loop":
        g.add_node("propose", nodes["propose"])
        g.add_conditional_edges(START, partial(route_start, first="propose"), ["seed", "propose", END])
        g.add_conditional_edges("seed", partial(route_next, first="propose"), ["propose", END])
        g.add_conditional_edges("merge", partial(route_next, first="propose"), ["propose", END])
        g.add_conditional_edges("propose", fan, ["candidate", END])
    else:
        g.add_conditional_edges(START, lambda s: "seed" if s.get("iteration", 0) == 0 else fan(s), ["seed", first, END])
        g.add_conditional_edges("seed", fan, [first, END])
        g.add_conditional_edges("merge", fan, [first, END])
    g.add_edge("candidate", "merge")


def build_graph(deps: Deps | Callable[[dict], Deps] | None = None, *, k: int | None = None, checkpointer=None,
                strategy: str | None = None, workers: int | None = None, input_schema: type = InputState):
    """Compile the loop. `deps` holds the LLM clients, the evaluator and (optionally) the run store; or is
    a function of the task that returns them (agent/app/studio.py); or is left out, and each invocation
    brings its own as LangGraph's runtime context: `graph.invoke(inp, config, context=Deps(...))` (a
    context also overrides what the graph was built with). `strategy` ("loop" or "evolution") defaults to
    `deps.options.strategy`. `input_schema` types what a caller sends (Studio's form: agent/app/studio.py)."""
    if strategy is None:
        strategy = deps.options.strategy if isinstance(deps, Deps) else "loop"
    if workers is None:
        workers = deps.options.workers if isinstance(deps, Deps) else 1
    if k is None:  # the memory window: the nodes read it from the options too (agent/loop/conversation.py)
        k = deps.options.k if isinstance(deps, Deps) else DEFAULT_K
    nodes = make_nodes(deps)
    first = "select" if strategy == "evolution" else "improve"
    # A task factory serves Studio, whose context must be JSON: only the others declare Deps as the context.
    context = None if deps is not None and not isinstance(deps, Deps) else Deps
    g = StateGraph(make_state(k), context_schema=context, input_schema=input_schema, output_schema=OutputState)
    # the name is what LangGraph Studio calls the assistant: the two strategies must not look alike
    title = "nasloop" if strategy != "evolution" else "nasloop-evolution"
    if workers > 1:
        _fanned(g, nodes, k, strategy, workers)
        return g.compile(checkpointer=checkpointer, name=title)
    for name, fn in nodes.items():
        if name in ("propose", "report", "merge"):
            continue
        if name != "select" or strategy == "evolution":
            g.add_node(name, fn)
    g.add_conditional_edges(START, partial(route_start, first=first), ["seed", first, END])
    g.add_conditional_edges("seed", partial(route_next, first=first), [first, END])
    if strategy == "evolution":
        g.add_edge("select", "improve")
    g.add_edge("improve", "generate")
    g.add_edge("generate", "evaluate")
    g.add_conditional_edges("evaluate", partial(route_after_evaluate, first=first), [first, "repair", END])
    g.add_edge("repair", "evaluate")
    return g.compile(checkpointer=checkpointer, name=title)
