"""Fix `change`: the Improver's typed change applied by the loop to the base net, from its traced shapes.

Each edit is checked on the real pre-flight (its layer table, and that the edited net builds and runs), and
trained for one step on the CPU, because the edit replaces the Generator's call: a net it breaks is a lost
iteration.
"""
from __future__ import annotations

import json

import pytest
import torch

from nasloop import prompts
from nasloop.agent.deps import Deps, LoopOptions
from nasloop.agent.fixes.changes import EDITED, apply_change, branch_layers
from nasloop.agent.fixes.registry import NAMES
from nasloop.agent.fixes.shapes import fix_shapes
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.llm.prompting import FALLBACK_CHANGES
from nasloop.agent.loop.escape import code_key
from nasloop.agent.loop.nodes import _held_edits
from nasloop.agent.runs.store import RunStore
from nasloop.sandbox import runner
from nasloop.tools.outcome import Outcome
from nasloop.tools.text import layer_lines, traced_rows
from tests.fakes import ScriptedEvaluator, code_reply, recording, scripted, task

BASE = prompts.seed_source("cifar10")


def traced(code: str) -> tuple[dict | None, str]:
    """The pre-flight's verdict on `code` and its layer table, as the best net's record holds it."""
    ns: dict = {}
    exec(compile(code, "candidate.py", "exec"), ns)  # noqa: S102 - our own test input
    failure, facts = runner.preflight(ns["Net"], 10, 3, 32, 2_000_000)
    return failure, layer_lines(facts.get("layers")) or ""


def runs(code: str) -> int:
    """One training step on real tensors; the parameter count."""
    ns: dict = {}
    exec(compile(code, "candidate.py", "exec"), ns)  # noqa: S102
    net = ns["Net"](num_classes=10, in_channels=3)
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    return sum(p.numel() for p in net.parameters())


def edit(operator: str, target: str, code: str = BASE, arguments: str = "") -> tuple[str | None, str]:
    return apply_change(code, {"operator": operator, "target": target, "arguments": arguments}, traced(code)[1])


def test_the_table_reads_back_as_rows():
    rows = traced_rows(traced(BASE)[1])
    assert rows[:3] == [("conv1", "Conv2d", (32, 32, 32)), ("bn1", "BatchNorm2d", (32, 32, 32)),
                        ("pool", "MaxPool2d", (32, 16, 16))]
    assert rows[-1] == ("fc", "Linear", (10,))


@pytest.mark.parametrize("target, extra", [("conv2", 32 * 64), ("conv3", 64 * 128), ("bn2", 0)])
def test_a_residual_gets_the_shortcut_its_shapes_need(target, extra):
    code, note = edit("add_residual", target)
    assert code is not None and note.startswith(f"residual around {target}")
    assert traced(code)[0] is None and runs(code) == runs(BASE) + extra
    if extra:
        assert f"self.{target}_shortcut = nn.Conv2d(" in code and f"x = (self.{target}(x) + self.{target}_shortcut(x))" in code
    else:  # the same shape in and out: the input itself is added
        assert f"x = (self.{target}(x) + x)" in code


def test_a_residual_across_a_stride_downsamples_its_shortcut():
    strided = BASE.replace("self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)",
                           "self.conv3 = nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False)")
    code, note = edit("add_residual", "conv3", strided)
    assert "nn.Conv2d(64, 128, 1, stride=2, bias=False)" in note and traced(code)[0] is None
    runs(code)


@pytest.mark.parametrize("target, code", [
    ("conv1", BASE),  # its input is not traced (the loop passes the net's input shape: see below)
    ("pool", BASE),  # called three times
    ("conv2", BASE.replace("x = self.conv2(x)", "x = self.conv2(F.relu(x))")),  # the argument is computed
    ("conv9", BASE),  # no such layer
])
def test_no_residual_where_the_net_does_not_say_how(target, code):
    assert edit("add_residual", target, code) == (None, "")


