"""`nasloop replay RUN_DIR`: step through a recorded run node by node, read-only.

Everything comes from the run directory (trace.jsonl, results.jsonl, candidates/); no LLM is called and
no container is started. The memory window and best-so-far after each step are derived from the
results in order, exactly as the graph's reducer built them. Interactive keys:

    n / Enter  next step          p  previous step        j N  jump to iteration N
    f KIND     only iterations whose outcome is KIND (f alone: all)               q  quit
"""
from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from nasloop.errors import RunError
from nasloop.agent.loop import record
from nasloop.agent.runs.store import RunStore
from nasloop.agent.state import DEFAULT_K, window_add

TRACE_VERSION = 1


@dataclass
class Step:
    """One node step of a run, with what the run looked like after it."""

    iteration: int
    node: str
    prompt: str = ""
    response: str = ""
    outcome: dict | None = None
    code: str | None = None
    diff: str = ""
    window: list = field(default_factory=list)
    best: dict | None = None
    seconds: float | None = None
    note: str = ""


def _order(rec: dict) -> tuple:
    if rec.get("_kind") == "result":
        return (rec.get("iteration", 0), 9, 0)
    return (rec.get("iteration", 0), *record.TraceStep.of(rec).order())


def load_steps(run: str) -> list[Step]:
    """All steps of a run, in the order they happened. Raises RunError with one line if unreadable."""
    store = RunStore.open(run, writable=False)
    args = _run_args(store, run)
    records = [dict(r, _kind="trace") for r in store.trace()] + [dict(r, _kind="result") for r in store.results()]
    if not records:
        raise RunError(f"{run} has no recorded steps yet")
    for r in records:
        if "iteration" not in r or "node" not in r:
            raise RunError(f"{run}: unreadable trace record (no iteration/node): {str(r)[:80]}")
    records.sort(key=_order)
    k, proxy = int(args.get("k") or DEFAULT_K), args.get("proxy")
    steps: list[Step] = []
    window: list = []
    best: dict | None = None
    for r in records:
        if r["_kind"] == "result":  # the memory and best-so-far, exactly as the graph's nodes built them
            code = store.candidate_code(r["iteration"])
            diff = parent_diff(store, r, code, best)
            window = window_add(window, [record.triple(r, proxy)], k)
            if record.improves(best, r):
                best = record.best_entry(r, code, proxy)
            steps.append(_result_step(r, code, diff, window, best))
        else:
            steps.append(_trace_step(r, window, best))
    return steps


def _run_args(store: RunStore, run: str) -> dict:
    cfg = store.config
    version = cfg.get("version", 1)
    if version > TRACE_VERSION:
        raise RunError(f"{run} was written by a newer nasloop (trace format {version}; this one reads "
                       f"{TRACE_VERSION})")
    return cfg.get("args") or {}


def parent_diff(store: RunStore, r: dict, code: str | None, best: dict | None) -> str:
    """The candidate against what it was made from: its parent (evolution) or the best net so far."""
    parent = r.get("parent")
    base = (store.candidate_code(parent) if parent is not None else (best or {}).get("code")) or ""
    label = f"parent (iteration {parent})" if parent is not None else "best so far"
    if not (code and base):
        return ""
    return "".join(difflib.unified_diff(base.splitlines(True), code.splitlines(True), label,
                                        f"iteration {r['iteration']}"))


def _result_step(r: dict, code: str | None, diff: str, window: list, best: dict | None) -> Step:
    fixes = record.fixes_of(r)
    note = ", ".join(x for x in (f"{len(r['repairs'])} repair(s)" if r.get("repairs") else "",
                                 f"{len(fixes)} fix(es)" if fixes else "",
                                 f"escape: {r['escape']['name']}" if r.get("escape") else "") if x)
    return Step(r["iteration"], "evaluate", outcome={key: r.get(key) for key in _OUTCOME_KEYS}, code=code,
                diff=diff, window=list(window), best=best and dict(best), note=note, seconds=r.get("seconds"))


def _trace_step(r: dict, window: list, best: dict | None) -> Step:
    it, node = r["iteration"], r["node"]
    if record.TraceStep.of(r).kind in ("check", "score", "final"):  # a sandbox run
        out = r.get("outcome") or {}
        return Step(it, node, outcome={"outcome": out.get("kind"), "diagnosis": out.get("diagnosis"),
                                       "accuracy": out.get("accuracy"), **(out.get("scores") or {})},
                    window=list(window), best=best and dict(best), seconds=out.get("seconds"))
    note = f"escape: {r['escape']['name']}" if r.get("escape") else ""
    return Step(it, node, prompt=r.get("prompt", ""), response=r.get("response", ""), window=list(window),
                best=best and dict(best), seconds=r.get("seconds"), note=note)


_OUTCOME_KEYS = ("outcome", "diagnosis", "accuracy", "params", "flops", "seconds")


def fold(text: str, limit: int) -> str:
    """Keep the head and tail of long text."""
    if limit <= 0 or len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n  … [{len(text) - limit} characters folded] …\n{text[-half:]}"


