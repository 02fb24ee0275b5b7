"""`nasloop train-best RUN_DIR --epochs N`: retrain the run's best net at full fidelity in the same sandbox.

The one-epoch number is a ranking signal, not the final accuracy. This trains best.py for N epochs on
the run's data set (or the whole data set with --full-data), and writes RUN_DIR/final/: net.py,
weights.pt (float32 state_dict) and result.json, next to the search's own result.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time

from agent.errors import RunError
from agent.run_store import RunStore


def train_best(args: argparse.Namespace) -> int:
    from agent.cli import build_evaluator, make_parser

    store = RunStore.open(args.run)
    best = store.path / "best.py"
    if not best.is_file():
        raise RunError(f"{store.path} has no best.py: no candidate of this run trained")
    saved = store.config.get("args", {})
    ns = make_parser().parse_args(["evaluate", str(best)])
    for key, value in saved.items():
        if hasattr(ns, key):
            setattr(ns, key, value)
    ns.epochs = args.epochs  # the search's --min-steps stays a floor: never less training than the search
    if args.full_data:
        ns.train_subset = ns.test_subset = None
    if args.timeout:
        ns.timeout = args.timeout
    evaluator = build_evaluator(ns)
    final = store.path / "final"
    final.mkdir(exist_ok=True)
    shutil.copy2(best, final / "net.py")
    search_best = (json.loads((store.path / "summary.json").read_text()).get("best") or {}) \
        if (store.path / "summary.json").is_file() else {}
    print(f"nasloop: training {best} for {args.epochs} epoch(s) on {evaluator.data.describe()}", flush=True)
    outcome = evaluator.evaluate(best.read_text(), output_dir=final)
    result = {"epochs": args.epochs, "full_data": args.full_data, "time": time.time(),
              "search_accuracy": search_best.get("accuracy"), "outcome": outcome.kind, **outcome.to_dict()}
    (final / "result.json").write_text(json.dumps(result, indent=1))
    print(outcome.summary())
    if not outcome.ok:
        return 1
    print(f"nasloop: one-epoch search accuracy {search_best.get('accuracy')} -> {outcome.accuracy:.4f} after "
          f"{args.epochs} epoch(s); weights: {final / 'weights.pt'}")
    return 0
