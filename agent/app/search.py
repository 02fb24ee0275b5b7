"""`nasloop search`: set up data, sandbox, LLMs and the run directory, then stream the graph with progress.

A run is resumable at any moment: the graph is checkpointed to runs/<id>/checkpoints.sqlite after
every node and the run store records each LLM reply and evaluation exactly once.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from nasloop.agent.app.options import EXIT_NOTES, non_negative_int, positive_int
from nasloop.agent.app.progress import Progress
from nasloop.agent.deps import FIDELITIES, STRATEGIES, Deps, LoopOptions
from nasloop.agent.fixes.registry import NAMES as FIX_NAMES
from nasloop.agent.graph import build_graph, recursion_limit_for
from nasloop.agent.loop import record
from nasloop.agent.llm.client import DEFAULT_LLM, LLMSettings, make_clients, validate_spec
from nasloop.agent.runs.store import RunStore
from nasloop.agent.state import DEFAULT_K
from nasloop.errors import NasloopError, RunError, SandboxFault
from nasloop.sandbox.base import PROXY_NAMES
from nasloop.tools.evaluator import Evaluator
from nasloop.tools.outcome import WORKER_LOST, Outcome

THREAD = "search"
DEFAULT_ITERATIONS = 6
# Options that define a run; on --resume they come from run.json (only --iterations may be raised).
RUN_OPTIONS = (
    "dataset", "data_root", "train_subset", "test_subset", "image_size", "epochs", "min_steps", "batch_size",
    "lr", "seed", "device", "precision", "sandbox", "sandbox_image", "gpus", "memory", "cpus", "timeout",
    "llm", "improver_llm", "generator_llm", "k", "target_accuracy", "max_params", "max_flops", "temperature", "max_tokens",
    "iterations", "no_download", "repairs", "no_escape", "streak", "no_preflight", "no_repeat_check", "no_replace",
    "no_fix", "no_fixes", "plain", "no_improver_chat", "no_early_stop", "no_constrain", "lookup",
    "strategy", "fidelity", "proxy", "population", "tournament", "ladder_width", "no_warm", "runtime", "workers",
)



def add_search_args(p: argparse.ArgumentParser) -> None:
    """The search's options; their defaults are the settings dataclasses' (LoopOptions, LLMSettings)."""
    loop, llm = LoopOptions(), LLMSettings()
    g = p.add_argument_group("search")
    g.add_argument("--iterations", type=positive_int, default=None,
                   help=f"candidates to generate after the seed (default {DEFAULT_ITERATIONS}; on --resume: raise to extend)")
    g.add_argument("--llm", default=DEFAULT_LLM, help=f"model for both roles (default {DEFAULT_LLM})")
    g.add_argument("--improver-llm", help="model for the Prompt Improver (default: --llm)")
    g.add_argument("--generator-llm", help="model for the Code Generator (default: --llm)")
    g.add_argument("--temperature", type=float, default=loop.temperature)
    g.add_argument("--max-tokens", type=positive_int, default=llm.max_tokens, help="longest LLM reply")
    g.add_argument("--no-early-stop", action="store_true",
                   help="read every LLM reply to its end (by default it stops once its code or JSON is complete)")
    g.add_argument("--no-constrain", action="store_true",
                   help="leave the Improver's reply free text (by default held to its JSON schema where possible)")
    g.add_argument("--lookup", type=non_negative_int, default=llm.lookup, metavar="N",
                   help="llama.cpp: prompt-lookup decoding for the Generator, drafting up to N tokens from its context "
                        "(0: off; at most 15)")
    g.add_argument("--k", type=positive_int, default=DEFAULT_K, help="memory window: last K triples")
    g.add_argument("--target-accuracy", type=float, help="stop early once the best net reaches this (default: none, run every iteration)")
    g.add_argument("--strategy", choices=STRATEGIES, default=loop.strategy,
                   help="loop: improve the best net (default); evolution: mutate a population (RZ-NAS style)")
    g.add_argument("--fidelity", choices=FIDELITIES,
                   help="train: train every candidate; proxy: score with --proxy only; ladder: score "
                        "--ladder-width variants, train the best (default: train, proxy for evolution)")
    g.add_argument("--proxy", default=loop.proxy, choices=PROXY_NAMES, help="zero-cost proxy for proxy/ladder")
    g.add_argument("--population", type=positive_int, default=loop.population, help="evolution: population size")
    g.add_argument("--tournament", type=positive_int, default=loop.tournament,
                   help="evolution: members per parent tournament")
    g.add_argument("--ladder-width", type=positive_int, default=loop.ladder_width,
                   help="ladder: variants generated per step")
    g.add_argument("--runs-dir", default="runs", help="where new runs are created (default runs/)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (e.g. after kill -9)")
    add_learning_args(p, loop)
    g = p.add_argument_group("scale-out (Ray)")
    g.add_argument("--workers", type=positive_int, default=loop.workers,
                   help="candidates evaluated at once, each on its own Ray worker and sandbox (one GPU each "
                        "where there are enough); 1: no Ray")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster ('auto', ray://HOST:10001) instead of starting Ray on this machine "
                        "(default: RAY_ADDRESS, else local)")


def add_learning_args(p: argparse.ArgumentParser, loop: LoopOptions) -> None:
    """What the loop adds to the published one, each with its own switch (ablations)."""
    g = p.add_argument_group("learning from failures (each switchable; --plain: all off, the published loop)")
    g.add_argument("--repairs", type=int, default=loop.repairs, metavar="R",
                   help="repair attempts for a candidate failing the static check or pre-flight (0: none)")
    g.add_argument("--no-escape", action="store_true", help="no failure-loop escape (told, hotter, restart)")
    g.add_argument("--streak", type=positive_int, default=loop.streak,
                   help="equivalent failures in a row that trigger a failure-loop escape")
    g.add_argument("--no-repeat-check", action="store_true",
                   help="train verbatim repeats of earlier code again instead of telling the LLM")
    g.add_argument("--no-replace", action="store_true",
                   help="keep placeholder or already-tried suggestions instead of replacing them")
    g.add_argument("--no-improver-chat", action="store_true",
                   help="send every diagnosis as a prompt of its own (not as the next turn of the Improver's conversation)")
    g.add_argument("--no-fix", action="append", choices=FIX_NAMES, metavar="NAME", default=None,
                   help=f"switch off one deterministic fix (repeatable): {', '.join(FIX_NAMES)}")
    g.add_argument("--no-fixes", action="store_true", help="switch off every deterministic fix")
    g.add_argument("--plain", action="store_true",
                   help="the published loop: --repairs 0 and every switch above off (add --no-preflight too)")


def _resolve_args(args: argparse.Namespace) -> tuple[argparse.Namespace, RunStore | None]:
    """On --resume, the run's own options win (except a larger --iterations)."""
    if not args.resume:
        args.iterations = args.iterations or DEFAULT_ITERATIONS
        args.fidelity = args.fidelity or ("proxy" if args.strategy == "evolution" else "train")
        return args, None
    store = RunStore.open(args.resume)
    saved = store.config.get("args", {})
    asked = args.iterations
    for key in RUN_OPTIONS:
        if key in saved:
            setattr(args, key, saved[key])
    if asked:
        args.iterations = max(asked, saved.get("iterations", 0))
    if saved.get("no_escape") and "plain" not in saved:  # saved before the switches were separate: one for all
        args.plain = True
    args.fidelity = args.fidelity or "train"  # runs from before strategies existed
    return args, store


