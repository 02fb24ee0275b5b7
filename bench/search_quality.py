"""Search quality with a small local model: nasloop's loop vs the published plain loop, same machine.

Runs `nasloop search` twice with the same model, data, seed and budget — once with everything on
(pre-flight, repair, failure-loop escape, repeat detection) and once with the ablation flags (the plain
loop) — and prints valid-candidate rate, best vs seed accuracy, iterations to the first valid net, and
seconds per iteration for both rows. Nothing is asserted.

    python bench/search_quality.py [--iterations 20] [--llm llamacpp:qwen2.5-coder-1.5b] [--images DIR]
                                   [--seeds 43,44,45] [--only nasloop --plain-run RUN_DIR]
                                   [--nasloop-args="--no-improver-chat"]

With several seeds: one row per seed and loop, then each loop's mean and its worst seed (the goal must
hold on the worst seed, not on the mean).

Columns: `fixed` counts candidates changed by a deterministic fix (brackets, restored definitions, layer
slips, channel sizes), `replaced` the Improver suggestions replaced by a concrete change (unreadable, a
placeholder, or already tried); `model` is the share of suggestions the model wrote, `fix/valid` the
share of valid nets that needed a fix, `streak` the longest run of one failure class.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluator import cifar_images  # noqa: E402
from nasloop.agent.loop import record  # noqa: E402

PLAIN = ["--plain", "--no-preflight"]


def run(label: str, extra: list[str], args: argparse.Namespace, runs_dir: Path) -> dict:
    dataset = f"folder:{args.images}" if args.images else "digits"
    cmd = [sys.executable, "-m", "nasloop.agent.app.cli", "search", "--dataset", dataset, "--iterations", str(args.iterations),
           "--llm", args.llm, "--seed", str(args.seed), "--runs-dir", str(runs_dir / label),
           "--train-subset", str(args.train_subset), "--test-subset", "1000", "--min-steps", str(args.min_steps),
           *extra]
    print(f"[{label}] {' '.join(cmd[3:])}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(f"{label} search failed")
    return summarize(label, next(p for p in (runs_dir / label).iterdir() if p.is_dir()))


def summarize(label: str, run_dir: Path) -> dict:
    """One row of the table from a finished run directory."""
    results = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    seed = next(r for r in results if r["iteration"] == 0)
    cands = [r for r in results if r["iteration"] > 0]
    valid = [r for r in cands if r["outcome"] == "ok"]
    times = [r["time"] for r in results]
    kinds: dict[str, int] = {}
    for r in cands:
        kinds[r["outcome"]] = kinds.get(r["outcome"], 0) + 1
    llm_s = [sum(v or 0 for v in (r.get("llm") or {}).values()) for r in cands]
    return {
        "label": label, "run": str(run_dir), "candidates": len(cands), "valid": len(valid),
        "valid_rate": len(valid) / max(1, len(cands)), "seed_acc": seed.get("accuracy"),
        "best_acc": max([r.get("accuracy") or 0 for r in results]),
        "first_valid": min((r["iteration"] for r in valid), default=None),
        "s_per_iter": (times[-1] - times[0]) / max(1, len(cands)),
        "llm_share": sum(llm_s) / max(1e-9, times[-1] - times[0]),
        "repaired": sum(1 for r in cands if r.get("repairs")), "escapes": sum(1 for r in cands if r.get("escape")),
        "fixed": sum(1 for r in cands if record.fixes_of(r)), "fix_counts": record.fix_counts(cands),
        "replaced": sum(1 for r in cands if record.suggestion_source(r) not in ("model", "model-retry")),
        "outcomes": kinds, "streak": longest_failure_streak(cands),
        "model_share": sum(1 for r in cands if record.suggestion_source(r) in ("model", "model-retry")) / max(1, len(cands)),
        "fixed_valid": sum(1 for r in valid if record.fixes_of(r)) / max(1, len(valid)),
        "gain": max([r.get("accuracy") or 0 for r in results]) - (seed.get("accuracy") or 0),
    }


def longest_failure_streak(cands: list[dict]) -> int:
    """The longest run of candidates in a row that failed with the same outcome class."""
    best = run = 0
    prev = None
    for r in cands:
        kind = r["outcome"]
        run = run + 1 if kind != "ok" and kind == prev else (1 if kind != "ok" else 0)
        prev = kind
        best = max(best, run)
    return best


COLUMNS = (("valid", "valid_rate", "{:>6.0%}"), ("seed acc", "seed_acc", "{:>8.3f}"), ("best acc", "best_acc", "{:>8.3f}"),
           ("gain", "gain", "{:>+6.3f}"), ("1st valid", "first_valid", "{!s:>9}"), ("streak", "streak", "{:>6.3g}"),
           ("s/iter", "s_per_iter", "{:>6.0f}"), ("model", "model_share", "{:>6.0%}"),
           ("fix/valid", "fixed_valid", "{:>9.0%}"), ("repaired", "repaired", "{:>8.3g}"))
WORST = {"valid_rate": min, "gain": min, "best_acc": min, "streak": max, "s_per_iter": max, "model_share": min,
         "first_valid": lambda xs: None if None in xs else max(xs)}  # None: a seed never got a valid net


def row(label: str, r: dict) -> str:
    return f"{label:<14}" + " ".join(fmt.format(r.get(key)) if r.get(key) is not None else f"{'-':>6}"
                                     for _, key, fmt in COLUMNS) + f"  {r.get('outcomes', '')}"


def aggregate(rows: list[dict], how: str) -> dict:
    """The mean, or the worst value of each column (the lowest rate and gain, the longest streak...)."""
    out: dict = {}
    for _, key, _ in COLUMNS:
        values = [r[key] for r in rows if key in r]
        if not values:
            continue
        if how == "worst" and key in WORST:
            out[key] = WORST[key](values)
        elif how == "mean" and all(isinstance(v, (int, float)) for v in values):
            out[key] = sum(values) / len(values)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--llm", default="llamacpp:qwen2.5-coder-1.5b")
    ap.add_argument("--images", type=Path, help="ImageFolder tree (default: the CIFAR-10 JPEGs)")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[43],
                    help="comma list: one search per seed and loop")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "bench" / "out" / "search_quality")
    ap.add_argument("--only", choices=["nasloop", "plain"])
    ap.add_argument("--nasloop-args", default="", metavar="ARGS",
                    help='more `nasloop search` switches for the nasloop run, for an ablation '
                         '(--nasloop-args="--no-improver-chat": with "=", as the value starts with "--")')
    ap.add_argument("--plain-run", type=Path, help="a finished plain run directory to use as the baseline row "
                    "instead of running it again (one seed; same machine: its LLM replies repeat exactly)")
    args = ap.parse_args()
    args.images = args.images or cifar_images()
    rows: dict[str, list[dict]] = {"plain": [], "nasloop": []}
    for seed in args.seeds:
        args.seed = seed
        for label, extra in (("plain", PLAIN), ("nasloop", shlex.split(args.nasloop_args))):  # the baseline first
            if label == "plain" and args.plain_run:
                print(f"[plain] recorded run {args.plain_run}")
                rows[label].append({**summarize(label, args.plain_run), "seed": seed})
            elif args.only in (None, label):
                rows[label].append({**run(label, extra, args, args.runs_dir / f"seed{seed}"), "seed": seed})
    print(f"\nsearch quality: {args.llm}, {args.iterations} iterations, seeds {args.seeds}, "
          f"{args.train_subset} training images, >= {args.min_steps} steps per candidate")
    print(f"{'loop / seed':<14}" + " ".join(f"{name:>{max(6, len(name))}}" for name, _, _ in COLUMNS) + "  outcomes")
    for label, found in rows.items():
        for r in found:
            print(row(f"{label} {r['seed']}", r))
        if len(found) > 1:
            print(row(f"{label} mean", aggregate(found, "mean")))
            print(row(f"{label} worst", aggregate(found, "worst")))
    if rows["plain"] and rows["nasloop"]:
        b, a = aggregate(rows["plain"], "worst"), aggregate(rows["nasloop"], "worst")

        def ratio(key: str) -> str:
            return f"{a[key] / b[key]:.2f}x" if b.get(key) else f"n/a (plain: {b.get(key)})"

        print(f"worst seed, nasloop/plain: valid rate {ratio('valid_rate')}, best accuracy {ratio('best_acc')}, "
              f"seconds per iteration {ratio('s_per_iter')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
