"""Scale-out benchmark, printed (never asserted): candidates evaluated per hour with 1, 2 and 4 evaluation
workers, as ratios against one worker run in the same process.

A  scripted LLM (instant), real training on the CIFAR-10 JPEGs in the warm Docker sandbox: what the
   workers alone give on this machine. W=1 is today's loop (no Ray is started); W>1 is Ray actors and
   the fanned-out graph.
R  the cost of the Ray machinery per candidate: the same candidates through one Ray worker and through
   the plain warm sandbox, one after another.
L  the real 0.5B model through a local llama.cpp server (OpenAI-compatible) with 1 and 2 workers: with
   2, one candidate's generation overlaps its sibling's training.

    python bench/parallel.py [--candidates 8] [--workers 1,2,4] [--skip-llm]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluator import cifar_images  # noqa: E402
from nasloop import prompts  # noqa: E402
from nasloop.agent import Deps, build_graph, recursion_limit_for  # noqa: E402
from nasloop.agent.app.options import build_evaluator, evaluation_defaults  # noqa: E402
from nasloop.agent.deps import LoopOptions  # noqa: E402
from nasloop.agent.llm.client import ChatClient, LLMSettings, make_chat_model  # noqa: E402
from nasloop.agent.runs.store import RunStore  # noqa: E402
from nasloop.tools.evaluator import Evaluator  # noqa: E402
from tests.fakes import code_reply, keyed, untried  # noqa: E402

SEED = prompts.seed_source("cifar10")
WIDTHS = (48, 64, 96, 112, 144, 160, 176, 192, 208, 224, 240, 256)
CHANGES = {f"use {w} channels in conv3": SEED.replace("128", str(w)) for w in WIDTHS}


def eval_args(args: argparse.Namespace, workers: int) -> argparse.Namespace:
    ns = evaluation_defaults()
    ns.dataset = f"folder:{args.images}"
    ns.train_subset, ns.test_subset, ns.min_steps = args.train_subset, 1000, args.min_steps
    ns.workers = workers
    return ns


def search(args: argparse.Namespace, workers: int, improver: ChatClient, generator: ChatClient,
           tmp: str) -> tuple[float, int]:
    """Seconds for the seed plus `args.candidates` candidates, and how many were evaluated."""
    evaluator = build_evaluator(eval_args(args, workers))
    try:
        store = RunStore.create(tmp, f"w{workers}", {})
        deps = Deps(improver, generator, evaluator, store, LoopOptions(workers=workers, repairs=0))
        graph = build_graph(deps)
        task = {**evaluator.task_facts(), "iterations": args.candidates, "target_accuracy": None}
        t0 = time.perf_counter()
        graph.invoke({"task": task}, {"recursion_limit": recursion_limit_for(args.candidates)})
        return time.perf_counter() - t0, len(store.results())
    finally:
        closer = getattr(evaluator.sandbox, "close", None)
        if closer is not None:
            closer()


def part_a(args: argparse.Namespace, tmp: str) -> None:
    print(f"A  scripted LLM, real training: {args.candidates} candidates + the seed, {args.train_subset} "
          f"CIFAR-10 images, >= {args.min_steps} steps, {os.cpu_count()} cores")
    base = None
    for w in args.workers:
        seconds, n = search(args, w, untried(CHANGES), keyed({s: code_reply(c) for s, c in CHANGES.items()}), tmp)
        per_hour = n / seconds * 3600
        base = base or per_hour
        print(f"   W={w}: {n} evaluated in {seconds:6.1f} s = {per_hour:6.0f} candidates/hour = {per_hour / base:.2f}x W=1")


def part_r(args: argparse.Namespace) -> None:
    from nasloop.sandbox.ray_pool import RaySandbox

    ns = eval_args(args, 1)
    ev = build_evaluator(ns)  # the plain warm sandbox
    pool = RaySandbox("warm", 1, ev.limits, image=ns.sandbox_image)
    codes = list(CHANGES.values())[:4]
    try:
        over_ray = Evaluator(ev.data, pool, ev.settings)
        ev.evaluate(codes[0]), over_ray.evaluate(codes[0])  # both workers warm
        t = {"local": 0.0, "ray": 0.0}
        for code in codes:  # interleaved: drift hits both alike
            for name, e in (("local", ev), ("ray", over_ray)):
                t0 = time.perf_counter()
                e.evaluate(code)
                t[name] += time.perf_counter() - t0
    finally:
        pool.close()
        getattr(ev.sandbox, "close", lambda: None)()
    n = len(codes)
    print(f"R  one Ray worker vs the warm sandbox, {n} candidates each: {t['ray'] / n:.2f} s vs {t['local'] / n:.2f} s "
          f"per candidate = {t['ray'] / t['local']:.3f}x (Ray machinery {(t['ray'] - t['local']) / n * 1000:+.0f} ms)")


def llama_server(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                                 "--port", str(port), "--n_ctx", "4096", "--model_alias", "local"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"llama_cpp.server did not come up: {log.read_text()[-800:]}") from None
            time.sleep(0.5)


def part_l(args: argparse.Namespace, tmp: str) -> None:
    from nasloop.agent.llm.models import resolve_model

    proc, url = llama_server(resolve_model("qwen2.5-coder-0.5b"), Path(tmp) / "server.log")
    os.environ["OPENAI_BASE_URL"] = url
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-a-local-server")
    settings = LLMSettings(temperature=0.7, max_tokens=1024, seed=43)
    try:
        print(f"L  the 0.5B model through a local llama.cpp server, {args.llm_candidates} candidates + the seed")
        base = None
        for w in (1, 2):
            clients = [ChatClient(make_chat_model("openai:local", settings), "openai:local", settings=settings)
                       for _ in range(2)]
            llm_args = argparse.Namespace(**{**vars(args), "candidates": args.llm_candidates})
            seconds, n = search(llm_args, w, clients[0], clients[1], tmp)
            per_hour = n / seconds * 3600
            base = base or per_hour
            print(f"   W={w}: {n} evaluated in {seconds:6.1f} s = {per_hour:6.0f} candidates/hour = {per_hour / base:.2f}x W=1")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--llm-candidates", type=int, default=4)
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--images", type=Path, help="ImageFolder tree (default: the CIFAR-10 JPEGs)")
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--min-steps", type=int, default=40)
    ap.add_argument("--skip-llm", action="store_true")
    args = ap.parse_args()
    args.images = args.images or cifar_images()
    if args.images is None:
        raise SystemExit("no CIFAR-10 JPEGs: pass --images DIR (an ImageFolder tree)")
    with tempfile.TemporaryDirectory() as tmp:
        part_a(args, tmp)
        part_r(args)
        if not args.skip_llm:
            part_l(args, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
