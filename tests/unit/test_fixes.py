"""The fix registry: every fix runs through one interface, is counted by name, and can be switched off by name.

The inputs are the slips the bundled models made (the same ones tests/unit/test_parsing.py fixes one by one).
"""
from __future__ import annotations

import pytest
import torch

from nasloop.tools.static_check import check_source

from nasloop import prompts
from nasloop.agent.app.cli import make_parser
from nasloop.agent.app.search import loop_options
from nasloop.agent.deps import LoopOptions
from nasloop.agent.fixes.inplace import fix_inplace
from nasloop.agent.fixes.registry import FIXES, NAMES, Context, apply_stage, fix_target
from nasloop.agent.loop.record import fix_counts
from tests.unit.test_change_edits import traced
from tests.unit.test_parsing import preflight_failure

BASE = prompts.seed_source("cifar10")
SLIPS = {  # fix name -> (stage, the text a model produced, what the context holds)
    "rename-net": ("reply", "```python\n" + BASE.replace("class Net(", "class ModifiedNet(") + "```", {}),
    "brackets": ("source", BASE.replace("nn.Linear(128, num_classes)", "nn.Linear(128, num_classes))"), {}),
    # seed 45's slip (4 of 20 iterations): __init__ runs on into forward's last two lines, no `def forward`
    "forward": ("source", BASE[:BASE.index("        self.fc =")] + "        self.fc = nn.Linear(128, num_classes)\n"
                "        x = torch.flatten(x, 1)\n        return self.fc(x)\n", {"base_code": BASE}),
    "definitions": ("source", BASE.replace("        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)\n", ""),
                    {"base_code": BASE}),
    "layer-slips": ("source", BASE.replace("x = F.adaptive_avg_pool2d(x, 1)", "x = nn.AdaptiveAvgPool2d((1, 1))"), {}),
    # seed 45's "Remove normalisation from bn2": the layer set to None, forward still calling it
    "removed-layers": ("source", BASE.replace("self.bn2 = nn.BatchNorm2d(64)", "self.bn2 = None  # removed"), {}),
    # seed 45's residual: an in-place sum of a tensor autograd saved (training failed at its first step)
    "inplace": ("source", BASE.replace("        x = self.bn3(x)\n", "        x = self.bn3(x)\n        x += self.conv4(x)\n")
                .replace("        self.pool =", "        self.conv4 = nn.Conv2d(128, 128, 3, padding=1)\n        self.pool ="), {}),
    # seeds 43 and 45: forward ends with the head's output in x and no return (the net returned None)
    "return": ("source", BASE.replace("        return self.fc(x)\n", "        x = self.fc(x)\n"), {}),
    "float-sizes": ("source", BASE.replace("nn.Linear(128, num_classes)", "nn.Linear(128 * 1.5, num_classes)"), {}),
    "example-usage": ("source", BASE + "\nnet = Net()\nprint(net)\n", {}),
    "imports": ("source", BASE.replace("import torch.nn.functional as F\n", ""), {}),  # seed 44's last slip
    "shapes": ("preflight", BASE.replace("self.conv3 = nn.Conv2d(64, 128, 3", "self.conv3 = nn.Conv2d(64, 256, 3"),
               {"failure": True}),
    # seed 43 and 44's slip: conv3 widened far past the parameter budget, the repair told so came back as wide
    "budget": ("preflight", BASE.replace("nn.Conv2d(64, 128, 3", "nn.Conv2d(64, 4096, 3")
               .replace("nn.BatchNorm2d(128)", "nn.BatchNorm2d(4096)").replace("nn.Linear(128,", "nn.Linear(4096,"),
               {"failure": True}),
    # the Improver's "Add a residual connection around conv2", applied by the loop to the base net
    "change": ("change", BASE, {"change": {"operator": "add_residual", "target": "conv2", "arguments": ""}}),
}


def test_every_registered_fix_has_a_slip_here():
    assert set(SLIPS) == set(NAMES) and [f.name for f in FIXES] == list(NAMES)
    assert {f.stage for f in FIXES} == {"reply", "source", "preflight", "change"}


def context(spec: dict, text: str) -> Context:
    layers = traced(text)[1] if spec.get("change") else ""
    return Context(base_code=spec.get("base_code", ""), failure=preflight_failure(text) if spec.get("failure") else {},
                   change=spec.get("change", {}), layers=layers)


