"""Replies small models really give: single quotes, fences, chatter, no code."""
import pytest

from nasloop import prompts
from nasloop.agent.fixes.definitions import restore_definitions
from nasloop.agent.fixes.shapes import fix_shapes
from nasloop.agent.llm.parsing import extract_code, parse_improver


@pytest.mark.parametrize("text", [
    '{"problem": "too shallow", "suggestion": "add a conv block"}',
    "Sure!\n```json\n{\"problem\": \"too shallow\", \"suggestion\": \"add a conv block\"}\n```",
    "{'problem': 'too shallow', 'suggestion': 'add a conv block'}",
    "{'Problem': 'too shallow', 'Suggestion': ['add a conv block']}",
    "problem: too shallow\nsuggestion: add a conv block",
])
def test_improver_variants(text):
    parsed, err = parse_improver(text)
    assert err == ""
    assert parsed == {"problem": "too shallow", "suggestion": "add a conv block"}


@pytest.mark.parametrize("text", ["", "I think the network is fine.", '{"problem": "x"}'])
def test_improver_unreadable(text):
    parsed, err = parse_improver(text)
    assert parsed is None and "Improver" in err


def test_code_block_with_net_is_chosen():
    text = ("Explanation\n```python\nprint('usage')\n```\nand\n```python\nimport torch.nn as nn\n"
            "class Net(nn.Module):\n    pass\n```")
    code, err = extract_code(text)
    assert err == "" and code.startswith("import torch.nn as nn\nclass Net")


def test_unterminated_fence_still_yields_code():
    code, _ = extract_code("```python\nclass Net(nn.Module):\n    pass\n")
    assert code is not None and "class Net" in code


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("```python\nclass Model: pass\n```", "does not define class Net"),
    ("I cannot help with that.", "no ```python code block"),
])
def test_no_code(text, why):
    code, err = extract_code(text)
    assert code is None and why in err


def test_autofix_removes_surplus_closing_brackets():
    from nasloop.agent.fixes.brackets import autofix

    bad = "def f(x):\n    y = g(h(x))))\n    return [y]]\n"
    code, note = autofix(bad)
    assert code == "def f(x):\n    y = g(h(x))\n    return [y]\n" and note == "removed 3 unmatched closing bracket(s)"
    assert autofix("x = (1,\n") == ("x = (1,\n", "")  # not a surplus bracket: left to the LLM
    # seed 43: a Sequential closed by a line of two brackets, one of them surplus (not both)
    closing = "f = nn.Sequential(\n    nn.ReLU(),\n    nn.Identity()\n))\ny = 1\n"
    assert autofix(closing) == (closing.replace("))", ")"), "removed 1 unmatched closing bracket(s)")
    # seed 45: its first item closed the Sequential early; the next item is an unexpected indent
    early = "f = nn.Sequential(\n    nn.Conv2d(1, 2, 3)),  # c\n    nn.ReLU()\n))\n"
    assert autofix(early) == ("f = nn.Sequential(\n    nn.Conv2d(1, 2, 3),  # c\n    nn.ReLU()\n)\n",
                              "removed 2 unmatched closing bracket(s)")
    assert autofix("x = 1\n") == ("x = 1\n", "")


def test_dropped_definitions_are_restored_from_the_base_network():
    from nasloop import prompts
    from nasloop.tools.static_check import check_source

    base = prompts.seed_source("cifar10")
    dropped = base.replace("        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)\n", "").replace(
        "        self.bn3 = nn.BatchNorm2d(128)\n", "")
    assert "never assigns them" in check_source(dropped).reason
    fixed, note = restore_definitions(dropped, base)
    assert note == "restored dropped definition(s) from the base network: Net.conv3, Net.bn3"
    assert check_source(fixed) is None and "self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)" in fixed


