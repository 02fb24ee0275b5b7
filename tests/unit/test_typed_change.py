"""The Improver's typed change: {problem, operator, target, arguments} parses (also nested or with sloppy
keys), reaches the Generator's prompt, is recorded in results.jsonl, and a repeat of an earlier change — the
same edit, whatever reason an unconstrained backend adds — goes back to the Improver with the tried list."""
from __future__ import annotations

import json
import re

from nasloop.agent import Deps, build_graph, recursion_limit_for
from nasloop.agent.deps import LoopOptions
from nasloop.agent.llm.grammar import (change_schema, downsampling_strides, flat_schema, improver_schema,
                                      kernel_choices, layer_names, targets_by_operator, width_choices)
from nasloop.agent.llm.parsing import CHANGE_OPS, parse_improver
from nasloop.agent.runs.store import RunStore
from tests.fakes import ScriptedEvaluator, code_reply, scripted, task

WIDEN = {"problem": "too narrow", "operator": "widen", "target": "conv2", "arguments": "32 -> 64 channels",
         "reason": "more features per layer"}


def test_a_typed_change_parses_into_a_suggestion_and_its_fields():
    parsed, err = parse_improver(json.dumps(WIDEN))
    assert not err and parsed["suggestion"] == "Widen conv2: 32 -> 64 channels"
    assert parsed["change"] == {"operator": "widen", "target": "conv2", "arguments": "32 -> 64 channels"}
    nested = {"problem": "p", "change": {"Operator": "add residual", "target": "block2", "arguments": "identity"}}
    assert parse_improver(json.dumps(nested))[0]["change"]["operator"] == "add_residual"
    assert parse_improver(json.dumps({**WIDEN, "target": "", "arguments": ""}))[0] is None  # widen what?
    # the 1.5B model writes a null as text: "Widen all: None" is not an argument
    assert parse_improver(json.dumps({**WIDEN, "target": "all", "arguments": "None"}))[0]["suggestion"] == "Widen all"
    assert parse_improver(json.dumps({**WIDEN, "target": "null", "arguments": None}))[0] is None
    for nothing in ("None, no changes made.", "no change", "N/A - keep it", "Nothing to change", "no specific change"):
        other = {**WIDEN, "operator": "other", "target": "all", "arguments": nothing}
        assert parse_improver(json.dumps(other))[0] is None, nothing  # no change: the loop's fallback instead
    other = {**WIDEN, "operator": "other", "target": "conv2", "arguments": "no bias in conv2, keep the rest"}
    assert parse_improver(json.dumps(other))[0]["change"]["arguments"] == other["arguments"]
    assert parse_improver('{"problem": "p", "suggestion": "add dropout"}')[0]["suggestion"] == "add dropout"


def test_the_schema_offers_exactly_the_operators_and_every_field_is_required():
    schema = change_schema()
    change = schema["properties"]["change"]
    assert change["properties"]["operator"]["enum"] == list(CHANGE_OPS)
    assert schema["required"] == ["problem", "change"] and change["required"] == ["operator", "target", "arguments"]
    assert schema["properties"]["problem"]["maxLength"] == 160  # about one sentence
    for op in CHANGE_OPS:  # whatever a grammar-held reply chooses, it parses
        reply = {**WIDEN, "operator": op, "arguments": "as needed"}
        assert parse_improver(json.dumps(reply))[0]["change"]["operator"] == op


def _alts(schema: dict) -> list[dict]:
    """The typed change's alternatives: the value of "change", after the problem (one grammar stack while the
    model writes the problem, not one per alternative)."""
    return schema["properties"]["change"]["anyOf"]


def _offered(schema: dict) -> set[tuple[str, str]]:
    return {(alt["properties"]["operator"]["const"], t) for alt in _alts(schema)
            for t in alt["properties"]["target"]["enum"]}