@pytest.mark.parametrize("name", NAMES)
def test_a_fix_applies_through_the_registry_and_is_switched_off_by_name(name):
    stage, text, spec = SLIPS[name]
    ctx = context(spec, text)
    code, edits = apply_stage(stage, text, ctx, NAMES)
    assert [e.name for e in edits] == [name] and code is not None and code != text
    assert edits[0].to_dict() == {"name": name, "stage": stage, "note": edits[0].note} and edits[0].note
    off = tuple(n for n in NAMES if n != name)
    code, edits = apply_stage(stage, text, ctx, off)
    assert edits == [] and code == (None if stage == "reply" else text)


def test_source_fixes_chain_in_registry_order():
    text = SLIPS["brackets"][1].replace("nn.Linear(128, num_classes))", "nn.Linear(128 * 1.5, num_classes))")
    text += "\nnet = Net()\n"
    code, edits = apply_stage("source", text, Context(), NAMES)
    assert [e.name for e in edits] == ["brackets", "float-sizes", "example-usage"]
    assert "nn.Linear(192, num_classes)\n" in code and "net = Net()" not in code


def test_cli_switches_each_fix_and_each_behaviour_separately():
    def options(*argv: str) -> LoopOptions:
        args = make_parser().parse_args(["search", *argv])
        args.fidelity = args.fidelity or "train"
        return loop_options(args)

    assert options() == LoopOptions()
    one = options("--no-fix", "shapes", "--no-fix", "brackets")
    assert one.fixes == tuple(n for n in NAMES if n not in ("shapes", "brackets")) and one.escape
    assert options("--no-fixes").fixes == () and options("--no-fixes").repeat_check
    assert options("--no-escape") == LoopOptions(escape=False)
    assert options("--no-repeat-check") == LoopOptions(repeat_check=False)
    assert options("--no-replace") == LoopOptions(replace_suggestions=False)
    assert options("--no-improver-chat") == LoopOptions(improver_chat=False)
    assert options("--k", "3") == LoopOptions(k=3)
    assert options("--plain") == LoopOptions.plain() and not LoopOptions.plain().improver_chat
    with pytest.raises(SystemExit):
        make_parser().parse_args(["search", "--no-fix", "nope"])
    with pytest.raises(ValueError, match="unknown fix"):
        LoopOptions(fixes=("nope",))


def test_fix_counts_read_new_and_old_records():
    records = [{"fixes": [{"name": "brackets", "stage": "source", "note": "n"},
                          {"name": "shapes", "stage": "preflight", "note": "m"}]},
               {"fixes": [{"name": "shapes", "stage": "preflight", "note": "k"}]},
               {"autofix": "removed 1 unmatched closing bracket(s)", "shape_fixes": ["a", "b"]}]  # before the registry
    assert fix_counts(records) == {"brackets": 1, "shapes": 4, "source (older run)": 1}




def test_a_net_over_the_budget_is_narrowed_then_resized_until_the_preflight_passes():
    """The loop agent/loop/fidelity.py runs: the budget fix narrows conv3 to the width the host named, the
    shapes fix then resizes bn3 and fc to it, one pre-flight each; the net passes, nothing else changed."""
    code, made, seen = SLIPS["budget"][1], [], []
    while (failure := preflight_failure(code)) is not None:
        layer = fix_target(failure)
        assert layer is not None and layer not in seen, failure
        code, edits = apply_stage("preflight", code, Context(failure=failure), NAMES)
        seen.append(layer)
        made += [e.name for e in edits]
    assert made == ["budget", "shapes", "shapes"] and seen == ["conv3", "bn3", "fc"]
    width = int(code.split("self.conv3 = nn.Conv2d(64, ", 1)[1].split(",", 1)[0])
    assert 8 <= width < 4096 and width % 8 == 0
    assert f"nn.BatchNorm2d({width})" in code and f"nn.Linear({width}, num_classes)" in code
    assert code.replace(str(width), "4096") == SLIPS["budget"][1]


