"""Scale-out on a real Ray runtime: evaluation workers are Ray actors, each owning a warm Docker sandbox,
and the graph fans out with `Send`. The LLM is scripted here (by prompt, so fanned-out calls may race);
everything else is real: Ray started by the code, real containers, real training on digits."""
from __future__ import annotations

import argparse
import json
import threading
import time

import pytest

from nasloop import prompts
from nasloop.agent.app.options import build_evaluator, evaluation_defaults
from nasloop.agent.deps import Deps, LoopOptions
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.runs.store import RunStore
from tests.fakes import code_reply, keyed, scripted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = prompts.seed_source("digits")
WIDE = SEED.replace("128", "192")  # trains longer than the others: it finishes last in its round
NARROW = SEED.replace("128", "48")
BROKEN = SEED.replace("nn.Linear(128, num_classes)", "nn.Linear(100, num_classes)")  # fails in training
DEEP = SEED.replace("x = self.conv3(x)", "x = self.conv3(x)\n        x = F.relu(x)")
CHANGES = {"use 192 channels in conv3": WIDE, "use 48 channels in conv3": NARROW,
           "make the head read 100 features": BROKEN, "add a second relu after conv3": DEEP}


def evaluator_args(workers: int, tmp_path) -> argparse.Namespace:
    args = evaluation_defaults()
    args.train_subset, args.test_subset, args.min_steps, args.cpus = 256, 200, 12, 1.0  # 1 thread either way
    args.no_preflight = True  # BROKEN must reach training (a runtime failure, not a repair)
    args.workers = workers
    return args


def run_search(workers: int, tmp_path, iterations: int = 4) -> tuple[list[dict], RunStore]:
    """A whole search with `workers` evaluation workers; results in the order recorded."""
    improver = scripted(*[json.dumps({"problem": f"p{i}", "suggestion": s}) for i, s in enumerate(CHANGES)])
    generator = keyed({s: code_reply(code) for s, code in CHANGES.items()})
    evaluator = build_evaluator(evaluator_args(workers, tmp_path))
    try:
        store = RunStore.create(tmp_path / f"w{workers}", "digits", {"args": {}})
        from nasloop.agent.app.search import _Guarded

        deps = Deps(improver=improver, generator=generator, evaluator=_Guarded(evaluator), store=store,
                    options=LoopOptions(workers=workers, repairs=0))
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
    # the wide net of iteration 1 finished after the narrow one of iteration 2, yet is recorded first
    lines = [json.loads(line) for line in (store.path / "results.jsonl").read_text().splitlines()]
    finish = {r["iteration"]: r["time"] for r in lines}
    assert finish[2] < finish[1], "the round did not overlap: iteration 2 waited for iteration 1"
    assert (store.path / "best.py").read_text() in {WIDE, NARROW, SEED, DEEP}
    best = max((r for r in two if r["outcome"] == "ok"), key=lambda r: (r["accuracy"], -r["iteration"]))
    assert (store.path / "best.py").read_text().strip() == store.candidate_code(best["iteration"]).strip()


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
        t = threading.Thread(target=lambda: box.update(out=ev.evaluate(WIDE)))
        t.start()
        time.sleep(4)  # training now
        ray.kill(pool.actors[0], no_restart=False)
        t.join(300)
        out = box["out"]
        assert out.kind == "ok" and out.accuracy is not None, out  # run again on the restarted worker
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
