"""The loop's routing, memory and bookkeeping with a scripted chat model and an in-process evaluator."""
from __future__ import annotations

import sqlite3

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.graph import route_next, route_start
from nasloop.agent.deps import LoopOptions
from nasloop.agent.llm.prompting import FALLBACK_CHANGES
from nasloop.agent.loop import nodes
from nasloop.agent.runs.store import RunStore
from nasloop.errors import RunError
from tests.fakes import SEED, ScriptedEvaluator, code_reply, scripted, task

GOOD_IMPROVER = '{"problem": "too shallow", "suggestion": "add a block"}'


@pytest.fixture(autouse=True)
def generator_writes_every_fallback(monkeypatch):
    """These tests are about routing and bookkeeping with the Generator writing every candidate, the prose
    fallbacks included; a fallback the loop makes itself is tests/unit/test_change_edits.py."""
    monkeypatch.setattr(nodes, "_made_fallback", lambda *args: None)


def config(iterations: int, thread: str = "t") -> dict:
    return {"configurable": {"thread_id": thread}, "recursion_limit": recursion_limit_for(iterations)}


def run(deps: Deps, iterations: int = 3, saver=None, **task_kw) -> dict:
    graph = build_graph(deps, checkpointer=saver)
    return graph.invoke({"task": task(iterations, **task_kw)}, config(iterations))


def test_routing():
    assert route_start({}) == "seed" and route_start({"task": task(5), "iteration": 4}) == "improve"
    assert route_start({"task": task(3), "iteration": 4}) == "__end__"  # a finished run stays finished
    assert route_next({"task": task(3), "iteration": 3}) == "improve"
    assert route_next({"task": task(3), "iteration": 4}) == "__end__"
    assert route_next({"task": task(9, target_accuracy=0.8), "iteration": 2, "best": {"accuracy": 0.81}}) == "__end__"


def test_a_run_records_seed_triples_and_best(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    replies = [code_reply(tag="acc=0.6"), code_reply(tag="fail=shape_error"), code_reply(tag="acc=0.7")]
    ev = ScriptedEvaluator()
    out = run(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ev, store), iterations=3)
    assert out["iteration"] == 4 and ev.calls == 4  # the seed + 3 candidates
    assert [t["outcome"] for t in out["window"]] == ["ok", "ok", "shape_error", "ok"]
    assert out["window"][0]["suggestion"] == "(none: starting point)"
    assert out["window"][2]["diagnosis"] == "shape_error diagnosis"
    assert out["best"]["iteration"] == 3 and out["best"]["accuracy"] == 0.7
    assert out["counts"] == {"ok": 3, "shape_error": 1, "evaluated": 4}
    results = store.results()
    assert [r["iteration"] for r in results] == [0, 1, 2, 3]
    assert results[1]["problem"] == "too shallow" and results[1]["suggestion"] == "add a block"
    # iterations 2 and 3: the Improver repeated "add a block" and was asked once more (improve.1)
    assert sorted((r["iteration"], r["node"]) for r in store.trace()) == [(0, "check0")] + [
        (i, n) for i in (1, 2, 3) for n in ("check0", "generate", "improve", "improve.1") if i > 1 or n != "improve.1"]
    assert (store.path / "candidates" / "0003.py").read_text().startswith('TAG = "acc=0.7"')
    assert (store.path / "best.py").read_text().startswith('TAG = "acc=0.7"')


def test_unreadable_improver_reply_becomes_a_failure_triple():
    out = run(Deps(scripted("no idea, sorry"), scripted(code_reply(tag="acc=0.6")), ScriptedEvaluator()), 1)
    triple = out["window"][-1]
    assert triple["problem"].startswith("(improver failure)") and triple["outcome"] == "ok"


def test_reply_without_code_is_invalid_code_and_costs_no_evaluation():
    ev = ScriptedEvaluator()
    out = run(Deps(scripted(GOOD_IMPROVER), scripted("I would add a layer."), ev), 2)
    assert [t["outcome"] for t in out["window"]] == ["ok", "invalid_code", "invalid_code"]
    assert "no ```python code block" in out["window"][-1]["diagnosis"]
    assert ev.calls == 1  # only the seed


def test_target_accuracy_stops_early():
    out = run(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.95")), ScriptedEvaluator()), 50,
              target_accuracy=0.9)
    assert out["iteration"] == 2