def test_a_net_over_the_flop_budget_has_its_costliest_conv_narrowed():
    """No downsampling until the end: conv3 (256 channels at 32x32) costs most; narrowed to the width the
    host names, and fc resized after it, the net fits a 500 MFLOP budget."""
    from pathlib import Path

    from nasloop.sandbox import runner
    from nasloop.tools.outcome import _from_error

    def preflight(code: str) -> dict | None:
        ns: dict = {}
        exec(compile(code, "candidate.py", "exec"), ns)  # noqa: S102 - our own test input
        failure, facts = runner.preflight(ns["Net"], 10, 3, 32, 2_000_000, max_flops=1_200_000_000)
        return None if failure is None else _from_error({**facts, **failure}, 0.0, {"params": facts.get("params")}).failure

    code = (Path(__file__).parents[1] / "candidates" / "flops_hog.py").read_text()
    first = preflight(code)
    assert first is not None and first["budget"]["fit"] == {"name": "conv3", "type": "Conv2d", "width": 256, "to": 112}
    made = []
    while (failure := preflight(code)) is not None:
        code, edits = apply_stage("preflight", code, Context(failure=failure), NAMES)
        assert edits, failure
        made += [e.note for e in edits]
    assert made == ["self.conv3 = nn.Conv2d(...): out_channels 256 -> 112 (to fit the budget)",
                    "self.fc = nn.Linear(...): in_features 256 -> 112 (the input it gets)"]


def test_a_dropped_import_is_added_and_nothing_else_is_touched():
    from nasloop.agent.fixes.imports import add_missing_imports

    code, note = add_missing_imports(SLIPS["imports"][1])
    assert code == BASE and note == "added import torch.nn.functional as F"
    assert add_missing_imports(BASE) == (BASE, "")
    shadowed = BASE.replace("import torch.nn.functional as F\n", "").replace("def forward(self, x", "def forward(self, F, x")
    assert add_missing_imports(shadowed) == (shadowed, "")  # F is bound (a parameter): not the module
    assert add_missing_imports("x = (") == ("x = (", "")


def test_forward_written_into_init_becomes_the_base_forward_with_the_candidates_layers():
    """Seed 45: the Generator wrote __init__ (conv2 widened, a comment, conv1 dropped), then forward's last two
    lines, never `def forward`; the repair did the same. Fixed, it is the base forward over the new layers."""
    init = BASE[:BASE.index("    def forward")].replace("nn.Conv2d(32, 64, 3", "nn.Conv2d(32, 96, 3").replace(
        "nn.BatchNorm2d(64)", "nn.BatchNorm2d(96)").replace("nn.Conv2d(64, 128", "nn.Conv2d(96, 128")
    init = init.replace("        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)\n", "")
    tail_and_late_fc = init.replace("        self.fc = nn.Linear(128, num_classes)\n", "").rstrip() + (
        "\n        # widened conv2\n        x = torch.flatten(x, 1)\n        return self.fc(x)\n"
        "        self.fc = nn.Linear(128, num_classes)\n")
    assert "Net has no forward method" in check_source(tail_and_late_fc).reason
    code, edits = apply_stage("source", tail_and_late_fc, Context(base_code=BASE), NAMES)
    assert [e.name for e in edits] == ["forward", "definitions"]
    assert edits[0].note.startswith("moved 2 forward statement(s) out of Net.__init__ into forward, after the 12")
    assert check_source(code) is None
    net = load_net(code)
    assert net.conv2.out_channels == 96 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # the dropped conv1 is restored where the base has it: first, before bn1
    assert code.index("self.conv1 =") < code.index("self.bn1 =") < code.index("def forward")
    body = code[code.index("def forward"):]
    assert body.index("x = self.conv1(x)") < body.index("x = torch.flatten(x, 1)") < body.index("return self.fc(x)")


