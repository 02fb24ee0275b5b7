"""Evaluating a candidate at the run's fidelity: train it, score it with a zero-cost proxy, or (ladder)
score several variants and train only the best one. Each sandbox run is recorded once in the trace
(`check<attempt>`, `score<attempt>.<variant>`), and verbatim repeats of earlier code cost no container.
"""
from __future__ import annotations

import math
from typing import Callable

from agent.deps import Deps, LoopOptions
from agent.escape import code_key
from tools.outcome import Outcome


def repeat_outcome(deps: Deps, iteration: int, code: str) -> Outcome | None:
    """A verbatim repeat of an earlier candidate costs no container: tell the LLM instead."""
    prev = deps.earlier_code(code_key(code), iteration)
    if prev is None:
        return None
    got = prev.get("outcome", "?") + (f" {prev['accuracy']:.4f}" if prev.get("accuracy") is not None else "")
    return Outcome("invalid_code", f"identical to the code of iteration {prev['iteration']} (which got {got}); "
                                   f"apply the suggested change instead of repeating it", seconds=0.0, stage="static")


def assess(deps: Deps, iteration: int, codes: list[str], attempt: int, *, train: bool = False
            ) -> tuple[Outcome, str, dict]:
    """Evaluate at the run's fidelity: (outcome, the code it belongs to, ladder record).

    train: one epoch. proxy: the zero-cost score only (`train=True`, for the seed, also trains it).
    ladder: score every variant, train only the best-scoring valid one. A verbatim repeat of an earlier
    candidate costs no container (with escapes on)."""
    opts = deps.options
    if opts.fidelity == "train":
        return _check(deps, iteration, codes[0], attempt, lambda c: evaluate_once(deps, iteration, c, attempt)), \
            codes[0], {}
    scored, seen = [], {}
    for j, code in enumerate(codes):
        key = code_key(code)
        if key not in seen:
            seen[key] = _check(deps, iteration, code, attempt, lambda c: _score_once(deps, iteration, c, attempt, j))
        scored.append(seen[key])
    valid = [j for j, o in enumerate(scored) if o.ok]
    if not valid:  # report a repairable failure first
        j = next((j for j, o in enumerate(scored) if o.stage in ("static", "preflight")), 0)
        return scored[j], codes[j], _ladder(opts, scored, None)
    j = max(valid, key=lambda j: (_finite(scored[j].scores.get(opts.proxy)), -j))
    if opts.fidelity == "proxy" and not train:
        return scored[j], codes[j], {}
    trained = evaluate_once(deps, iteration, codes[j], attempt)
    trained.scores = {**scored[j].scores, **trained.scores}
    trained.proxy_seconds = scored[j].proxy_seconds
    return trained, codes[j], _ladder(opts, scored, j)


def _check(deps: Deps, iteration: int, code: str, attempt: int, run: Callable[[str], Outcome]) -> Outcome:
    return (repeat_outcome(deps, iteration, code) if deps.options.escape else None) or run(code)


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


def _score_once(deps: Deps, iteration: int, code: str, attempt: int, variant: int) -> Outcome:
    """Each proxy scoring is recorded once (trace node `score<attempt>.<variant>`)."""
    proxy = deps.options.proxy
    rec = deps.once("trace", iteration, f"score{attempt}.{variant}",
                    lambda: {"outcome": deps.evaluator.score(code, (proxy,)).to_dict()})
    return Outcome.from_dict(rec["outcome"])


def evaluate_once(deps: Deps, iteration: int, code: str, attempt: int = 0) -> Outcome:
    """Each evaluation attempt is recorded once (trace node `check<attempt>`): a redo after a crash reuses it."""
    rec = deps.once("trace", iteration, f"check{attempt}",
                    lambda: {"outcome": deps.evaluator.evaluate(code).to_dict()})
    return Outcome.from_dict(rec["outcome"])
