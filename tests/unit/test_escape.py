"""Learning from failures: repeats, repairs and failure-loop escapes, with scripted models."""
from __future__ import annotations

import pytest

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.loop.escape import choose_escape, code_key, failure_streak, signature
from nasloop.agent.deps import LoopOptions
from nasloop.agent.llm.parsing import extract_code
from nasloop.agent.llm.prompting import FALLBACK_CHANGES
from nasloop.agent.runs.store import RunStore
from tests.fakes import SEED, ScriptedEvaluator, code_reply, recording, scripted, task

# a new suggestion each iteration: a repeated one would get a fallback change, which the loop makes itself
NEW = [f'{{"problem": "p", "suggestion": "widen conv2 to {8 * n} channels"}}' for n in range(2, 20)]


def run(tmp_path, generator, iterations, options=LoopOptions(), improver=None):
    store = RunStore.create(tmp_path, "unit", {})
    ev = ScriptedEvaluator()
    graph = build_graph(Deps(improver or scripted(*NEW), generator, ev, store, options))
    cfg = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(iterations)}
    out = graph.invoke({"task": task(iterations)}, cfg)
    return out, store, ev


def tr(kind, diag=""):
    return {"outcome": kind, "diagnosis": diag}


def test_signature_blanks_numbers_and_lines():
    a = tr("shape_error", "mat1 and mat2 shapes cannot be multiplied (2x2048 and 8192x10) (candidate.py:17 in forward: x)")
    b = tr("shape_error", "mat1 and mat2 shapes cannot be multiplied (2x4096 and 8192x10) (candidate.py:21 in forward: y)")
    assert signature(a) == signature(b)
    assert signature(a) != signature(tr("runtime_error", a["diagnosis"]))


def test_streak_and_escalation():
    same = [tr("ok"), tr("shape_error", "x 1"), tr("shape_error", "x 2"), tr("shape_error", "x 3"), tr("shape_error", "x 4")]
    assert failure_streak(same[:2]) == 1 and failure_streak(same) == 4
    assert choose_escape(same[:2]) is None
    assert choose_escape(same[:3]).name == "told" and choose_escape(same[:3]).temperature is None
    hotter = choose_escape(same[:4], base_temperature=0.7)
    assert hotter.name == "hotter" and hotter.temperature == pytest.approx(0.9)
    assert choose_escape(same).name == "restart" and choose_escape(same).temperature <= 1.1
    assert choose_escape(same + [tr("ok")]) is None
    assert choose_escape(same, threshold=5) is None


def test_code_key_ignores_comments_and_blank_lines():
    assert code_key("x = 1\n\n# note\ny = 2  # why\n") == code_key("x = 1\ny = 2\n")
    assert code_key("x = 1\n") != code_key("x = 2\n")


def test_verbatim_repeat_costs_no_container(tmp_path):
    gen, seen = recording(code_reply(tag="acc=0.6"))
    out, store, ev = run(tmp_path, gen, 2)  # a new suggestion, and the Generator repeats its code
    assert ev.calls == 2  # the seed and iteration 1; iteration 2 repeats iteration 1
    last = store.results()[-1]
    assert last["outcome"] == "invalid_code"
    assert "identical to the code of iteration 1 (which got ok 0.6000)" in last["diagnosis"]
    # a repeat goes back to the Generator (no container) with a concrete change instead of the vague one
    # it could not apply, sampled at the base temperature (near-greedy would repeat itself again); a repeat
    # costs no training, so its repair gets one attempt more than other pre-flight failures, another change
    reps = [t for t in store.trace() if t["iteration"] == 2 and t["node"].startswith("repair")]
    assert [t["node"] for t in reps] == ["repair1", "repair2"] and len(last["repairs"]) == 2
    asked = [h["suggestion"] for h in last["repairs"]]
    assert set(asked) <= set(FALLBACK_CHANGES) and asked[0] != asked[1]
    for rep, change in zip(reps, asked, strict=True):  # each the next turn of the Generator's conversation
        assert f"The change to make instead: {change}" in rep["prompt"] and rep["temperature"] is None
    assert [m[0] for m in seen[-1]] == ["system", "human", "ai", "human", "ai", "human"]
    assert [m[1] for m in seen[-1][3::2]] == [reps[0]["prompt"], reps[1]["prompt"]]


def test_preflight_failure_is_repaired_in_one_attempt_as_the_next_turn_of_the_generators_conversation(tmp_path):
    failing = code_reply(tag="pfail=shape_error")
    gen, seen = recording(failing, code_reply(tag="acc=0.7"))
    out, store, ev = run(tmp_path, gen, 1)
    res = store.results()[-1]
    assert res["outcome"] == "ok" and res["accuracy"] == 0.7
    assert res["repairs"] == [{"attempt": 0, "outcome": "shape_error", "diagnosis": "shape_error diagnosis"}]
    gen_rec, rep = (next(t for t in store.trace() if t["node"] == n) for n in ("generate", "repair1"))
    assert "shape_error diagnosis" in rep["prompt"] and 'TAG = "pfail=shape_error"' not in rep["prompt"]
    assert rep["temperature"] == 0.2  # a repair of given code samples near-greedy
    # the model read its own code block as the turn before: the context that wrote it reads only the new turn
    assert rep["answered"] == f"```python\n{extract_code(failing)[0].strip()}\n```"
    assert seen[1] == [seen[0][0], ("human", gen_rec["prompt"]), ("ai", rep["answered"]), ("human", rep["prompt"])]
    assert {t["node"] for t in store.trace() if t["iteration"] == 1} == {"improve", "generate", "check0", "repair1", "check1"}
    assert out["window"][-1]["outcome"] == "ok" and out["best"]["iteration"] == 1