def test_no_residual_around_a_layer_whose_input_is_not_the_layer_traced_before_it():
    """A shortcut is traced after the block it skips, but reads the block's input: the row before it does
    not give its input's shape (CIFAR-10, seed 44: such an edit failed its pre-flight, then its repair)."""
    ours, _ = edit("add_residual", "conv2")
    assert edit("add_residual", "conv2_shortcut", ours) == (None, "")  # traced after conv2, fed conv2's input
    theirs = BASE.replace("        x = self.conv2(x)\n", "        identity = x\n        x = self.conv2(x)\n").replace(
        "        x = self.bn2(x)\n        x = F.relu(x)\n",
        "        x = self.bn2(x)\n        x = F.relu(x)\n        x = x + self.conv2_shortcut(identity)\n").replace(
        "        self.bn2 = nn.BatchNorm2d(64)\n",
        "        self.bn2 = nn.BatchNorm2d(64)\n        self.conv2_shortcut = nn.Conv2d(32, 64, 1, bias=False)\n")
    assert "conv2_shortcut(identity)" in theirs and traced(theirs)[0] is None
    assert edit("add_residual", "conv2_shortcut", theirs) == (None, "")
    code, _ = edit("add_residual", "conv3", theirs)  # its input is the pool after the shortcut's sum
    assert code is not None and traced(code)[0] is None
    # nor is the Improver offered it: it goes to the Generator, whose nets did not run either
    assert branch_layers(ours, traced(ours)[1]) == {"conv2_shortcut"} == branch_layers(theirs, traced(theirs)[1])
    assert branch_layers(BASE, traced(BASE)[1]) == set()


def test_a_residual_around_all_wraps_every_conv_the_table_gives_the_input_of():
    """CIFAR-10: "Add a residual connection around all" went to the Generator 4 times (2 best nets, seed 45;
    a failed run and repair, seed 44)."""
    code, note = edit("add_residual", "all")
    assert "x = (self.conv2(x) + self.conv2_shortcut(x))" in code and "x = (self.conv3(x) + self.conv3_shortcut(x))" in code
    assert "x = self.conv1(x)" in code  # the first layer: its input is not traced
    assert note == ("residual around conv2 through self.conv2_shortcut = nn.Conv2d(32, 64, 1, bias=False); "
                    "residual around conv3 through self.conv3_shortcut = nn.Conv2d(64, 128, 1, bias=False)")
    assert traced(code)[0] is None and runs(code) == runs(BASE) + 32 * 64 + 64 * 128
    one, _ = edit("add_residual", "conv3")
    again, note = edit("add_residual", "all", one)  # conv3 is in a sum already: only conv2 gets one
    assert note.count("residual around") == 1 and "conv2_shortcut" in note and traced(again)[0] is None


def test_a_residual_around_the_first_layer_reads_the_nets_input_shape():
    """CIFAR-10: "Add a residual connection around conv1" went to the Generator 5 times (seeds 44, 45): the
    table does not trace the input, the task gives its shape."""
    code, note = apply_change(BASE, {"operator": "add_residual", "target": "conv1"}, traced(BASE)[1], (3, 32, 32))
    assert note == "residual around conv1 through self.conv1_shortcut = nn.Conv2d(3, 32, 1, bias=False)"
    assert "x = (self.conv1(x) + self.conv1_shortcut(x))" in code and traced(code)[0] is None
    assert runs(code) == runs(BASE) + 3 * 32
    every, note = apply_change(BASE, {"operator": "add_residual", "target": "all"}, traced(BASE)[1], (3, 32, 32))
    assert note.count("residual around") == 3 and traced(every)[0] is None
    scaled = BASE.replace("        x = self.conv1(x)\n", "        x = x * 2\n        x = self.conv1(x)\n")
    assert apply_change(scaled, {"operator": "add_residual", "target": "conv1"}, traced(scaled)[1], (3, 32, 32)) == (None, "")


def test_removing_normalisation_makes_the_norm_an_identity():
    code, note = edit("remove_normalisation", "bn2")
    assert "self.bn2 = nn.Identity()" in code and "x = self.bn2(x)" in code and note.endswith("self.bn2 = nn.Identity()")
    assert runs(code) == runs(BASE) - 2 * 64
    by_layer, _ = edit("remove_normalisation", "conv3")  # the norm that follows the target
    assert "self.bn3 = nn.Identity()" in by_layer and "self.bn2 = nn.BatchNorm2d(64)" in by_layer
    every, _ = edit("remove_normalisation", "all")
    assert every.count("nn.Identity()") == 3 and runs(every) == runs(BASE) - 2 * (32 + 64 + 128)