def test_nothing_is_restored_when_the_base_does_not_define_it():
    from nasloop import prompts

    base = prompts.seed_source("cifar10")
    code = base.replace("x = self.pool(x)\n        x = self.conv2(x)", "x = self.extra(x)\n        x = self.conv2(x)")
    assert restore_definitions(code, base) == (code, "")
    assert restore_definitions(base, base) == (base, "")


def preflight_outcome(code: str):
    """The outcome the sandbox's pre-flight gives `code` (run here on the meta device), or None."""
    from nasloop.sandbox import runner
    from nasloop.tools.outcome import _from_error

    ns: dict = {}
    exec(compile(code, "candidate.py", "exec"), ns)  # noqa: S102 - our own test input
    failure, facts = runner.preflight(ns["Net"], 10, 3, 32, 2_000_000)
    return None if failure is None else _from_error(failure, 0.0, {"params": facts.get("params")})


def preflight_diagnosis(code: str) -> str | None:
    out = preflight_outcome(code)
    return None if out is None else out.diagnosis


def preflight_failure(code: str) -> dict | None:
    """The structured failure record the fixes read."""
    out = preflight_outcome(code)
    return None if out is None else out.failure


def fix_until_clean(code: str) -> tuple[str, list[str]]:
    """Shape-fix `code` the way the loop does, one pre-flight at a time, until it passes; every
    pre-flight failure on the way must be one a fix handles."""
    made = []
    while (diag := preflight_failure(code)) is not None:
        code, note = fix_shapes(code, diag)
        assert note, diag
        made.append(note)
    return code, made


@pytest.mark.parametrize("change,fixes", [
    (("self.conv2 = nn.Conv2d(32, 64, 3", "self.conv2 = nn.Conv2d(32, 96, 3"),
     ["self.bn2 = nn.BatchNorm2d(...): num_features 64 -> 96", "self.conv3 = nn.Conv2d(...): in_channels 64 -> 96"]),
    (("self.conv3 = nn.Conv2d(64, 128, 3", "self.conv3 = nn.Conv2d(64, 256, 3"),
     ["self.bn3 = nn.BatchNorm2d(...): num_features 128 -> 256", "self.fc = nn.Linear(...): in_features 128 -> 256"]),
    # seed 45 at 46e42c2: "Remove normalisation from bn1" made it a BatchNorm1d on a 32x32x32 map
    (("self.bn1 = nn.BatchNorm2d(32)", "self.bn1 = nn.BatchNorm1d(32, momentum=0.2)"),
     ["self.bn1 = nn.BatchNorm1d(...) -> BatchNorm2d(32): it gets a 32x32x32 input"]),
    # and a BatchNorm2d after the Linear (on the head's 10 features here)
    ((("        return self.fc(x)", "        x = self.fc(x)\n        return self.bn4(x)"),
      ("        self.fc = nn.Linear(128, num_classes)", "        self.fc = nn.Linear(128, num_classes)\n"
                                                      "        self.bn4 = nn.BatchNorm2d(10)")),
     ["self.bn4 = nn.BatchNorm2d(...) -> BatchNorm1d(10): it gets a 10 input"]),
])
def test_channel_mismatches_located_by_the_preflight_are_fixed(change, fixes):
    from nasloop import prompts

    code = prompts.seed_source("cifar10")
    for old, new in change if isinstance(change[0], tuple) else [change]:
        code = code.replace(old, new)
    _, made = fix_until_clean(code)
    assert [note.split(" (")[0] for note in made] == fixes


def test_shape_fix_leaves_what_it_cannot_know_alone():
    diag = {"line": None, "layer": {"name": "features.3", "type": "Conv2d", "in": [96, 16, 16]}}
    code = "class Net:\n    def __init__(self):\n        c = 64\n        self.conv = nn.Conv2d(c, 128, 3)\n"
    assert fix_shapes(code, diag) == (code, "")  # a nested module name: not patched
    diag2 = {"line": None, "layer": {"name": "conv", "type": "Conv2d", "in": [96, 16, 16]}}
    assert fix_shapes(code, diag2) == (code, "")  # the size is a local variable
    looped = "class Net:\n    def __init__(self):\n        for i in range(2):\n            self.conv = nn.Conv2d(64, 8, 3)\n"
    assert fix_shapes(looped, diag2) == (looped, "")  # inside a loop: not touched
    assert fix_shapes(code.replace("(c,", "(64,"), diag2)[0].count("nn.Conv2d(96, 128, 3)") == 1


