"""Evaluating a candidate at the run's fidelity: train it, score it with a zero-cost proxy, or (ladder)
score several variants and train only the best one. Each sandbox run is recorded once in the trace
(`check<attempt>`, `score<attempt>.<variant>`), verbatim repeats of earlier code cost no container, and a
channel mismatch the pre-flight locates is fixed in place and pre-flighted again (`check<attempt>+<round>`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

from nasloop.agent.deps import Deps, LoopOptions
from nasloop.agent.loop.escape import code_key
from nasloop.agent.loop.record import TraceStep
from nasloop.agent.fixes.registry import Context, apply_stage, fix_target
from nasloop.tools.outcome import Outcome


REPEAT_PHASE = "repeat"  # the failure phase of a verbatim repeat (the repair node gives it a concrete change)


def repeat_outcome(deps: Deps, before: int, code: str) -> Outcome | None:
    """A verbatim repeat of a candidate from before iteration `before` costs no container: tell the LLM."""
    prev = deps.earlier_code(code_key(code), before)
    if prev is None:
        return None
    got = prev.get("outcome", "?") + (f" {prev['accuracy']:.4f}" if prev.get("accuracy") is not None else "")
    return Outcome("invalid_code", f"identical to the code of iteration {prev['iteration']} (which got {got}); "
                   f"apply the suggested change instead of repeating it", seconds=0.0, stage="static",
                   failure={"phase": REPEAT_PHASE, "of": prev["iteration"]})


def repairs_allowed(repairs: int, outcome: Outcome) -> int:
    """Repair attempts for a candidate that failed this way: one more for a verbatim repeat of an earlier net
    (the host's own check, no training; in a CIFAR-10 search half of the repeats' repairs gave a valid net,
    7 of 17 a repeat again). Not for a structural duplicate: that verdict comes from the candidate's process
    and buys one repair only."""
    again = repairs and (outcome.failure or {}).get("phase") == REPEAT_PHASE
    return repairs + bool(again)


def assess(deps: Deps, iteration: int, codes: list[str], attempt: int, *, train: bool = False,
           before: int | None = None, progress: Callable[[int, int], None] | None = None) -> tuple[Outcome, str, dict]:
    """Evaluate at the run's fidelity: (outcome, the code it belongs to, what to add to the record).

    train: one epoch. proxy: the zero-cost score only (`train=True`, for the seed, also trains it).
    ladder: score every variant, train only the best-scoring valid one. A verbatim repeat of an earlier
    candidate costs no container, and channel mismatches the pre-flight locates are fixed in place
    (the enabled pre-flight fixes). Repeats and duplicates are of iterations before `before` (default: this
    one; with several workers, the round's first: the verdict must not depend on which sibling finished first)."""
    opts = deps.options
    check = Check(deps, iteration, attempt, iteration if before is None else before, progress)
    if opts.fidelity == "train":
        outcome, code, fixes = _check(check, codes[0], lambda c, r: evaluate_once(check, c, r))
        return outcome, code, _fixes(fixes)
    scored, fixed, notes, seen = [], [], [], {}
    for j, code in enumerate(codes):
        key = code_key(code)
        if key not in seen:
            seen[key] = _check(check, code, partial(_score_once, check, variant=j))
        outcome, code, fixes = seen[key]
        scored.append(outcome)
        fixed.append(code)
        notes.append(fixes)
    valid = [j for j, o in enumerate(scored) if o.ok]
    if not valid:  # report a repairable failure first
        j = next((j for j, o in enumerate(scored) if o.stage in ("static", "preflight")), 0)
        return scored[j], fixed[j], {**_ladder(opts, scored, None), **_fixes(notes[j])}
    j = max(valid, key=lambda j: (_finite(scored[j].scores.get(opts.proxy)), -j))
    if opts.fidelity == "proxy" and not train:
        return scored[j], fixed[j], _fixes(notes[j])
    trained = evaluate_once(check, fixed[j])
    trained.scores = {**scored[j].scores, **trained.scores}
    trained.proxy_seconds = scored[j].proxy_seconds
    return trained, fixed[j], {**_ladder(opts, scored, j), **_fixes(notes[j])}


MAX_SHAPE_FIXES = 4  # pre-flight reruns per candidate (each fixes one layer and costs one short sandbox run)


def _check(check: "Check", code: str, run: Callable[[str, int], Outcome]) -> tuple[Outcome, str, list[dict]]:
    """Repeat check, then `run(code, round)`; while an enabled pre-flight fix (agent/fixes/registry.py)
    edits the code the pre-flight failed on, run again. Returns (outcome, final code, fixes made)."""
    opts = check.deps.options
    if opts.repeat_check:
        rep = repeat_outcome(check.deps, check.before, code)
        if rep is not None:
            return rep, code, []
    outcome, fixes, layers = run(code, 0), list[dict](), list[str]()
    while outcome.stage == "preflight" and len(fixes) < MAX_SHAPE_FIXES:
        layer = fix_target(outcome.failure)
        if layer is None or layer in layers:
            break  # nothing located, or the same layer again (used with two input sizes: a design error)
        fixed, edits = apply_stage("preflight", code, Context(failure=outcome.failure), opts.fixes)
        if not edits or fixed is None:
            break
        code = fixed
        fixes += [e.to_dict() for e in edits]
        layers.append(layer)
        outcome = run(code, len(fixes))
    return outcome, code, fixes


def _fixes(edits: list[dict]) -> dict:
    return {"fixes": edits} if edits else {}


def _finite(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _ladder(opts: LoopOptions, scored: list[Outcome], chosen: int | None) -> dict:
    """What the ladder saw: each variant's proxy score or failure, and which one was trained."""
    if opts.fidelity != "ladder":
        return {}
    return {"ladder": {"proxy": opts.proxy, "chosen": chosen, "variants": [
        {"outcome": o.kind, "score": o.scores.get(opts.proxy)} if o.ok else {"outcome": o.kind,
                                                                           "diagnosis": o.diagnosis[:200]}
        for o in scored]}}


@dataclass(frozen=True)
class Check:
    """One evaluation's context: which iteration and repair attempt, and which iterations count as earlier."""

    deps: Deps
    iteration: int
    attempt: int
    before: int
    progress: Callable[[int, int], None] | None = None  # (step, steps) while the candidate trains: a display

    def training(self) -> dict:
        """What the evaluator takes besides the code: where to report training progress, if anywhere."""
        return {"on_progress": self.progress} if self.progress is not None else {}

    def known(self) -> dict:
        """The earlier structures, for the pre-flight to reject a structural duplicate without training it
        (part of the repeat check). The verdict comes from the candidate's side of the sandbox, so it is only
        advisory: asked only while a repair can follow, a candidate the pre-flight still calls a duplicate
        after its repairs is trained like any other."""
        opts = self.deps.options
        known = self.deps.structures(self.before) if opts.repeat_check and self.attempt < opts.repairs else {}
        return {"known_structures": known} if known else {}


def _score_once(check: Check, code: str, fix_round: int = 0, *, variant: int) -> Outcome:
    """Each proxy scoring is recorded once (trace node `score<attempt>.<variant>[+<fix round>]`)."""
    deps = check.deps
    step = TraceStep("score", check.attempt, variant, fix_round)
    rec = deps.once("trace", check.iteration, step.node, lambda: {
        "outcome": deps.evaluator.score(code, (deps.options.proxy,), **check.known()).to_dict(), "step": step.to_dict()})
    return Outcome.from_dict(rec["outcome"])


def evaluate_once(check: Check, code: str, fix_round: int = 0) -> Outcome:
    """Each evaluation is recorded once (trace node `check<attempt>[+<fix round>]`): a redo after a crash
    reuses it."""
    deps = check.deps
    step = TraceStep("check", check.attempt, fix_round=fix_round)
    rec = deps.once("trace", check.iteration, step.node, lambda: {
        "outcome": deps.evaluator.evaluate(code, **check.known(), **check.training()).to_dict(),
        "step": step.to_dict()})
    return Outcome.from_dict(rec["outcome"])