TRACED = ("conv1 Conv2d -> 64x32x32 (2k)\nbn1 BatchNorm2d -> 64x32x32 (128)\npool MaxPool2d -> 64x16x16\n"
          "blocks.0.conv Conv2d -> 8x8x8 (9)\npool MaxPool2d -> 8x4x4\ngap AdaptiveAvgPool2d -> 8x1x1\nfc Linear -> 10 (1k)\n"
          "(the feature map is 1x1 from gap on: no further downsampling is possible)")


def test_each_operator_is_offered_the_layers_it_can_act_on():
    """18 of 60 typed changes (CIFAR-10, seeds 43-45) named a layer their operator cannot act on ("Add
    normalisation to bn2", "Change the downsampling of fc"); in 12 of those iterations the Generator wrote an
    earlier net again, which cost a repair."""
    names = layer_names(TRACED)
    assert names == ["conv1", "bn1", "pool", "blocks.0.conv", "gap", "fc"]
    targets = targets_by_operator(TRACED)
    assert targets["widen"] == targets["change_kernel"] == targets["add_residual"] == ["conv1", "blocks.0.conv"]
    assert targets["add_normalisation"] == ["blocks.0.conv"]  # conv1 has its bn1
    assert targets["remove_normalisation"] == ["bn1"] and targets["change_head"] == ["fc"]
    assert targets["change_downsampling"] == ["conv1", "pool", "blocks.0.conv"]  # not the global pool, not fc
    assert targets["change_activation"] == targets["other"] == names
    assert targets["deepen"] == [n for n in names if n != "bn1"]  # after bn1 is after conv1's block
    assert targets_by_operator("(not traced)") == {}
    # deepening takes no arguments: one 3x3 conv of the layer's width ("+50 layers", "128x16x16 -> 144x16x16"
    # were 3 failures in 6 Generator candidates)
    deepen = [alt for alt in _alts(improver_schema(TRACED, [])) if alt["properties"]["operator"]["const"] == "deepen"]
    assert [alt["properties"]["arguments"] for alt in deepen] == [{"const": ""}]


def test_with_the_best_nets_layers_the_schema_offers_their_names_and_no_tried_change():
    """The 1.5B model named layers the net does not have ("conv3_normed_downsampled") in 66 of 142 replies,
    and repeated a tried change in 7 and 12 of 20 iterations (each repeat cost a second call)."""
    targets = targets_by_operator(TRACED)
    offered = _offered(change_schema(targets))
    assert offered == {(op, t) for op in CHANGE_OPS for t in [*targets[op], "all"]}
    tried = {("widen", "conv1"), ("change_downsampling", "pool")}
    assert _offered(change_schema(targets, tried)) == offered - tried
    every = {(op, t) for op in CHANGE_OPS if op != "other" for t in [*layer_names(TRACED), "all"]}
    only = change_schema(targets, every)  # an operator with no target left is not offered at all
    assert [a["properties"]["operator"]["const"] for a in _alts(only)] == ["other"]
    everything = {(op, t) for op in CHANGE_OPS for t in [*layer_names(TRACED), "all"]}
    assert change_schema(targets, everything) == change_schema()  # never an empty grammar
    no_norm = change_schema({**targets, "add_normalisation": []})  # nothing to normalise: not even "all"
    assert "add_normalisation" not in {op for op, _ in _offered(no_norm)}
    for alt in _alts(change_schema(targets)):
        assert alt["required"] == ["operator", "target", "arguments"]  # no free-text reason
        # no fractions but in "other" (12 of 16 changes with one failed: F.max_pool2d(x, 0.75))
        op, args = alt["properties"]["operator"]["const"], alt["properties"]["arguments"]
        assert ("pattern" in args or "enum" in args or "const" in args) == (op != "other")
        if "pattern" in args:
            assert not re.match(args["pattern"], "(0.75, 0.75)")
    args = {a["properties"]["operator"]["const"]: a["properties"]["arguments"] for a in _alts(change_schema(targets))}
    assert re.match(args["widen"]["pattern"], "64 -> 96 channels") and not re.match(args["widen"]["pattern"], "0")
    assert args["change_kernel"]["enum"] == ["1x1", "3x3", "5x5", "7x7"] and args["add_residual"] == {"const": ""}
    assert args["other"]["minLength"] >= 12  # "other" with no arguments was "Change all" (7 of 8; 4 failed)
    flat = flat_schema(change_schema(targets, tried))  # for backends that want one object at the root
    one = flat["properties"]["change"]["properties"]
    assert one["operator"]["enum"] == list(CHANGE_OPS) and flat["type"] == "object"
    assert "enum" not in one["arguments"] and "anyOf" not in flat["properties"]["change"]  # any operator's arguments
    assert set(one["target"]["enum"]) == {*layer_names(TRACED), "all"}
    assert flat_schema(change_schema()) == change_schema()