def test_adding_normalisation_normalises_what_no_norm_follows():
    bare = BASE.replace("        self.bn2 = nn.BatchNorm2d(64)\n", "").replace("        x = self.bn2(x)\n", "")
    code, note = edit("add_normalisation", "conv2", bare)
    assert "self.conv2_bn = nn.BatchNorm2d(64)" in code and "x = self.conv2_bn(self.conv2(x))" in code
    assert traced(code)[0] is None and runs(code) == runs(bare) + 2 * 64
    every, note = edit("add_normalisation", "all", bare)
    assert note == "normalisation added: self.conv2_bn = nn.BatchNorm2d(64) after self.conv2"
    assert edit("add_normalisation", "conv3", bare) == (None, "")  # bn3 follows it already


def test_widening_a_conv_resizes_its_norm_and_the_layer_that_reads_it():
    """CIFAR-10 (seed 44, at dbde637): two of the first three changes were widens, each a Generator call."""
    code, note = edit("widen", "conv2", arguments="64 -> 96 channels")
    assert note == "widened conv2: 64 -> 96 channels, and what reads it"
    for line in ("self.conv2 = nn.Conv2d(32, 96, 3, padding=1, bias=False)", "self.bn2 = nn.BatchNorm2d(96)",
                 "self.conv3 = nn.Conv2d(96, 128, 3, padding=1, bias=False)"):
        assert line in code
    assert traced(code)[0] is None and runs(code) == runs(BASE) + 32 * 32 * 9 + 2 * 32 + 32 * 128 * 9
    head, _ = edit("widen", "conv3", arguments="128 -> 256 channels")  # the pooled head reads it
    assert "self.fc = nn.Linear(256, num_classes)" in head and traced(head)[0] is None and runs(head)
    first, _ = edit("widen", "conv1", arguments="32 -> 48 channels")  # through the pool, which is used twice
    assert "nn.Conv2d(in_channels, 48, 3" in first and "nn.Conv2d(48, 64, 3" in first and runs(first)
    # only the width the table gives, a wider one, and a free "N -> M channels"
    for args in ("64 -> 32 channels", "32 -> 96 channels", "2x", ""):
        assert edit("widen", "conv2", arguments=args) == (None, "")
    assert edit("widen", "bn2", arguments="64 -> 96 channels") == (None, "")


def test_a_widen_an_identity_shortcut_would_break_is_left_to_the_generator():
    same, _ = edit("add_residual", "conv3", BASE.replace("nn.Conv2d(64, 128", "nn.Conv2d(64, 64").replace(
        "BatchNorm2d(128)", "BatchNorm2d(64)").replace("nn.Linear(128", "nn.Linear(64"))
    assert "(self.conv3(x) + x)" in same  # conv3 keeps the width: its input is added as it is
    assert edit("widen", "conv2", same, "64 -> 96 channels") == (None, "")  # that sum would not match
    assert edit("widen", "conv3", same, "64 -> 96 channels") == (None, "")  # nor one around conv3 itself
    projected, _ = edit("add_residual", "conv3")  # a 1x1 conv on the shortcut: the shape fix resizes it
    assert edit("widen", "conv3", projected, "128 -> 192 channels") == (None, "")
    code, _ = edit("widen", "conv2", projected, "64 -> 96 channels")
    assert "nn.Conv2d(96, 128, 3" in code and "nn.Conv2d(64, 128, 1" in code  # the shortcut: the shape fix's
    failure, _ = traced(code)  # as the outcome records it: the layer the trace caught failing
    fixed, note = fix_shapes(code, {"layer": failure["trace"]["failed"], "line": failure["where"]["line"],
                                    "function": failure["where"]["function"]})
    assert note and "nn.Conv2d(96, 128, 1" in fixed and traced(fixed)[0] is None and runs(fixed)