def test_improver_sees_window_and_last_outcome(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    replies = [code_reply(tag="fail=shape_error"), code_reply(tag="acc=0.6")]
    second = '{"problem": "too narrow", "suggestion": "widen conv2 to 96 channels"}'
    # a prompt of its own, as each of the Improver's conversations begins (tests/unit/test_improver_conversation.py)
    run(Deps(scripted(GOOD_IMPROVER, second), scripted(*replies), ScriptedEvaluator(), store,
             LoopOptions(improver_chat=False)), 2)
    prompt = next(r["prompt"] for r in store.trace() if r["iteration"] == 2 and r["node"] == "improve")
    assert "outcome shape_error" in prompt and "shape_error diagnosis" in prompt
    assert "(B, 1, 32, 32)" in prompt and '"outcome": "shape_error"' in prompt
    # the seed's baseline entry is not shown: small models copied its placeholder suggestion
    assert "(none: starting point)" not in prompt
    gen = next(r["prompt"] for r in store.trace() if r["iteration"] == 2 and r["node"] == "generate")
    assert "widen conv2 to 96 channels" in gen and "class Net(nn.Module)" in gen


def test_a_suggestion_already_in_the_window_is_replaced_by_an_untried_change(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    replies = [code_reply(tag=f"acc=0.{i}") for i in range(5, 9)]
    run(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ScriptedEvaluator(), store), 4)
    recs = [r for r in store.results() if r["iteration"] > 0]
    assert recs[0]["suggestion"] == "add a block"
    for rec in recs[1:]:  # the Improver said "add a block" every time
        assert rec["problem"].startswith("(improver repeat) suggestion of iteration 1 again")
        assert rec["suggestion"] in FALLBACK_CHANGES
    assert len({r["suggestion"] for r in recs}) == 4  # each replacement is one the window has not seen
    gen = next(t["prompt"] for t in store.trace() if t["node"] == "generate" and t["iteration"] == 3)
    assert recs[2]["suggestion"] in gen
    plain = RunStore.create(tmp_path / "plain", "unit", {})
    run(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ScriptedEvaluator(), plain, LoopOptions(replace_suggestions=False)), 2)
    assert [r["suggestion"] for r in plain.results()[1:]] == ["add a block", "add a block"]  # ablation: as asked