def test_a_change_that_undoes_a_tried_normalisation_change_is_not_offered():
    """Undone, the change that made the best gives the net before it again (CIFAR-10, seed 45: bn3 removed
    made the best, then "Add normalisation to conv3" and "... to all" were two duplicates of that net)."""
    removed = TRACED.replace("bn1 BatchNorm2d", "bn1 Identity").replace(" (128)", "")
    window = [{"change": {"operator": "remove_normalisation", "target": "bn1", "arguments": ""}}]
    before = _offered(improver_schema(removed, []))
    assert {("add_normalisation", "conv1"), ("add_normalisation", "all")} <= before
    # conv1 again; "all" stays (it normalises blocks.0.conv too)
    held = before - _offered(improver_schema(removed, window))
    assert held == {("add_normalisation", "conv1")}
    one = removed.replace("blocks.0.conv Conv2d -> 8x8x8 (9)\n", "")  # conv1 the only conv without a norm
    assert {("add_normalisation", "conv1"), ("add_normalisation", "all")} <= \
        _offered(improver_schema(one, [])) - _offered(improver_schema(one, window))
    # a norm added after blocks.0.conv that made the best: removing it again is not offered, nor "all" of one
    added = TRACED.replace("pool MaxPool2d -> 8x4x4", "blocks.0.conv_bn BatchNorm2d -> 8x8x8 (16)\npool MaxPool2d -> 8x4x4")
    window = [{"change": {"operator": "add_normalisation", "target": "blocks.0.conv", "arguments": ""}}]
    held = _offered(improver_schema(added, [])) - _offered(improver_schema(added, window))
    assert held == {("remove_normalisation", "blocks.0.conv_bn")}  # bn1 and "all" stay (two norms)


def test_a_downsampling_target_is_offered_the_stride_that_flips_it():
    """Free arguments gave "0" (stride=(0, 0)), "1/4" (a stride of 0.5) and "(2, 2)) -> (4, 4)" (diverged
    twice): 5 of 13 failed candidates in two CIFAR-10 searches (seeds 44, 45)."""
    strides = downsampling_strides(TRACED)
    # conv1 keeps the 32x32 map, blocks.0.conv shrinks it; the global pool is not a target, nor the pool
    # called twice (told "pool: stride 1", the Generator wrote `self.pool(x, stride=1)`: seed 43, at 2e5aa83)
    assert strides == {"conv1": "stride 2", "blocks.0.conv": "stride 1"}
    at_2x2 = "conv1 Conv2d -> 8x4x4 (9)\nconv2 Conv2d -> 8x2x2 (9)\nconv3 Conv2d -> 8x2x2 (9)\nfc Linear -> 10 (90)"
    assert downsampling_strides(at_2x2) == {"conv1": "stride 2", "conv2": "stride 1"}  # nothing left to halve
    tried = [{"change": {"operator": "change_downsampling", "target": "pool"}}]
    assert _arguments(improver_schema(TRACED, tried), "change_downsampling") == [
        (["conv1"], {"const": "stride 2"}), (["blocks.0.conv"], {"const": "stride 1"})]  # no "all", no tried pair
    assert downsampling_strides("(not traced)") == {}


