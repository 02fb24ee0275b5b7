"""The evolution strategy and the fidelity ladder, with a scripted chat model and an in-process evaluator."""
from __future__ import annotations

import pytest

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.runs.store import RunStore
from tests.fakes import ScriptedEvaluator, code_reply, scripted, task

REFLECTION = '{"lesson": "wider stems raised the score", "suggestion": "widen the first convolution"}'


def run(deps: Deps, iterations: int) -> dict:
    graph = build_graph(deps)
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(iterations)}
    return graph.invoke({"task": task(iterations)}, config)


def test_evolution_keeps_the_fittest_and_reflects_on_mutations(tmp_path):
    store = RunStore.create(tmp_path, "evo", {})
    children = ["score=8", "fail=shape_error", "score=20", "score=1"]
    ev = ScriptedEvaluator()
    opts = LoopOptions(strategy="evolution", fidelity="proxy", population=2, repairs=0)
    out = run(Deps(scripted(REFLECTION), scripted(*[code_reply(tag=t) for t in children]), ev, store, opts), 4)
    # the seed (score 5) is pushed out by the score-20 child; the failure never joins; the score-1 child leaves
    assert sorted(m["fitness"] for m in out["population"]) == [8.0, 20.0]
    assert out["best"]["iteration"] == 3 and out["best"]["fitness"] == 20.0
    assert ev.calls == 1 and ev.scored == 5  # only the seed is trained; every candidate is scored
    results = store.results()
    assert results[0]["accuracy"] == 0.5 and results[0]["fitness"] == 5.0  # the seed: trained and scored
    assert [r["outcome"] for r in results] == ["ok", "ok", "shape_error", "ok", "ok"]
    assert all("parent" in r for r in results[1:]) and results[1]["parent"] == 0
    assert results[1]["problem"] == "wider stems raised the score"  # the lesson is the memory's "problem"
    assert out["window"][1]["delta"] == 3.0 and out["window"][1]["score"] == 8.0
    prompt = next(r["prompt"] for r in store.trace() if r["iteration"] == 4 and r["node"] == "improve")
    assert "Population, best first" in prompt and "naswot 20" in prompt and '"delta"' in prompt
    gen = next(r["prompt"] for r in store.trace() if r["iteration"] == 4 and r["node"] == "generate")
    assert "Parent network (iteration" in gen and "naswot" in gen
    assert (store.path / "best.py").read_text().startswith('TAG = "score=20"')


def test_evolution_population_is_in_the_state_as_references():
    opts = LoopOptions(strategy="evolution", fidelity="proxy", population=3, repairs=0)
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(2)}
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_graph(Deps(scripted(REFLECTION), scripted(*[code_reply(tag=f"score={i}") for i in (7, 9)]),
                             ScriptedEvaluator(), options=opts), checkpointer=InMemorySaver())
    graph.invoke({"task": task(2)}, config)
    members = graph.get_state(config).values["population"]
    assert [m["fitness"] for m in members] == [5.0, 7.0, 9.0]
    assert all(set(m) == {"iteration", "fitness", "params"} for m in members)  # no code in the state


def test_selection_is_reproducible():
    opts = LoopOptions(strategy="evolution", fidelity="proxy", population=4, repairs=0, seed=3)
    picks = []
    for _ in range(2):
        deps = Deps(scripted(REFLECTION), scripted(*[code_reply(tag=f"score={i}") for i in (4, 9, 2, 6)]),
                          ScriptedEvaluator(), options=opts)
        out_parents = []
        graph = build_graph(deps)
        config = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(4)}
        for update in graph.stream({"task": task(4)}, config, stream_mode="updates"):
            if "select" in update:
                out_parents.append(update["select"]["parent"]["iteration"])
        picks.append(out_parents)
    assert picks[0] == picks[1] and len(picks[0]) == 4