def test_adding_normalisation_where_one_was_removed_gives_the_net_from_before_the_removal(tmp_path):
    """CIFAR-10 (seed 45, at e0b1499): "Add normalisation to conv1" after bn1 was removed put conv1_bn in front
    of the identity, a net evaluated 14 iterations before that only the pre-flight knew; its repair failed."""
    removed, _ = edit("remove_normalisation", "bn1")
    code, note = edit("add_normalisation", "conv1", removed)
    assert code == BASE and note == "normalisation added: self.bn1 = nn.BatchNorm2d(32) again"
    every, _ = edit("add_normalisation", "all", edit("remove_normalisation", "all")[0])
    assert every == BASE
    # so the loop knows it as that earlier net, and does not offer it
    store = RunStore.create(tmp_path, "unit", {})
    store.once("results", 0, "evaluate", lambda: {"outcome": "ok", "accuracy": 0.5, "code_key": code_key(BASE)})
    deps = Deps(scripted(), scripted(), ScriptedEvaluator(), store, LoopOptions())
    held = _held_edits(deps, {"best_code": removed, "best_layers": traced(removed)[1]}, 1)
    assert ("add_normalisation", "conv1") in held and ("add_normalisation", "conv2") not in held


def test_deepening_adds_a_conv_norm_activation_run_of_the_same_width():
    code, note = edit("deepen", "conv2")
    assert note == "deepened after conv2: self.conv2_deep = nn.Conv2d(64, 64, 3, padding=1), with its norm and activation"
    lines = [line.strip() for line in code.splitlines()]
    at = lines.index("x = self.conv2(x)")
    assert lines[at:at + 6] == ["x = self.conv2(x)", "x = self.bn2(x)", "x = F.relu(x)", "x = self.conv2_deep(x)",
                                "x = self.conv2_deep_bn(x)", "x = F.relu(x)"]
    init = lines.index("self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)")
    assert lines[init + 1:init + 3] == ["self.conv2_deep = nn.Conv2d(64, 64, 3, padding=1, bias=False)",
                                        "self.conv2_deep_bn = nn.BatchNorm2d(64)"]
    assert traced(code)[0] is None and runs(code) == runs(BASE) + 64 * 64 * 9 + 2 * 64
    # a norm removed as nn.Identity() keeps its line; the new conv gets no norm of its own
    bare = BASE.replace("self.bn3 = nn.BatchNorm2d(128)", "self.bn3 = nn.Identity()")
    code, note = edit("deepen", "conv3", bare)
    assert "conv3_deep_bn" not in code and note.endswith("and activation") and runs(code) == runs(bare) + 128 * 128 * 9
    nested = BASE.replace("x = self.conv1(x)\n        x = self.bn1(x)", "x = self.bn1(self.conv1(x))")
    assert edit("deepen", "conv1", nested) == (None, "")  # not one operation per line: the Generator writes it


@pytest.mark.parametrize("arguments, made", [
    ("", True), ("add one 3x3 conv", True), ("1 conv layer with 64 channels", True), ("3 x 3, 64 filters", True),
    ("2 conv layers", False), ("add two more convs", False), ("a 5x5 conv", False), ("128 channels", False),
    ("stack residual blocks", False)])
def test_deepening_is_made_only_where_the_arguments_ask_for_one_conv_of_its_width(arguments, made):
    code, _ = edit("deepen", "conv2", arguments=arguments)  # conv2 has 64 channels
    assert (code is not None) is made


def test_an_unreadable_base_or_table_has_no_edit():
    change = {"operator": "add_residual", "target": "conv2", "arguments": ""}
    assert apply_change("class Net(:", change, traced(BASE)[1]) == (None, "")
    assert apply_change(BASE, change, "(not traced)") == (None, "")
    assert apply_change(BASE, {**change, "operator": "widen"}, traced(BASE)[1]) == (None, "")


# --- in the loop: the candidate of a mechanical change is the loop's edit, with no Generator call ---------
TYPED = json.dumps({"problem": "no normalisation after conv1", "operator": "add_normalisation", "target": "conv1",
                    "arguments": ""})


def search(tmp_path, options: LoopOptions, *replies: str, evaluator: ScriptedEvaluator | None = None,
           improver: str = TYPED) -> tuple[list[dict], list]:
    """A one-iteration search whose Improver asks for the typed change; the Generator's calls, as sent."""
    store = RunStore.create(tmp_path, "unit", {})
    generator, calls = recording(*replies)
    deps = Deps(scripted(improver), generator, evaluator or ScriptedEvaluator(), store, options)
    build_graph(deps).invoke({"task": task(1)}, {"configurable": {"thread_id": "t"},
                                                  "recursion_limit": recursion_limit_for(1)})
    return store.results(), calls


