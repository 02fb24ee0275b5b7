"""A typed change whose edit the loop would make gives a net evaluated before: a repeat, known before any call."""
from __future__ import annotations

import json

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.runs.store import RunStore
from tests.fakes import ScriptedEvaluator, code_reply, scripted, task

WIDEN = {"problem": "too narrow", "operator": "widen", "target": "conv2", "arguments": "32 -> 64 channels",
         "reason": "more features per layer"}


def test_a_typed_change_whose_edit_gives_an_earlier_net_goes_back_to_the_improver(tmp_path):
    """CIFAR-10 (seed 45, at ca2581f): "Widen conv1: 64 -> 128 channels", made by the loop on the best net,
    was iteration 2's net again, long out of the window: a repeat verdict, then a 54-s repair call. The
    loop knows before any call: the Improver is asked again, with the tried list."""
    widen = {**WIDEN, "target": "conv1", "arguments": "8 -> 16 channels"}
    kernel = {**WIDEN, "operator": "change_kernel", "target": "conv1", "arguments": "5x5"}
    norm = {**WIDEN, "operator": "add_normalisation", "target": "conv1", "arguments": ""}
    store = RunStore.create(tmp_path, "unit", {})
    improver = scripted(json.dumps(widen), json.dumps(kernel), json.dumps({**widen, "problem": "still narrow"}),
                        json.dumps(norm))
    generator = scripted(*[code_reply(tag="acc=0.3") for _ in range(3)])  # never the best: the seed stays it
    build_graph(Deps(improver, generator, ScriptedEvaluator(), store, LoopOptions(k=1, improver_chat=False))).invoke(
        {"task": task(3)}, {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(3)})
    results = {r["iteration"]: r for r in store.results()}
    assert results[1]["suggestion"] == "Widen conv1: 8 -> 16 channels" and results[1]["suggestion_source"] == "model"
    retry = next(r for r in store.trace() if r["iteration"] == 3 and r["node"] == "improve.1")
    assert "was already tried" in retry["prompt"]  # the window (k=1) holds only iteration 2's kernel change
    assert results[3]["suggestion_source"] == "model-retry" and results[3]["change"]["operator"] == "add_normalisation"
    assert not results[3].get("repairs") and results[3]["outcome"] == "ok"
