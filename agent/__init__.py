"""nasloop's agent: the LangGraph loop (Prompt Improver → Code Generator → Evaluator, K-window memory).

    from nasloop.agent import build_graph, Deps
"""
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.deps import Deps
from nasloop.agent.state import InputState, OutputState, State

__all__ = ["build_graph", "recursion_limit_for", "Deps", "InputState", "OutputState", "State"]
