"""One record builder: replay shows exactly the memory windows the LLM's prompts contained."""
from __future__ import annotations

import json

import pytest

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.llm.prompting import window_text
from nasloop.agent.loop import record
from nasloop.agent.runs.replay import load_steps
from nasloop.agent.runs.store import RunStore
from tests.fakes import ScriptedEvaluator, code_reply, scripted, task

LONG = "x" * 400  # longer than the window keeps: the same cut must show in replay
IMPROVER = [json.dumps({"problem": f"problem {i} {LONG}", "suggestion": f"change {i} {LONG}"}) for i in range(9)]
REFLECT = [json.dumps({"lesson": f"lesson {i}", "suggestion": f"mutation {i}"}) for i in range(9)]


def windows_in_prompts(store: RunStore) -> list[tuple[int, str]]:
    return [(r["iteration"], r["prompt"]) for r in store.trace() if r["node"] == "improve" and r.get("prompt")]


@pytest.mark.parametrize("strategy", ["loop", "evolution"])
def test_replay_windows_are_the_windows_the_prompts_showed(tmp_path, strategy):
    k = 3
    evolution = strategy == "evolution"
    # every diagnosis a prompt of its own: a conversation's later turns show what came since its first prompt
    opts = LoopOptions(strategy=strategy, fidelity="proxy" if evolution else "train", population=3, repairs=0,
                       improver_chat=False, k=k)
    store = RunStore.create(tmp_path, strategy, {"args": {"k": k, "proxy": opts.proxy, "strategy": strategy}})
    tags = ["acc=0.6", "fail=shape_error", "acc=0.7", "fail=runtime_error", "acc=0.65", "acc=0.8"]
    tags = [t.replace("acc=0.", "score=") if evolution else t for t in tags]
    deps = Deps(scripted(*(REFLECT if evolution else IMPROVER)), scripted(*[code_reply(tag=t) for t in tags]),
                ScriptedEvaluator(), store, opts)
    graph = build_graph(deps, k=k)
    out = graph.invoke({"task": task(len(tags))}, {"configurable": {"thread_id": "t"},
                                                   "recursion_limit": recursion_limit_for(len(tags))})
    steps = load_steps(str(store.path))
    prompts = windows_in_prompts(store)
    assert len(prompts) == len(tags)
    for it, prompt in prompts:  # the window replay shows just before this iteration's improve step
        before = [s for s in steps if s.node == "evaluate" and s.iteration < it][-1]
        shown = window_text({"window": before.window})
        assert f"\n{shown}\n" in prompt, (it, shown)
    last = [s for s in steps if s.node == "evaluate"][-1]
    assert last.window == out["window"] and len(last.window) == k
    assert last.best is not None and last.best["iteration"] == out["best"]["iteration"]
    if evolution:
        assert all("parent" in t for t in last.window) and any("delta" in t for t in last.window)
    else:
        assert all(len(t["suggestion"]) == record.TEXT_CHARS for t in last.window)


def test_suggestion_source_is_recorded(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    same = json.dumps({"problem": "p", "suggestion": "add a block"})
    deps = Deps(scripted(same), scripted(*[code_reply(tag=f"acc=0.{i}") for i in range(5, 8)]),
                ScriptedEvaluator(), store)
    build_graph(deps).invoke({"task": task(2)}, {"configurable": {"thread_id": "t"},
                                                 "recursion_limit": recursion_limit_for(2)})
    assert [record.suggestion_source(r) for r in store.results()[1:]] == ["model", "fallback"]
    assert record.suggestion_source({"problem": "(improver repeat) suggestion of iteration 1 again;"}) == "fallback"


@pytest.mark.parametrize("step", [record.TraceStep("improve"), record.TraceStep("generate", variant=2),
                                  record.TraceStep("repair", 1), record.TraceStep("check", 1, fix_round=2),
                                  record.TraceStep("score", 0, 2, 1), record.TraceStep("final")])
def test_trace_steps_are_data_and_older_runs_read_by_name(step):
    assert record.TraceStep.of({"node": "ignored", "step": step.to_dict()}) == step
    assert record.TraceStep.of({"node": step.node}) == step  # a run recorded before steps were data


def test_trace_records_carry_their_step(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    deps = Deps(scripted(IMPROVER[0]), scripted(code_reply(tag="acc=0.6")), ScriptedEvaluator(), store)
    build_graph(deps).invoke({"task": task(1)}, {"configurable": {"thread_id": "t"},
                                                 "recursion_limit": recursion_limit_for(1)})
    steps = {(r["iteration"], r["node"]): r["step"] for r in store.trace()}
    assert steps[(1, "check0")] == {"kind": "check", "attempt": 0, "variant": 0, "fix_round": 0}
    assert steps[(1, "generate")]["kind"] == "generate" and steps[(1, "improve")]["kind"] == "improve"


def test_a_repeated_suggestion_goes_back_to_the_improver_once_before_any_fallback(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    first = json.dumps({"problem": "p", "suggestion": "add a block"})
    fresh = json.dumps({"problem": "p2", "suggestion": "widen the last convolution to 96 channels"})
    # iteration 1: "add a block"; iteration 2: "add a block" again, then (asked again) a fresh change;
    # iteration 3: "add a block" twice: the fallback list is used
    deps = Deps(scripted(first, first, fresh, first, first), scripted(*[code_reply(tag=f"acc=0.{i}") for i in (5, 6, 7)]),
                ScriptedEvaluator(), store)
    build_graph(deps).invoke({"task": task(3)}, {"configurable": {"thread_id": "t"},
                                                 "recursion_limit": recursion_limit_for(3)})
    results = store.results()[1:]
    assert [record.suggestion_source(r) for r in results] == ["model", "model-retry", "fallback"]
    assert results[1]["suggestion"] == "widen the last convolution to 96 channels"
    retry = next(r for r in store.trace() if r["iteration"] == 2 and r["node"] == "improve.1")
    assert "Changes already tried:\n- add a block" in retry["prompt"] and retry["step"]["variant"] == 1
