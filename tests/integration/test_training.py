"""Real training in the real sandbox on real images: accuracy must be well above chance."""
from __future__ import annotations

import os

import pytest

from nasloop import prompts
from nasloop.sandbox import Limits, make_sandbox
from nasloop.tools.datasets import prepare
from nasloop.tools.evaluator import Evaluator, TrainSettings

pytestmark = pytest.mark.integration


def test_seed_net_learns_digits(docker_engine):
    data = prepare("digits")
    ev = Evaluator(data, make_sandbox("docker", limits=Limits(timeout_s=300)), TrainSettings(min_steps=60))
    out = ev.evaluate(prompts.seed_source("default"))
    assert out.kind == "ok", out.summary()
    assert out.accuracy > 0.6, out.summary()  # chance is 0.1
    assert out.epochs == pytest.approx(60 / 5) and out.steps == 60


def test_the_digits_seed_leaves_a_first_search_room_to_improve(docker_engine):
    """digits is easy: the standard seed scores 0.99 and left nothing to find. Its own seed is deliberately
    small; with the search's default budget it must learn, and score clearly below the standard net."""
    data = prepare("digits")
    ev = Evaluator(data, make_sandbox("warm", limits=Limits(timeout_s=300)), TrainSettings())
    try:
        small, standard = ev.evaluate(prompts.seed_source("digits")), ev.evaluate(prompts.seed_source("default"))
    finally:
        ev.sandbox.close()  # its warm container
    assert small.kind == standard.kind == "ok", (small.summary(), standard.summary())
    assert 0.5 < small.accuracy < standard.accuracy - 0.1, (small.accuracy, standard.accuracy)
    assert small.params < 1000 < standard.params


def test_seed_net_learns_cifar10_jpegs(docker_engine, cifar_folder):
    data = prepare(f"folder:{cifar_folder}", train_subset=5000, test_subset=1000)
    assert data.num_classes == 10 and data.in_channels == 3 and data.image_size == 32
    ev = Evaluator(data, make_sandbox("docker", limits=Limits(timeout_s=400)), TrainSettings(min_steps=80))
    out = ev.evaluate(prompts.seed_source(data.name))
    assert out.kind == "ok", out.summary()
    assert out.accuracy > 0.3, out.summary()  # chance is 0.1
    assert out.steps == 80 and out.flops > 1e6


def test_process_sandbox_trains_too(digits):
    ev = Evaluator(digits, make_sandbox("process", limits=Limits(timeout_s=300)), TrainSettings(min_steps=40))
    out = ev.evaluate(prompts.seed_source("default"))
    assert out.kind == "ok" and out.accuracy > 0.3, out.summary()
    # the pre-flight's layer facts, for the Improver: each leaf layer's output shape and parameters
    lines = (out.layers or "").splitlines()
    assert len(lines) >= 4 and any(" Conv2d -> " in x and x.endswith(")") for x in lines), out.layers
    assert lines[-1].split(" -> ")[1].startswith("10"), out.layers  # the head makes the 10 class logits


def test_process_sandbox_times_out_and_classifies(digits):
    from tests.conftest import candidate

    ev = Evaluator(digits, make_sandbox("process", limits=Limits(timeout_s=10)), TrainSettings(min_steps=8))
    assert ev.evaluate(candidate("infinite_forward")).kind == "timeout"
    assert ev.evaluate(candidate("shape_mismatch")).kind == "shape_error"
    assert ev.evaluate(candidate("fake_result"), static_check=False).kind == "runtime_error"


def test_nothing_a_candidate_starts_outlives_its_job_in_the_process_sandbox(digits):
    """A process the candidate detaches (its own session, out of the process group) comes back to the
    supervisor, which kills it when the harness ends, and when the host stops the job early."""
    import os
    import time

    from tests.conftest import candidate

    def daemons() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x003141.59\x00":
                        found.append(pid)
            except OSError:
                pass
        return found

    ev = Evaluator(digits, make_sandbox("process", limits=Limits(timeout_s=60)), TrainSettings(min_steps=8))
    out = ev.evaluate(candidate("attack_leave_daemon"), static_check=False)
    assert out.kind == "ok", out.summary()  # the job itself is an honest net
    time.sleep(0.5)
    assert daemons() == []
    short = Evaluator(digits, make_sandbox("process", limits=Limits(timeout_s=60, preflight_s=3)), TrainSettings())
    slow = candidate("attack_leave_daemon").replace("class Net", "while True:\n    pass\n\n\nclass Net")
    assert short.evaluate(slow, static_check=False).kind == "timeout"  # stopped by the host's deadline
    time.sleep(0.5)
    assert daemons() == []