def loop_options(args: argparse.Namespace) -> LoopOptions:
    """The loop's options from the command line (or a resumed run's saved arguments)."""
    if getattr(args, "plain", False):
        return replace(LoopOptions.plain(), **_shared_options(args))
    off = set(getattr(args, "no_fix", None) or [])
    fixes = () if getattr(args, "no_fixes", False) else tuple(n for n in FIX_NAMES if n not in off)
    return LoopOptions(repairs=max(0, args.repairs), escape=not args.no_escape, streak=args.streak,
                       repeat_check=not getattr(args, "no_repeat_check", False),
                       replace_suggestions=not getattr(args, "no_replace", False),
                       improver_chat=not getattr(args, "no_improver_chat", False), fixes=fixes, **_shared_options(args))


def _shared_options(args: argparse.Namespace) -> dict:
    return dict(temperature=args.temperature, strategy=args.strategy, fidelity=args.fidelity, proxy=args.proxy,
                population=args.population, tournament=args.tournament, ladder_width=args.ladder_width, seed=args.seed,
                workers=getattr(args, "workers", 1) or 1, k=getattr(args, "k", None) or DEFAULT_K)


def make_task(ev: Evaluator, args: argparse.Namespace) -> dict:
    return {**ev.task_facts(), "iterations": args.iterations, "target_accuracy": args.target_accuracy}


def run_search(args: argparse.Namespace) -> int:
    args, store = _resolve_args(args)
    deps, evaluator, store = search_deps(args, store)
    final = _stream(deps, evaluator, store, args)
    _finish(store, evaluator, deps.options, final)
    return 0