def _arguments(schema: dict, op: str) -> list[tuple[list[str], dict]]:
    return [(a["properties"]["target"]["enum"], a["properties"]["arguments"]) for a in _alts(schema)
            if a["properties"]["operator"]["const"] == op]


def test_a_kernel_change_offers_only_kernels_the_conv_does_not_have():
    """Offered every kernel, the 1.5B model chose "Change the kernel size of conv2: 3x3" for a 3x3 conv2 in
    two of the first four iterations of a CIFAR-10 search (seed 45); the Generator returned the net unchanged."""
    code = ("class Net(nn.Module):\n    def __init__(self):\n        self.conv1 = nn.Conv2d(3, 64, 5, padding=2)\n"
            "        self.blocks = nn.Sequential(nn.Conv2d(64, 8, 3))\n")
    assert _arguments(improver_schema(TRACED, [], code), "change_kernel") == [
        (["conv1"], {"enum": ["1x1", "3x3", "7x7"]}), (["blocks.0.conv", "all"], {"enum": ["1x1", "3x3", "5x5", "7x7"]})]
    same = code.replace("nn.Conv2d(3, 64, 5, padding=2)", "nn.Conv2d(3, 64, kernel_size=(3, 3))")
    assert kernel_choices(same, ["conv1"]) == {"conv1": {"enum": ["1x1", "5x5", "7x7"]}, "all": {"enum": ["1x1", "5x5", "7x7"]}}
    assert kernel_choices("not python(", ["conv1"])["conv1"] == {"enum": ["1x1", "3x3", "5x5", "7x7"]}
    # one activation throughout (the seed's F.relu): not offered again; two: every one
    relu = code + "    def forward(self, x):\n        x = F.relu(self.conv1(x))\n        return nn.ReLU()(x)\n"
    assert _arguments(improver_schema(TRACED, [], relu), "change_activation")[0][1] == {
        "enum": ["LeakyReLU", "GELU", "SiLU", "ELU"]}
    mixed = relu.replace("nn.ReLU()", "nn.GELU()")
    assert _arguments(improver_schema(TRACED, [], mixed), "change_activation")[0][1]["enum"][0] == "ReLU"


def test_the_small_models_slips_are_settled_before_the_generator_reads_them():
    """Seen in a CIFAR-10 search with the 1.5B model: a channel change labelled change_kernel (the Generator,
    told to change a kernel size to 64 channels, returned the net unchanged), and a layer fact from the
    prompt copied as the target."""
    slip = {**WIDEN, "operator": "change_kernel", "target": "conv3 Conv2d 73,728, fc Linear 65,290."}
    parsed = parse_improver(json.dumps(slip))[0]
    assert parsed["suggestion"] == "Widen conv3: 32 -> 64 channels"
    assert parsed["change"]["operator_given"] == "change_kernel"
    kernel = parse_improver(json.dumps({**WIDEN, "arguments": "3x3 -> 5x5"}))[0]
    assert kernel["suggestion"] == "Change the kernel size of conv2: 3x3 -> 5x5"
    both = parse_improver(json.dumps({**WIDEN, "operator": "change_kernel", "arguments": "kernel 5, 64 channels"}))[0]
    assert both["change"]["operator"] == "change_kernel" and "operator_given" not in both["change"]  # unclear: kept
    copied = parse_improver(json.dumps({**WIDEN, "target": "conv3 (Conv2d, 73,728 parameters)"}))[0]
    assert copied["change"]["target"] == "conv3"
    assert parse_improver(json.dumps({**WIDEN, "target": "the classifier head"}))[0]["change"]["target"] == \
        "the classifier head"


LAYERS = "conv1 Conv2d -> 96x32x32 (2,592)\nconv3 Conv2d -> 192x8x8 (221,184)\nblocks.0.conv Conv2d -> 64x8x8 (9)\n" \
         "fc Linear -> 10 (30,730)"