def test_a_whole_forward_written_into_init_is_moved_as_it_is():
    """No line of it is the base's: the model's own forward is kept, not replaced by the base's."""
    init = BASE[:BASE.index("    def forward")].rstrip()
    code = init + ("\n        x = self.pool(F.relu(self.bn1(self.conv1(x))))\n"
                   "        x = F.relu(self.bn3(self.conv3(F.relu(self.bn2(self.conv2(x))))))\n"
                   "        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))\n")
    fixed, edits = apply_stage("source", code, Context(base_code=BASE), NAMES)
    assert [e.name for e in edits] == ["forward"] and edits[0].note.endswith("into forward")
    assert "x = self.bn1(x)" not in fixed and "x = self.pool(F.relu(" in fixed and check_source(fixed) is None
    assert load_net(fixed)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_forwards_work_written_into_init_beside_a_forward_is_removed_where_nothing_reads_it():
    """Seed 45, twice: `self.relu1 = F.relu(self.bn1(self.conv1(x)))` in __init__ of a net whose forward did
    the same; the net failed to build (NameError: x)."""
    line = "        self.fc = nn.Linear(128, num_classes)\n"
    stray = BASE.replace(line, line + "        self.relu1 = F.relu(self.bn1(self.conv1(x)))\n")
    with pytest.raises(NameError):
        load_net(stray)
    code, edits = apply_stage("source", stray, Context(base_code=BASE), NAMES)
    assert [e.name for e in edits] == ["forward"] and "removed self.relu1 from Net.__init__" in edits[0].note
    assert code == BASE and load_net(code)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    read = stray.replace("return self.fc(x)", "return self.fc(x + self.relu1)")  # read in forward: not stray
    assert apply_stage("source", read, Context(base_code=BASE), ("forward",)) == (read, [])
    # seed 44: a chain of them, each reading the one before
    chain = stray.replace("        self.relu1 = F.relu(self.bn1(self.conv1(x)))\n", "        self.relu1 = F.relu(self.conv1(x))\n"
                          "        self.relu2 = F.relu(self.conv2(self.relu1(x)))\n")
    code, edits = apply_stage("source", chain, Context(base_code=BASE), ("forward",))
    assert code == BASE and "self.relu1, self.relu2" in edits[0].note


def test_a_net_with_its_forward_or_a_nested_forward_is_left_alone():
    assert apply_stage("source", BASE, Context(base_code=BASE), ("forward",)) == (BASE, [])
    nested = BASE[:BASE.index("    def forward")] + "        def forward(self, x):\n            return self.fc(x)\n"
    assert "is inside another method" in check_source(nested).reason
    code, edits = apply_stage("source", nested, Context(base_code=BASE), ("forward",))
    assert edits == []


def load_net(code: str) -> torch.nn.Module:
    """The candidate's Net, built (test code only: these candidates are the tests' own)."""
    namespace: dict = {}
    exec(compile(code, "candidate.py", "exec"), namespace)
    return namespace["Net"]()


def test_the_removed_layer_inplace_and_return_fixes_give_nets_that_train():
    """Failed candidates of seeds 43 and 45, fixed, run forward and backward (each failed before)."""
    for name in ("removed-layers", "inplace", "return"):
        _, text, _ = SLIPS[name]
        code, edits = apply_stage("source", text, Context(), NAMES)
        assert [e.name for e in edits] == [name] and code is not None
        scope: dict = {}
        exec(compile(code, "candidate.py", "exec"), scope)
        net = scope["Net"]()
        net(torch.randn(2, 3, 32, 32)).sum().backward()
    # seed 44: the guard in forward (the best net of iteration 6), then moved into __init__ by four rewrites
    guarded = BASE.replace("self.bn3 = nn.BatchNorm2d(128)", "self.bn3 = None").replace(
        "        x = self.bn3(x)\n", "        if self.bn3 is not None:\n            self.bn3 = None\n")
    moved = guarded.replace("        self.bn3 = None\n", "        if self.bn3 is not None:\n            self.bn3 = None\n", 1)
    for text in (guarded, moved):
        code, edits = apply_stage("source", text, Context(), NAMES)
        assert [e.name for e in edits] == ["removed-layers"] and "bn3" not in code, code
        scope = {}
        exec(compile(code, "candidate.py", "exec"), scope)
        assert scope["Net"]()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    kept = "        x += 1\n        y = [1]\n        y += [2]\n"  # out of forward, or on an int: the same value
    code, note = fix_inplace(BASE.replace("        x = self.conv1(x)\n", "        x = self.conv1(x)\n        x -= 0.5 * x\n"))
    assert "x = x - (0.5 * x)" in code and note  # the sum of a sum keeps its brackets
    assert fix_inplace("def f(x):\n" + kept) == ("def f(x):\n" + kept, "")


def test_a_forward_that_returns_on_some_path_or_ends_otherwise_is_left_alone():
    from nasloop.agent.fixes.returns import add_missing_return

    branch = BASE.replace("        return self.fc(x)\n", "        if x.shape[0] > 1:\n            return self.fc(x)\n"
                          "        x = self.fc(x)\n")
    called = BASE.replace("        return self.fc(x)\n", "        print(x)\n")
    assert add_missing_return(branch) == (branch, "") and add_missing_return(called) == (called, "")
