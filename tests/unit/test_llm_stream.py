"""Streamed replies: early stops on scripted streams, progress events, what the trace records per call."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.llm.client import LLMSettings
from nasloop.agent.llm.parsing import extract_code, parse_improver
from nasloop.agent.llm.stream import code_complete, degenerate, json_complete
from nasloop.agent.runs.store import RunStore
from tests.fakes import SEED, ScriptedEvaluator, code_reply, scripted, task

LOOP_LINE = "        x = F.relu(self.conv2(x))\n"
DEGENERATE_REPLY = "```python\nimport torch\nclass Net(nn.Module):\n    def forward(self, x):\n" + LOOP_LINE * 200


def test_stop_rules():
    assert code_complete(code_reply(tag="t") + "This modification adds depth.") == "code_closed"
    assert code_complete("```python\nprint(1)\n```\nand then\n```python\nclass Net(") is None  # no Net closed yet
    assert code_complete(DEGENERATE_REPLY) == "repeated_line"
    assert code_complete("x = " + "math.floor(" * 50) == "long_line"
    assert json_complete('{"problem": "a } in text", "suggestion": "use {braces}"}') == "json_closed"
    assert json_complete('{"problem": "still open", ') is None
    assert degenerate("a\nb\nc\n") is None and degenerate("") is None


HEAD = "```python\nimport torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
COPYING = "".join(f"        x = self.conv3(x)  # kernel {i % 2}\n        x = self.bn3(x)\n        x = F.relu(x)\n"
                  "        x = self.pool(x)\n" for i in range(40))  # a block of four lines, copied on
COUNTING = "".join(f"        self.conv3_{i} = nn.Conv2d(256, 256, kernel_size=(50, 50), padding=(1, 1))\n"
                   f"        self.bn3_{i} = nn.BatchNorm2d(256)\n        self.pool = nn.MaxPool2d(2)\n"
                   for i in range(40))  # conv3_9, conv3_10 ... a loop that counts
STAGE = ("        # Changed downsampling of conv2 and conv3\n" + "".join(
    f"        x = self.{m}(x)\n" for m in ("conv2", "bn2", "relu", "pool4", "conv3", "bn3", "relu", "pool5")) + "\n")
COMMENTED = STAGE * 20  # seed 45: a commented stage of 9 lines (and a blank one), copied to the token limit
LONG = ("        self.bn3 = nn.BatchNorm2d(128)\n        self.pool = nn.MaxPool2d(2)\n"
        "        self.fc = nn.Linear(32 * 64 * 128 // 32 / 32 / 32, num_classes)\n\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n" + "".join(
            f"        x = self.{m}(x)\n" for m in ("conv1", "bn1", "relu", "pool", "conv2", "bn2", "relu", "pool", "conv3"))
        + "        # Normalization layer added to conv3\n") * 12  # seed 45: 14 lines from __init__ into forward, on and on


def real_net(stages: int) -> str:
    """A legitimate net written out layer by layer: each stage's lines have the same shape."""
    init = "".join(f"        self.conv{i} = nn.Conv2d({16 * i}, {32 * i}, 3, padding=1)\n"
                   f"        self.bn{i} = nn.BatchNorm2d({32 * i})\n" for i in range(1, stages + 1))
    fwd = "".join(f"        x = F.relu(self.bn{i}(self.conv{i}(x)))\n        x = self.pool(x)\n"
                  for i in range(1, stages + 1))
    return HEAD + init + "\n    def forward(self, x):\n" + fwd + "        return self.fc(x.flatten(1))\n```\n"


@pytest.mark.parametrize("loop", [COPYING, COUNTING, COMMENTED, LONG], ids=["copying", "counting", "commented", "long"])
def test_a_reply_looping_over_a_block_of_lines_is_cut(loop):
    """Both shapes the 1.5B model produced in a CIFAR-10 search ran to the 1,536-token limit (100 s each)."""
    reply = scripted(HEAD + loop).ask("sys", "user", stop=code_complete)
    assert reply.stop == "repeated_block" and len(reply.text) < len(HEAD + loop) / 3


@pytest.mark.parametrize("stages", [3, 5, 7])
def test_a_real_net_with_stages_of_one_shape_is_read_to_its_end(stages):
    text = real_net(stages)
    reply = scripted(text).ask("sys", "user", stop=code_complete)
    assert reply.stop == "code_closed" and extract_code(reply.text)[0] == extract_code(text)[0]