def test_a_target_that_reaches_into_a_layer_is_that_layer():
    """Seed 44: "conv3.conv1.weight", copied and grown for 13 iterations, each implemented as code reaching
    for self.conv3.conv1."""
    for given, layer in (("conv3.conv1.weight", "conv3"), ("conv3.conv1.weight.data.downsample(0, 1)) (x:27)", "conv3"),
                         ("blocks.0.conv.weight", "blocks.0.conv")):
        change = parse_improver(json.dumps({**WIDEN, "operator": "add_normalisation", "target": given,
                                            "arguments": ""}), LAYERS)[0]["change"]
        assert change["target"] == layer and change["target_given"] == given
    for kept in ("conv1", "all", "the classifier head", "conv9.weight"):  # a layer, all, or nothing to settle on
        change = parse_improver(json.dumps({**WIDEN, "operator": "add_normalisation", "target": kept,
                                            "arguments": ""}), LAYERS)[0]["change"]
        assert change["target"] == kept and "target_given" not in change


def _run(tmp_path, improver_replies: list[str], iterations: int) -> RunStore:
    store = RunStore.create(tmp_path, "unit", {})
    generator = scripted(*[code_reply(tag=f"acc=0.{5 + i}") for i in range(iterations + 2)])
    deps = Deps(scripted(*improver_replies), generator, ScriptedEvaluator(), store)
    build_graph(deps).invoke({"task": task(iterations)}, {"configurable": {"thread_id": "t"},
                                                         "recursion_limit": recursion_limit_for(iterations)})
    return store


def test_the_typed_change_reaches_the_generator_and_the_record(tmp_path):
    store = _run(tmp_path, [json.dumps(WIDEN)], iterations=1)
    gen = next(r for r in store.trace() if r["node"] == "generate" and r["iteration"] == 1)
    assert "Change to make: Widen conv2: 32 -> 64 channels\n" in gen["prompt"]  # an unconstrained reason: not read
    improve = next(r for r in store.trace() if r["node"] == "improve" and r["iteration"] == 1)
    assert '"operator": "<one of: widen, deepen, change_kernel' in improve["prompt"]  # the format it is asked for
    assert "conv1 Conv2d -> 8x32x32 (80)" in improve["prompt"]  # facts: the best net's layers, as traced
    result = next(r for r in store.results() if r["iteration"] == 1)
    assert result["change"]["operator"] == "widen" and result["suggestion_source"] == "model"


def test_a_repeated_typed_change_goes_back_to_the_improver_with_the_tried_list(tmp_path):
    again = {**WIDEN, "reason": "a new reason for the same edit"}
    other = {**WIDEN, "operator": "add_normalisation", "target": "all", "arguments": "BatchNorm2d after each conv"}
    store = _run(tmp_path, [json.dumps(WIDEN), json.dumps(again), json.dumps(other)], iterations=2)
    retry = next(r for r in store.trace() if r["iteration"] == 2 and r["node"] == "improve.1")
    assert "was already tried" in retry["prompt"] and "- Widen conv2: 32 -> 64 channels" in retry["prompt"]
    result = next(r for r in store.results() if r["iteration"] == 2)
    assert result["suggestion_source"] == "model-retry" and result["change"]["operator"] == "add_normalisation"