@pytest.mark.parametrize("arg", ["128 // 4", "in_channels"])
def test_shape_fix_handles_arithmetic_and_a_misused_parameter(arg):
    diag = {"line": None, "layer": {"name": "conv3", "type": "Conv2d", "in": [64, 8, 8]}}
    code = f"class Net:\n    def __init__(self, in_channels=3):\n        self.conv3 = nn.Conv2d({arg}, 64, 3)\n"
    fixed, note = fix_shapes(code, diag)
    assert "self.conv3 = nn.Conv2d(64, 64, 3)" in fixed and note.startswith(f"self.conv3 = nn.Conv2d(...): in_channels {arg} -> 64")


@pytest.mark.parametrize("slip,meant", [  # the 1.5B model's own lines: the layer call closed too early
    ("self.fc = nn.Linear(128 * (32 // 2 ** 3)) * (32 // 2 ** 3), num_classes)",
     "self.fc = nn.Linear(128 * (32 // 2 ** 3) * (32 // 2 ** 3), num_classes)"),
    ("self.fc = nn.Linear(128 * (32 // 2 ** 3)) * (32 // 2 ** 3)), num_classes)",
     "self.fc = nn.Linear(128 * (32 // 2 ** 3) * (32 // 2 ** 3), num_classes)"),
    ("self.fc = nn.Linear(128 * (2**0)), num_classes)", "self.fc = nn.Linear(128 * (2**0), num_classes)"),
    ("self.fc = nn.Linear(128, num_classes))", "self.fc = nn.Linear(128, num_classes)"),
])
def test_autofix_removes_the_bracket_that_closed_a_layer_call_too_early(slip, meant):
    from nasloop import prompts
    from nasloop.agent.fixes.brackets import autofix

    base = prompts.seed_source("cifar10")
    code, note = autofix(base.replace("self.fc = nn.Linear(128, num_classes)", slip))
    assert meant in code and note.startswith("removed")


def test_a_layer_used_as_a_tensor_is_applied_to_it():
    from nasloop import prompts
    from nasloop.agent.fixes.layer_slips import fix_layer_slips

    base = prompts.seed_source("cifar10")
    built = base.replace("x = F.adaptive_avg_pool2d(x, 1)", "x = nn.AdaptiveAvgPool2d((1, 1))")
    passed = base.replace("x = F.adaptive_avg_pool2d(x, 1)\n        x = torch.flatten(x, 1)",
                          "x = torch.flatten(self.pool, 1)")
    assert preflight_diagnosis(built) is not None and preflight_diagnosis(passed) is not None
    fixed, note = fix_layer_slips(built)
    assert "x = nn.AdaptiveAvgPool2d((1, 1))(x)" in fixed and "AdaptiveAvgPool2d" in note
    assert preflight_diagnosis(fixed) is None
    fixed, note = fix_layer_slips(passed)
    assert "x = torch.flatten(self.pool(x), 1)" in fixed and "self.pool" in note
    fixed, _ = fix_shapes(fixed, preflight_failure(fixed))  # pooled 128x4x4 = 2048 features now reach fc
    assert "nn.Linear(2048, num_classes)" in fixed and preflight_diagnosis(fixed) is None
    assert fix_layer_slips(base) == (base, "")
    # a layer with weights built in forward would never be trained: left to the LLM
    conv = base.replace("x = F.adaptive_avg_pool2d(x, 1)", "x = nn.Conv2d(128, 128, 1)")
    assert fix_layer_slips(conv) == (conv, "")


