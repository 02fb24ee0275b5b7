"""Scale-out on a real Ray runtime: evaluation workers are Ray actors, each owning a warm Docker sandbox,
and the graph fans out with `Send`. The LLM is scripted here (by prompt, so fanned-out calls may race);
everything else is real: Ray started by the code, real containers, real training on digits."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nasloop import prompts
from nasloop.agent.app.options import build_evaluator, evaluation_defaults
from nasloop.agent.deps import Deps, LoopOptions
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.runs.store import RunStore
from tests.fakes import code_reply, keyed, untried

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = prompts.seed_source("default")
WIDE = SEED.replace("128", "384")  # trains far longer than the others: it finishes last in its round
NARROW = SEED.replace("128", "48")
BROKEN = SEED.replace("nn.Linear(128, num_classes)", "nn.Linear(100, num_classes)")  # fails in training
DEEP = SEED.replace("x = self.conv3(x)", "x = self.conv3(x)\n        x = F.relu(x)")
CHANGES = {"use 384 channels in conv3": WIDE, "use 48 channels in conv3": NARROW,
           "make the head read 100 features": BROKEN, "add a second relu after conv3": DEEP}


def harnesses() -> set[int]:
    """The process ids of the harnesses running on this machine (any sandbox's `runner.py`)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"sandbox/runner.py" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def evaluator_args(workers: int) -> argparse.Namespace:
    args = evaluation_defaults()
    args.train_subset, args.test_subset, args.min_steps, args.cpus = 256, 200, 12, 1.0  # 1 thread either way
    args.no_preflight = True  # BROKEN must reach training (a runtime failure, not a repair)
    args.workers = workers
    return args


def improver_and_generator():
    """The Improver proposes the CHANGES in turn; the Generator implements the change its prompt names."""
    return untried(CHANGES), keyed({s: code_reply(code) for s, code in CHANGES.items()})


def run_search(workers: int, tmp_path, iterations: int = 4, **options) -> tuple[list[dict], RunStore]:
    """A whole search with `workers` evaluation workers (and LoopOptions `options`); its results."""
    improver, generator = improver_and_generator()
    evaluator = build_evaluator(evaluator_args(workers))
    try:
        store = RunStore.create(tmp_path / f"w{workers}-{options.get('strategy', 'loop')}", "digits", {"args": {}})
        from nasloop.agent.app.search import _Guarded

        deps = Deps(improver=improver, generator=generator, evaluator=_Guarded(evaluator), store=store,
                    options=LoopOptions(workers=workers, repairs=0, **options))
        graph = build_graph(deps)
        final = graph.invoke({"task": {**evaluator.task_facts(), "iterations": iterations, "target_accuracy": None}},
                             {"recursion_limit": recursion_limit_for(iterations)})
    finally:
        closer = getattr(evaluator.sandbox, "close", None)
        if closer is not None:
            closer()
    assert final["iteration"] == iterations + 1
    return store.results(), store


def test_two_workers_record_what_one_worker_records(docker_engine, tmp_path):
    one, _ = run_search(1, tmp_path)
    two, store = run_search(2, tmp_path)
    fields = ("iteration", "outcome", "accuracy", "params", "suggestion")
    assert [{k: r.get(k) for k in fields} for r in two] == [{k: r.get(k) for k in fields} for r in one]
    assert [r["outcome"] for r in two] == ["ok", "ok", "ok", "shape_error", "ok"]
    # (which finished first varies from run to run: the kill -9 test below pins a round mid-way)
    best = max((r for r in two if r["outcome"] == "ok"), key=lambda r: (r["accuracy"], -r["iteration"]))
    assert (store.path / "best.py").read_text().strip() == store.candidate_code(best["iteration"]).strip()


def test_kill_9_mid_round_then_resume_repeats_no_finished_evaluation(docker_engine, tmp_path):
    cmd = [sys.executable, "-m", "tests.integration.fanout_driver"]
    proc = subprocess.Popen([*cmd, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = Path(proc.stdout.readline().strip())
    results = run / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        done = {json.loads(x)["iteration"] for x in results.read_text().splitlines()} if results.exists() else set()
        if 2 in done:
            break
        time.sleep(0.1)
    proc.kill()  # kill -9 while iteration 1 (the wide net) has not returned (fanout_driver.Logged)
    proc.wait()
    assert done == {0, 2}, f"not mid-round: {done}"
    first = (tmp_path / "evaluations.log").read_text().splitlines()
    resumed = subprocess.run([*cmd, str(run), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    later = [line.split("\t")[0] for line in (tmp_path / "evaluations.log").read_text().splitlines()[len(first):]]
    changes = list(CHANGES)  # iteration 1 again (it was running), then round 2; never iteration 2 again
    assert later[0] == changes[0] and sorted(later[1:]) == sorted(changes[2:4]), later
    assert [r["iteration"] for r in RunStore.open(run).results()] == [0, 1, 2, 3, 4]


def test_evolution_and_the_ladder_run_with_two_workers(docker_engine, tmp_path):
    results, store = run_search(2, tmp_path, 2, strategy="evolution", fidelity="proxy", population=3)
    assert [r["iteration"] for r in results] == [0, 1, 2]
    assert all(r["outcome"] == "ok" and r["scores"]["naswot"] > 0 for r in results[1:])  # scored, not trained
    assert {r["parent"] for r in results[1:]} == {0}  # both children of round 1 bred from the only member
    results, store = run_search(2, tmp_path, 2, fidelity="ladder", ladder_width=2)
    assert [r["iteration"] for r in results] == [0, 1, 2]
    trained = [r for r in results[1:] if r["outcome"] == "ok"]
    assert trained and all(r["accuracy"] is not None and r.get("ladder") for r in trained), results


def test_a_killed_worker_is_replaced_and_its_candidate_run_again(docker_engine, digits, tmp_path):
    import ray

    from nasloop.sandbox import Limits
    from nasloop.sandbox.docker_sandbox import leftover_containers
    from nasloop.sandbox.ray_pool import RaySandbox
    from nasloop.tools.evaluator import Evaluator, TrainSettings

    pool = RaySandbox("warm", 1, Limits(cpus=1.0, timeout_s=300))
    try:
        ev = Evaluator(digits, pool, TrainSettings(min_steps=80, preflight=False))
        quick = Evaluator(digits, pool, TrainSettings(min_steps=4, preflight=False))
        assert quick.evaluate(NARROW).kind == "ok"  # the worker and its container are up
        first = ray.get(pool.actors[0].pid.remote())
        box: dict = {}
        steps: list[tuple[int, int]] = []  # the display's training steps, asked of the busy worker
        t = threading.Thread(target=lambda: box.update(out=ev.evaluate(WIDE, on_progress=lambda *s: steps.append(s))))
        t.start()
        time.sleep(4)  # training now
        ray.kill(pool.actors[0], no_restart=False)
        t.join(300)
        out = box["out"]
        assert out.kind == "ok" and out.accuracy is not None, out  # run again on the restarted worker
        assert steps and all(0 < s <= n for s, n in steps) and steps[-1][1] >= 80, steps
        assert pool.lost == 1
        assert ray.get(pool.actors[0].pid.remote()) != first
    finally:
        pool.close()
    assert not ray.is_initialized()
    assert leftover_containers() == []  # the killed worker's container was removed too


def test_a_worker_lost_twice_is_a_sandbox_error_for_that_candidate_only(digits, tmp_path):
    """The process sandbox (what a GPU machine without Docker uses) under a Ray worker killed twice."""
    from nasloop.agent.app.search import _Guarded
    from nasloop.sandbox import Limits
    from nasloop.sandbox.ray_pool import RaySandbox
    from nasloop.tools.evaluator import Evaluator, TrainSettings

    pool = RaySandbox("process", 1, Limits(cpus=1.0, timeout_s=120))
    try:
        ev = _Guarded(Evaluator(digits, pool, TrainSettings(min_steps=400, preflight=False)))
        quick = _Guarded(Evaluator(digits, pool, TrainSettings(min_steps=4, preflight=False)))
        import ray

        stop = threading.Event()

        def killer():  # kill the worker whenever it runs something, twice
            for _ in range(2):
                time.sleep(3)
                if not stop.is_set():
                    ray.kill(pool.actors[0], no_restart=False)

        threading.Thread(target=killer, daemon=True).start()
        out = ev.evaluate(WIDE)
        stop.set()
        assert out.kind == "sandbox_error" and out.failure == {"phase": "worker"}, out  # recorded, not raised
        assert "lost twice" in out.diagnosis
        time.sleep(3)
        assert quick.evaluate(NARROW).kind == "ok"  # the next candidate runs on the restarted worker
    finally:
        pool.close()


def test_a_worker_ray_gave_up_on_is_replaced_and_close_during_a_candidate_records_nothing(digits):
    """The process sandbox behind one Ray worker (allowed here, not from the CLI): a worker killed for good
    is replaced by a new one; a candidate running when the pool is closed (Ctrl-C) gets no outcome at all."""
    import ray

    from nasloop.sandbox import Limits, SandboxUnavailable
    from nasloop.sandbox.ray_pool import RaySandbox
    from nasloop.tools.evaluator import Evaluator, TrainSettings

    before = harnesses()
    pool = RaySandbox("process", 1, Limits(cpus=1.0, timeout_s=120))
    try:
        ev = Evaluator(digits, pool, TrainSettings(min_steps=80, preflight=False))
        first = pool.actors[0]
        threading.Timer(3, lambda: ray.kill(first, no_restart=True)).start()
        out = ev.evaluate(NARROW)
        assert out.kind == "ok", out.summary()  # run again on a new worker
        assert pool.lost == 1 and pool.actors[0] is not first
        box: dict = {}

        def evaluate():
            try:
                box["out"] = ev.evaluate(NARROW)
            except SandboxUnavailable as exc:
                box["stopped"] = exc

        t = threading.Thread(target=evaluate)
        t.start()
        time.sleep(3)
    finally:
        pool.close()
    t.join(60)
    assert not t.is_alive() and "out" not in box and "stopped" in box, box
    # The candidate's thread touched Ray after close: it must not have started a second Ray (its processes
    # would die with that thread and leave this process attached to a dead cluster), nor may a later call.
    assert not ray.is_initialized()
    with pytest.raises(ray.exceptions.RaySystemError):
        ray.put(1)
    assert not ray.is_initialized()
    # Ray SIGKILLs a dead worker's child (`timeout`): the harness under it dies with it, not at its deadline
    deadline = time.monotonic() + 15
    while harnesses() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not harnesses() - before, "a harness outlived its worker"
