"""Search quality with a small local model: nasloop's loop vs the published plain loop, same machine.

Runs `nasloop search` twice with the same model, data, seed and budget — once with everything on
(pre-flight, repair, failure-loop escape, repeat detection) and once with the ablation flags (the plain
loop) — and prints valid-candidate rate, best vs seed accuracy, iterations to the first valid net, and
seconds per iteration for both rows. Nothing is asserted.

    python bench/search_quality.py [--iterations 20] [--llm llamacpp:qwen2.5-coder-1.5b] [--images DIR]
                                   [--only nasloop --plain-run RUN_DIR]

Columns: `fixed` counts candidates changed by a deterministic fix (brackets, restored definitions, layer
slips, channel sizes), `replaced` the Improver suggestions replaced by a concrete change (unreadable, a
placeholder, or already tried).
"""
from __future__ import annotations

import argparse
import json
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
        "outcomes": kinds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--llm", default="llamacpp:qwen2.5-coder-1.5b")
    ap.add_argument("--images", type=Path, help="ImageFolder tree (default: the CIFAR-10 JPEGs)")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=43)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "bench" / "out" / "search_quality")
    ap.add_argument("--only", choices=["nasloop", "plain"])
    ap.add_argument("--plain-run", type=Path, help="a finished plain run directory to use as the baseline row "
                    "instead of running it again (same seed, same machine: its LLM replies repeat exactly)")
    args = ap.parse_args()
    args.images = args.images or cifar_images()
    rows = []
    for label, extra in (("plain", PLAIN), ("nasloop", [])):  # the baseline first
        if label == "plain" and args.plain_run:
            print(f"[plain] recorded run {args.plain_run}")
            rows.append(summarize(label, args.plain_run))
        elif args.only in (None, label):
            rows.append(run(label, extra, args, args.runs_dir))
    print(f"\nsearch quality: {args.llm}, {args.iterations} iterations, seed {args.seed}, "
          f"{args.train_subset} training images, >= {args.min_steps} steps per candidate")
    print(f"{'loop':<8} {'valid':>9} {'seed acc':>9} {'best acc':>9} {'1st valid':>9} {'s/iter':>7} "
          f"{'LLM share':>9} {'repaired':>8} {'escapes':>7} {'fixed':>5} {'replaced':>8}  outcomes")
    for r in rows:
        print(f"{r['label']:<8} {r['valid']:>3}/{r['candidates']:<3}{r['valid_rate']:>4.0%} {r['seed_acc']:>9.3f} "
              f"{r['best_acc']:>9.3f} {str(r['first_valid']):>9} {r['s_per_iter']:>7.0f} {r['llm_share']:>9.0%} "
              f"{r['repaired']:>8} {r['escapes']:>7} {r['fixed']:>5} {r['replaced']:>8}  {r['outcomes']}")
    if len(rows) == 2:
        b, a = rows

        def ratio(key: str) -> str:
            return f"{a[key] / b[key]:.2f}x" if b[key] else f"n/a (plain: {b[key]:.3g})"

        print(f"ratios nasloop/plain: valid rate {ratio('valid_rate')}, best accuracy {ratio('best_acc')}, "
              f"seconds per iteration {ratio('s_per_iter')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