def test_a_layer_applied_to_two_input_sizes_gets_a_copy_for_the_second():
    from nasloop import prompts

    base = prompts.seed_source("cifar10")  # conv1 (3 -> 32 channels) applied again after conv3 (128 channels)
    code, made = fix_until_clean(
        base.replace("x = F.adaptive_avg_pool2d(x, 1)", "x = self.conv1(x)\n        x = F.adaptive_avg_pool2d(x, 1)"))
    assert "self.conv1 = nn.Conv2d(in_channels, 32, 3" in code  # the first use is untouched
    assert "self.conv1_2 = nn.Conv2d(128, 32, 3, padding=1, bias=False)" in code
    assert code.count("self.conv1(x)") == 1 and code.count("self.conv1_2(x)") == 1
    assert made[0].startswith("self.conv1 = nn.Conv2d(...) is used on two input sizes")
    assert made[1].startswith("self.fc = nn.Linear(...): in_features 128 -> 32")


def test_a_linear_applied_to_a_feature_map_gets_pooled_input():
    from nasloop import prompts

    base = prompts.seed_source("cifar10")  # the 1.5B model dropped the pool and flatten before fc
    code, made = fix_until_clean(
        base.replace("        x = F.adaptive_avg_pool2d(x, 1)\n        x = torch.flatten(x, 1)\n", ""))
    assert made == ["inserted a global average pool and flatten before self.fc on line 33 "
                    "(the Linear got a 128x8x8 feature map)"]
    assert "        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)\n        return self.fc(x)" in code


def test_a_renamed_network_is_adopted():
    from nasloop.agent.fixes.rename_net import adopt_net
    from nasloop import prompts

    base = prompts.seed_source("cifar10")
    reply = "```python\n" + base.replace("class Net(", "class ModifiedNet(") + "```"
    assert extract_code(reply)[0] is None
    assert adopt_net(reply) == (base, "class ModifiedNet renamed to Net")
    two = "```python\nclass A(nn.Module):\n    pass\n\n\nclass B(nn.Module):\n    pass\n```"
    assert adopt_net(two) == (None, "")  # which one is meant is not ours to guess


def test_a_fractional_layer_size_becomes_an_integer():
    from nasloop import prompts
    from nasloop.agent.fixes.float_sizes import fix_float_sizes

    base = prompts.seed_source("cifar10")  # "increase by 50 %", taken literally by the 1.5B model
    code = base.replace("nn.Linear(128, num_classes)", "nn.Linear(128 * 1.5, num_classes)").replace(
        "nn.Conv2d(64, 128, 3", "nn.Conv2d(64, in_channels * 128 / 3, 3")
    assert "TypeError" in preflight_diagnosis(code)
    fixed, note = fix_float_sizes(code)
    assert "nn.Linear(192, num_classes)" in fixed and "nn.Conv2d(64, int(in_channels * 128 / 3), 3" in fixed
    assert note == "fractional layer size: in_channels * 128 / 3 -> int(in_channels * 128 / 3), 128 * 1.5 -> 192"
    fix_until_clean(fixed)  # the sizes now only need to agree
    assert fix_float_sizes(base) == (base, "")


def test_example_usage_that_runs_on_import_is_removed():
    from nasloop import prompts
    from nasloop.agent.fixes.example_usage import drop_example_usage

    base = prompts.seed_source("cifar10")
    usage = ("\n# Example usage:\ndef fix_module(module):\n    module.apply(fix_module)\n\n\nnet = Net()\n"
             "fix_module(net)\nprint(net)\nif __name__ == \"__main__\":\n    print(Net()(torch.zeros(1, 3, 32, 32)))\n")
    code, note = drop_example_usage(base + usage)
    assert "net = Net()" not in code and "fix_module(net)" not in code and "__main__" not in code
    assert "def fix_module(module):" in code and code.startswith(base)  # definitions stay
    assert note.startswith("removed code that runs on import: net = Net(), fix_module(net), print(net)")
    assert preflight_diagnosis(code) is None
    assert drop_example_usage(base) == (base, "")


