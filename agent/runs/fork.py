"""`nasloop fork RUN_DIR --at ITERATION`: a NEW run that starts from the source's checkpointed state at
that iteration ("what if a different model had taken over here?"). The source is never written to. A
run without checkpoints (LangGraph Studio's server keeps its own) is forked from the state its records
give, derived as the nodes derive it.

The state comes from the source's LangGraph checkpoint history: the snapshot taken after iteration
ITERATION-1 was recorded and before iteration ITERATION's Improver ran. The new run gets that state as
its first checkpoint (as if written by the evaluate node) and copies of the records before ITERATION,
so its files, replay and report are complete; then it continues like `search --resume`.
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from nasloop.errors import RunError
from nasloop.agent.graph import build_graph
from nasloop.agent.loop import record
from nasloop.agent.runs.store import RunStore
from nasloop.agent.state import DEFAULT_K

THREAD = "search"


def _graph(checkpointer, config: dict) -> CompiledStateGraph:
    """A graph of the run's shape (strategy, workers), used only to read or write checkpoints: its nodes
    never run here."""
    args = config.get("args") or {}
    return build_graph(checkpointer=checkpointer, strategy=args.get("strategy") or "loop",
                       workers=args.get("workers") or 1)


# the steps a round starts with: a fork point is a checkpoint whose next step is one of them
ROUND_STARTS = ("improve", "select", "propose", "candidate")


def state_at(run: RunStore, iteration: int) -> dict:
    """The source's checkpointed state just before `iteration` began; for a run without checkpoints (a
    LangGraph Studio run: its server keeps them) or with damaged ones, the same state derived from its records."""
    if not run.checkpoint_path.is_file():
        return state_from_records(run, iteration)
    with tempfile.TemporaryDirectory() as tmp:  # read a copy: SQLite would add -wal/-shm files to the source
        copy = Path(tmp) / "checkpoints.sqlite"
        shutil.copy2(run.checkpoint_path, copy)
        wal = run.checkpoint_path.with_name(run.checkpoint_path.name + "-wal")
        if wal.is_file():  # transactions not yet folded into the main file (e.g. after kill -9)
            shutil.copy2(wal, copy.with_name(copy.name + "-wal"))
        conn = sqlite3.connect(str(copy), check_same_thread=False)
        try:
            graph = _graph(SqliteSaver(conn), run.config)
            for snap in graph.get_state_history({"configurable": {"thread_id": THREAD}}):
                values = snap.values or {}
                if values.get("iteration") == iteration and (not snap.next or snap.next[0] in ROUND_STARTS):
                    return dict(values)
        except sqlite3.DatabaseError as exc:
            try:  # the records still give the state, where they can
                return state_from_records(run, iteration)
            except RunError:
                pass
            raise RunError(f"{run.checkpoint_path} is damaged ({exc}): there is no state to fork from; results.jsonl "
                           f"and trace.jsonl are intact: 'nasloop report {run.path}' still works") from exc
        finally:
            conn.close()
    done = [r["iteration"] for r in run.results()]
    last = max(done) if done else -1
    rounds = "; with several workers, at the first iteration of a round" if (run.config.get("args") or {}).get(
        "workers", 1) > 1 else ""
    raise RunError(f"no checkpoint before iteration {iteration} in {run.path} (it has iterations 0..{last}; "
                   f"fork at 1..{last + 1}{rounds})")


def state_from_records(run: RunStore, iteration: int) -> dict:
    """The loop's state before `iteration`, from results.jsonl and the candidates (agent/loop/record.py builds
    it with the nodes' own functions). Needs every earlier iteration's record and the run's task."""
    args, task = run.config.get("args") or {}, run.config.get("task")
    if (args.get("strategy") or "loop") != "loop" or (args.get("workers") or 1) > 1 or not isinstance(task, dict):
        raise RunError(f"{run.path} has no checkpoints to fork from (a run without them can be forked only if it is "
                       f"a one-worker loop run whose run.json records its task, as LangGraph Studio runs do)")
    results = [r for r in run.results() if r["iteration"] < iteration]
    if [r["iteration"] for r in results] != list(range(iteration)):
        last = max((r["iteration"] for r in run.results()), default=-1)
        raise RunError(f"{run.path} has no record of every iteration before {iteration} (it has 0..{last}; "
                       f"fork at 1..{last + 1})")
    state = record.state_from_results(results, run.candidate_code, int(args.get("k") or DEFAULT_K), args.get("proxy"))
    return {**state, "task": task}


def prepare_fork(source: str | Path, at: int, runs_dir: str | Path, overrides: dict) -> RunStore:
    """Create the new run directory and its first checkpoint; return its store."""
    src = RunStore.open(source, writable=False)
    if at < 1:
        raise RunError("--at must be at least 1 (iteration 0 is the seed)")
    values = state_at(src, at)
    cfg = src.config
    args = {**cfg.get("args", {}), **{k: v for k, v in overrides.items() if v is not None}}
    args["iterations"] = max(int(args.get("iterations") or 0), at)
    if overrides.get("iterations"):
        args["iterations"] = at - 1 + int(overrides["iterations"])  # N more iterations after the fork point
    dst = RunStore.create(runs_dir, f"{src.path.name}-fork{at}",
                          {"args": args, "started": time.time(), "forked_from": {"run": str(src.path), "at": at}})
    for kind, records in (("trace", src.trace()), ("results", src.results())):
        for rec in records:
            if rec["iteration"] < at:
                dst.copy_record(kind, rec)
    for i in range(at):
        code = src.candidate_code(i)
        if code is not None:
            dst.save_candidate(i, code)
    best = values.get("best") or {}
    if best.get("code"):
        dst.save_best(best["code"])
    values["task"] = {**values.get("task", {}), "iterations": args["iterations"]}
    conn = sqlite3.connect(str(dst.checkpoint_path), check_same_thread=False)
    try:
        graph = _graph(SqliteSaver(conn), {"args": args})
        last = "merge" if (args.get("workers") or 1) > 1 else "evaluate"  # what ends an iteration (or a round)
        graph.update_state({"configurable": {"thread_id": THREAD}}, _writable(values), as_node=last)
    finally:
        conn.close()
    return dst


def _writable(values: dict) -> dict:
    """Channel values as an update: the window is written through its reducer, so give it whole."""
    return {k: v for k, v in values.items() if v is not None}