def search_deps(args: argparse.Namespace, store: RunStore | None = None,
                clients: Callable[..., tuple] = make_clients) -> tuple[Deps, Evaluator, RunStore]:
    """A search's collaborators from its options, for the CLI and LangGraph Studio alike: checked specs,
    the evaluator (guarded: a sandbox fault stops the run), the LLM clients, and the run store — a new
    one unless `store` is a resumed run's. Bad specs, data sets and sandboxes fail before a run dir exists."""
    from nasloop.agent.app.options import build_evaluator, llm_in_process, thread_budget

    specs = (args.improver_llm or args.llm, args.generator_llm or args.llm)
    for spec in set(specs):
        validate_spec(spec)
    evaluator = build_evaluator(args)
    local = not (getattr(args, "ray_address", None) or os.environ.get("RAY_ADDRESS"))
    _, threads = thread_budget(getattr(args, "workers", 1) or 1, args.cpus, llm_in_process(args)) if local else (0, 0)
    settings = LLMSettings(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed, threads=threads,
                           early_stop=not getattr(args, "no_early_stop", False),
                           constrained=not getattr(args, "no_constrain", False), lookup=getattr(args, "lookup", LLMSettings.lookup))
    improver, generator = clients(*specs, settings)
    if store is None:  # run.json keeps the task too: a run whose checkpoints are lost can still be forked
        store = new_store(args, evaluator, task=make_task(evaluator, args))
    else:  # resumed: only --iterations may change
        store.update_config(lambda cfg: cfg["args"].update(iterations=args.iterations))
    seed = next((r for r in store.results() if r["iteration"] == 0), None)
    if seed is not None:  # resumed after the seed: the same FLOP budget as before
        evaluator.calibrate(Outcome.from_dict(seed))
    deps = Deps(improver=improver, generator=generator, evaluator=_Guarded(evaluator), store=store,
                options=loop_options(args))
    return deps, evaluator, store


def new_store(args: argparse.Namespace, evaluator: Evaluator, **config) -> RunStore:
    """A new run directory under --runs-dir, named by time and data set, with the options that define it."""
    saved = {k: getattr(args, k) for k in RUN_OPTIONS if hasattr(args, k)}
    label = evaluator.data.name
    if label.startswith("folder:"):
        label = "folder-" + Path(label[7:]).name
    return RunStore.create(args.runs_dir, label, {"args": saved, "started": time.time(), **config})