def test_a_repair_of_code_a_fix_changed_shows_that_code_as_the_models_reply(tmp_path):
    """The diagnosis speaks of the code a fix made (here: the missing import of F added), so that code is
    the reply the repair turn answers; the context that wrote the reply still holds it up to the edit."""
    unfixed = SEED.replace("import torch.nn.functional as F\n", "")
    assert unfixed != SEED
    gen, seen = recording(code_reply(unfixed, tag="pfail=shape_error"), code_reply(tag="acc=0.7"))
    _, store, _ = run(tmp_path, gen, 1)
    cand = next(r for r in store.results() if r["iteration"] == 1)
    assert any(f["name"] == "imports" and f["attempt"] == 0 for f in cand["fixes"])
    rep = next(t for t in store.trace() if t["node"] == "repair1")
    assert "import torch.nn.functional as F" in rep["answered"] and rep["answered"].startswith("```python\n")
    assert seen[1][2] == ("ai", rep["answered"]) and "import torch" not in rep["prompt"]


def test_a_degenerate_reply_is_not_shown_back_to_the_repair(tmp_path):
    loop = "math.floor(math.sqrt(" * 40  # what the 1.5B model wrote until the token limit cut it off
    broken = code_reply(tag="pfail=syntax_error").replace("TAG =", f"X = {loop}\nTAG =")
    gen = scripted(broken, code_reply(tag="acc=0.7"))
    out, store, _ = run(tmp_path, gen, 1)
    rep = next(t for t in store.trace() if t["node"] == "repair1")
    assert loop not in rep["prompt"] and "degenerated into endlessly repeated lines" in rep["prompt"]
    assert "class Net(nn.Module)" in rep["prompt"]  # the network it was asked to change, instead
    assert store.results()[-1]["outcome"] == "ok"


def test_no_repairs_when_disabled_or_when_training_failed(tmp_path):
    out, store, _ = run(tmp_path / "a", scripted(code_reply(tag="pfail=shape_error")), 1, LoopOptions(repairs=0))
    assert store.results()[-1]["outcome"] == "shape_error" and store.results()[-1]["repairs"] == []
    out, store, _ = run(tmp_path / "b", scripted(code_reply(tag="fail=diverged"), code_reply(tag="acc=0.5")), 1)
    assert store.results()[-1]["outcome"] == "diverged"  # a training failure is not a pre-flight failure


def test_escape_triggers_after_two_equivalent_failures(tmp_path):
    gen = scripted(*[code_reply(tag=f"fail=shape_error n{i}") for i in range(10)])
    out, store, _ = run(tmp_path, gen, 5)
    res = {r["iteration"]: r for r in store.results()}
    assert [res[i].get("escape") for i in (1, 2)] == [None, None]
    assert res[3]["escape"]["name"] == "told"
    assert res[4]["escape"]["name"] == "hotter" and res[5]["escape"]["name"] == "restart"
    imp3 = next(t for t in store.trace() if t["iteration"] == 3 and t["node"] == "improve")
    assert "WARNING: the last 2 candidates all failed the same way (shape_error" in imp3["prompt"]
    gen3 = next(t for t in store.trace() if t["iteration"] == 3 and t["node"] == "generate")
    assert "MINIMAL edit" in gen3["prompt"]
    gen4 = next(t for t in store.trace() if t["iteration"] == 4 and t["node"] == "generate")
    assert gen4["temperature"] == pytest.approx(0.9)
    imp5 = next(t for t in store.trace() if t["iteration"] == 5 and t["node"] == "improve")
    assert imp5["escape"]["name"] == "restart" and imp5["prompt"] == ""  # no Improver call
    assert res[5]["suggestion"].startswith("Restart from the best network")


def test_plain_loop_has_none_of_it(tmp_path):
    gen = scripted(*[code_reply(tag=f"fail=shape_error n{i}") for i in range(10)])
    out, store, _ = run(tmp_path, gen, 4, LoopOptions.plain())
    assert all(r.get("escape") is None for r in store.results())
    out, store, ev = run(tmp_path / "p", scripted(code_reply(tag="acc=0.6")), 2, LoopOptions.plain())
    assert ev.calls == 3  # repeats are evaluated again, as in the published loop


def test_progress_display_copes_with_repair_steps(capsys):
    from nasloop.agent.app.progress import Progress

    with Progress(3, {}) as progress:
        progress.update({"evaluate": {"candidate": {"failed": {"kind": "shape_error"}}}})  # repair pending
        progress.update({"evaluate": {"last": {"iteration": 1, "outcome": {"kind": "ok", "accuracy": 0.5,
                                                                           "params": 1000, "seconds": 2.0},
                                               "llm": {"improver_seconds": 1.0}, "repairs": 1},
                                      "best": {"accuracy": 0.5}}})
    err = capsys.readouterr().err
    assert "iter 1/3  ok" in err and "best 0.500" in err and "(after 1 repair)" in err


def test_a_renamed_network_is_trained_under_its_own_name_only_with_fixes_on(tmp_path):
    from tests.fakes import SEED

    renamed = code_reply(SEED.replace("class Net(", "class ModifiedNet("), tag="acc=0.6")
    out, store, _ = run(tmp_path / "a", scripted(renamed), 1)
    res = store.results()[-1]
    assert res["outcome"] == "ok" and res["fixes"] == [{"name": "rename-net", "stage": "reply", "attempt": 0,
                                                        "note": "class ModifiedNet renamed to Net"}]
    out, store, _ = run(tmp_path / "b", scripted(renamed), 1, LoopOptions(repairs=0, fixes=("brackets",)))
    res = store.results()[-1]
    assert res["outcome"] == "invalid_code" and "does not define class Net" in res["diagnosis"]
