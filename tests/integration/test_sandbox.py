"""One real candidate program per outcome class, run in the real Docker sandbox.

Candidates that need `os`, `sys`, `socket` or `open` are run with the static check switched off: the
static check would reject them (see tests/unit/test_static_check.py); here the sandbox itself must hold.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import replace

import pytest

from nasloop.sandbox import Limits, make_sandbox
from tests.conftest import candidate
from nasloop.tools.evaluator import Evaluator, TrainSettings

pytestmark = pytest.mark.integration

FAST = TrainSettings(min_steps=8, batch_size=64)
LIMITS = Limits(memory_bytes=2 * 1024**3, cpus=2, pids=64, timeout_s=60)


@pytest.fixture(scope="module")
def evaluator(docker_engine, digits):
    return Evaluator(digits, make_sandbox("docker", limits=LIMITS), FAST)


def run(evaluator, name: str, static: bool = True, limits: Limits | None = None):
    if limits is not None:
        evaluator = Evaluator(evaluator.data, make_sandbox("docker", limits=limits), FAST)
    return evaluator.evaluate(candidate(name), static_check=static)


CASES = [
    # name, static check, outcome, diagnosis must match
    ("syntax_error", True, "syntax_error", r"SyntaxError.*candidate\.py:7"),
    ("syntax_error", False, "syntax_error", r"SyntaxError"),
    ("missing_net", True, "invalid_code", r"no top-level 'class Net"),
    ("missing_net", False, "interface_error", r"defines no class Net"),
    ("banned_import", True, "invalid_code", r"import of 'os' is not allowed"),
    ("wrong_output_shape", True, "interface_error", r"returned \(2, 5\).*expected \(2, 10\)"),
    # found by the meta-device pre-flight: PyTorch's meta message, the line, and the module trace
    ("shape_mismatch", True, "shape_error",
     r"(shapes cannot be multiplied|same reduction dim).*candidate\.py:17 in forward.*trace: .*✗ fc Linear"),
    ("runtime_error", True, "runtime_error", r"IndexError.*candidate\.py:11 in forward"),
    ("nan_forward", True, "diverged", r"nan"),
    ("sys_exit", False, "runtime_error", r"SystemExit"),
    ("os_exit", False, "runtime_error", r"exit code 0\) before the harness reported"),
    ("fake_result", False, "runtime_error", r"exit code 0\) before the harness reported"),
    ("network_attempt", False, "runtime_error", r"(Network is unreachable|OSError|gaierror)"),
    ("write_outside_tmp", False, "runtime_error", r"Read-only file system"),
]


@pytest.fixture(scope="module")
def warm_evaluator(docker_engine, digits):
    sandbox = make_sandbox("warm", limits=LIMITS)
    yield Evaluator(digits, sandbox, FAST)
    sandbox.close()


@pytest.mark.parametrize("backend", ["cold", "warm"])
@pytest.mark.parametrize("name,static,kind,pattern", CASES, ids=[f"{c[0]}-{'static' if c[1] else 'sandbox'}" for c in CASES])
def test_outcome_class(evaluator, warm_evaluator, backend, name, static, kind, pattern):
    out = run(evaluator if backend == "cold" else warm_evaluator, name, static)
    assert out.kind == kind, out.summary()
    assert re.search(pattern, out.diagnosis, re.IGNORECASE), out.diagnosis


def test_ok_candidate_reports_metrics(evaluator):
    out = run(evaluator, "ok_tiny")
    assert out.kind == "ok", out.summary()
    assert 0.0 <= out.accuracy <= 1.0
    # conv + bn (weights and buffers) + fc on 1-channel digits, counted by the host from the returned tensors
    assert out.params == sum([1 * 16 * 9 + 16, 32 + 33, 16 * 10 + 10]) and "params" in out.verified
    assert out.flops and out.flops > 0
    assert out.steps == 8 and out.images_per_s > 0 and out.peak_memory_bytes > 0


def test_memory_bomb_is_host_oom(evaluator):
    out = run(evaluator, "memory_bomb", limits=Limits(memory_bytes=1536 * 1024**2, timeout_s=90))
    assert out.kind == "host_oom", out.summary()
    assert "memory limit" in out.diagnosis


@pytest.mark.parametrize("name", ["infinite_init", "infinite_forward"])
def test_endless_loops_time_out(evaluator, name):
    out = run(evaluator, name, limits=Limits(memory_bytes=2 * 1024**3, timeout_s=12))
    assert out.kind == "timeout", out.summary()
    assert out.seconds < 40  # killed, not waited for
    assert "12 s wall-clock limit" in out.diagnosis


def test_fork_bomb_is_contained(evaluator):
    out = run(evaluator, "fork_bomb", static=False, limits=Limits(memory_bytes=2 * 1024**3, pids=64, timeout_s=30))
    # Forked copies of a torch process may exhaust the pids limit or the memory limit first.
    assert out.kind in ("runtime_error", "timeout", "host_oom"), out.summary()
    if out.kind == "runtime_error":
        assert re.search(r"(Resource temporarily unavailable|BlockingIOError|fork)", out.diagnosis), out.diagnosis
    # The host can still start processes.
    assert subprocess.run(["true"]).returncode == 0


def test_host_environment_is_not_visible(evaluator, monkeypatch):
    monkeypatch.setenv("NASLOOP_TEST_SECRET", "hunter2")
    out = run(evaluator, "read_environment", static=False)
    assert out.kind == "runtime_error", out.summary()
    names = set(re.search(r"ENV ([\w,]*)", out.diagnosis).group(1).split(","))
    assert "NASLOOP_TEST_SECRET" not in names
    # LC_CTYPE: Python's locale coercion
    assert names <= {"HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONDONTWRITEBYTECODE", "THP_MEM_ALLOC_ENABLE", "PATH",
                     "HOSTNAME", "LC_CTYPE", ""}
    assert os.environ["NASLOOP_TEST_SECRET"] == "hunter2"


def test_stdout_flood_is_bounded(evaluator):
    out = run(evaluator, "stdout_flood", limits=Limits(memory_bytes=2 * 1024**3, timeout_s=180))
    assert out.kind == "ok", out.summary()


def test_raw_log_tail_is_bounded(docker_engine, digits):
    from nasloop.sandbox import Job

    sb = make_sandbox("docker", limits=Limits(timeout_s=180, log_bytes=4096))
    ev = Evaluator(digits, sb, FAST)
    raw = sb.run(Job(source=candidate("stdout_flood"), config=ev.harness_config(), data_dir=digits.sandbox_dir))
    assert raw.result is not None and raw.result["status"] == "ok"
    assert len(raw.stderr_tail) <= 4096


def test_missing_image_is_a_clear_error(docker_engine):
    from nasloop.sandbox import SandboxUnavailable

    with pytest.raises(SandboxUnavailable, match="not found: run 'make sandbox-image'"):
        make_sandbox("docker", image="nasloop-sandbox:does-not-exist")


def test_unreachable_engine_is_a_clear_error(monkeypatch):
    from nasloop.sandbox import SandboxUnavailable

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match="Docker engine not reachable"):
        make_sandbox("docker")


# --- pre-flight on the meta device -----------------------------------------------------------------
def test_spatial_collapse_names_the_layer(evaluator):
    out = run(evaluator, "spatial_collapse")
    assert out.kind == "shape_error", out.summary()
    assert "the map is 1x1 at pools.5: remove a pooling step" in out.diagnosis  # what the trace showed, said
    assert "✗ pools.5 MaxPool2d" in out.diagnosis and "got 16x1x1" in out.diagnosis
    assert len(out.diagnosis) <= 300


def test_huge_net_is_rejected_without_allocation(evaluator):
    # 268M float32 parameters need ~1 GiB on top of torch itself: a real allocation would be host_oom here.
    out = run(evaluator, "huge_net", limits=Limits(memory_bytes=1200 * 1024**2, timeout_s=60))
    assert out.kind == "interface_error", out.summary()
    assert "parameters; the budget is 2,000,000" in out.diagnosis
    assert ("largest layers: big (Linear, 268,451,840 parameters), fc (Linear, 170 parameters), "
            "conv (Conv2d, 160 parameters)") in out.diagnosis
    assert out.diagnosis.endswith(" — big has 16384 output features: give it at most 104")  # the host's words
    assert out.params > 268_000_000


def test_a_net_over_the_flop_budget_from_the_seeds_speed_is_rejected_at_the_preflight(docker_engine, digits):
    from nasloop import prompts
    from nasloop.tools.evaluator import MIN_FLOP_BUDGET

    ev = Evaluator(digits, make_sandbox("docker", limits=replace(LIMITS, timeout_s=20)), FAST)
    seed = ev.evaluate(prompts.seed_source("default"))
    assert seed.kind == "ok" and seed.flops and seed.train_seconds
    budget = ev.calibrate(seed)
    assert budget == max(MIN_FLOP_BUDGET, int(seed.flops * 20 * 0.5 / seed.train_seconds))
    out = ev.evaluate(candidate("flops_hog"))  # 1.4M parameters: within the parameter budget
    assert out.kind == "interface_error" and out.stage == "preflight", out.summary()
    assert out.failure["exc_type"] == "BudgetError" and out.failure["budget"]["max_flops"] == budget
    assert out.failure["budget"]["flops"] > 800_000_000
    assert [lay["name"] for lay in out.failure["budget"]["largest"]][0] == "conv3"
    assert f"the budget is {budget:,}; most FLOPs: conv3 " in out.diagnosis
    assert out.steps is None and out.accuracy is None  # never trained


def test_dodging_the_preflight_on_meta_does_not_dodge_the_flop_budget(docker_engine, digits):
    ev = Evaluator(digits, make_sandbox("docker", limits=LIMITS), replace(FAST, max_flops=100_000_000))
    out = ev.evaluate(candidate("attack_dodge_preflight"))
    assert out.kind == "interface_error" and out.failure["exc_type"] == "BudgetError", out.summary()
    assert out.steps == 0 and out.stage is None  # caught at the first real forward, before any optimizer step
    assert "most FLOPs: conv3 " in out.diagnosis


def test_a_structural_duplicate_is_rejected_at_the_preflight_without_training(evaluator):
    from nasloop import prompts

    seed = prompts.seed_source("default")
    first = evaluator.evaluate(seed)
    assert first.kind == "ok" and first.structure and len(first.structure) == 16
    renamed = seed.replace("conv1", "stem").replace("bn1", "norm_a").replace("One operation", "# One operation")
    out = evaluator.evaluate(renamed, known_structures={first.structure: 0, "0123456789abcdef": 3})
    assert out.kind == "invalid_code" and out.stage == "preflight", out.summary()
    assert out.failure["phase"] == "duplicate" and out.failure["of"] == 0
    assert "the same network as iteration 0" in out.diagnosis and out.steps is None and out.accuracy is None
    assert evaluator.evaluate(renamed).kind == "ok"  # not a duplicate of anything it was told about


def test_meta_inconclusive_falls_back_to_the_real_run(evaluator):
    out = run(evaluator, "data_dependent")
    assert out.kind == "ok", out.summary()


def test_preflight_mode_and_ablation(docker_engine, digits):
    sb = make_sandbox("docker", limits=LIMITS)
    only = Evaluator(digits, sb, TrainSettings(mode="preflight"))
    out = only.evaluate(candidate("ok_tiny"))
    assert out.kind == "ok" and out.accuracy is None and "pre-flight" in out.diagnosis and out.params == 395
    plain = Evaluator(digits, sb, TrainSettings(min_steps=8, batch_size=64, preflight=False))
    out = plain.evaluate(candidate("shape_mismatch"))
    assert out.kind == "shape_error" and "mat1 and mat2 shapes cannot be multiplied" in out.diagnosis


# --- zero-cost proxies run in the sandbox too ------------------------------------------------------
def test_proxy_scores_in_the_sandbox(docker_engine, digits):
    names = ("naswot", "synflow", "snip", "grad_norm", "zen", "zico", "params", "flops")
    ev = Evaluator(digits, make_sandbox("docker", limits=LIMITS), TrainSettings(mode="proxy", proxies=names))
    out = ev.evaluate(candidate("ok_tiny"))
    assert out.kind == "ok" and out.accuracy is None and set(out.scores) == set(names), out.summary()
    assert out.scores["params"] == 362  # the proxy counts parameters only
    again = ev.evaluate(candidate("ok_tiny"))
    assert again.scores == out.scores  # deterministic under the seed
    bad = ev.evaluate(candidate("fork_bomb"), static_check=False)
    assert bad.kind in ("runtime_error", "timeout", "host_oom")  # the same taxonomy as training
    assert ev.evaluate(candidate("shape_mismatch")).kind == "shape_error"


def test_orphans_of_a_killed_owner_are_removed(docker_engine):
    from nasloop.sandbox.docker_sandbox import CONTAINER_LABEL, DEFAULT_IMAGE, leftover_containers, remove_orphans

    from nasloop.sandbox.host import owner_label

    dead = subprocess.Popen(["true"])
    label = owner_label(dead.pid)  # taken while it runs: boot id / pid namespace / pid / start time
    dead.wait()  # now the owner of an orphan
    alive = subprocess.Popen(["sleep", "60"])
    other_ns = owner_label().replace(owner_label().split("/")[1], "4026599999")  # another PID namespace
    made = [docker_engine.containers.create(DEFAULT_IMAGE, command=["/nonexistent"], labels={CONTAINER_LABEL: lab})
            for lab in (label, owner_label(alive.pid), other_ns)]
    try:
        left = {x.id for x in leftover_containers(docker_engine)}
        assert made[0].id in left and made[1].id not in left and made[2].id not in left
        assert remove_orphans(docker_engine) >= 1
        ids = {x.id for x in docker_engine.containers.list(all=True)}
        assert made[0].id not in ids and made[1].id in ids and made[2].id in ids  # live and foreign runs kept
    finally:
        alive.kill()
        for c in made:
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone, as it should be
                pass


def test_a_process_that_is_leaving_ends_what_its_nodes_start_late(evaluator, docker_engine):
    """On a signal nasloop closes its LiveSet: a node still running cannot start a sandbox afterwards, and the
    sweep removes a container of this process that no cleanup knew of (one whose creation was in flight)."""
    from nasloop.errors import SandboxUnavailable
    from nasloop.sandbox.base import LIVE
    from nasloop.sandbox.docker_sandbox import CONTAINER_LABEL, DEFAULT_IMAGE
    from nasloop.sandbox.host import owner_label

    def mine() -> list:
        return [c for c in docker_engine.containers.list(all=True, filters={"label": CONTAINER_LABEL})
                if c.labels.get(CONTAINER_LABEL) == owner_label()]

    stray = docker_engine.containers.create(DEFAULT_IMAGE, command=["/nonexistent"],
                                            labels={CONTAINER_LABEL: owner_label()})
    try:
        LIVE.close()
        assert stray.id not in {c.id for c in mine()}
        with pytest.raises(SandboxUnavailable, match="stopping"):
            evaluator.evaluate(candidate("ok_tiny"))
        assert mine() == []
    finally:
        LIVE.closing = False
    assert evaluator.evaluate(candidate("ok_tiny")).ok  # a process that stays (these tests) can reopen it


def test_a_worker_that_dies_under_a_candidate_is_replaced(warm_evaluator):
    """The search survives: the candidate running when the worker died is recorded against it."""
    import threading

    sandbox = warm_evaluator.sandbox
    assert warm_evaluator.evaluate(candidate("ok_tiny")).ok
    box = {}
    hang = candidate("infinite_forward_training")
    t = threading.Thread(target=lambda: box.update(out=warm_evaluator.evaluate(hang)))
    t.start()
    deadline = time.time() + 60
    while not list(sandbox.jobs.glob("*/out/training")) and time.time() < deadline:
        time.sleep(0.1)
    sandbox.container.kill()  # the worker dies mid-candidate
    t.join(120)
    assert box["out"].kind in ("runtime_error", "host_oom") and "worker died" in box["out"].diagnosis
    assert warm_evaluator.evaluate(candidate("ok_tiny")).ok  # a new worker took over