def render(step: Step, index: int, total: int, fold_at: int = 1500) -> str:
    """A step as plain text (the interactive view prints the same)."""
    head = f"── step {index + 1}/{total} · iteration {step.iteration} · {step.node}"
    if step.seconds:
        head += f" · {step.seconds:.1f} s"
    if step.note:
        head += f" · {step.note}"
    lines = [head]
    if step.prompt:
        lines += ["prompt:", fold(step.prompt, fold_at)]
    if step.response:
        lines += ["response:", fold(step.response, fold_at)]
    if step.outcome:
        o = step.outcome
        acc = f"  accuracy {o['accuracy']:.4f}" if o.get("accuracy") is not None else ""
        acc += "".join(f"  {k} {v:.4g}" for k, v in o.items() if k not in _OUTCOME_KEYS and isinstance(v, float))
        lines.append(f"outcome: {o.get('outcome')}{acc}" + (f"  diagnosis: {o['diagnosis']}" if o.get("diagnosis") else ""))
    if step.node == "evaluate":
        if step.diff:
            lines += [f"code vs {step.diff.splitlines()[0][4:].strip()}:", fold(step.diff, fold_at)]
        elif step.code:
            lines += ["code:", fold(step.code, fold_at)]
        lines.append("memory window after this step:")
        lines += [f"  {json.dumps(t)}" for t in step.window]
    b = step.best
    if not b:
        lines.append("best so far: none")
    elif b.get("accuracy") is not None and b.get("fitness") == b.get("accuracy"):
        lines.append(f"best so far: {b['accuracy']:.4f} (iteration {b['iteration']})")
    else:  # ranked by a proxy score
        lines.append(f"best so far: score {b['fitness']:.4g} (iteration {b['iteration']})")
    return "\n".join(lines)


def select(steps: list[Step], kind: str | None) -> list[int]:
    """Indices of the steps whose iteration ended with outcome `kind` (all when None)."""
    if not kind:
        return list(range(len(steps)))
    keep = {s.iteration for s in steps if s.node == "evaluate" and (s.outcome or {}).get("outcome") == kind}
    return [i for i, s in enumerate(steps) if s.iteration in keep]


KEYS = "n/Enter next · p previous · j N jump to iteration N · f KIND filter by outcome (f: all) · q quit"
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: each step replaces the last on a terminal


def interactive(steps: list[Step], read: Callable[[], str] = input, write: Callable[[str], None] = print,
                fold_at: int = 1500, kind: str | None = None, redraw: bool = False) -> None:
    """The key loop, starting filtered to outcome `kind` (--outcome); `read`/`write` are injectable so it can
    be driven by a test or a pipe. Each step ends with the keys; `redraw` clears the screen before it."""
    view, pos = select(steps, kind) or select(steps, None), 0

    def show() -> None:
        where = f"{pos + 1}/{len(view)} in this view" if len(view) < len(steps) else f"{pos + 1}/{len(steps)}"
        last = "  (last step: p back, q quit)" if pos == len(view) - 1 else ""
        write((CLEAR if redraw else "") + render(steps[view[pos]], view[pos], len(steps), fold_at)
              + f"\n[{where}{last}] {KEYS}")

    show()
    while True:
        try:
            cmd = read().strip()
        except EOFError:
            return
        if cmd in ("q", "quit"):
            return
        if cmd in ("", "n"):
            if pos == len(view) - 1:
                write(f"end of the run: that was the last of {len(view)} steps (p back, q quit)")
                continue
            pos += 1
        elif cmd == "p":
            if pos == 0:
                write("this is the first step (n next, q quit)")
                continue
            pos -= 1
        elif cmd.startswith("j"):
            try:
                target = int(cmd[1:].strip())
            except ValueError:
                write("usage: j ITERATION")
                continue
            hits = [j for j, i in enumerate(view) if steps[i].iteration == target]
            if not hits:
                write(f"no iteration {target} in this view")
                continue
            pos = hits[0]
        elif cmd.startswith("f"):
            kind = cmd[1:].strip() or None
            new = select(steps, kind)
            if not new:
                write(f"no iteration ended with outcome '{kind}'")
                continue
            view, pos = new, 0
        else:
            write(f"keys: {KEYS}")
            continue
        show()


def replay(run: str, plain: bool = False, outcome: str | None = None, fold_at: int = 1500,
           out: Callable[[str], None] = print) -> int:
    steps = load_steps(run)
    if plain:
        chosen = select(steps, outcome)
        if outcome and not chosen:
            print(f"nasloop: no iteration of {run} ended with outcome {outcome}", file=sys.stderr)
            return 1
        for i in chosen:
            out(render(steps[i], i, len(steps), fold_at))
        return 0
    if not sys.stdin.isatty():
        raise RunError("replay needs a terminal for its keys; use --plain to print every step")
    interactive(steps, fold_at=fold_at, kind=outcome, redraw=sys.stdout.isatty())
    return 0


def iter_outcomes(steps: Iterable[Step]) -> list[str]:
    return [s.outcome["outcome"] for s in steps if s.node == "evaluate" and s.outcome]