def test_the_memory_holds_the_improver_off_its_tried_changes_without_showing_them(tmp_path):
    store = RunStore.create(tmp_path, "unit", {})
    widen = {**WIDEN, "target": "conv1", "arguments": "8 -> 16 channels"}
    improver = scripted(json.dumps(widen), json.dumps({**WIDEN, "operator": "deepen", "target": "fc"}))
    schemas: list = []
    ask = improver.ask

    def recorded(*args, **kwargs):
        schemas.append(kwargs.get("schema"))
        return ask(*args, **kwargs)

    improver.ask = recorded  # type: ignore[method-assign]
    generator = scripted(*[code_reply(tag=f"acc=0.{5 + i}") for i in range(4)])
    # each diagnosis a prompt of its own, with the memory window (a conversation's later turns have the
    # model's own replies above them instead: tests/unit/test_improver_conversation.py)
    build_graph(Deps(improver, generator, ScriptedEvaluator(), store, LoopOptions(improver_chat=False))).invoke(
        {"task": task(2)}, {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit_for(2)})
    first, second = (_offered(s) for s in schemas)
    # the seed's traced layers (here one conv, no norm layer, no Linear), or all
    assert first == {(op, t) for op in CHANGE_OPS if op not in ("remove_normalisation", "change_head")
                     for t in ("conv1", "all")} - {("change_downsampling", "all")}  # a stride is per layer
    assert first - second == {("widen", "conv1"), ("widen", "all")}  # iteration 1's change ("all": conv1 is the one conv)
    assert len(schemas) == 2  # no second call: the reply could not repeat
    improve = next(r for r in store.trace() if r["node"] == "improve" and r["iteration"] == 2)
    assert "Widen conv1: 8 -> 16 channels" in improve["prompt"] and '"target": "conv1"' not in improve["prompt"]


def test_only_well_formed_layer_facts_reach_the_prompt():
    from nasloop.tools.text import layer_lines

    reported = [{"name": "conv1", "type": "Conv2d", "out": [32, 16, 16], "params": 896},
                {"name": "x" * 500, "type": "Linear", "out": [10], "params": 330},
                {"name": 5, "type": "Evil"}, "not a dict", {"name": "act", "type": "ReLU", "out": "Tensor?", "params": 0},
                {"name": "bell\x07", "type": "Conv2d", "out": [1, "2"], "params": True}]
    text = layer_lines(reported)
    lines = text.splitlines()
    assert lines[0] == "conv1 Conv2d -> 32x16x16 (896)" and lines[1] == "x" * 60 + " Linear -> 10 (330)"
    assert lines[2] == "act ReLU -> ?" and len(lines) == 4 and "\x07" not in text
    assert layer_lines("a string") is None and layer_lines([{"type": "X"}] * 100) is None


def test_a_width_change_from_a_width_the_layer_does_not_have_keeps_its_ratio_from_the_traced_width():
    """Seen in a CIFAR-10 search (seed 44): "Widen conv2: 16 -> 32 channels" where conv2 had 64 channels, a
    number copied from the history; the Generator returned the best net unchanged."""
    layers = "conv1 Conv2d -> 64x32x32 (5k)\nbn1 BatchNorm2d -> 64x32x32 (128)\nconv2 Conv2d -> 128x16x16 (205k)\n" \
             "fc Linear -> 10 (3k)"
    parsed = parse_improver(json.dumps({**WIDEN, "arguments": "16 -> 32 channels"}), layers)[0]
    assert parsed["suggestion"] == "Widen conv2: 128 -> 256 channels"
    assert parsed["change"]["arguments_given"] == "16 -> 32 channels"
    slip = {**WIDEN, "operator": "change_kernel", "target": "conv1", "arguments": "32 to 16 channels"}
    assert parse_improver(json.dumps(slip), layers)[0]["suggestion"] == "Widen conv1: 64 -> 32 channels"
    # a "to" that widens the layer is kept; a ratio at most doubles it (seed 44: 1024 -> 16384 channels)
    assert parse_improver(json.dumps({**WIDEN, "arguments": "96 -> 144 channels"}), layers)[0]["suggestion"] == \
        "Widen conv2: 128 -> 144 channels"
    assert parse_improver(json.dumps({**WIDEN, "arguments": "8 -> 128 channels"}), layers)[0]["suggestion"] == \
        "Widen conv2: 128 -> 256 channels"
    spelled = parse_improver(json.dumps({**WIDEN, "arguments": "48 channels -> 96 channels"}), layers)[0]
    assert spelled["suggestion"] == "Widen conv2: 128 -> 256 channels"  # seen in a seed-43 search
    right = parse_improver(json.dumps({**WIDEN, "arguments": "128 -> 192 channels"}), layers)[0]
    assert right["suggestion"] == "Widen conv2: 128 -> 192 channels" and "arguments_given" not in right["change"]
    for unsure in ({**WIDEN, "target": "fc", "arguments": "256 -> 512 features"},  # a head: not a conv width
                   {**WIDEN, "target": "all", "arguments": "16 -> 32 channels"},  # no one layer
                   {**WIDEN, "arguments": "16 -> 32 -> 64 channels"},  # two pairs
                   {**WIDEN, "operator": "deepen", "arguments": "16 -> 32 channels"}):  # not a width change
        assert parse_improver(json.dumps(unsure), layers)[0]["change"]["arguments"] == unsure["arguments"]
    assert parse_improver(json.dumps({**WIDEN, "arguments": "16 -> 32 channels"}))[0]["suggestion"] == \
        "Widen conv2: 16 -> 32 channels"  # no trace: as written


