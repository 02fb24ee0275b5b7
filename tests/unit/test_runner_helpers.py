"""Pure helpers of the in-sandbox harness (importing it touches no file descriptor)."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nasloop.sandbox import device_data, runner
from nasloop.tools.text import trace_text


def run_traced(model, x):
    trace = runner.ShapeTrace(model)
    try:
        model(x)
    except RuntimeError:
        pass
    rec = trace.record()
    trace.remove()
    return rec


def test_shape_trace_records_leaves_and_the_failing_module_as_data():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 10))
    rec = run_traced(model, torch.zeros(2, 3, 8, 8))
    assert [(lay["name"], lay["type"], lay["out"]) for lay in rec["layers"]] == [
        ("0", "Conv2d", [8, 8, 8]), ("1", "MaxPool2d", [8, 4, 4]), ("2", "Flatten", [128])]
    assert rec["failed"]["name"] == "3" and rec["failed"]["in"] == [128]
    assert rec["failed"]["repr"].startswith("Linear(in_features=100")
    assert not model._forward_hooks and not model[0]._forward_pre_hooks
    text = trace_text(rec)
    assert text.startswith("0 Conv2d→8x8x8 | 1 MaxPool2d→8x4x4 | 2 Flatten→128 | ✗ 3 Linear(in_features=100")
    assert text.endswith("got 128")


def test_shape_trace_text_is_bounded_and_keeps_the_failure():
    model = nn.Sequential(*[nn.Identity() for _ in range(60)], nn.Linear(5, 2))
    text = trace_text(run_traced(model, torch.zeros(1, 7)), limit=120)
    assert len(text) <= 120 and text.startswith("… |") and "✗ 60 Linear" in text


def test_a_module_that_defines_eq_is_the_candidates_failure(tmp_path, digits_view):
    from tests.conftest import CANDIDATES

    cfg = {"num_classes": 10, "in_channels": 1, "image_size": 32, "min_steps": 1, "batch_size": 16}
    res = runner.run(cfg, str(CANDIDATES / "eq_module.py"), str(digits_view), str(tmp_path))
    assert res["status"] == "error" and res["exc_type"] == "TypeError" and "unhashable" in res["message"]
    assert res["phase"] in ("build", "forward")


@pytest.mark.parametrize("name,layout,trained_in", [
    ("ok_tiny", "auto", "channels_last"),
    ("ok_view_flatten", "auto", "contiguous"),  # x.view(B, -1) cannot run on a channels_last map
    ("ok_tiny", "contiguous", "contiguous"),
])
def test_the_harness_trains_channels_last_unless_the_net_runs_only_in_nchw(tmp_path, digits_view, name, layout,
                                                                           trained_in):
    from tests.conftest import CANDIDATES

    cfg = {"num_classes": 10, "in_channels": 1, "image_size": 32, "epochs": 0, "min_steps": 2, "batch_size": 16,
           "layout": layout}
    res = runner.run(cfg, str(CANDIDATES / f"{name}.py"), str(digits_view), str(tmp_path))
    assert res["status"] == "ok", res
    assert res["layout"] == trained_in and res["steps"] == 2


def test_error_records_survive_a_hostile_exception():
    class Evil(Exception):
        def __str__(self):
            raise RuntimeError("no")

    rec = runner.error("train", Evil())
    assert rec["exc_type"] == "Evil" and rec["phase"] == "train" and "Evil" in rec["message"]


def test_buffers_count_against_the_budget():
    model = nn.Linear(2, 2)
    model.register_buffer("hidden", torch.zeros(1000))
    assert runner.tensor_count(model) == 1006
    assert runner.over_budget(runner.tensor_count(model), 100, model)["exc_type"] == "BudgetError"


def test_output_names_match_the_host():
    from nasloop.sandbox import outputs

    assert (runner.RESULT, runner.PREDICTIONS, runner.WEIGHTS, runner.TRAINING_MARK) == (
        outputs.RESULT, outputs.PREDICTIONS, outputs.WEIGHTS, outputs.TRAINING_MARK)


def test_random_crop_keeps_shape_and_content_range():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = device_data.random_crop(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= x.min() and y.max() <= x.max()


def test_one_cycle_schedule():
    lrs = [runner.lr_at(s, 100, 0.1) for s in range(100)]
    assert max(lrs) == 0.1 and lrs.index(0.1) == 19 and lrs[0] < 0.01 and lrs[-1] < 0.01


def _load(name: str):
    from tests.conftest import candidate

    ns: dict = {}
    exec(compile(candidate(name), f"{name}.py", "exec"), ns)  # noqa: S102 - a test fixture of ours
    return ns["Net"]


def test_preflight_counts_flops_on_the_meta_device_and_enforces_the_budget():
    from nasloop import prompts

    ns: dict = {}
    exec(compile(prompts.seed_source("default"), "seed.py", "exec"), ns)  # noqa: S102
    fail, info = runner.preflight(ns["Net"], 10, 3, 32, 2_000_000, max_flops=100_000_000)
    assert fail is None and info["preflight"] == "passed" and 15_000_000 < info["flops"] < 30_000_000
    fail, info = runner.preflight(_load("flops_hog"), 10, 3, 32, 2_000_000, max_flops=100_000_000)
    assert fail["exc_type"] == "BudgetError" and fail["phase"] == "interface"
    assert fail["flops"] == info["flops"] > 800_000_000 and fail["max_flops"] == 100_000_000
    assert [lay["name"] for lay in fail["largest"]] == ["conv3", "conv2", "conv1"]
    assert "the budget is 100,000,000; most FLOPs: conv3 " in fail["message"]
    assert runner.preflight(_load("flops_hog"), 10, 3, 32, 2_000_000, max_flops=0)[0] is None  # no cap


def _net(source: str):
    ns: dict = {}
    exec(compile(source, "net.py", "exec"), ns)  # noqa: S102 - test sources of ours
    return ns["Net"]


def test_a_structural_duplicate_is_found_whatever_its_names_layout_and_comments():
    from nasloop import prompts

    seed = prompts.seed_source("default")
    renamed = (seed.replace("conv1", "stem").replace("bn1", "norm_a").replace("self.pool", "self.down")
               .replace("    def forward", "    # the same net, written differently\n    def forward")
               .replace("x = F.relu(x)", "x = torch.relu(x)"))  # a function instead of another: same operation
    gelu = seed.replace("x = F.relu(x)\n        x = F.adaptive", "x = F.gelu(x)\n        x = F.adaptive")
    wider = seed.replace("128", "160")
    keys = {}
    for name, src in (("seed", seed), ("renamed", renamed), ("gelu", gelu), ("wider", wider)):
        fail, info = runner.preflight(_net(src), 10, 3, 32, 2_000_000)
        assert fail is None, fail
        keys[name] = info["structure"]
    assert keys["renamed"] == keys["seed"] and len({keys["seed"], keys["gelu"], keys["wider"]}) == 3
    fail, info = runner.preflight(_net(renamed), 10, 3, 32, 2_000_000, known={keys["seed"]: 0})
    assert fail["phase"] == "duplicate" and fail["of"] == 0 and "iteration 0" in fail["message"]


def test_weight_initialisation_and_frozen_layers_are_part_of_the_structure():
    from nasloop import prompts

    seed = prompts.seed_source("default")
    kaiming = seed.replace("        self.fc = nn.Linear(128, num_classes)\n",
                           "        self.fc = nn.Linear(128, num_classes)\n"
                           "        nn.init.kaiming_normal_(self.conv1.weight)\n")
    frozen = seed.replace("        self.fc = nn.Linear(128, num_classes)\n",
                          "        self.fc = nn.Linear(128, num_classes)\n"
                          "        self.conv1.weight.requires_grad_(False)\n")
    keys = {name: runner.preflight(_net(src), 10, 3, 32, 2_000_000)[1]["structure"]
            for name, src in (("seed", seed), ("kaiming", kaiming), ("frozen", frozen))}
    assert len(set(keys.values())) == 3, keys


def test_only_a_well_formed_progress_note_is_believed(tmp_path):
    """The progress file is written in the candidate's process: the host reads it as hostile bytes."""
    import os

    from nasloop.sandbox.outputs import PROGRESS, read_progress

    note = tmp_path / PROGRESS
    assert read_progress(tmp_path) is None  # not written yet
    for bad in (b"", b"12", b"5 3", b"-1 10", b"1 2 3", b"9" * 40 + b" 1", b"1e3 2000", b"7 10\n" + b"x" * 100):
        note.write_bytes(bad)
        assert read_progress(tmp_path) is None, bad
    note.write_bytes(b"7 10")
    assert read_progress(tmp_path) == (7, 10)
    note.unlink()
    os.symlink("/etc/hostname", note)  # a link to a host file is not followed
    assert read_progress(tmp_path) is None
    note.unlink()
    os.mkfifo(note)  # nor does a FIFO block the host
    assert read_progress(tmp_path) is None


