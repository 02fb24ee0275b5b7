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

`build_graph(...)` compiles WITHOUT a checkpointer, so a parent graph's checkpointer is inherited
(and `langgraph dev` accepts it); the CLI compiles with SqliteSaver for resume. One iteration is three
supersteps (four with select), plus two per repair: callers set `recursion_limit` with
`recursion_limit_for(iterations)`.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from langgraph.graph import END, START, StateGraph

from nasloop.agent.deps import Deps
from nasloop.agent.loop.nodes import make_nodes
from nasloop.agent.state import DEFAULT_K, InputState, OutputState, make_state

STEPS_PER_ITERATION = 4  # select (evolution), improve, generate, evaluate


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
    """The recursion limit one invocation needs to run `iterations` iterations with up to `repairs` each."""
    return (STEPS_PER_ITERATION + 2 * repairs) * (iterations + 1) + 10


def build_graph(deps: Deps | Callable[[dict], Deps] | None = None, *, k: int = DEFAULT_K, checkpointer=None,
                strategy: str | None = None):
    """Compile the loop. `deps` holds the LLM clients, the evaluator and (optionally) the run store; or is
    a function of the task that returns them (agent/app/studio.py); or is left out, and each invocation
    brings its own as LangGraph's runtime context: `graph.invoke(inp, config, context=Deps(...))` (a
    context also overrides what the graph was built with). `strategy` ("loop" or "evolution") defaults to
    `deps.options.strategy`."""
    if strategy is None:
        strategy = deps.options.strategy if isinstance(deps, Deps) else "loop"
    nodes = make_nodes(deps)
    first = "select" if strategy == "evolution" else "improve"
    # A task factory serves Studio, whose context must be JSON: only the others declare Deps as the context.
    context = None if deps is not None and not isinstance(deps, Deps) else Deps
    g = StateGraph(make_state(k), context_schema=context, input_schema=InputState, output_schema=OutputState)
    for name, fn in nodes.items():
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
    # the name is what LangGraph Studio calls the assistant: the two strategies must not look alike
    return g.compile(checkpointer=checkpointer, name="nasloop" if strategy != "evolution" else "nasloop-evolution")