def test_a_placeholder_suggestion_is_replaced_by_a_concrete_change(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    copied = '{"problem": "fine", "suggestion": "(none: starting point)"}'
    run(Deps(scripted(copied), scripted(code_reply(tag="acc=0.6")), ScriptedEvaluator(), store), 1)
    rec = store.results()[-1]
    assert rec["problem"].startswith("(improver failure) placeholder") and rec["suggestion"] in FALLBACK_CHANGES
    gen = next(t["prompt"] for t in store.trace() if t["node"] == "generate")
    assert rec["suggestion"] in gen


class Crash(Exception):
    pass


class CrashingEvaluator(ScriptedEvaluator):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def evaluate(self, source, **_):
        if self.calls == self.at:
            self.calls += 1
            raise Crash("killed")
        return super().evaluate(source)


def test_resume_reuses_recorded_llm_replies_and_continues(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    gen = scripted(*[code_reply(tag=f"acc=0.6{i}") for i in range(5)])
    deps = Deps(scripted(GOOD_IMPROVER), gen, CrashingEvaluator(at=2), store)
    graph = build_graph(deps, checkpointer=SqliteSaver(conn))
    with pytest.raises(Crash):
        graph.invoke({"task": task(4)}, config(4))
    assert [r["iteration"] for r in store.results()] == [0, 1]
    conn.close()

    # A new process: new store object, new graph, same files.
    store2 = RunStore.open(store.path)
    conn2 = sqlite3.connect(str(store2.checkpoint_path), check_same_thread=False)
    improver2 = scripted("SHOULD NOT BE ASKED FOR ITERATION 2")
    gen2 = scripted(*[code_reply(tag=f"acc=0.7{i}") for i in range(5)])
    graph2 = build_graph(Deps(improver2, gen2, ScriptedEvaluator(), store2),
                         checkpointer=SqliteSaver(conn2))
    snap = graph2.get_state(config(4))
    assert snap.next == ("evaluate",) and snap.values["iteration"] == 2
    out = graph2.invoke(None, config(4))
    conn2.close()
    assert out["iteration"] == 5
    assert [r["iteration"] for r in store2.results()] == [0, 1, 2, 3, 4]
    keys = [(r["iteration"], r["node"]) for r in store2.trace()]
    # improve + generate for 1..4, one evaluation for 0..4, and iteration 2's repeat asked again once
    assert len(keys) == len(set(keys)) == 8 + 5 + 1
    # iteration 2's code came from the first process (recorded), 3 and 4 from the second
    assert "acc=0.6" in (store2.path / "candidates" / "0002.py").read_text()
    assert sum(1 for r in store2.trace() if r["node"] == "improve" and r["iteration"] == 2) == 1
    assert "acc=0.7" in (store2.path / "candidates" / "0004.py").read_text()


def test_partial_last_line_is_dropped(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    store.once("results", 0, "evaluate", lambda: {"outcome": "ok"})
    with open(store.path / "results.jsonl", "a") as f:
        f.write('{"iteration": 1, "node": "evaluate", "outc')
    again = RunStore.open(store.path)
    assert [r["iteration"] for r in again.results()] == [0]
    assert again.dropped and "results.jsonl: dropped a last line cut short" in again.dropped[0]  # named, not silent
    again.once("results", 1, "evaluate", lambda: {"outcome": "timeout"})
    assert [r["outcome"] for r in RunStore.open(store.path).results()] == ["ok", "timeout"]


def test_readers_change_nothing_in_a_cut_run_but_say_what_they_ignored(tmp_path, capsys):
    from nasloop.agent.app.cli import main

    store = RunStore.create(tmp_path, "unit", {"args": {"iterations": 1}})
    store.once("results", 0, "evaluate", lambda: {"outcome": "ok", "accuracy": 0.5})
    with open(store.path / "results.jsonl", "a") as f:
        f.write('{"iteration": 1, "node": "evaluate", "outc')
    before = (store.path / "results.jsonl").read_bytes()
    reader = RunStore.open(store.path, writable=False)
    assert [r["iteration"] for r in reader.results()] == [0] and "ignored a last line cut short" in reader.dropped[0]
    assert main(["replay", str(store.path), "--plain"]) == 0
    assert (store.path / "results.jsonl").read_bytes() == before  # a reader wrote nothing
    assert "nasloop: warning: results.jsonl: ignored a last line cut short" in capsys.readouterr().err
    assert main(["replay", str(store.path), "--plain", "--outcome", "timeout"]) == 1
    assert "no iteration of" in capsys.readouterr().err


def test_resume_warns_when_results_and_checkpoints_disagree(tmp_path, capsys):
    from nasloop.agent.app.search import _check_agreement

    store = RunStore.create(tmp_path, "unit", {})
    for it in (0, 2):
        store.once("results", it, "evaluate", lambda: {"outcome": "ok"})
    _check_agreement(store, {"iteration": 3})
    err = capsys.readouterr().err
    assert "disagree" in err and "no record of 1;" in err and len(err.splitlines()) == 1
    _check_agreement(store, {"iteration": 1})  # a record ahead of its checkpoint is normal (redone from it)
    _check_agreement(store, {})
    assert capsys.readouterr().err == ""


def test_2000_iterations_without_recursion_error_and_bounded_checkpoints(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "cp.sqlite"), check_same_thread=False)
    saver = SqliteSaver(conn)
    # The same reply every time: repeats, escapes and all, for 2000 iterations.
    graph = build_graph(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(SEED)), ScriptedEvaluator()),
                        checkpointer=saver)
    sizes = {}
    for n in (20, 2000):
        cfg = config(n, thread=f"t{n}")
        out = graph.invoke({"task": task(n)}, cfg)
        assert out["iteration"] == n + 1 and len(out["window"]) == 5
        blobs = conn.execute("select sum(length(checkpoint)) , count(*) from checkpoints where thread_id=?",
                             (f"t{n}",)).fetchone()
        writes = conn.execute("select sum(length(value)) from writes where thread_id=?", (f"t{n}",)).fetchone()
        sizes[n] = ((blobs[0] or 0) + (writes[0] or 0)) / blobs[1]
    assert sizes[2000] < 1.3 * sizes[20], sizes  # bytes per checkpoint do not grow with the run