class Edits(ScriptedEvaluator):
    """Trains the loop's edit (its new layer) to `accuracy`; the pre-flight fails it where `fails`, as it would
    a shortcut the table got wrong."""

    def __init__(self, fails: bool = False, accuracy: float = 0.6):
        super().__init__()
        self.fails, self.sources, self.accuracy = fails, [], accuracy

    def evaluate(self, source: str, known_structures: dict | None = None, on_progress=None) -> Outcome:
        self.sources.append(source)
        if "conv1_bn" in source or "conv1_shortcut" in source:
            self.calls += 1
            if self.fails:
                return Outcome("shape_error", "RuntimeError: shapes", seconds=0.0, stage="preflight")
            return Outcome("ok", seconds=1.0, accuracy=self.accuracy, params=1000, stage="train")
        return super().evaluate(source, known_structures, on_progress)


def test_a_mechanical_change_is_made_by_the_loop_without_a_generator_call(tmp_path):
    evaluator = Edits()
    results, calls = search(tmp_path, LoopOptions(), evaluator=evaluator)  # the scripted table: conv1 has 8 channels
    last = results[1]
    assert calls == [] and last["outcome"] == "ok" and last["accuracy"] == 0.6  # the edit trained, nobody was asked
    assert "self.conv1_bn = nn.BatchNorm2d(8)" in evaluator.sources[-1] and last["repairs"] == []
    assert last["fixes"] == [{"name": "change", "stage": "change", "attempt": 0,
                              "note": "normalisation added: self.conv1_bn = nn.BatchNorm2d(8) after self.conv1"}]
    assert last["llm"]["generator_seconds"] == 0.0


def test_switched_off_not_mechanical_or_failing_the_edit_leaves_the_candidate_to_the_generator(tmp_path):
    off = LoopOptions(fixes=tuple(n for n in NAMES if n != "change"))
    results, calls = search(tmp_path / "off", off, code_reply(tag="acc=0.7"), evaluator=Edits())
    assert len(calls) == 1 and results[1]["accuracy"] == 0.7 and "fixes" not in results[1]
    activation = json.dumps({"problem": "too linear", "operator": "change_activation", "target": "all", "arguments": "GELU"})
    results, calls = search(tmp_path / "activation", LoopOptions(), code_reply(tag="acc=0.75"), improver=activation)
    assert len(calls) == 1 and results[1]["accuracy"] == 0.75
    # the edit fails its pre-flight: the Generator repairs it, on a prompt of its own that shows the edit
    results, calls = search(tmp_path / "fails", LoopOptions(), code_reply(tag="acc=0.8"), evaluator=Edits(fails=True))
    last = results[1]
    assert len(calls) == 1 and last["outcome"] == "ok" and last["accuracy"] == 0.8
    assert "self.conv1_bn = nn.BatchNorm2d(8)" in calls[0][-1][1] and last["repairs"][0]["outcome"] == "shape_error"


def test_a_mechanical_change_whose_edit_was_evaluated_before_is_not_offered(tmp_path):
    """The memory window (here k=1) forgets a change; the loop still knows that its edit of the same best
    net is an earlier net (CIFAR-10, seed 44: such an edit 9 iterations later was a repeat)."""
    activation = json.dumps({"problem": "too linear", "operator": "change_activation", "target": "all", "arguments": "GELU"})
    improver, schemas = scripted(TYPED, activation, activation), []
    ask = improver.ask

    def recorded(*args, **kwargs):
        schemas.append(_offered(kwargs["schema"]))
        return ask(*args, **kwargs)

    improver.ask = recorded  # type: ignore[method-assign]
    store = RunStore.create(tmp_path, "unit", {})
    generator, _ = recording(code_reply(tag="acc=0.4"), code_reply(tag="acc=0.45"))
    deps = Deps(improver, generator, Edits(accuracy=0.3), store, LoopOptions(k=1))
    build_graph(deps).invoke({"task": task(3)}, {"configurable": {"thread_id": "t"},
                                                  "recursion_limit": recursion_limit_for(3)})
    assert [r["accuracy"] for r in store.results()] == [0.5, 0.3, 0.4, 0.3]  # the seed stays the best
    again = {("add_normalisation", "conv1"), ("add_normalisation", "all")}  # conv1 is the one conv to normalise
    assert again <= schemas[0] and not again & schemas[2]  # iteration 3's window holds only iteration 2's change
    # iteration 3: the activation change again (in the window), and asked once more, iteration 1's change (not
    # offered, but written anyway): a repeat too, known before any call, so the loop makes an untried change
    last = store.results()[-1]
    assert last["suggestion_source"] == "fallback" and "its edit gives the net of iteration 1" in last["problem"]
    assert not last.get("repairs") and last["change"]["operator"] in EDITED


