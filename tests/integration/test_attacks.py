"""Candidates written to cheat or to stop the search, run in the real sandbox: each must end as its own
safe outcome, with the host untouched. One real candidate program per attack in tests/candidates/attack_*.py.

The same suite runs through the cold Docker sandbox (a container per candidate) and the warm worker (one
long-lived container, a fresh child process per candidate)."""
from __future__ import annotations

import os
import re
from dataclasses import replace

import pytest
from safetensors.numpy import load_file

from nasloop.sandbox import Limits, make_sandbox
from nasloop.sandbox.warm import WarmSandbox
from tests.conftest import candidate
from nasloop.tools.evaluator import Evaluator, TrainSettings

pytestmark = pytest.mark.integration

FAST = TrainSettings(min_steps=8, batch_size=64)
LIMITS = Limits(memory_bytes=2 * 1024**3, cpus=2, pids=64, timeout_s=60, preflight_s=30)
BACKENDS = ["docker", "warm"]


@pytest.fixture(scope="module", params=BACKENDS)
def evaluator(request, docker_engine, digits):
    sandbox = make_sandbox(request.param, limits=LIMITS)
    yield Evaluator(digits, sandbox, FAST)
    close = getattr(sandbox, "close", None)
    if close:
        close()


def run(evaluator, name: str, static: bool = False):
    out = evaluator.evaluate(candidate(name), static_check=static)
    assert out.kind != "sandbox_error", out.summary()  # nothing a candidate does may stop the search
    out.diagnosis.encode("utf-8")  # printable: no lone surrogates
    assert "\x1b" not in out.diagnosis
    return out


def test_the_test_labels_are_nowhere_in_reach(evaluator):
    out = run(evaluator, "attack_find_labels")
    labels = re.search(r"LABELS (\S*)", out.diagnosis).group(1).split(",")
    assert labels and all("test_y" not in p for p in labels), out.diagnosis
    assert any(p.endswith("train_y.npy") for p in labels)  # training labels are the candidate's to use


@pytest.mark.parametrize("name", ["attack_patch_compare", "attack_aten_override", "attack_forge_outputs"])
def test_forged_accuracy_is_not_believed(evaluator, name):
    out = run(evaluator, name)
    honest = run(evaluator, "ok_tiny")
    assert honest.accuracy is not None, f"the honest baseline did not run: {honest.summary()}"
    assert out.accuracy is None or out.accuracy <= max(0.3, honest.accuracy + 0.1), out.summary()
    if out.accuracy is not None:
        assert "accuracy" in out.verified  # computed by the host from predictions, against its own labels


def test_a_forged_nested_result_is_refused(evaluator):
    out = run(evaluator, "attack_nested_result")
    assert out.kind == "runtime_error" and "refused" in out.diagnosis


@pytest.mark.parametrize("name,pattern", [
    ("attack_evil_str", r"Evil"),
    ("eq_module", r"unhashable"),
    ("attack_exit_in_training", r"end the process \(SystemExit"),
])
def test_candidate_exceptions_never_stop_the_search(evaluator, name, pattern):
    out = run(evaluator, name)
    assert out.kind == "runtime_error" and re.search(pattern, out.diagnosis), out.summary()


def test_terminal_escapes_are_shown_not_obeyed(evaluator):
    out = run(evaluator, "attack_terminal_escape", static=True)
    assert out.kind == "runtime_error"
    assert "\\x1b[2K" in out.diagnosis and "\\u202e" in out.diagnosis and "\\ud800" in out.diagnosis


@pytest.mark.parametrize("name,kind,pattern", [
    ("attack_sigkill_self", "runtime_error", r"SIGKILL \(not by the memory limit\)"),
    ("attack_fake_cuda_oom", "runtime_error", r"exit code 1"),
    ("attack_blocking_thread", "ok", r""),
])
def test_no_misclassification_from_exit_codes_or_words(evaluator, name, kind, pattern):
    out = run(evaluator, name)
    assert out.kind == kind and re.search(pattern, out.diagnosis), out.summary()


def test_buffers_count_against_the_parameter_budget(evaluator):
    out = run(evaluator, "attack_hidden_buffer", static=True)
    assert out.kind == "interface_error" and "BudgetError" in out.diagnosis and out.params > 5_000_000


def test_a_net_cannot_hide_its_parameters_from_the_budget_or_the_host(evaluator, digits):
    """Its own parameters(), named_parameters(), buffers() and state_dict() show 160 values of 4,472,458: the
    harness reads nn.Module's registries itself, so the budget refuses it, and with room the host counts all."""
    out = run(evaluator, "attack_hide_parameters", static=True)
    assert out.kind == "interface_error" and "Net has 4,472,458 parameters" in out.diagnosis, out.summary()
    roomy = Evaluator(digits, evaluator.sandbox, replace(FAST, max_params=10_000_000))
    out = run(roomy, "attack_hide_parameters", static=True)
    assert out.kind == "ok" and out.params == 4_472_458 and "params" in out.verified, out.summary()