def test_a_net_of_three_long_identical_blocks_is_read_to_its_end():
    """Three residual blocks of 11 lines each, written out: a long block repeated, but only three times."""
    block = "".join(f"        {line}\n" for line in (
        "# residual block 1", "identity = x", "x = self.conv1_1(x)", "x = self.bn1_1(x)", "x = F.relu(x)",
        "x = self.conv1_2(x)", "x = self.bn1_2(x)", "x = x + identity", "x = F.relu(x)", "x = self.pool(x)",
        "x = self.drop(x)"))
    text = HEAD + "        pass\n\n    def forward(self, x):\n" + block * 3 + "        return self.fc(x.flatten(1))\n```\n"
    reply = scripted(text).ask("sys", "user", stop=code_complete)
    assert reply.stop == "code_closed" and extract_code(reply.text)[0] == extract_code(text)[0]


def test_a_reply_that_begins_a_method_again_is_cut_there():
    """CIFAR-10 (seed 45, at e0b1499): a repair wrote the end of __init__, then `def forward` and its body
    again, three times; the block rule cut it at 1,003 tokens (91 s). Cut at the second `def forward`."""
    fwd = "    def forward(self, x):\n        x = self.conv1(x)\n        x = self.conv3_deep = nn.Conv2d(192, 192, 3)\n"
    tail = "        self.bn3 = nn.BatchNorm2d(192)\n        self.fc = nn.Linear(192, num_classes)\n\n"
    text = HEAD + "        self.conv1 = nn.Conv2d(3, 32, 3)\n\n" + (fwd + tail) * 3
    reply = scripted(text).ask("sys", "user", stop=code_complete)
    assert reply.stop == "repeated_block" and reply.text.count("def forward") == 2
    assert len(reply.text) < len(text) / 2


def test_two_classes_a_setter_and_nested_helpers_are_read_to_the_end():
    """Methods of the same name in two classes, a property's setter, a helper defined in two methods."""
    block = ("class Block(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
             "        self.conv = nn.Conv2d(c, c, 3, padding=1)\n\n    @property\n    def width(self):\n"
             "        return self.conv.out_channels\n\n    @width.setter\n    def width(self, c):\n"
             "        self.conv = nn.Conv2d(c, c, 3, padding=1)\n\n    def forward(self, x):\n"
             "        def act(t):\n            return F.relu(t)\n        return act(self.conv(x)) + x\n\n\n")
    net = ("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
           "        self.block = Block(3)\n        self.fc = nn.Linear(3, 10)\n\n    def forward(self, x):\n"
           "        def act(t):\n            return F.relu(t)\n        return self.fc(act(self.block(x)).mean((2, 3)))\n")
    text = "```python\nimport torch\nimport torch.nn as nn\n\n\n" + block + net + "```\n"
    reply = scripted(text).ask("sys", "user", stop=code_complete)
    assert reply.stop == "code_closed" and extract_code(reply.text)[0] == extract_code(text)[0]


def test_a_degenerate_stream_is_stopped_early_and_the_reply_says_why():
    client = scripted(DEGENERATE_REPLY)
    seen = []
    reply = client.ask("sys", "user", stop=code_complete, progress=lambda n, s: seen.append(n))
    assert reply.stop == "repeated_line" and len(reply.text) < len(DEGENERATE_REPLY) / 10
    assert reply.text.count(LOOP_LINE) < 12 and reply.completion_tokens == seen[-1] > 0


def test_an_early_stop_keeps_what_the_loop_reads():
    full = code_reply(tag="x") + "\nThis adds a layer. Example:\n```python\nnet = Net()\n```\nHope it helps!"
    stopped = scripted(full).ask("sys", "user", stop=code_complete)
    assert stopped.stop == "code_closed" and len(stopped.text) < len(full)
    assert extract_code(stopped.text) == extract_code(full)
    whole = scripted(full)
    whole.settings = replace(LLMSettings(), early_stop=False)
    assert whole.ask("sys", "user", stop=code_complete).text == full
    reply = '{"problem": "too shallow", "suggestion": "add a block"} I hope this helps, here is why...'
    got = scripted(reply).ask("sys", "user", stop=json_complete)
    assert got.stop == "json_closed" and parse_improver(got.text) == parse_improver(reply)


