"""The Improver's conversation: the next diagnosis is the next turn of the Improver's conversation (only the
latest candidate is new to read, and where it is the new best, its changes and layers); k calls, or a call asked
again begin a new one. Scripted models: what is checked is what each call sends."""
from __future__ import annotations

import json

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.loop.conversation import improver_conversation
from nasloop.agent.runs.store import RunStore
from tests.fakes import ScriptedEvaluator, code_reply, recording, task


def reply(n: int) -> str:
    return json.dumps({"problem": f"problem {n}", "suggestion": f"widen conv1 to {8 * (n + 2)} channels"})


def search(tmp_path, accuracies: list[float], replies: list[str], iterations: int | None = None):
    improver, asked = recording(*replies)
    generator, _ = recording(*(code_reply(tag=f"acc={a}") for a in accuracies))
    store = RunStore.create(tmp_path, "unit", {})
    graph = build_graph(Deps(improver, generator, ScriptedEvaluator(), store, LoopOptions()))
    iterations = iterations or len(accuracies)
    cfg = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(iterations)}
    graph.invoke({"task": task(iterations)}, cfg)
    improves = {r["iteration"]: r for r in store.trace() if r["node"] == "improve"}
    return asked, improves, store


def test_the_next_diagnosis_is_the_next_turn_and_a_new_best_is_shown_in_it(tmp_path):
    # the seed scores 0.5: iterations 1 and 2 are worse, 3 is the new best, 4 and 5 are worse
    asked, improves, store = search(tmp_path, [0.4, 0.45, 0.6, 0.3, 0.35], [reply(n) for n in range(5)])
    assert [[t for t, _ in call] for call in asked] == [["system"] + ["human", "ai"] * n + ["human"] for n in range(5)]
    assert [improves[n]["chat"] for n in range(1, 6)] == [{"start": 1, "best": 0}] * 3 + [{"start": 1, "best": 3}] * 2
    third = asked[2]  # iteration 3: both earlier calls as recorded, prompt and reply, then only the new turn
    assert [text for _, text in third[1:5]] == [improves[1]["prompt"], improves[1]["response"],
                                                improves[2]["prompt"], improves[2]["response"]]
    turn = third[-1][1]
    assert turn == improves[3]["prompt"] and "Recent history" not in turn and "class Net" not in turn
    assert turn.startswith("Latest candidate (iteration 2, built from your change above): outcome ok")
    assert "accuracy 0.4500" in turn and "still the one of iteration 0 (accuracy 0.5000)" in turn
    # iteration 4: candidate 3 is the new best; the turn shows its changes to the seed and its layers, not its code
    turn = improves[4]["prompt"]
    assert turn.startswith("Latest candidate (iteration 3, built from your change above): outcome ok\naccuracy 0.6000")
    assert '+TAG = "acc=0.6"' in turn and "It is the new best network" in turn and "class Net" not in turn
    assert "conv1 Conv2d -> 8x32x32 (80)" in turn and "change to this new BEST network (iteration 3)" in turn
    assert "still the one of iteration 3 (accuracy 0.6000)" in improves[5]["prompt"]
    assert [r["suggestion_source"] for r in store.results()[1:]] == ["model"] * 5


def test_a_new_best_the_conversation_never_showed_begins_a_new_one(tmp_path):
    _, _, store = search(tmp_path, [0.4, 0.45], [reply(n) for n in range(2)])
    deps = Deps(recording()[0], recording()[0], ScriptedEvaluator(), store, LoopOptions())
    state = {"task": task(3), "best": {"iteration": 2}}
    chat = improver_conversation(deps, state, 3)  # candidate 2, shown in the turn of iteration 3: it goes on
    assert chat is not None and chat.start == 1 and len(chat.turns) == 2 and chat.was_best == store.candidate_code(0)
    assert improver_conversation(deps, {**state, "best": {"iteration": 0}}, 3).was_best is None  # the best stays
    assert improver_conversation(deps, {**state, "best": {"iteration": 1}}, 3) is None  # one the turns spoke of as not best


def test_a_conversation_holds_k_calls_and_one_asked_again_ends_it(tmp_path):
    replies = [reply(n) for n in range(6)] + [reply(2), reply(7), reply(8), reply(9)]  # iteration 7: 3's again
    asked, improves, _ = search(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.45, 0.42, 0.41, 0.43, 0.44], replies)
    starts = [improves[n]["chat"]["start"] for n in range(1, 10)]
    # k = 5 calls (the first prompt's window of up to 5 triples and 4 turns), then a new conversation; at
    # iteration 7 the reply repeated iteration 3's suggestion, was asked again, and iteration 8 begins anew
    assert starts == [1, 1, 1, 1, 1, 6, 6, 8, 8]
    assert [len(call) for call in asked[:5]] == [2, 4, 6, 8, 10]


def test_a_change_a_repair_made_instead_is_said_in_the_next_turn(tmp_path):
    # iteration 2's first code repeats iteration 1's: its repair makes a fallback change instead
    asked, improves, store = search(tmp_path, [0.4, 0.4, 0.45, 0.3], [reply(n) for n in range(3)], iterations=3)
    instead = store.results()[2]["repairs"][0]["suggestion"]
    assert [improves[n]["chat"]["start"] for n in (1, 2, 3)] == [1, 1, 1]
    assert improves[3]["prompt"].startswith(f'Latest candidate (iteration 2, built from "{instead}" instead (for your '
                                            f'change the Generator wrote an earlier network again)')
    assert improves[2]["prompt"].startswith("Latest candidate (iteration 1, built from your change above)")
