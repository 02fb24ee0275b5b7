"""What the run remembers of one evaluated candidate, built in one place.

An iteration ends in one results.jsonl record (`result_record`). Everything else is derived from that
record by the functions here: its memory triple (what the Improver reads), its fitness (what the search
ranks by), whether it is the new best, and which fixes it needed. The loop's nodes, replay, the report,
the summary and the progress display all call these, so a replayed window is exactly the window the
LLM saw and "best so far" means the same everywhere.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

from nasloop.agent.state import DEFAULT_K, Triple, window_add
from nasloop.tools.outcome import Outcome

TEXT_CHARS = 300  # of the Improver's problem and suggestion kept in the memory window


def result_record(outcome: Outcome, proposal: dict, code_key: str | None, fitness: float | None,
                  parent: dict | None, extra: dict) -> dict[str, Any]:
    """The results.jsonl record of an evaluated candidate (without the run store's iteration/node/time)."""
    return {
        "outcome": outcome.kind, **outcome.to_dict(), "problem": proposal.get("problem", ""),
        "suggestion": proposal.get("suggestion", ""), "suggestion_source": proposal.get("source", "model"),
        **({"change": proposal["change"]} if isinstance(proposal.get("change"), dict) else {}),
        "code_key": code_key, "fitness": fitness, **_duplicate(outcome),
        **({"parent": parent["iteration"], "parent_fitness": parent.get("fitness")} if parent else {}), **extra,
    }


def _duplicate(outcome: Outcome) -> dict:
    """`duplicate_of: N` for a candidate that repeated iteration N verbatim (never trained). A candidate whose
    first version repeated or duplicated N and was repaired carries it too (from its repair history)."""
    failure = outcome.failure or {}
    return {"duplicate_of": failure["of"]} if failure.get("phase") in ("repeat", "duplicate") and "of" in failure else {}


def fitness(r: dict) -> float | None:
    """What the run ranked a results record by (runs from before strategies existed: its accuracy);
    None for a failed candidate or a score that is not a finite number."""
    if r.get("outcome") != "ok":
        return None
    value = r.get("fitness", r.get("accuracy"))
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def triple(r: dict, proxy: str | None = None) -> Triple:
    """The memory entry for a results record. `proxy` names the run's proxy (None: the record's only score)."""
    t: Triple = {"iteration": r["iteration"], "problem": (r.get("problem") or "")[:TEXT_CHARS],
                 "suggestion": (r.get("suggestion") or "")[:TEXT_CHARS], "outcome": r.get("outcome", "")}
    change = r.get("change")
    if isinstance(change, dict) and change.get("operator") and change.get("target"):
        t["change"] = {"operator": change["operator"], "target": change["target"]}
    if r.get("outcome") == "ok":
        if r.get("accuracy") is not None:
            t["accuracy"] = round(r["accuracy"], 4)
        scores = r.get("scores") or {}
        score = scores.get(proxy) if proxy else (next(iter(scores.values())) if len(scores) == 1 else None)
        if isinstance(score, (int, float)):
            t["score"] = round(score, 4)
    else:
        t["diagnosis"] = r.get("diagnosis", "")
        if (r.get("failure") or {}).get("exc_type") == "BudgetError":
            t["over_budget"] = True
    if r.get("parent") is not None:
        t["parent"] = r["parent"]
        fit, before = fitness(r), r.get("parent_fitness")
        if fit is not None and isinstance(before, (int, float)):
            t["delta"] = round(fit - before, 4)
    return t


def best_fitness(best: dict | None) -> float | None:
    """The fitness of a best-so-far entry (entries from before strategies existed carry only accuracy)."""
    best = best or {}
    return best.get("fitness", best.get("accuracy"))


def improves(best: dict | None, r: dict) -> bool:
    """Whether the record beats the best so far (ties keep the earlier net)."""
    fit, old = fitness(r), best_fitness(best)
    return fit is not None and (old is None or fit > old)


def best_entry(r: dict, code: str | None, proxy: str | None = None) -> dict:
    """The graph's `best` for a record that improves on it: small, plus the code the prompts show."""
    scores = r.get("scores") or {}
    return {"iteration": r["iteration"], "accuracy": r.get("accuracy"), "params": r.get("params"),
            "flops": r.get("flops"), "code": code, "fitness": fitness(r), "layers": r.get("layers"),
            **({"score": scores[proxy]} if proxy and proxy in scores else {})}


def best_so_far(records: Iterable[dict]) -> Iterator[tuple[dict, float | None]]:
    """Each record with the best fitness up to and including it (None before the first valid one)."""
    best: float | None = None
    for r in records:
        fit = fitness(r)
        if fit is not None and (best is None or fit > best):
            best = fit
        yield r, best


def suggestion_source(r: dict) -> str:
    """Who wrote the suggestion: `model` (the Improver), `model-retry` (the Improver, asked again after a
    repeat), `fallback` (a concrete change replaced an unreadable, placeholder or already-tried one) or
    `restart` (the failure-loop escape). Records from before this field
    said so in the problem text."""
    if isinstance(r.get("suggestion_source"), str):
        return r["suggestion_source"]
    return "fallback" if str(r.get("problem", "")).startswith(("(improver repeat)", "(improver failure)")) else "model"


def fixes_of(r: dict) -> list[dict]:
    """The fixes a candidate needed, as [{name, stage, note}]. Records from before the fix registry
    carried `autofix` (one note for the source fixes) and `shape_fixes` (notes of the pre-flight fix)."""
    if isinstance(r.get("fixes"), list):
        return [f for f in r["fixes"] if isinstance(f, dict)]
    old = [{"name": "source (older run)", "stage": "source", "note": n}
           for n in ([r["autofix"]] if isinstance(r.get("autofix"), str) and r["autofix"] else [])]
    return old + [{"name": "shapes", "stage": "preflight", "note": n} for n in r.get("shape_fixes") or []]


def fix_counts(records: Iterable[dict]) -> dict[str, int]:
    """How often each fix was applied over a run's records, by fix name."""
    counts: dict[str, int] = {}
    for r in records:
        for f in fixes_of(r):
            counts[f.get("name", "?")] = counts.get(f.get("name", "?"), 0) + 1
    return counts


@dataclass(frozen=True)
class TraceStep:
    """Which step of an iteration a trace.jsonl record is, as data (`step`); `node` is its name there.

    kind: improve | generate | repair | check (a training run or pre-flight) | score (a proxy scoring) |
    final (a proxy search trains its best net at the end). attempt: 0 for the first code, n after the
    n-th repair. variant: the ladder's variants. fix_round: sandbox reruns after pre-flight fixes."""

    kind: str
    attempt: int = 0
    variant: int = 0
    fix_round: int = 0

    @property
    def node(self) -> str:
        rerun = f"+{self.fix_round}" if self.fix_round else ""
        if self.kind in ("improve", "generate"):  # improve.1: asked again; generate.2: a ladder variant
            return self.kind + (f".{self.variant}" if self.variant else "")
        if self.kind == "repair":
            return f"repair{self.attempt}"
        if self.kind == "check":
            return f"check{self.attempt}{rerun}"
        if self.kind == "score":
            return f"score{self.attempt}.{self.variant}{rerun}"
        return self.kind

    def to_dict(self) -> dict:
        return asdict(self)

    def order(self) -> tuple:
        """Where the step falls within its iteration: improve, generate (by variant), then by attempt
        the sandbox runs (scoring before training, reruns after their run) and the repair before them."""
        if self.kind == "improve":
            return (0, self.variant)
        if self.kind == "generate":
            return (1, self.variant)
        if self.kind in ("check", "score"):
            return (2, 2 * self.attempt, 0 if self.kind == "score" else 1, self.variant, self.fix_round)
        if self.kind == "repair":
            return (2, 2 * self.attempt - 1)
        return (10, 0) if self.kind == "final" else (9, 0)  # final, then the iteration's results record

    @classmethod
    def of(cls, rec: dict) -> "TraceStep":
        """The step of a trace record; records written before steps were data are read from their name."""
        step = rec.get("step")
        if isinstance(step, dict) and isinstance(step.get("kind"), str):
            return cls(step["kind"], *(int(step.get(k) or 0) for k in ("attempt", "variant", "fix_round")))
        node = str(rec.get("node", ""))
        m = _OLD_NODE.match(node)
        if m is None:
            return cls(node)
        kind, number, variant, rerun = m.groups()
        if kind in ("improve", "generate"):
            return cls(kind, variant=int(variant or 0))
        return cls(kind, int(number or 0), int(variant or 0), int(rerun or 0))


_OLD_NODE = re.compile(r"^(improve|generate|repair|check|score)(\d*)(?:\.(\d+))?(?:\+(\d+))?$")


def last_entry(r: dict, code: str | None) -> dict:
    """The graph's `last` for a results record: what the Improver diagnoses next. `edited`: the loop made the
    candidate from the typed change itself (fix `change`), and no repair changed it after."""
    edited = any(f.get("name") == "change" and f.get("attempt") == 0 for f in r.get("fixes") or [])
    return {"iteration": r["iteration"], "code": code, "outcome": Outcome.from_dict(r).to_dict(),
            "llm": r.get("llm") or {}, "repairs": len(r.get("repairs") or []),
            "edited": edited and not r.get("repairs"),
            "escape": (r.get("escape") or {}).get("name"), "fitness": fitness(r),
            **({"parent": r["parent"], "parent_fitness": r.get("parent_fitness")} if "parent" in r else {})}


def state_from_results(results: list[dict], code_of: Callable[[int], str | None], k: int = DEFAULT_K,
                       proxy: str | None = None) -> dict:
    """The loop's graph state after the records `results` (iterations 0..n-1, in order), derived by the same
    functions the nodes build it with: window, best, last, counters. For a run whose checkpoints are
    elsewhere (a LangGraph Studio server's) or damaged."""
    window: list = []
    best: dict | None = None
    counts: dict[str, int] = {}
    for r in results:
        window = window_add(window, [triple(r, proxy)], k)
        if improves(best, r):
            best = best_entry(r, code_of(r["iteration"]), proxy)
        for key in (r.get("outcome", ""), "evaluated"):
            counts[key] = counts.get(key, 0) + 1
    last = results[-1]
    return {"best": best, "window": window, "last": last_entry(last, code_of(last["iteration"])),
            "iteration": last["iteration"] + 1, "counts": counts}