def test_a_residual_around_a_shortcut_is_not_offered(tmp_path):
    """CIFAR-10 (seeds 44, 45): three "Add a residual connection around conv3_shortcut" went to the Generator,
    and none of its nets ran."""
    ours, _ = edit("add_residual", "conv2")
    failure, layers = traced(ours)
    assert failure is None
    store = RunStore.create(tmp_path, "unit", {})
    deps = Deps(scripted(), scripted(), ScriptedEvaluator(), store, LoopOptions())
    best = {"best_code": ours, "best_layers": layers}
    assert ("add_residual", "conv2_shortcut") in _held_edits(deps, best, 1)
    assert ("add_residual", "conv3") not in _held_edits(deps, best, 1)
    off = Deps(scripted(), scripted(), ScriptedEvaluator(), store, LoopOptions(fixes=()))
    assert _held_edits(off, best, 1) == set()


def _offered(schema: dict) -> set[tuple[str, str]]:
    return {(alt["properties"]["operator"]["const"], t) for alt in schema["properties"]["change"]["anyOf"]
            for t in alt["properties"]["target"]["enum"]}


def test_the_next_turn_says_the_loop_made_the_change_instead_of_showing_its_diff(tmp_path):
    """The edit is the change the Improver's reply asked for: its diff would be 100-200 tokens to read again."""
    widen = json.dumps({"problem": "too narrow", "operator": "widen", "target": "conv1", "arguments": "8 -> 16 channels"})
    improver, asked = recording(TYPED, widen, widen.replace("16", "24"))
    generator, _ = recording(code_reply(tag="acc=0.4"), code_reply(tag="acc=0.45"))
    store = RunStore.create(tmp_path, "unit", {})
    deps = Deps(improver, generator, Edits(), store, LoopOptions())
    build_graph(deps).invoke({"task": task(3)}, {"configurable": {"thread_id": "t"},
                                                  "recursion_limit": recursion_limit_for(3)})
    assert [r["accuracy"] for r in store.results()] == [0.5, 0.6, 0.4, 0.45]  # the edit is the new best
    after_edit, after_generator = asked[1][-1][1], asked[2][-1][1]
    assert after_edit.startswith("Latest candidate (iteration 1, built from your change above, which the loop made "
                                 "exactly as asked): outcome ok\naccuracy 0.6000")
    assert "```diff" not in after_edit and "It is the new best network" in after_edit
    assert after_generator.startswith("Latest candidate (iteration 2, built from your change above): outcome ok")
    assert "```diff" in after_generator


def test_a_fallback_change_is_one_the_loop_makes_itself(tmp_path):
    """An unreadable reply (the 1.5B model: "None of the above changes were tried.") gets a fallback change;
    where the Improver was offered a mechanical one, it is that change, made by the loop: no Generator call
    (in a CIFAR-10 search the Generator's fallback net, 42 s, and its repair, 47 s, were over the budget)."""
    nothing = json.dumps({"problem": "p", "operator": "other", "target": "all",
                          "arguments": "None of the above changes were tried."})
    results, calls = search(tmp_path, LoopOptions(), improver=nothing, evaluator=Edits())
    last = results[1]
    assert calls == [] and last["suggestion_source"] == "fallback" and last["problem"].startswith("(improver failure)")
    assert last["change"] == {"operator": "add_residual", "target": "conv1", "arguments": ""}  # the first offered
    assert last["suggestion"].startswith("Add a residual connection around conv1") and last["accuracy"] == 0.6
    assert [f["name"] for f in last["fixes"]] == ["change"]
    # without fix `change`, the Generator writes one of the prose fallbacks
    off = LoopOptions(fixes=tuple(n for n in NAMES if n != "change"))
    results, calls = search(tmp_path / "off", off, code_reply(tag="acc=0.7"), improver=nothing)
    assert len(calls) == 1 and "change" not in results[1] and results[1]["suggestion"] in FALLBACK_CHANGES