def test_parameters_added_after_the_budget_check_are_counted_by_the_host(evaluator):
    out = run(evaluator, "attack_grow_after_budget", static=True)
    assert out.kind == "interface_error" and out.accuracy is None, out.summary()
    assert out.diagnosis.startswith("BudgetError: Net has 3,000,170 parameters") and out.params > 3_000_000


def test_work_hidden_after_the_first_step_meets_the_flop_budget(evaluator, digits):
    """The net adds the gradients of the batches it kept (their labels read from its logits' gradient) to its
    weights' gradients from the second step on, inside a backward hook (its forward: +1%); a training step is
    counted again, forward and backward, at steps it cannot predict or detect."""
    name = "attack_replay_into_grads"
    honest = Evaluator(digits, evaluator.sandbox, replace(FAST, mode="preflight")).evaluate(candidate(name))
    assert honest.ok and honest.flops, honest.summary()
    capped = Evaluator(digits, evaluator.sandbox, replace(FAST, max_flops=int(1.01 * honest.flops)))
    out = run(capped, name, static=True)
    assert out.kind == "interface_error" and "BudgetError" in out.diagnosis, out.summary()
    assert "forward and backward" in out.diagnosis, out.summary()


@pytest.mark.parametrize("name,why", [
    ("attack_replay_batches", "changed its weight body.0.weight during training step 1"),  # SGD steps in forward
    ("attack_replay_in_backward", "changed its weight body.0.weight during training step 2"),  # computed in backward
    ("attack_train_through_data", "changed its weight body.0.weight during training step 1"),  # `.data`: no version
    ("attack_swap_parameters", "replaced its weights during training step 1"),  # the optimizer's are left behind
    ("attack_buffer_weights", "changed its buffer w during training step 1"),  # weights no optimizer steps
    ("attack_grad_subclass", "the gradient of a weight is a Spy at training step 0"),  # code run by the optimizer
])
def test_a_net_that_trains_itself_beside_the_optimizer_is_refused(evaluator, name, why):
    """Several epochs for the price of one: SGD steps of its own on the batches it kept. After every step's
    forward and backward its weights must be the optimizer's, as the optimizer left them, its buffers as
    they were and its gradients plain tensors (no budget can be low enough to catch this: the work may be
    small)."""
    out = run(evaluator, name)
    assert out.kind == "runtime_error" and out.accuracy is None, out.summary()
    assert out.failure["exc_type"] == "WeightError" and why in out.diagnosis, out.summary()


def test_logits_that_run_the_nets_code_when_read_are_refused(evaluator):
    """Plain logits while training; at evaluation a tensor subclass whose first use (the harness's `.float()`,
    after the counted forward) trains the net for 20 epochs on the batches it kept."""
    out = run(evaluator, "attack_eval_subclass")
    assert out.kind == "runtime_error" and out.accuracy is None, out.summary()
    assert "Net returned a Spy, not a torch.Tensor" in out.diagnosis and out.failure["phase"] == "eval", out.summary()


@pytest.mark.parametrize("name", ["attack_unfold_conv", "attack_named_kernels"])
def test_convolutions_torch_has_no_formula_for_meet_the_flop_budget(evaluator, digits, name):
    """Torch's FLOP formulas see only the final linear layer (a conv as unfold, multiply and sum; convs through
    `conv_tbc` and a layer as `addmm_`); the pre-flight and the counted steps charge every other operation
    too, so their convolutions do not run for free."""
    out = run(Evaluator(digits, evaluator.sandbox, replace(FAST, max_flops=1_000_000)), name, static=True)
    assert out.kind == "interface_error" and "operations without a FLOP formula in torch" in out.diagnosis, out.summary()
    assert out.failure["budget"]["flops"] > 2_000_000 and "most FLOPs: Net (" in out.diagnosis, out.failure


def test_weights_kept_outside_the_registries_count_as_parameters(evaluator):
    out = run(evaluator, "attack_hidden_tensor", static=True)
    assert out.kind == "interface_error" and "neither parameters nor buffers" in out.diagnosis, out.summary()
    assert "3,000,000 of them" in out.diagnosis


def test_weights_in_a_parameters_larger_storage_or_in_small_constants_meet_the_budget(evaluator):
    """A 16-value parameter viewing a 3M-value storage it grew at the first forward; 3M weights rebuilt each step
    from Python numbers, 4,096 at a time: both count with the parameters (static check on)."""
    out = run(evaluator, "attack_strided_parameter", static=True)
    assert out.kind == "interface_error" and "Net has 3,0" in out.diagnosis, out.summary()
    out = run(evaluator, "attack_fresh_chunks", static=True)
    assert out.kind == "interface_error" and "neither parameters nor buffers" in out.diagnosis, out.summary()


def test_training_at_the_first_prediction_meets_the_flop_budget(evaluator):
    """The predictions are counted too: 20 epochs on kept batches at the first eval forward are refused."""
    out = run(evaluator, "attack_train_at_eval")
    assert out.kind == "interface_error" and "work done only when evaluated" in out.diagnosis, out.summary()
    assert out.accuracy is None
    assert run(evaluator, "ok_tiny").ok  # an honest net's predictions pass the same count