def test_ladder_trains_only_the_best_scored_variant(tmp_path):
    store = RunStore.create(tmp_path, "ladder", {})
    variants = ["score=1 acc=0.3", "score=9 acc=0.6", "fail=shape_error"]
    ev = ScriptedEvaluator()
    opts = LoopOptions(fidelity="ladder", ladder_width=3)
    out = run(Deps(scripted('{"problem": "p", "suggestion": "s"}'), scripted(*[code_reply(tag=t) for t in variants]),
                   ev, store, opts), 1)
    assert ev.calls == 2 and ev.scored == 4  # seed + the chosen variant trained; seed + 3 variants scored
    rec = store.results()[1]
    assert rec["accuracy"] == 0.6 and rec["scores"]["naswot"] == 9.0 and rec["fitness"] == 0.6
    assert rec["ladder"]["chosen"] == 1
    assert [v["outcome"] for v in rec["ladder"]["variants"]] == ["ok", "ok", "shape_error"]
    assert [v.get("score") for v in rec["ladder"]["variants"]] == [1.0, 9.0, None]
    assert out["best"]["iteration"] == 1
    nodes = {r["node"] for r in store.trace() if r["iteration"] == 1}
    assert {"generate", "generate.1", "generate.2", "score0.0", "score0.1", "score0.2", "check0"} <= nodes


def test_ladder_with_no_valid_variant_goes_to_repair():
    ev = ScriptedEvaluator()
    opts = LoopOptions(fidelity="ladder", ladder_width=2, repairs=1)
    gen = scripted(code_reply(tag="pfail=shape_error"), code_reply(tag="pfail=interface_error"),
                   code_reply(tag="score=3 acc=0.4"))
    out = run(Deps(scripted('{"problem": "p", "suggestion": "s"}'), gen, ev, options=opts), 1)
    assert out["window"][-1]["outcome"] == "ok" and out["window"][-1]["accuracy"] == 0.4


def test_options_are_checked():
    with pytest.raises(ValueError):
        LoopOptions(strategy="annealing")
    with pytest.raises(ValueError):
        LoopOptions(fidelity="half")


def test_a_proxy_search_trains_its_best_scored_net_once_at_the_end(tmp_path, capsys):
    from nasloop.agent.app.search import train_best_scored

    store = RunStore.create(tmp_path, "evo", {})
    store.save_candidate(3, code_reply(tag="score=20 acc=0.7").split("```python\n")[1].split("```")[0])
    ev = ScriptedEvaluator()
    best = {"iteration": 3, "fitness": 20.0, "accuracy": None}
    assert train_best_scored(store, ev, best) == {"accuracy": 0.7, "trained": "ok"}
    assert train_best_scored(RunStore.open(store.path), ev, best)["accuracy"] == 0.7
    assert ev.calls == 1  # recorded once: a second call (a resumed search) reuses it
    assert [(t["iteration"], t["node"]) for t in store.trace()] == [(3, "final")]


