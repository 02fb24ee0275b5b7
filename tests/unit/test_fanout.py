"""Several workers: the graph fans each round out with `Send` and merges in candidate order. Scripted
chat models (keyed by prompt where calls race) and an in-process evaluator: logic only; the real thing
(Ray, Docker, training) is tests/integration/test_scale.py."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.loop.rounds import PENDING, round_size
from nasloop.agent.runs.fork import prepare_fork
from nasloop.agent.runs.store import RunStore
from nasloop.errors import RunError
from tests.fakes import ScriptedEvaluator, code_reply, keyed, scripted, task

CHANGES = {f"change number {i}": f"acc=0.{50 + i}" for i in range(1, 9)}


def improver() -> object:
    return scripted(*[json.dumps({"problem": f"p{i}", "suggestion": s}) for i, s in enumerate(CHANGES)])


def generator():
    return keyed({s: code_reply(tag=tag) for s, tag in CHANGES.items()})


class SlowFirst(ScriptedEvaluator):
    """The first candidate of every round finishes last."""

    def evaluate(self, source, **_):
        if "acc=0.51" in source or "acc=0.53" in source:
            time.sleep(0.5)
        return super().evaluate(source)


def config(iterations: int) -> dict:
    return {"configurable": {"thread_id": "search"}, "recursion_limit": recursion_limit_for(iterations)}


def test_round_size_stays_within_the_budget():
    assert round_size({"task": task(5), "iteration": 1}, 2) == 2
    assert round_size({"task": task(5), "iteration": 5}, 4) == 1
    assert round_size({"task": task(5), "iteration": 3}, 8) == 3


def test_a_round_is_merged_in_candidate_order_whoever_finishes_first(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    ev = SlowFirst()
    deps = Deps(improver(), generator(), ev, store, LoopOptions(workers=2))
    out = build_graph(deps).invoke({"task": task(4)}, config(4))
    assert out["iteration"] == 5 and ev.calls == 5
    assert [t["iteration"] for t in out["window"]] == [0, 1, 2, 3, 4]
    assert [t["suggestion"] for t in out["window"][1:]] == list(CHANGES)[:4]
    assert out["best"]["iteration"] == 4 and out["best"]["accuracy"] == 0.54
    assert out["counts"] == {"ok": 5, "evaluated": 5}
    lines = [json.loads(x) for x in (store.path / "results.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 2, 1, 4, 3]  # as they finished...
    assert [r["iteration"] for r in store.results()] == [0, 1, 2, 3, 4]  # ...read in candidate order
    assert (store.path / "best.py").read_text().startswith('TAG = "acc=0.54"')


def test_the_rounds_candidates_overlap():
    seen, lock = [], threading.Lock()

    class Counting(ScriptedEvaluator):
        running = 0

        def evaluate(self, source, **_):
            with lock:
                Counting.running += 1
                seen.append(Counting.running)
            time.sleep(0.2)
            with lock:
                Counting.running -= 1
            return super().evaluate(source)

    build_graph(Deps(improver(), generator(), Counting(), options=LoopOptions(workers=3))).invoke(
        {"task": task(3)}, config(3))
    assert max(seen) == 3  # the three candidates of the round were evaluated at once


def test_each_proposal_of_a_round_sees_the_ones_before_it_as_pending(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    same = json.dumps({"problem": "p", "suggestion": "change number 1"})
    other = json.dumps({"problem": "q", "suggestion": "change number 2"})
    deps = Deps(scripted(same, same, other), generator(), ScriptedEvaluator(), store, LoopOptions(workers=2))
    build_graph(deps).invoke({"task": task(2)}, config(2))
    trace = {(t["iteration"], t["node"]): t for t in store.trace()}
    assert PENDING not in trace[(1, "improve")]["prompt"]
    second = trace[(2, "improve")]["prompt"]
    assert "change number 1" in second and PENDING in second
    # it repeated its sibling's change: asked once more, with the list (as for a repeat of the memory)
    assert "change number 1" in trace[(2, "improve.1")]["prompt"].split("Changes already tried:")[1]
    assert [r["suggestion"] for r in store.results()[1:]] == ["change number 1", "change number 2"]


def test_evolution_breeds_one_child_per_worker_and_keeps_the_population(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    ev = ScriptedEvaluator()
    deps = Deps(improver(), generator(), ev, store,
                LoopOptions(workers=2, strategy="evolution", fidelity="train", population=3))
    out = build_graph(deps).invoke({"task": task(4)}, config(4))
    assert out["iteration"] == 5 and [r["iteration"] for r in store.results()] == [0, 1, 2, 3, 4]
    assert len(out["population"]) == 3  # the seed and four children competed; the worst two left
    fits = sorted(m["fitness"] for m in out["population"])
    assert fits == sorted(r["fitness"] for r in store.results())[-3:]
    assert {(t["iteration"], t["node"]) for t in store.trace()} >= {(i, "improve") for i in (1, 2, 3, 4)}


def test_a_crash_mid_round_resumes_without_repeating_a_finished_evaluation(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})

    class CrashOnce(ScriptedEvaluator):
        crashed = False

        def evaluate(self, source, **_):
            if "acc=0.51" in source and not CrashOnce.crashed:  # the slow first candidate of round 1
                time.sleep(0.3)  # its sibling has finished by now
                CrashOnce.crashed = True
                raise RuntimeError("the search was killed here")
            return super().evaluate(source)

    ev = CrashOnce()
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    deps = Deps(improver(), generator(), ev, store, LoopOptions(workers=2))
    graph = build_graph(deps, checkpointer=SqliteSaver(conn))
    with pytest.raises(RuntimeError):
        graph.invoke({"task": task(2)}, config(2))
    assert [r["iteration"] for r in store.results()] == [0, 2] and ev.calls == 2  # the seed, iteration 2
    resumed = RunStore.open(store.path)
    deps2 = Deps(scripted("not asked again"), generator(), ev, resumed, LoopOptions(workers=2))
    out = build_graph(deps2, checkpointer=SqliteSaver(conn)).invoke(None, config(2))
    assert out["iteration"] == 3 and ev.calls == 3  # only iteration 1 was evaluated again
    assert [r["iteration"] for r in resumed.results()] == [0, 1, 2]
    keys = [(t["iteration"], t["node"]) for t in resumed.trace()]
    assert len(keys) == len(set(keys))  # no LLM call repeated either


def test_fork_of_a_fanned_out_run_starts_at_a_round(tmp_path):
    store = RunStore.create(tmp_path, "unit", {"args": {"workers": 2, "iterations": 4}})
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    deps = Deps(improver(), generator(), ScriptedEvaluator(), store, LoopOptions(workers=2))
    build_graph(deps, checkpointer=SqliteSaver(conn)).invoke({"task": task(4)}, config(4))
    conn.close()
    new = prepare_fork(store.path, 3, tmp_path / "forks", {"workers": 1})
    assert [r["iteration"] for r in new.results()] == [0, 1, 2]
    with pytest.raises(RunError, match="first iteration of a round"):
        prepare_fork(store.path, 2, tmp_path / "forks", {})


def test_thread_budget_keeps_the_llm_and_the_trainers_within_the_cores():
    from nasloop.agent.app.options import thread_budget

    assert thread_budget(1, 2.0, True, cores=2) == (2.0, 0)  # one worker: as before, nothing reserved
    assert thread_budget(2, 2.0, True, cores=2) == (0.5, 1)  # 1 core for llama.cpp, 0.5 for each trainer
    assert thread_budget(2, 2.0, False, cores=2) == (1.0, 0)  # the LLM is elsewhere: trainers take all
    assert thread_budget(4, 4.0, True, cores=16) == (2.0, 8)
    assert thread_budget(8, 2.0, True, cores=2) == (0.25, 1)  # too few cores: everyone shares them


def test_workers_refuse_the_process_sandbox():
    """A candidate in the process sandbox shares the host's network: Ray's cluster would be within reach."""
    from nasloop.agent.app.options import build_evaluator, evaluation_defaults
    from nasloop.errors import UsageError

    args = evaluation_defaults()
    args.sandbox, args.workers, args.train_subset = "process", 2, 64
    with pytest.raises(UsageError, match="--workers needs the Docker sandbox"):
        build_evaluator(args)