def test_a_candidate_filling_its_output_directory_is_stopped(evaluator):
    """out/ is a host directory: the file-size limit caps each file, the host caps them all together."""
    out = run(evaluator, "attack_fill_out")
    assert out.kind == "runtime_error" and "into its output directory" in out.diagnosis, out.summary()
    assert out.seconds < 30
    assert run(evaluator, "ok_tiny").ok  # and the next candidate runs (warm: on a new worker)


def test_a_candidate_hiding_data_in_unlinked_files_is_stopped(evaluator):
    """A file unlinked while open is in no listing of out/: the host sees its file system lose the space."""
    out = run(evaluator, "attack_hide_in_unlinked")
    assert out.kind == "runtime_error" and "into its output directory" in out.diagnosis, out.summary()
    assert out.seconds < 60


def test_endless_init_costs_the_preflight_deadline_not_the_training_limit(evaluator, digits):
    short = Evaluator(digits, make_sandbox("docker", limits=Limits(memory_bytes=2 * 1024**3, timeout_s=120,
                                                                   preflight_s=8)), FAST)
    out = short.evaluate(candidate("infinite_init"))
    assert out.kind == "timeout" and out.stage == "preflight" and "pre-flight" in out.diagnosis
    assert out.seconds < 40


def test_export_never_writes_through_the_candidates_links(evaluator, tmp_path):
    victim = "/tmp/nasloop-victim"
    with open(victim, "w") as f:
        f.write("precious")
    final = tmp_path / "final"
    final.mkdir()
    out = evaluator.evaluate(candidate("attack_symlink_out"), static_check=False, output_dir=final)
    assert out.kind == "ok", out.summary()
    assert open(victim).read() == "precious"
    assert [p.name for p in final.iterdir()] == ["weights.safetensors"]
    assert not (final / "weights.safetensors").is_symlink() and oct(os.stat(final).st_mode)[-3:] != "777"
    assert set(load_file(final / "weights.safetensors")) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}


def test_a_candidate_cannot_affect_the_next_one(evaluator):
    first = run(evaluator, "warm_leave_traces")
    assert first.kind == "ok", first.summary()
    out = run(evaluator, "warm_find_traces")
    assert "TRACES files=[] procs=[] ipc=0" in out.diagnosis, out.diagnosis


def test_gvisor_runtime_runs_the_same_judge(docker_engine, digits):
    """--runtime runsc: the same cold sandbox under gVisor (.ci/run registers it: make docker-engine RUNSC=1)."""
    if "runsc" not in (docker_engine.info().get("Runtimes") or {}):
        pytest.skip("the Docker engine has no 'runsc' runtime: run 'make docker-engine RUNSC=1'")
    ev = Evaluator(digits, make_sandbox("docker", limits=Limits(memory_bytes=2 * 1024**3, timeout_s=120,
                                                                pids=1024, runtime="runsc")), FAST)
    ok = ev.evaluate(candidate("ok_tiny"))
    assert ok.kind == "ok" and "accuracy" in ok.verified, ok.summary()
    out = run(ev, "attack_find_labels")
    assert "test_y" not in out.diagnosis and "train_y.npy" in out.diagnosis


def test_the_hosts_environment_is_out_of_reach(evaluator, monkeypatch):
    """Every /proc/*/environ the candidate can read (its PID namespace holds only sandbox processes)."""
    monkeypatch.setenv("NASLOOP_TEST_SECRET", "hunter2")
    out = run(evaluator, "attack_proc_environ")
    assert out.kind == "runtime_error" and "ENVIRON" in out.diagnosis
    assert "hunter2" not in out.diagnosis and "NASLOOP_TEST_SECRET" not in out.diagnosis


def test_data_sets_shipped_inside_packages_are_hidden(evaluator):
    """The venv is mounted into the sandbox; scikit-learn's bundled digits (with labels) must not be."""
    out = run(evaluator, "attack_packaged_labels")
    assert "SKLEARN False" in out.diagnosis and "digits.csv.gz" not in out.diagnosis, out.diagnosis


def test_signals_to_pid_1_do_not_stop_the_search(evaluator):
    out = run(evaluator, "attack_signal_worker")
    # The warm worker ignores them; the cold container's kill-timer passes them on to the candidate's own
    # process, which then ends as its own runtime_error. Either way the next candidate runs.
    assert out.kind == "ok" if isinstance(evaluator.sandbox, WarmSandbox) else out.kind in ("ok", "runtime_error")
    assert run(evaluator, "ok_tiny").kind == "ok"


def test_deep_trees_and_locked_stashes_are_cleaned_up(evaluator, tmp_path):
    out = run(evaluator, "attack_deep_tree")
    assert out.kind == "runtime_error", out.summary()  # it left before the harness reported: its own failure
    traces = run(evaluator, "warm_find_traces")
    assert "TRACES files=[] procs=[] ipc=0" in traces.diagnosis, traces.diagnosis
