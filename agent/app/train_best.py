"""`nasloop train-best RUN_DIR --epochs N`: retrain the run's best net at full fidelity in the same sandbox.

The one-epoch number is a ranking signal, not the final accuracy. This trains best.py for N epochs on
the run's data set (or the whole data set with --full-data), and writes RUN_DIR/final/: net.py,
weights.safetensors (float32: each parameter and buffer once, as the net registered them, so load it with
`net.load_state_dict(safetensors.torch.load_file(path), strict=False)`) and result.json, next to the
search's own result.

final/ is the host's: the sandbox writes only to its own private out/ directory, the host copies back the
weights as a checked safetensors file, and net.py is the policy-checked source the host already had.
Nothing is written through a path the candidate could have made (no symlink is followed).
"""
from __future__ import annotations

import argparse
import json
import time

from nasloop.errors import RunError
from nasloop.agent.runs.store import RunStore
from nasloop.sandbox.outputs import WEIGHTS, write_new
from nasloop.tools.static_check import check_source


def train_best(args: argparse.Namespace) -> int:
    from nasloop.agent.app.options import build_evaluator, evaluation_defaults

    store = RunStore.open(args.run)
    best = store.path / "best.py"
    if not best.is_file():
        raise RunError(f"{store.path} has no best.py: no candidate of this run trained")
    saved = store.config.get("args", {})
    ns = evaluation_defaults()
    for key, value in saved.items():
        if hasattr(ns, key):
            setattr(ns, key, value)
    ns.epochs = args.epochs  # the search's --min-steps stays a floor: never less training than the search
    if args.full_data:
        ns.train_subset = ns.test_subset = None
    if args.timeout:
        ns.timeout = args.timeout
    source = best.read_text(encoding="utf-8")
    violation = check_source(source)
    if violation is not None:
        raise RunError(f"{best} does not pass the code policy: {violation.reason}")
    evaluator = build_evaluator(ns)
    final = store.path / "final"
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise RunError(f"{final} is not a directory")
    final.mkdir(exist_ok=True)
    write_new(final / "net.py", source.encode("utf-8"))
    search_best = (json.loads((store.path / "summary.json").read_text()).get("best") or {}) \
        if (store.path / "summary.json").is_file() else {}
    print(f"nasloop: training {best} for {args.epochs} epoch(s) on {evaluator.data.describe()}", flush=True)
    outcome = evaluator.evaluate(source, output_dir=final)
    result = {"epochs": args.epochs, "full_data": args.full_data, "time": time.time(),
              "search_accuracy": search_best.get("accuracy"), "outcome": outcome.kind, **outcome.to_dict()}
    write_new(final / "result.json", json.dumps(result, indent=1).encode("utf-8"))
    print(outcome.summary())
    if not outcome.ok:
        return 1
    print(f"nasloop: one-epoch search accuracy {search_best.get('accuracy')} -> {outcome.accuracy:.4f} after "
          f"{args.epochs} epoch(s); weights: {final / WEIGHTS}")
    return 0