class CrashOnce(ScriptedEvaluator):
    """Dies on its n-th scoring, once (a killed search)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def score(self, source, proxies):
        if self.scored + 1 == self.at:
            self.at = -1
            raise RuntimeError("killed")
        return super().score(source, proxies)


def test_evolution_resumes_and_forks_from_checkpoints(tmp_path):
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    from nasloop.agent.runs.fork import prepare_fork

    opts = LoopOptions(strategy="evolution", fidelity="proxy", population=2, repairs=0, seed=1)
    tags = [f"score={s}" for s in (7, 3, 9, 4, 8, 6)]

    def graph_for(store, ev, replies=tags):
        conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
        return build_graph(Deps(scripted(REFLECTION), scripted(*[code_reply(tag=t) for t in replies]), ev, store,
                                opts), checkpointer=SqliteSaver(conn))

    config = {"configurable": {"thread_id": "search"}, "recursion_limit": recursion_limit_for(4)}
    whole = RunStore.create(tmp_path / "a", "evo", {"args": {"strategy": "evolution", "iterations": 4}})
    expected = graph_for(whole, ScriptedEvaluator()).invoke({"task": task(4)}, config)

    killed = RunStore.create(tmp_path / "b", "evo", {"args": {"strategy": "evolution", "iterations": 4}})
    ev = CrashOnce(at=4)
    with pytest.raises(RuntimeError):
        graph_for(killed, ev).invoke({"task": task(4)}, config)
    # iterations 1-3 were generated before the kill (reused from the run store); 4 is generated now
    resumed = graph_for(RunStore.open(killed.path), ev, tags[3:]).invoke(None, config)
    assert resumed["population"] == expected["population"] and resumed["best"] == expected["best"]
    assert [m["iteration"] for m in expected["population"]] == [1, 3]
    assert [r["parent"] for r in killed.results()[1:]] == [r["parent"] for r in whole.results()[1:]]

    fork = prepare_fork(whole.path, 3, tmp_path / "c", {"iterations": 2})
    graph = graph_for(fork, ScriptedEvaluator())
    snap = graph.get_state(config)
    assert snap.next == ("select",) and len(snap.values["population"]) == 2
    out = graph.invoke(None, config)
    assert out["iteration"] == 5 and all("parent" in r for r in fork.results()[1:])


def test_replay_and_report_of_an_evolution_run(tmp_path):
    from nasloop.agent.runs.replay import load_steps, render
    from nasloop.agent.runs.report import write_report

    store = RunStore.create(tmp_path, "evo", {"args": {"strategy": "evolution", "fidelity": "proxy",
                                                       "proxy": "naswot", "k": 5}})
    opts = LoopOptions(strategy="evolution", fidelity="proxy", population=2, repairs=0)
    run(Deps(scripted(REFLECTION), scripted(*[code_reply(tag=t) for t in ("score=8", "score=20")]),
             ScriptedEvaluator(), store, opts), 2)
    steps = load_steps(str(store.path))
    assert [s.node for s in steps if s.iteration == 1] == ["improve", "generate", "score0.0", "evaluate"]
    child = next(s for s in steps if s.iteration == 2 and s.node == "evaluate")
    text = render(child, 0, len(steps))
    assert "code vs parent (iteration" in text and "best so far: score 20 (iteration 2)" in text
    page = write_report(store.path).read_text()
    assert "Naswot per iteration" in page and "<th>naswot (ranked by)</th><th>accuracy</th>" in page


class PreflightScript(ScriptedEvaluator):
    """Pre-flight failures as the outcome carries them (structured `failure` records), one per call."""

    def __init__(self, *diagnoses: dict):
        super().__init__()
        self.diagnoses = list(diagnoses)

    def evaluate(self, source, **_):
        self.calls += 1
        if self.diagnoses:
            from nasloop.tools.outcome import Outcome

            return Outcome("shape_error", "shape mismatch", seconds=0.0, stage="preflight",
                           failure=self.diagnoses.pop(0))
        return super().evaluate(source)


def test_a_layer_used_with_two_input_sizes_is_fixed_once_then_left_to_repair():
    from nasloop.agent.loop.fidelity import assess

    code = "class Net:\n    def __init__(self, in_channels=3):\n        self.conv1 = nn.Conv2d(in_channels, 128, 3)\n"
    flip = [{"phase": "forward", "layer": {"name": "conv1", "type": "Conv2d", "in": [128, 8, 8]}},
            {"phase": "forward", "layer": {"name": "conv1", "type": "Conv2d", "in": [3, 32, 32]}}]
    ev = PreflightScript(*flip, *flip)
    outcome, fixed, extra = assess(Deps(None, None, ev, options=LoopOptions()), 1, [code], 0)  # type: ignore[arg-type]
    assert outcome.stage == "preflight" and ev.calls == 2  # one fix, one rerun, then stop: no oscillation
    assert [(f["name"], f["note"]) for f in extra["fixes"]] == [
        ("shapes", "self.conv1 = nn.Conv2d(...): in_channels in_channels -> 128 (the input it gets)")]
    assert "nn.Conv2d(128, 128, 3)" in fixed
