"""A fanned-out search (2 Ray workers, real Docker, scripted LLM) in its own process, so that a test can
kill -9 it mid-round and resume it: `python -m tests.integration.fanout_driver RUNS_DIR` starts a run (its
directory is the first line printed), `... RUN_DIR --resume` resumes it. Each evaluation this process
starts is logged to evaluations.log beside the run (the change it implements, and this process's id)."""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver

from nasloop.agent.app.options import build_evaluator
from nasloop.agent.deps import Deps, LoopOptions
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.runs.store import RunStore
from tests.integration.test_scale import CHANGES, evaluator_args, improver_and_generator

ITERATIONS = 4
WIDE_CHANGE = next(iter(CHANGES))  # iteration 1: the wide net


class Logged:
    """The evaluator, logging each evaluation as it starts. The wide net of round 1 returns only once its
    sibling (iteration 2) is recorded, so a kill at that moment finds the round half done: its 8x work alone
    did not order them (on a fast machine both trained in 5-8 s, and it finished first)."""

    def __init__(self, inner, log: Path, results: Path):
        self.inner, self.log, self.results = inner, log, results

    def evaluate(self, source: str, **_):
        tag = next((s for s, code in CHANGES.items() if code.strip() in source), "seed")
        with open(self.log, "a") as f:
            f.write(f"{tag}\t{os.getpid()}\n")
        out = self.inner.evaluate(source)
        deadline = time.monotonic() + 300
        while tag == WIDE_CHANGE and not self._recorded(2) and time.monotonic() < deadline:
            time.sleep(0.1)
        return out

    def _recorded(self, iteration: int) -> bool:
        lines = self.results.read_text().splitlines() if self.results.exists() else []
        return any(json.loads(line).get("iteration") == iteration for line in lines)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main(where: str, resume: bool) -> None:
    args = evaluator_args(2)
    args.min_steps = 40
    evaluator = build_evaluator(args)
    store = RunStore.open(where) if resume else RunStore.create(where, "fanout", {"args": {}})
    print(store.path, flush=True)
    path = store.path
    improver, generator = improver_and_generator()
    deps = Deps(improver=improver, generator=generator, evaluator=Logged(evaluator, path.parent / "evaluations.log", path / "results.jsonl"),
                store=store, options=LoopOptions(workers=2, repairs=0))
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    graph = build_graph(deps, checkpointer=SqliteSaver(conn))
    config = {"configurable": {"thread_id": "search"}, "recursion_limit": recursion_limit_for(ITERATIONS)}
    task = {**evaluator.task_facts(), "iterations": ITERATIONS, "target_accuracy": None}
    graph.invoke(None if resume else {"task": task}, config)
    closer = getattr(evaluator.sandbox, "close", None)
    if closer is not None:
        closer()


if __name__ == "__main__":
    main(sys.argv[1], "--resume" in sys.argv)