def test_growing_a_layer_that_went_over_the_budget_again_goes_back_to_the_improver():
    """Seen in a CIFAR-10 search (seed 44): after conv3 went over the budget, the 1.5B model widened it five
    more times, each a new number of channels (so no word-for-word repeat), each refused by the pre-flight."""
    from nasloop.agent.llm.prompting import tried_note, usable_proposal
    from nasloop.agent.loop.record import triple

    refused = {"iteration": 7, "suggestion": "Widen conv3: 1024 -> 2048 channels", "outcome": "interface_error",
               "diagnosis": "BudgetError: Net has 2,453,965 parameters; the budget is 2,000,000",
               "failure": {"phase": "interface", "exc_type": "BudgetError", "budget": {"largest": []}}}
    window = [triple(refused), triple({"iteration": 8, "suggestion": "Widen conv2: 64 -> 96 channels",
                                       "outcome": "shape_error", "failure": {"exc_type": "RuntimeError"}})]
    assert window[0]["over_budget"] is True and "over_budget" not in window[1]
    wider = parse_improver(json.dumps({**WIDEN, "target": "conv3", "arguments": "1024 -> 4096 channels"}))[0]
    kept = usable_proposal(wider, "", 9, window)
    assert kept is not wider and "iteration 7 went over the budget" in kept["problem"]
    assert "- Widen conv3: 1024 -> 2048 channels (over the budget)" in tried_note(wider, window)
    for fine in ({**WIDEN, "target": "conv2", "arguments": "64 -> 128 channels"},  # another layer (its try failed otherwise)
                 {**WIDEN, "target": "conv3", "operator": "change_kernel", "arguments": "3x3 -> 5x5"}):
        parsed = parse_improver(json.dumps(fine))[0]
        assert usable_proposal(parsed, "", 9, window) is parsed
    # the fallback that replaces it adds no parameters (seed 44's "widen the first conv by 50%" came right
    # after a budget error); once both such changes are in the window, any untried one will do
    from nasloop.agent.llm.prompting import FALLBACK_CHANGES, NO_GROWTH, fallback_change

    assert all(usable_proposal(wider, "", n, window)["suggestion"] in NO_GROWTH for n in range(6))
    assert {fallback_change(n, window[1:]) for n in range(len(FALLBACK_CHANGES))} == set(FALLBACK_CHANGES)  # no budget error: all
    tried = window + [triple({"iteration": 9 + i, "suggestion": c, "outcome": "ok"}) for i, c in enumerate(NO_GROWTH)]
    assert fallback_change(0, tried) in set(FALLBACK_CHANGES) - NO_GROWTH
    dropout, silu = [c for c in FALLBACK_CHANGES if c in NO_GROWTH]
    assert {fallback_change(n, window, (dropout,)) for n in range(4)} == {silu}  # this iteration's own tries count
    everything = window + [triple({"iteration": 20 + i, "suggestion": c, "outcome": "ok"})
                           for i, c in enumerate(FALLBACK_CHANGES)]
    assert {fallback_change(n, everything) for n in range(4)} == set(NO_GROWTH)  # all tried: still no growth