def test_layer_lines_after_the_class_are_removed():
    """Seed 45 at ca2581f, a repair reply: the net, then the change written as module-level layer lines
    (after the `brackets` fix took the surplus `)`). On import: NameError, counted as the candidate's."""
    from nasloop import prompts
    from nasloop.agent.fixes.example_usage import drop_example_usage

    base = prompts.seed_source("cifar10")
    tail = ("\n# Add nn.Dropout(0.2) right before the final nn.Linear\nself.fc = nn.Linear(128, num_classes)\n"
            "self.dropout = nn.Dropout(0.2)\n")
    with pytest.raises(NameError, match="num_classes"):
        exec(compile(base + tail, "candidate.py", "exec"), {})  # noqa: S102 - our own test input
    code, note = drop_example_usage(base + tail)
    assert "self.fc = nn.Linear(128, num_classes)\n" in code and code.count("self.fc =") == 1
    assert "self.dropout" not in code and note == ("removed code that runs on import: "
                                                   "self.fc = nn.Linear(128, num_classes), self.dropout = nn.Dropout(0.2)")
    assert preflight_diagnosis(code) is None


def test_a_net_over_budget_is_told_which_layers_to_shrink():
    from pathlib import Path

    code = (Path(__file__).parents[1] / "candidates" / "huge_net.py").read_text()
    diag = preflight_diagnosis(code)
    assert diag.startswith("BudgetError: Net has 268,452,458 parameters; the budget is 2,000,000; largest layers: "
                           "big (Linear, 268,451,840 parameters), conv (Conv2d, 448 parameters), "
                           "fc (Linear, 170 parameters)")
    assert diag.endswith(" — big has 16384 output features: give it at most 104")


def test_a_net_over_budget_is_told_a_width_that_fits():
    """Seed 44 widened conv3 to 1024 and beyond; its repairs, told 'use fewer or narrower layers', stayed
    over the budget. The diagnosis now names a width, and the net with that width fits."""
    seed = prompts.seed_source("default")
    wide = seed.replace("nn.BatchNorm2d(128)", "nn.BatchNorm2d(2048)").replace("nn.Linear(128,", "nn.Linear(2048,")
    wide = wide.replace("nn.Conv2d(64, 128, 3", "nn.Conv2d(128, 2048, 3").replace("nn.Conv2d(32, 64, 3", "nn.Conv2d(32, 128, 3")
    wide = wide.replace("nn.BatchNorm2d(64)", "nn.BatchNorm2d(128)")
    out = preflight_outcome(wide)
    assert out is not None and out.failure["exc_type"] == "BudgetError", out
    fits = int(out.diagnosis.rsplit("give it at most ", 1)[1])
    assert "conv3 has 2048 output channels" in out.diagnosis and 1024 <= fits < 2048
    narrow = wide.replace("2048", str(fits))
    assert preflight_outcome(narrow) is None  # the width it names fits the budget


def test_a_net_over_budget_through_a_flatten_is_told_to_pool():
    """A Linear that costs most through its inputs (a flattened 8x8 map) is not told to narrow its outputs."""
    seed = prompts.seed_source("default")
    flat = seed.replace("self.fc = nn.Linear(128, num_classes)",
                        "self.fc1 = nn.Linear(128 * 8 * 8, 256)\n        self.fc = nn.Linear(256, num_classes)")
    flat = flat.replace("        x = F.adaptive_avg_pool2d(x, 1)\n", "").replace("return self.fc(x)", "return self.fc(self.fc1(x))")
    out = preflight_outcome(flat)
    assert out is not None and out.failure["budget"]["largest"][0] == {
        "name": "fc1", "type": "Linear", "params": 8192 * 256 + 256, "width": 256}
    assert out.diagnosis.endswith(" — fc1 costs most through its inputs: average-pool the feature map to 1x1 before it")
