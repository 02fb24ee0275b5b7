"""A parent LangGraph app that uses the nasloop graph as a subgraph node: design, then document.

    START ─► design (the nasloop search, as a subgraph) ─► document (writes a model card) ─► END

The parent compiles with its own checkpointer; the nasloop subgraph has none and inherits it, so the
whole flow is resumable from the parent's checkpoints. Run it (Docker engine + the bundled model):

    python examples/design_then_document.py --dataset digits --iterations 3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nasloop.agent import Deps, build_graph, recursion_limit_for  # noqa: E402
from nasloop.tools.text import human  # noqa: E402


class FlowState(TypedDict, total=False):
    """The parent's state: the keys it shares with the nasloop subgraph, plus its own."""

    task: dict
    best: dict | None
    window: list
    counts: dict
    iteration: int
    model_card: str


def document(state: FlowState) -> dict[str, Any]:
    """Write a model card from what the search found."""
    best = state.get("best") or {}
    counts = state.get("counts") or {}
    task = state.get("task") or {}
    if not best:
        return {"model_card": f"# No model\n\nNo candidate trained on {task.get('dataset')}: {json.dumps(counts)}"}
    lines = [
        f"# Model card: nasloop net for {task.get('dataset')}",
        "",
        f"- Accuracy after the search budget: **{best['accuracy']:.4f}** (iteration {best['iteration']})",
        f"- Parameters: {human(best.get('params') or 0)}; FLOPs per image: {human(best.get('flops') or 0)}",
        f"- Candidates evaluated: {counts.get('evaluated', 0)} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()) if k != 'evaluated')})",
        "- Training: one epoch (or the minimum step budget) of nasloop's fixed recipe; retrain before use.",
        "",
        "## Last lessons of the search",
        *[f"- {t.get('suggestion', '')} → {t.get('outcome')}" for t in state.get("window") or []],
        "",
        "## Code",
        "```python",
        (best.get("code") or "").strip(),
        "```",
    ]
    return {"model_card": "\n".join(lines)}


def build_flow(deps: Deps | Any, checkpointer=None):
    """The parent graph; `deps` as for build_graph (a Deps or a function of the task)."""
    flow = StateGraph(FlowState)
    flow.add_node("design", build_graph(deps))  # the nasloop graph as a subgraph node
    flow.add_node("document", document)
    flow.add_edge(START, "design")
    flow.add_edge("design", "document")
    flow.add_edge("document", END)
    return flow.compile(checkpointer=checkpointer)


def main() -> int:
    from nasloop.agent.app.studio import deps_for_task

    ap = argparse.ArgumentParser(description="design a net with nasloop, then write its model card")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--llm", default="llamacpp:qwen2.5-coder-1.5b")
    args = ap.parse_args()
    app = build_flow(deps_for_task, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "design-1"}, "recursion_limit": recursion_limit_for(args.iterations)}
    out = app.invoke({"task": {"dataset": args.dataset, "iterations": args.iterations, "llm": args.llm,
                               "train_subset": 1000, "min_steps": 100}}, config)
    print(out["model_card"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
