"""The Generator's edit replies: search/replace blocks applied to the net it was shown, and what happens
when they match nothing (agent/llm/edits.py, the generate and repair nodes)."""
from __future__ import annotations

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.llm.edits import EDIT_PHASE, apply_edits, has_edits
from nasloop.agent.llm.prompting import REPAIR_WHOLE, example_turn, reply_format
from nasloop.agent.runs.store import RunStore
from tests.fakes import SEED, ScriptedEvaluator, code_reply, recording, scripted, task

NET = """class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)

        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return self.fc(x.mean((2, 3)))
"""


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_a_block_replaces_the_lines_it_names_and_nothing_else():
    out = apply_edits(NET, block("        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)",
                                 "        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)"))
    assert out.code == NET.replace("Conv2d(3, 8,", "Conv2d(3, 16,") and (out.blocks, out.applied) == (1, 1)


def test_blocks_apply_in_order_across_blank_lines_and_other_indentation():
    """The 1.5B model drops an indentation level and skips blank lines; the second block sees the first's edit."""
    reply = ("```\n" + block("self.conv1 = nn.Conv2d(3, 8, 3, padding=1)\nself.fc = nn.Linear(8, 10)",
                             "self.conv1 = nn.Conv2d(3, 16, 3, padding=1)\nself.fc = nn.Linear(16, 10)")
             + block("    x = F.relu(self.conv1(x))", "    x = F.silu(self.conv1(x))\n    x = x * 2") + "```\n")
    out = apply_edits(NET, reply)
    assert out.code is not None and (out.blocks, out.applied) == (2, 2)
    assert "        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)\n        self.fc = nn.Linear(16, 10)\n" in out.code
    assert "        x = F.silu(self.conv1(x))\n        x = x * 2\n        return" in out.code
    compile(out.code, "net", "exec")


def test_a_block_that_matches_nothing_is_a_failure_with_its_own_phase():
    out = apply_edits(NET, block("        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)", "        pass")
                      + block("        x = self.fc(x)", "        x = self.drop(self.fc(x))"))
    assert out.code is None and (out.blocks, out.applied) == (2, 1)
    assert out.failure() == {"phase": EDIT_PHASE, "blocks": 2, "applied": 1, "unmatched": ["        x = self.fc(x)\n"]}
    assert "1 of your 2 SEARCH blocks matched no lines" in out.diagnosis() and "`x = self.fc(x)`" in out.diagnosis()
    unclosed = apply_edits(NET, "<<<<<<< SEARCH\n        self.fc = nn.Linear(8, 10)\n")
    assert unclosed.code is None and unclosed.blocks == 0 and "never closes" in unclosed.diagnosis()
    assert has_edits("<<<<<<< SEARCH\n") and not has_edits(code_reply())


def run(tmp_path, generator, iterations=1, options=LoopOptions()):
    store = RunStore.create(tmp_path, "unit", {})
    graph = build_graph(Deps(scripted('{"problem": "p", "suggestion": "widen conv1"}'), generator,
                             ScriptedEvaluator(), store, options))
    cfg = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(iterations)}
    graph.invoke({"task": task(iterations)}, cfg)
    return store


def test_the_generators_edits_of_the_best_net_are_the_candidate(tmp_path):
    gen, seen = recording(block("import torch", 'TAG = "acc=0.9"\nimport torch')
                          + block("        self.bn1 = nn.BatchNorm2d(8)", "        self.bn1 = nn.BatchNorm2d(8, momentum=0.2)"))
    store = run(tmp_path, gen)
    res = store.results()[-1]
    assert res["outcome"] == "ok" and res["accuracy"] == 0.9
    code = store.candidate_code(1)
    assert code is not None and "BatchNorm2d(8, momentum=0.2)" in code and code.startswith('TAG = "acc=0.9"\nimport torch\n')
    assert code.count("\n") == SEED.count("\n") + 1  # one line added, every other line kept
    gen_rec = next(t for t in store.trace() if t["node"] == "generate")
    assert gen_rec["prompt"].rstrip().endswith(reply_format(True)) and gen_rec["example"] == "edit"
    assert seen[0][1:3] == [("human", example_turn()[0]), ("ai", example_turn()[1])]  # the worked example


def test_edits_that_match_nothing_are_repaired_by_asking_for_the_whole_net(tmp_path):
    miss = block("        x = self.fc(x)", "        x = self.drop(self.fc(x))")
    gen, seen = recording(miss, code_reply(tag="acc=0.7"))
    store = run(tmp_path, gen)
    res = store.results()[-1]
    assert res["outcome"] == "ok" and res["accuracy"] == 0.7
    assert res["repairs"][0]["outcome"] == "invalid_code" and "matched no lines" in res["repairs"][0]["diagnosis"]
    rep = next(t for t in store.trace() if t["node"] == "repair1")
    # the turn before is the edit as the model wrote it; the turn asks for the whole net, not for edits again
    assert rep["answered"] == miss.strip() and rep["prompt"].rstrip().endswith(REPAIR_WHOLE)
    assert seen[1][-2:] == [("ai", miss.strip()), ("human", rep["prompt"])]


def test_a_failure_after_edits_is_repaired_with_edits_of_the_failing_net(tmp_path):
    gen, _ = recording(block("import torch", 'TAG = "pfail=shape_error"\nimport torch'),
                       block('TAG = "pfail=shape_error"', 'TAG = "acc=0.8"'))
    store = run(tmp_path, gen)
    res = store.results()[-1]
    assert res["outcome"] == "ok" and res["accuracy"] == 0.8 and res["repairs"][0]["outcome"] == "shape_error"
    rep = next(t for t in store.trace() if t["node"] == "repair1")
    assert rep["prompt"].rstrip().endswith(reply_format(True)) and 'TAG = "pfail=shape_error"' in rep["answered"]
    assert store.candidate_code(1).startswith('TAG = "acc=0.8"\nimport torch\n')


def test_the_plain_loop_asks_for_the_whole_net_without_the_example(tmp_path):
    gen, seen = recording(code_reply(tag="acc=0.6"))
    store = run(tmp_path, gen, options=LoopOptions(edits=False))
    gen_rec = next(t for t in store.trace() if t["node"] == "generate")
    assert "example" not in gen_rec and gen_rec["prompt"].rstrip().endswith(reply_format(False))
    assert [m[0] for m in seen[0]] == ["system", "human"] and "search/replace" not in seen[0][0][1]
    assert LoopOptions.plain().edits is False
