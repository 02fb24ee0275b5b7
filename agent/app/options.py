"""Options shared by the subcommands, and the evaluator they describe.

Its own module so that the CLI, the search and train-best can all build an evaluator from options without
importing each other (the CLI imports them; they import this).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace

from nasloop.errors import UsageError
from nasloop.sandbox import Limits, Sandbox, make_sandbox
from nasloop.tools.datasets import NAMES, prepare
from nasloop.tools.evaluator import Evaluator, TrainSettings


# What the CLI prints if it is stopped by a signal while a command runs (a search adds how to resume it).
EXIT_NOTES: list[str] = []


def parse_bytes(text: str) -> int:
    """'6g' -> 6 GiB, '512m' -> 512 MiB, plain numbers are bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"cannot read memory size '{text}' (try 512m or 6g)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {v})")
    return v


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
    g.add_argument("--data-root", help="where torchvision data sets are (or get downloaded; default: the cache, NASLOOP_CACHE)")
    g.add_argument("--train-subset", type=positive_int, help="use N training images (CPU-sized runs; default: all)")
    g.add_argument("--test-subset", type=positive_int, help="evaluate on N test images (default: all)")
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
    g.add_argument("--seed", type=int, default=d.seed, help="seeds training, data subsets and the LLM's sampling")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision)
    g.add_argument("--max-params", type=positive_int, default=d.max_params,
                   help="parameter budget: bigger nets are rejected before training")
    g.add_argument("--max-flops", type=non_negative_int, default=d.max_flops,
                   help="FLOPs per image a candidate may need, checked at the pre-flight (0: no fixed cap); "
                        "a search also rejects nets its seed's speed says would not train within --timeout")
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
                   help="docker runtime for the sandbox, e.g. runsc (gVisor; see 'make docker-engine RUNSC=1'; "
                        "default: the engine's own)")
    g.add_argument("--sandbox-image", default="nasloop-sandbox:local")
    g.add_argument("--gpus", default="none", help="all, none or a comma list of GPU ids (docker only)")
    g.add_argument("--memory", type=parse_bytes, default=d.memory_bytes,
                   help=f"memory limit, e.g. 6g (default: {d.memory_bytes / 2**30:g}g)")
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
        options: dict = {"image": args.sandbox_image}
    else:
        print("nasloop: warning: --sandbox process has no network or file-system isolation", file=sys.stderr)
        kind, options = "process", {}
    workers = getattr(args, "workers", 1) or 1
    if workers > 1 and kind == "process":
        raise UsageError("--workers needs the Docker sandbox: a candidate in the process sandbox has the "
                         "network of the host, and the Ray workers' cluster would be within its reach")
    if workers > 1:
        sandbox = ray_sandbox(kind, workers, limits, getattr(args, "ray_address", None), options, llm_in_process(args))
    else:
        sandbox = make_sandbox(kind, limits=limits, **options)
    settings = TrainSettings(epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, device=args.device, precision=args.precision,
                             max_params=args.max_params, max_flops=getattr(args, "max_flops", 0) or 0,
                             preflight=not args.no_preflight)
    return Evaluator(data, sandbox, settings)


def llm_in_process(args: argparse.Namespace) -> bool:
    """Whether a role's model runs in this process (llama.cpp), competing with local trainers for cores."""
    return any(str(getattr(args, key, "") or "").startswith("llamacpp:") for key in ("llm", "improver_llm", "generator_llm"))


def thread_budget(workers: int, cpus: float, in_process_llm: bool, cores: int | None = None) -> tuple[float, int]:
    """(CPUs per evaluation worker, llama.cpp threads; 0: all cores) on this machine. With several workers
    the LLM's calls overlap training, and llama.cpp slows down many times over when its threads have to
    share cores: an in-process model keeps half of the cores, the workers share the rest (at most `cpus`
    each). With too few cores for that, the workers share them all and the LLM takes what it gets."""
    cores = cores or os.cpu_count() or 1
    if workers <= 1:
        return cpus, 0
    llm = max(1, cores // 2) if in_process_llm else 0
    rest = cores - llm
    share = rest / workers if rest >= 0.5 * workers else cores / workers
    return min(cpus, share), llm


def ray_sandbox(kind: str, workers: int, limits: Limits, address: str | None, options: dict,
                in_process_llm: bool = False) -> Sandbox:
    """`workers` evaluation workers on Ray. On this machine (no address) their CPU shares follow
    `thread_budget`, so the trainers' and the LLM's threads fit the cores instead of oversubscribing them."""
    from nasloop.sandbox.ray_pool import RaySandbox

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        limits = replace(limits, cpus=thread_budget(workers, limits.cpus, in_process_llm)[0])
    return RaySandbox(kind, workers, limits, address=address, **options)


def evaluation_defaults() -> argparse.Namespace:
    """The data, training and sandbox options at their defaults (train-best overlays a run's saved ones)."""
    p = argparse.ArgumentParser(add_help=False)
    add_data_args(p)
    add_train_args(p)
    add_sandbox_args(p)
    return p.parse_args([])