def test_every_call_records_its_costs_and_streams_progress(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    deps = Deps(scripted('{"problem": "p", "suggestion": "s"}'), scripted(code_reply(tag="acc=0.6")),
                ScriptedEvaluator(), store)
    graph = build_graph()
    events = [data for mode, data in graph.stream(
        {"task": task(1)}, {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(1)},
        context=deps, stream_mode=["updates", "custom"]) if mode == "custom"]
    llm = [e["llm"] for e in events if "llm" in e]
    assert {e["node"] for e in llm} == {"improve", "generate"}
    assert all(e["iteration"] == 1 and e["tokens"] > 0 for e in llm)
    steps = [(e["step"]["iteration"], e["step"]["node"]) for e in events if "step" in e]
    assert steps == [(0, "seed"), (1, "improve"), (1, "generate"), (1, "evaluate")]
    train = [(e["train"]["iteration"], e["train"]["step"], e["train"]["steps"]) for e in events if "train" in e]
    assert train == [(0, 5, 10), (0, 10, 10), (1, 5, 10), (1, 10, 10)]  # the evaluator's progress, streamed
    calls = {r["node"]: r for r in store.trace() if r["iteration"] == 1 and r.get("prompt")}
    assert calls["improve"]["stop"] == "json_closed" and calls["generate"]["stop"] == "code_closed"
    for rec in calls.values():
        assert rec["completion_tokens"] > 0 and rec["tokens_per_s"] is not None
        assert {"prompt_tokens", "prefix_tokens", "first_token_seconds"} <= set(rec)


@pytest.mark.parametrize("stop", ["repeated_line", "repeated_block", "long_line"])
def test_a_degenerate_generator_reply_sends_the_repair_back_to_the_base_net(tmp_path, stop):
    loop = {"repeated_line": LOOP_LINE * 40, "repeated_block": COUNTING, "long_line": "x = " + "torch.cat((" * 60}[stop]
    broken = "```python\nimport torch\n" + loop
    store = RunStore.create(tmp_path, "unit", {})
    deps = Deps(scripted('{"problem": "p", "suggestion": "s"}'), scripted(broken, code_reply(SEED, tag="acc=0.7")),
                ScriptedEvaluator(), store)
    build_graph(deps).invoke({"task": task(1)}, {"configurable": {"thread_id": "t"},
                                                 "recursion_limit": recursion_limit_for(1)})
    gen = next(r for r in store.trace() if r["node"] == "generate")
    rep = next(r for r in store.trace() if r["node"] == "repair1")
    assert gen["stop"] == stop and "degenerated into endlessly repeated lines" in rep["prompt"]
    assert "class Net(nn.Module)" in rep["prompt"] and "conv3_9" not in rep["prompt"] and store.results()[-1]["outcome"] == "ok"


def test_the_progress_line_names_the_step_its_tokens_and_an_eta():
    from nasloop.agent.app.progress import Progress

    p = Progress(3, {"iteration": 1, "best": {"accuracy": 0.5, "iteration": 0}})
    fields = p.bar.tasks[0].fields
    p.event({"step": {"iteration": 1, "node": "generate"}})
    p.event({"llm": {"iteration": 1, "node": "generate", "tokens": 120, "seconds": 10.0}})
    assert fields["current"] == 1 and fields["of"] == 3
    assert "Generator" in fields["info"] and "120 tokens, 12.0 tok/s" in fields["info"]
    p.event({"step": {"iteration": 1, "node": "evaluate"}})
    p.event({"train": {"iteration": 1, "step": 40, "steps": 200}})
    assert fields["info"].startswith("training | step 40/200")
    p.update({"evaluate": {"last": {"iteration": 1, "outcome": {"kind": "ok", "accuracy": 0.6, "params": 10},
                                    "llm": {}}, "best": {"accuracy": 0.6, "fitness": 0.6}}})
    assert "best 0.600 | last ok" in fields["info"] and "ETA" in fields["info"]
    assert p.bar.tasks[0].completed == 2
    p.event({"train": {"iteration": 2, "step": 10, "steps": 200}})  # two workers: two candidates in training
    p.event({"train": {"iteration": 3, "step": 70, "steps": 200}})
    assert "iter 2 step 10/200, iter 3 step 70/200" in fields["info"]
    p.update({"candidate": {"batch": [{"last": {"iteration": 2, "outcome": {"kind": "ok", "accuracy": 0.5},
                                                "llm": {}}}]}})
    p.event({"train": {"iteration": 3, "step": 80, "steps": 200}})
    assert "training | step 80/200" in fields["info"]


def test_prompts_are_ordered_stable_first_so_a_role_reuses_its_cached_prefix():
    from nasloop.agent.llm.prompting import generator_prompt, repair_prompt

    state = {"task": task(3), "best": {"code": SEED, "accuracy": 0.5, "iteration": 0},
             "proposal": {"suggestion": "widen conv2"}}
    gen = generator_prompt(state)
    rep = repair_prompt(state, "class Net: pass", {"kind": "shape_error", "diagnosis": "boom"})
    shared = os.path.commonprefix([gen, rep])  # what the Generator's context still holds for the repair
    assert shared.rstrip().endswith("No training code, no data loading, no printing, no `if __name__` block.")
    assert "boom" in rep and "widen conv2" in rep and rep.index("Requirements:") < rep.index("Your code:")
