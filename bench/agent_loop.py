"""Agent-loop benchmarks, printed (never asserted), each against a baseline from the same process run.

P4  prompt size of the Improver and the Generator at iteration 50 divided by iteration 5: the K-window
    keeps the context constant (target <= 1.1).
P1  loop overhead per iteration beyond LLM generation and training: a scripted chat model and an
    in-process evaluator that does no work, with SQLite checkpoints and the run store, compared with
    calling the same node functions directly in a Python loop (target <= 0.5 s per iteration).

    python bench/agent_loop.py [--iterations 60]
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from nasloop.agent import Deps, build_graph, recursion_limit_for  # noqa: E402
from nasloop.agent.graph import make_nodes  # noqa: E402
from nasloop.agent.runs.store import RunStore  # noqa: E402
from tests.fakes import ScriptedEvaluator, code_reply, scripted, task  # noqa: E402

IMPROVER = '{"problem": "accuracy is limited by width", "suggestion": "widen the second block to 96 channels"}'


def deps(store: RunStore | None, n: int = 200) -> Deps:
    """Distinct candidates (no repeats), every third one failing: the window holds both kinds."""
    replies = [code_reply(tag=f"fail=shape_error {i}" if i % 3 == 0 else f"acc=0.{50 + i % 40}") for i in range(n)]
    return Deps(scripted(IMPROVER), scripted(*replies), ScriptedEvaluator(), store)


def prompt_sizes(store: RunStore, iteration: int) -> dict[str, int]:
    return {t["node"]: len(t["prompt"]) // 4 for t in store.trace() if t["iteration"] == iteration and "prompt" in t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=60)
    n = ap.parse_args().iterations
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(tmp, "bench", {})
        conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
        graph = build_graph(deps(store), checkpointer=SqliteSaver(conn))
        cfg = {"configurable": {"thread_id": "b"}, "recursion_limit": recursion_limit_for(n)}
        t0 = time.perf_counter()
        graph.invoke({"task": task(n)}, cfg)
        graph_s = (time.perf_counter() - t0) / (n + 1)

        p5, p50 = prompt_sizes(store, 5), prompt_sizes(store, min(50, n))
        print(f"P4  prompt tokens (chars/4) at iteration {min(50, n)} / iteration 5")
        for node in ("improve", "generate"):
            print(f"    {node:<9} {p50[node]:5d} / {p5[node]:5d} = {p50[node] / p5[node]:.3f}x  (target <= 1.1)")

        # Baseline: the same node functions called in a plain loop, no graph, no checkpoints, no store.
        nodes = make_nodes(deps(None))
        state: dict = {"task": task(n), "window": [], "counts": {}}
        t0 = time.perf_counter()
        state.update(nodes["seed"](state))
        for _ in range(n):
            for name in ("improve", "generate", "evaluate"):
                upd = nodes[name](state)
                window = state.get("window", []) + upd.pop("window", [])
                state.update(upd, window=window[-5:])
        plain_s = (time.perf_counter() - t0) / (n + 1)
        print(f"P1  loop overhead per iteration (scripted LLM, evaluator doing no work), {n} iterations")
        print(f"    graph + SqliteSaver + run store {graph_s * 1000:7.1f} ms")
        print(f"    plain loop over the same nodes  {plain_s * 1000:7.1f} ms")
        print(f"    ratio {graph_s / max(plain_s, 1e-9):.1f}x; absolute overhead {graph_s * 1000:.1f} ms "
              f"(target <= 500 ms)")
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
