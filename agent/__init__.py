"""nasloop's agent: the LangGraph loop (Prompt Improver → Code Generator → Evaluator, K-window memory).

    from agent import build_graph, Deps
"""
from agent.graph import build_graph, recursion_limit_for
from agent.deps import Deps
from agent.state import InputState, OutputState, State

__all__ = ["build_graph", "recursion_limit_for", "Deps", "InputState", "OutputState", "State"]
