"""What the nodes tell a display while they run, as LangGraph custom stream events: the node starting, the
training steps of the candidate, the tokens of the LLM call (the CLI's progress line shows them)."""
from __future__ import annotations

from typing import Callable

from langgraph.runtime import Runtime

def announce(runtime: Runtime | None, state: dict, node: str) -> None:
    """A custom stream event as a node starts, so a display can say what the search is doing now."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer({"step": {"iteration": state.get("iteration", 0), "node": node}})


def training_events(runtime: Runtime | None, iteration: int) -> Callable[[int, int], None] | None:
    """Training steps so far of the candidate being evaluated, as LangGraph custom stream events (the
    harness notes them twice a second at most)."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is None:
        return None
    return lambda step, steps: writer({"train": {"iteration": iteration, "step": step, "steps": steps}})


def llm_progress(runtime: Runtime | None, iteration: int, node: str, every: float = 0.5) -> Callable[[int, float], None]:
    """Tokens so far and tokens/s of the running call, as LangGraph custom stream events (at most one per
    `every` seconds): the CLI shows them so a one-minute call on a CPU visibly makes progress."""
    writer = getattr(runtime, "stream_writer", None)
    last = [-every]

    def report(tokens: int, seconds: float) -> None:
        if writer is not None and seconds - last[0] >= every:
            last[0] = seconds
            writer({"llm": {"iteration": iteration, "node": node, "tokens": tokens, "seconds": round(seconds, 1)}})

    return report