def test_fork_starts_a_new_run_from_the_checkpoint_at_an_iteration(tmp_path):
    from nasloop.agent.runs.fork import prepare_fork
    from nasloop.agent.runs.replay import load_steps

    store = RunStore.create(tmp_path / "runs", "unit", {"args": {"iterations": 4, "k": 5, "llm": "scripted"}})
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    replies = [code_reply(tag=f"acc=0.{i}") for i in range(5, 10)]
    build_graph(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ScriptedEvaluator(), store),
                checkpointer=SqliteSaver(conn)).invoke({"task": task(4)}, config(4, thread="search"))
    conn.close()
    before = sorted(p.name for p in store.path.rglob("*"))

    fork = prepare_fork(store.path, 3, tmp_path / "runs", {"llm": "other", "iterations": 2})
    assert sorted(p.name for p in store.path.rglob("*")) == before  # the source is untouched
    assert fork.config["forked_from"]["at"] == 3 and fork.config["args"]["llm"] == "other"
    assert [r["iteration"] for r in fork.results()] == [0, 1, 2]
    conn = sqlite3.connect(str(fork.checkpoint_path), check_same_thread=False)
    graph = build_graph(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.99")), ScriptedEvaluator(), fork),
                        checkpointer=SqliteSaver(conn))
    snap = graph.get_state(config(4, thread="search"))
    assert snap.next == ("improve",) and snap.values["iteration"] == 3
    # the fork's window equals the source's window after iteration 2
    source_window = [s.window for s in load_steps(str(store.path)) if s.node == "evaluate" and s.iteration == 2][0]
    assert snap.values["window"] == source_window
    out = graph.invoke(None, config(4, thread="search"))
    conn.close()
    assert out["iteration"] == 5 and [r["iteration"] for r in fork.results()] == [0, 1, 2, 3, 4]
    assert out["best"]["accuracy"] == 0.99


def test_fork_at_an_iteration_that_does_not_exist(tmp_path):
    from nasloop.errors import RunError
    from nasloop.agent.runs.fork import prepare_fork

    store = RunStore.create(tmp_path, "unit", {"args": {}})
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    build_graph(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.5")), ScriptedEvaluator(), store),
                checkpointer=SqliteSaver(conn)).invoke({"task": task(1)}, config(1, thread="search"))
    conn.close()
    with pytest.raises(RunError, match=r"no checkpoint before iteration 7 .* fork at 1..2"):
        prepare_fork(store.path, 7, tmp_path, {})