def _stream(deps: Deps, evaluator: Evaluator, store: RunStore, args: argparse.Namespace) -> dict:
    """Run (or resume) the graph under the run's SqliteSaver, showing progress; the final state."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(store.checkpoint_path), check_same_thread=False)
    try:
        graph = build_graph(k=args.k, checkpointer=SqliteSaver(conn), strategy=deps.options.strategy,
                            workers=deps.options.workers)
        config = {"configurable": {"thread_id": THREAD},
                  "recursion_limit": recursion_limit_for(args.iterations, deps.options.repairs)}
        for note in store.dropped:
            print(f"nasloop: warning: {note}; that step is redone", file=sys.stderr)
        try:
            snapshot = graph.get_state(config)
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{store.checkpoint_path} is damaged ({exc}); results.jsonl and trace.jsonl are "
                           f"intact: 'nasloop report {store.path}' still works") from exc
        state = dict(snapshot.values or {})
        _check_agreement(store, state)
        inp = None if snapshot.next else {"task": make_task(evaluator, args)}
        print(f"nasloop: run {store.path} — {evaluator.data.describe()}", file=sys.stderr)
        if deps.options.workers > 1:
            print(f"nasloop: {_scale_line(deps, evaluator)}", file=sys.stderr)
        if state:
            print(f"nasloop: resuming at iteration {state.get('iteration', 0)}", file=sys.stderr)
        note = f"nasloop: stopped; everything recorded is kept. Resume with: nasloop search --resume {store.path}"
        EXIT_NOTES.append(note)
        store.mark_running()
        with Progress(args.iterations, state) as progress:
            try:
                # subgraphs: the fanned-out candidates' steps and tokens show too (their updates reach the
                # parent as `candidate` updates, so only the parent's own are counted)
                for ns, mode, data in graph.stream(inp, config, context=deps, stream_mode=["updates", "custom"],
                                                   subgraphs=True):
                    if mode == "custom":
                        progress.event(data)
                    elif not ns:
                        progress.update(data)
            except NasloopError as exc:
                raise type(exc)(f"{exc} — resume with: nasloop search --resume {store.path}") from exc
            except KeyboardInterrupt:
                print(f"\n{note}", file=sys.stderr)
                raise
            finally:
                EXIT_NOTES.remove(note)
                store.clear_running()
        return dict(graph.get_state(config).values)
    finally:
        conn.close()


def _check_agreement(store: RunStore, state: dict) -> None:
    """On resume: the checkpoint says which iterations are done; each should have its record. A missing one
    (results.jsonl cut or edited) is not redone — the report and replay will lack it — so the user is told."""
    done = {r["iteration"] for r in store.results()}
    missing = [i for i in range(int(state.get("iteration") or 0)) if i not in done] if state else []
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        print(f"nasloop: warning: results.jsonl and the checkpoints disagree: the checkpoint has iterations "
              f"0..{state['iteration'] - 1} done but results.jsonl has no record of {shown}; the search goes on "
              f"from the checkpoint, and the report and replay will lack those", file=sys.stderr)


def _scale_line(deps: Deps, evaluator: Evaluator) -> str:
    """Where the workers run and whether the LLM calls of a round overlap (a server) or queue (in-process)."""
    sandbox = evaluator.sandbox
    where = getattr(sandbox, "where", "Ray")
    threads = deps.generator.settings.threads
    llm = ("concurrent requests" if deps.generator.concurrent and deps.improver.concurrent
           else f"queued (one in-process model{f', {threads} threads' if threads else ''})")
    return f"{deps.options.workers} evaluation workers on {where}; LLM calls: {llm}"


def _finish(store: RunStore, evaluator: Evaluator, options: LoopOptions, final: dict) -> None:
    """Summary, report and the closing lines."""
    summary = summarize(store, final)
    best = summary.get("best") or {}
    if best and best.get("accuracy") is None and options.fidelity == "proxy":
        summary["best"] = best = {**best, **train_best_scored(store, evaluator, best)}
    store.save_summary(summary)
    if not best:
        line = "best: none (no candidate was valid)"
    elif options.fidelity == "proxy":
        acc = f"{best['accuracy']:.4f}" if best.get("accuracy") is not None else "n/a (training failed)"
        line = f"best {options.proxy}: {best['fitness']:.4g} (iteration {best['iteration']}), trained: accuracy {acc}"
    else:
        line = f"best accuracy: {best['accuracy']:.4f} (iteration {best['iteration']})"
    from nasloop.agent.runs.report import write_report

    report = write_report(store.path)
    print(f"nasloop: run directory: {store.path}")
    print(f"nasloop: {line}; valid candidates: {summary['valid']}/{summary['evaluated']}")
    print(f"nasloop: report: {report}")


def train_best_scored(store: RunStore, evaluator: Evaluator, best: dict) -> dict:
    """A proxy-only search ends by training its best-scored net once, so the user gets an accuracy
    (recorded once, as trace node `final` of that iteration)."""
    code = store.candidate_code(best["iteration"])
    if code is None:
        return {}
    rec = store.once("trace", best["iteration"], "final", lambda: {"outcome": evaluator.evaluate(code).to_dict(),
                                                                    "step": record.TraceStep("final").to_dict()})
    out = rec["outcome"]
    print(f"nasloop: trained the best-scored net (iteration {best['iteration']}): "
          f"{out.get('kind')} {out.get('accuracy', '')}", file=sys.stderr)
    return {"accuracy": out.get("accuracy"), "trained": out.get("kind")}


class _Guarded:
    """Evaluator wrapper that turns infrastructure faults into a stop instead of a memory entry."""

    def __init__(self, evaluator: Evaluator):
        self.inner = evaluator

    def evaluate(self, source: str, **kwargs):
        return self._checked(self.inner.evaluate(source, **kwargs))

    def score(self, source: str, proxies: tuple[str, ...], **kwargs):
        return self._checked(self.inner.score(source, proxies, **kwargs))

    @staticmethod
    def _checked(out):
        if out.kind == "sandbox_error" and out.failure.get("phase") != WORKER_LOST:  # a lost worker: this one only
            raise SandboxFault(f"sandbox failure (not the candidate's fault): {out.diagnosis}")
        return out

    def __getattr__(self, name: str):  # data, settings, task_facts ... of the wrapped evaluator
        return getattr(self.inner, name)


def summarize(store: RunStore, state: dict) -> dict:
    results = store.results()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    best = state.get("best") or None
    seed: dict = next((r for r in results if r["iteration"] == 0), {})
    return {
        "run": str(store.path), "iterations": len(results), "evaluated": len(results),
        "valid": counts.get("ok", 0), "counts": counts, "seed_accuracy": seed.get("accuracy"),
        "best": {k: v for k, v in best.items() if k != "code"} if best else None,
    }