def test_a_net_at_1x1_is_said_to_allow_no_further_downsampling():
    """Seed 45: the best net pooled 32 -> 1 in five steps and the Improver kept asking for more downsampling
    (five failures in a row); the traced shapes now say it cannot be done. A global pool does not count."""
    from nasloop.tools.text import layer_lines

    stages = [{"name": "conv5", "type": "Conv2d", "out": [80, 2, 2], "params": 9},
              {"name": "pool5", "type": "MaxPool2d", "out": [80, 1, 1], "params": 0},
              {"name": "gap", "type": "AdaptiveAvgPool2d", "out": [80, 1, 1], "params": 0},
              {"name": "fc", "type": "Linear", "out": [10], "params": 810}]
    text = layer_lines(stages)
    assert text.splitlines()[-1] == "(the feature map is 1x1 from pool5 on: no further downsampling is possible)"
    seedlike = [stages[0], stages[2], stages[3]]  # 2x2 then the global pool: room for one more halving
    assert "no further downsampling" not in layer_lines(seedlike)


def test_a_residual_around_one_layer_names_the_shortcut_its_shapes_need():
    """Told only "Add a residual connection around conv3", the Generator built shortcuts of the wrong width or
    size in 4 of 16 such changes (three CIFAR-10 searches); the traced shapes say which one fits."""
    from nasloop.agent.llm.parsing import settle_change

    layers = ("conv1 Conv2d -> 32x32x32 (864)\npool MaxPool2d -> 32x16x16\nconv2 Conv2d -> 64x16x16 (18k)\n"
              "conv3 Conv2d -> 64x8x8 (37k)\nconv4 Conv2d -> 64x8x8 (37k)\nfc Linear -> 10 (650)")

    def said(target: str) -> str:
        reply = {"problem": "p", "change": {"operator": "add_residual", "target": target, "arguments": ""}}
        return parse_improver(json.dumps(reply), layers)[0]["suggestion"]

    assert said("conv2") == ("Add a residual connection around conv2: its input (32x16x16) added to its output "
                             "(64x16x16) through a new shortcut nn.Conv2d(32, 64, 1)")
    assert said("conv3").endswith("through a new shortcut nn.Conv2d(64, 64, 1, stride=2)")
    assert said("conv4") == "Add a residual connection around conv4: its input (64x8x8) added to its output (64x8x8)"
    assert said("conv1") == "Add a residual connection around conv1"  # its input is not in the table
    assert said("all") == "Add a residual connection around all"
    given = {"operator": "add_residual", "target": "conv2", "arguments": "identity"}
    assert settle_change(given, layers) == given  # an unconstrained backend's own arguments stay


def test_a_conv_is_widened_by_half_or_double_its_traced_width():
    """Any number allowed, the 1.5B model asked for "128 -> 1536 channels": over the FLOP budget, a repair."""
    widths = width_choices(TRACED, ["conv1", "blocks.0.conv", "unknown"])
    assert widths["conv1"] == {"enum": ["64 -> 96 channels", "64 -> 128 channels"]}
    assert widths["blocks.0.conv"] == {"enum": ["8 -> 16 channels"]}  # rounded up to 8s
    assert widths["unknown"]["pattern"] and widths["all"] == {"enum": ["+50% channels", "2x channels"]}
    widen = [a["properties"] for a in _alts(improver_schema(TRACED, [])) if a["properties"]["operator"]["const"] == "widen"]
    assert {t: p["arguments"]["enum"][-1] for p in widen for t in p["target"]["enum"]} == {
        "conv1": "64 -> 128 channels", "blocks.0.conv": "8 -> 16 channels", "all": "2x channels"}
    parsed, _ = parse_improver(json.dumps({"problem": "p", "operator": "widen", "target": "conv1",
                                           "arguments": "64 -> 96 channels"}), TRACED)
    assert parsed["suggestion"] == "Widen conv1: 64 -> 96 channels" and "arguments_given" not in parsed["change"]