def test_collaborators_can_come_with_each_invocation_as_the_runtime_context():
    graph = build_graph()  # LangGraph 1.x style: context_schema=Deps, nothing bound at compile time
    ev = ScriptedEvaluator()
    out = graph.invoke({"task": task(2)}, config(2),
                       context=Deps(scripted(GOOD_IMPROVER),
                                    scripted(code_reply(tag="acc=0.6"), code_reply(tag="acc=0.55")), ev))
    assert out["iteration"] == 3 and ev.calls == 3 and out["best"]["accuracy"] == 0.6

    bound, given = ScriptedEvaluator(), ScriptedEvaluator()
    built = build_graph(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.6")), bound))
    built.invoke({"task": task(1)}, config(1), context=Deps(scripted(GOOD_IMPROVER),
                                                           scripted(code_reply(tag="acc=0.7")), given))
    assert bound.calls == 0 and given.calls == 2  # the invocation's context wins
    with pytest.raises(TypeError, match="no collaborators"):
        graph.invoke({"task": task(1)}, config(1))


def test_a_verbatim_repeat_is_caught_without_a_run_store_too():
    ev = ScriptedEvaluator()
    out = build_graph(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.6")), ev)).invoke(
        {"task": task(2)}, config(2))
    assert ev.calls == 2 and out["window"][-1]["outcome"] == "invalid_code"  # iteration 2 repeated 1: no run


def test_a_damaged_checkpoint_file_is_one_line_for_resume_and_fork(tmp_path, capsys):
    from nasloop.agent.app.cli import main

    store = RunStore.create(tmp_path, "unit", {"args": {"iterations": 1, "dataset": "digits", "k": 5}})
    store.checkpoint_path.write_bytes(b"this is not a database" * 100)
    assert main(["fork", str(store.path), "--at", "1", "--runs-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is damaged" in err and "Traceback" not in err
    assert "results.jsonl and trace.jsonl are intact" in err


def test_a_structural_duplicate_costs_no_training_and_goes_back_to_the_generator_once(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    replies = [code_reply(tag="acc=0.6 struct=a"), code_reply(tag="acc=0.7 struct=a renamed"),
               code_reply(tag="acc=0.65 struct=b")]
    ev = ScriptedEvaluator()
    run(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ev, store), iterations=2)
    results = store.results()
    assert [r["outcome"] for r in results] == ["ok", "ok", "ok"]
    assert results[2]["accuracy"] == 0.65 and results[2]["repairs"][0]["outcome"] == "invalid_code"
    trace = {(t["iteration"], t["node"]): t for t in store.trace()}
    assert trace[(2, "check0")]["outcome"]["failure"] == {"phase": "duplicate", "of": 1}
    # the repair was given a concrete change, as for a verbatim repeat
    assert "suggestion" in results[2]["repairs"][0]


def test_the_duplicate_verdict_is_advisory_a_duplicate_left_after_its_repair_is_trained(tmp_path):
    """The structure hash comes from the candidate's side of the sandbox: a forged one must never keep
    another candidate from being trained, so the verdict only ever buys one repair."""
    store = RunStore.create(tmp_path, "unit", {})
    replies = [code_reply(tag="acc=0.6 struct=a"), code_reply(tag="acc=0.7 struct=a renamed"),
               code_reply(tag="acc=0.75 struct=a renamed again")]
    ev = ScriptedEvaluator()
    run(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ev, store), iterations=2)
    last = store.results()[2]
    assert last["outcome"] == "ok" and last["accuracy"] == 0.75 and last["duplicate_of"] == 1
    assert ev.calls == 4  # seed, iteration 1, the duplicate's pre-flight, its repair trained
    store2 = RunStore.create(tmp_path / "plain", "unit", {})
    run(Deps(scripted(GOOD_IMPROVER), scripted(*replies[:2]), ScriptedEvaluator(), store2, LoopOptions(repairs=0)),
        iterations=2)
    assert store2.results()[2]["outcome"] == "ok"  # no repair to follow: not even asked


def test_the_state_from_the_records_is_the_checkpointed_state(tmp_path):
    """A run without checkpoints (a LangGraph Studio run) is forked from the state its records give: the
    same window, best, last, counters and iteration the checkpoint holds, iteration by iteration."""
    from nasloop.agent.runs.fork import state_at, state_from_records

    t = task(4)
    store = RunStore.create(tmp_path, "unit", {"args": {"iterations": 4, "k": 5}, "task": t})
    replies = [code_reply(tag="acc=0.6"), code_reply(tag="fail=shape_error"), code_reply(tag="acc=0.7"),
               code_reply(tag="acc=0.65")]
    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    try:
        graph = build_graph(Deps(scripted(GOOD_IMPROVER), scripted(*replies), ScriptedEvaluator(), store),
                            checkpointer=SqliteSaver(conn))
        graph.invoke({"task": t}, config(4, thread="search"))  # the thread nasloop search uses
    finally:
        conn.close()
    for at in (1, 2, 3, 4):
        checkpointed = state_at(store, at)
        rebuilt = state_from_records(store, at)
        for key in ("best", "window", "last", "iteration", "counts", "task"):
            assert rebuilt[key] == checkpointed[key], (at, key)
    with pytest.raises(RunError, match="fork at 1..5"):
        state_from_records(store, 7)


def test_a_run_without_checkpoints_is_forked_from_its_records(tmp_path):
    from nasloop.agent.runs.fork import prepare_fork

    store = RunStore.create(tmp_path, "unit", {"args": {"iterations": 2, "k": 5}, "task": task(2)})
    run(Deps(scripted(GOOD_IMPROVER), scripted(code_reply(tag="acc=0.6"), code_reply(tag="acc=0.7")),
             ScriptedEvaluator(), store), iterations=2)  # no checkpointer: as under a LangGraph Studio server
    assert not store.checkpoint_path.exists()
    fork = prepare_fork(store.path, 2, tmp_path / "forks", {})
    assert [r["iteration"] for r in fork.results()] == [0, 1] and fork.checkpoint_path.is_file()
    store.checkpoint_path.write_bytes(b"this is not a database" * 100)  # damaged: the records still serve
    assert [r["iteration"] for r in prepare_fork(store.path, 2, tmp_path / "forks", {}).results()] == [0, 1]
    evolution = RunStore.create(tmp_path, "evo", {"args": {"strategy": "evolution"}, "task": task(2)})
    with pytest.raises(RunError, match="no checkpoints to fork from"):
        prepare_fork(evolution.path, 1, tmp_path / "forks", {})