def test_the_supervisor_runs_the_harness_as_nobody_and_ends_what_it_leaves():
    """As root (nobody can reach the interpreter and the data), the supervisor stays root and runs the harness
    as nobody, with a process limit: a candidate cannot kill its supervisor to set its detached processes free."""
    import os
    import subprocess
    import sys
    import time

    from nasloop.sandbox.base import SANDBOX_UID, SUPERVISOR_PATH

    if os.geteuid() != 0:
        pytest.skip("only root can run the harness as another user")
    script = "id -u; (setsid sleep 3141.6 &); kill -9 $PPID; exit 3"  # its supervisor is root: not killed
    out = subprocess.run([sys.executable, "-I", str(SUPERVISOR_PATH), "30", str(SANDBOX_UID), "64", "/bin/sh", "-c",
                          script], capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 3 and out.stdout.split()[0] == str(SANDBOX_UID), (out.returncode, out.stdout, out.stderr)
    time.sleep(0.3)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x003141.6\x00"]



def test_a_killed_supervisor_takes_its_harness_with_it():
    """Ray SIGKILLs a dead worker's children, the supervisor among them: the harness it started dies at once,
    even one that never arms anything itself (a harness still importing torch had not yet; CI saw it outlive
    its worker)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from nasloop.sandbox.base import SUPERVISOR_PATH

    sup = subprocess.Popen([sys.executable, "-I", str(SUPERVISOR_PATH), "60", "-1", "64", "/bin/sleep", "2718.3"],
                           cwd="/")
    try:
        deadline = time.monotonic() + 10
        while not _sleepers(b"2718.3") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(b"2718.3"), "the harness did not start"
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(5)
        deadline = time.monotonic() + 2
        while _sleepers(b"2718.3") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _sleepers(b"2718.3"), "the harness outlived its supervisor"
    finally:
        for pid in _sleepers(b"2718.3"):
            os.kill(int(pid), signal.SIGKILL)


def _sleepers(tag: bytes) -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"/bin/sleep\x00" + tag + b"\x00"]


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.mark.parametrize("kind", ["warm", "process"])
def test_training_progress_reaches_the_host_while_it_trains(docker_engine, digits, kind):
    """The harness notes its steps; the host's watcher reports them during the run (a display, so only
    well-formed pairs are believed), ending with the last step."""
    ev = Evaluator(digits, make_sandbox(kind, limits=Limits(timeout_s=300)), TrainSettings(min_steps=60))
    seen: list[tuple[int, int]] = []
    out = ev.evaluate(prompts.seed_source("default"), on_progress=lambda step, steps: seen.append((step, steps)))
    assert out.kind == "ok", out.summary()
    assert seen and seen[-1] == (60, 60) and {n for _, n in seen} == {60}
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert out.train_seconds < 1 or len(seen) >= 2, (out.train_seconds, seen)  # noted as it went, not once
    getattr(ev.sandbox, "close", lambda: None)()


@pytest.mark.parametrize("gpus", ["none", "0"])
def test_process_sandbox_limits_address_space_only_without_gpus(gpus):
    """CUDA reserves more virtual address space than host and device memory together: under an address-space
    cap cudaGetDeviceCount fails and every candidate looked like a runtime error on a GPU machine. The child
    sees only the devices it was given, as in a container."""
    import json
    import subprocess
    import sys

    from nasloop.sandbox.process_sandbox import ProcessSandbox, gpu_env

    probe = ("import json, os, resource; print(json.dumps([resource.getrlimit(resource.RLIMIT_AS)[0], "
             "os.environ.get('CUDA_VISIBLE_DEVICES')]))")
    sandbox = ProcessSandbox(Limits(gpus=gpus, memory_bytes=2 * 1024**3))
    out = subprocess.run([sys.executable, "-c", probe], env=gpu_env(gpus), preexec_fn=sandbox._preexec,
                         capture_output=True, text=True, check=True).stdout
    cap, visible = json.loads(out)
    assert visible == ("" if gpus == "none" else "0")
    if gpus == "none":
        assert cap == 10 * 1024**3
    else:
        assert cap == -1  # RLIM_INFINITY
    assert gpu_env("all") == {}


def test_cli_evaluate_prints_one_result(docker_engine, tmp_path):
    import subprocess
    import sys

    from tests.conftest import CANDIDATES

    proc = subprocess.run([sys.executable, "-m", "nasloop.agent.app.cli", "evaluate", str(CANDIDATES / "ok_tiny.py"),
                           "--dataset", "digits", "--train-subset", "256", "--min-steps", "10", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    res = json.loads(proc.stdout)
    assert res["outcome"] == "ok" and res["steps"] == 10 and res["params"] > 0


def test_a_channel_mismatch_is_fixed_in_place_then_trained(docker_engine, digits):
    from nasloop.agent.loop.fidelity import assess
    from nasloop.agent.deps import Deps, LoopOptions

    ev = Evaluator(digits, make_sandbox("docker", limits=Limits(timeout_s=300)), TrainSettings(min_steps=60))
    wider = prompts.seed_source("default").replace("nn.Conv2d(32, 64, 3", "nn.Conv2d(32, 96, 3")
    deps = Deps(improver=None, generator=None, evaluator=ev, options=LoopOptions())  # type: ignore[arg-type]
    outcome, code, extra = assess(deps, 1, [wider], 0)
    assert outcome.kind == "ok" and outcome.accuracy > 0.3, outcome.summary()
    assert [f["note"].split(":")[0] for f in extra["fixes"]] == ["self.bn2 = nn.BatchNorm2d(...)",
                                                                 "self.conv3 = nn.Conv2d(...)"]
    assert "nn.BatchNorm2d(96)" in code and "nn.Conv2d(96, 128, 3" in code
    plain = Deps(improver=None, generator=None, evaluator=ev, options=LoopOptions.plain())  # type: ignore[arg-type]
    assert assess(plain, 1, [wider], 0)[0].stage == "preflight"  # the ablation leaves it failed