def test_a_process_sandbox_whose_interpreter_lacks_torch_is_unusable_not_a_candidate_failure(monkeypatch):
    """As when nasloop's graph runs under another interpreter (e.g. langgraph dev from elsewhere): one line
    at start, before any candidate could be blamed."""
    import shutil
    import sys

    import pytest

    from nasloop.sandbox.base import SandboxUnavailable
    from nasloop.sandbox.process_sandbox import ProcessSandbox

    bare = "/usr/bin/python3" if shutil.os.path.exists("/usr/bin/python3") else None
    if bare is None or bare == sys.executable:
        pytest.skip("no interpreter without torch on this machine")
    monkeypatch.setattr(sys, "executable", bare)
    with pytest.raises(SandboxUnavailable, match="lacks torch, numpy or safetensors"):
        ProcessSandbox()


def test_the_harness_counts_and_exports_what_the_net_registered_not_what_its_methods_say():
    from nasloop.sandbox.preflight import own_tensors, tensor_count
    from tests.conftest import candidate

    ns: dict = {}
    exec(compile(candidate("attack_hide_parameters"), "candidate.py", "exec"), ns)  # noqa: S102 - a test input
    hidden = ns["Net"](in_channels=1)
    assert sum(p.numel() for p in hidden.parameters()) == 0 and len(hidden.state_dict()) == 1  # what it shows
    assert tensor_count(hidden) == 4_472_458 and list(own_tensors(hidden, buffers=False)) == [
        "conv.weight", "conv.bias", "hidden.weight", "hidden.bias", "wide.weight", "wide.bias", "fc.weight", "fc.bias"]

    class Honest(nn.Module):  # a shared layer, norm buffers, a non-persistent buffer
        def __init__(self):
            super().__init__()
            self.a, self.bn = nn.Linear(3, 3), nn.BatchNorm2d(4)
            self.b = self.a
            self.register_buffer("mask", torch.ones(5), persistent=False)

    net = Honest()
    assert tensor_count(net) == sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    exported = own_tensors(net)  # each tensor once (the host counts what it is sent), every buffer
    assert list(exported) == ["mask", "a.weight", "a.bias", "bn.weight", "bn.bias", "bn.running_mean",
                              "bn.running_var", "bn.num_batches_tracked"]
    missing, unexpected = net.load_state_dict(exported, strict=False)  # how exported weights load back
    assert missing == ["b.weight", "b.bias"] and unexpected == ["mask"]

    class Forged(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self._parameters = {"w": "not a tensor"}

    with pytest.raises(TypeError, match="w is a str"):
        tensor_count(Forged())


def _candidate_net(name: str, **kw):
    from tests.conftest import candidate

    ns: dict = {}
    exec(compile(candidate(name), "candidate.py", "exec"), ns)  # noqa: S102 - a test input
    return ns["Net"](**kw)


def _step(net, count, x, y):
    with count:
        loss = nn.functional.cross_entropy(net(x), y)
        count.backward = True
        loss.backward()


def test_a_counted_step_sees_work_and_weights_the_net_hides():
    from nasloop.sandbox.counting import StepCount, own_tensors

    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    net = _candidate_net("attack_hidden_tensor", in_channels=1)
    count = StepCount([*own_tensors(net).values(), x, y])
    _step(net, count, x, y)
    assert sum(count.hidden.values()) == 3_000_000  # a plain tensor attribute, read by the step
    assert count.flops[0] > 0 and count.flops[1] > 0

    net = _candidate_net("attack_replay_in_backward", in_channels=1)
    steps = []
    for _ in range(3):  # the hook keeps each batch; from the second step on it replays them in backward
        count = StepCount([*own_tensors(net).values(), x, y])
        _step(net, count, x, y)
        steps.append(count.flops)
    assert steps[0][1] < 1.1 * steps[0][0] and steps[2][1] > 4 * steps[2][0], steps  # 2 batches replayed

    class Honest(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
            self.fc, self.scale = nn.Linear(512, 10), nn.Parameter(torch.ones(1))

        def forward(self, x):  # scalars, a constant made in the step, a parameter read through .data
            return self.fc(self.body(x) * 0.5 * self.scale.data) + torch.tensor(0.1)

    honest = Honest()
    count = StepCount([*own_tensors(honest).values(), x, y])
    _step(honest, count, x, y)
    assert count.hidden == {} and count.flops[1] <= 2 * count.flops[0]  # an honest step reads nothing else


def test_a_parameter_viewing_a_larger_storage_counts_the_storage():
    """numel of a 16-value view says 16; the storage it keeps alive (and a net can train through
    as_strided) holds 3M. A tied layer is still counted once."""
    from nasloop.sandbox.counting import StepCount, own_tensors, tensor_count

    class View(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3_000_000)[:16])
            self.a = nn.Linear(4, 4)
            self.b = self.a

    assert tensor_count(View()) == 3_000_000 + 20
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    net = _candidate_net("attack_strided_parameter", in_channels=1)
    assert tensor_count(net) < 1000  # before its first forward
    count = StepCount([*own_tensors(net).values(), x, y])
    _step(net, count, x, y)
    assert tensor_count(net) > 3_000_000  # grown in that forward: the runner counts it after each counted step

    net = _candidate_net("attack_fresh_chunks", in_channels=1)
    count = StepCount([*own_tensors(net).values(), x, y])
    _step(net, count, x, y)
    assert count.hidden == {} and count.unregistered() == 733 * 4096  # small constants, 3M of them together


def test_the_harness_switches_train_and_eval_without_calling_the_net(tmp_path, digits_view):
    """A net's own train()/eval() ran uncounted just before its predictions: where a net replays the batches
    it kept there, nothing measures it. The harness sets each module's flag from the registries instead; this
    net's train() and eval() refuse to run at all, and it trains and predicts."""
    path = tmp_path / "candidate.py"
    path.write_text((Path(__file__).parents[1] / "candidates" / "ok_tiny.py").read_text() + '''

    def train(self, mode=True):
        raise RuntimeError("the harness called the net's own train()")

    def eval(self):
        raise RuntimeError("the harness called the net's own eval()")
''')
    cfg = {"num_classes": 10, "in_channels": 1, "image_size": 32, "epochs": 0, "min_steps": 2, "batch_size": 16}
    (tmp_path / "out").mkdir()
    res = runner.run(cfg, str(path), str(digits_view), str(tmp_path / "out"))
    assert res["status"] == "ok" and res["steps"] == 2, res
