"""The loop's nodes: seed, (select,) improve, generate, evaluate, repair. Each returns a small state update.

Two strategies share them (LoopOptions.strategy): `loop` improves the best net so far; `evolution`
mutates a parent picked from a population by tournament (node `select`), the Improver writes a reflection
on what the last mutations taught, and the worst member leaves the population. Three fidelities decide
what "evaluate" means: `train` (one epoch), `proxy` (zero-cost score only) and `ladder` (several
generated variants are scored by the proxy, only the best one is trained; both numbers are recorded).

Nodes get their collaborators from `Deps` (LLM clients, evaluator, run store, options); they never keep
anything that grows with the run in the state. Every LLM call and every evaluation goes through
`Deps.once(...)`, so a step redone after a crash reuses what was already recorded.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import prompts
from agent.escape import RESTART_SUGGESTION, choose_escape, code_key, generator_note
from agent.llm import ChatClient
from agent.parsing import autofix, extract_code, parse_improver, restore_definitions
from agent.run_store import RunStore
from tools.outcome import Outcome, human

FALLBACK_SUGGESTION = "Make one small, safe change to the best network that should raise its accuracy."
# When the Improver's reply is unreadable or copies a placeholder, the Generator gets one of these concrete,
# shape-safe changes instead of a vague one (a small model applies a concrete change far more reliably).
FALLBACK_CHANGES = (
    "Increase the number of output channels of the last convolution by 50% (and of its BatchNorm and the "
    "input features of the final nn.Linear), keeping every other layer as it is.",
    "Add one convolution with padding 1, its own BatchNorm2d and a ReLU right after the last convolution, "
    "with the same number of input and output channels.",
    "Replace the first convolution's kernel size 3 with 5 and its padding 1 with 2.",
    "Add nn.Dropout(0.2) right before the final nn.Linear, defined in __init__.",
)
REPAIR_TEMPERATURE = 0.2  # a repair is a precise edit of given code: sample close to greedy


class EvaluatorLike(Protocol):
    def evaluate(self, source: str) -> Outcome: ...

    def score(self, source: str, proxies: tuple[str, ...]) -> Outcome: ...

STRATEGIES = ("loop", "evolution")
FIDELITIES = ("train", "proxy", "ladder")


@dataclass(frozen=True)
class LoopOptions:
    """Behaviour beyond the published loop; `plain()` switches all of it off (the paper's loop)."""

    repairs: int = 1  # cheap repair attempts for candidates failing the static check or the pre-flight
    escape: bool = True  # failure-loop escape and verbatim-repeat detection
    streak: int = 2  # equivalent failures in a row that count as a loop
    temperature: float = 0.7  # the LLMs' base temperature (escapes raise it, bounded)
    strategy: str = "loop"  # loop (improve the best net) | evolution (mutate a population)
    fidelity: str = "train"  # train | proxy (score only) | ladder (score several variants, train the best)
    proxy: str = "naswot"  # the zero-cost proxy used by the proxy and ladder fidelities
    population: int = 8  # evolution: members kept (the worst leaves when a child joins a full population)
    tournament: int = 3  # evolution: members drawn to pick each parent
    ladder_width: int = 3  # ladder: variants generated per step
    seed: int = 0  # makes parent selection reproducible (and the same on resume)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES or self.fidelity not in FIDELITIES:
            raise ValueError(f"strategy must be one of {STRATEGIES} and fidelity one of {FIDELITIES}")

    @property
    def fitness_name(self) -> str:
        """What the search maximises: the proxy's score (fidelity proxy) or the trained accuracy."""
        return self.proxy if self.fidelity == "proxy" else "accuracy"

    def fitness(self, outcome: Outcome) -> float | None:
        """The number the search ranks by; None for a failed candidate (it never joins the population)."""
        if not outcome.ok:
            return None
        value = outcome.scores.get(self.proxy) if self.fidelity == "proxy" else outcome.accuracy
        return None if value is None or math.isnan(value) else float(value)

    @classmethod
    def plain(cls) -> "LoopOptions":
        return cls(repairs=0, escape=False)


@dataclass
class Deps:
    """What the nodes call. `store` may be None (embedding without a run directory)."""

    improver: ChatClient
    generator: ChatClient
    evaluator: EvaluatorLike
    store: RunStore | None = None
    options: LoopOptions = field(default_factory=LoopOptions)
    _memo: dict = field(default_factory=dict)
    _codes: dict = field(default_factory=dict)
    _members: dict = field(default_factory=dict)

    def recorded(self, kind: str, iteration: int, node: str) -> dict | None:
        if self.store is not None:
            return self.store.get(kind, iteration, node)
        return self._memo.get((kind, iteration, node))

    def once(self, kind: str, iteration: int, node: str, make) -> dict:
        if self.store is not None:
            return self.store.once(kind, iteration, node, make)
        key = (kind, iteration, node)
        if key not in self._memo:
            self._memo = {key: make()}  # keep only the latest: no growth without a store
        return self._memo[key]

    def earlier_code(self, key: str, iteration: int) -> dict | None:
        """The first result of an earlier iteration whose code had this `code_key`."""
        rec = self.store.first_with_code(key) if self.store is not None else self._codes.get(key)
        return rec if rec and rec.get("iteration", iteration) < iteration else None

    def remember_code(self, key: str, rec: dict) -> None:
        if self.store is None:
            self._codes.setdefault(key, rec)

    def member_code(self, iteration: int) -> str | None:
        """A population member's code: from the run store, or (no store) from memory."""
        if self.store is not None:
            return self.store.candidate_code(iteration)
        return self._members.get(iteration)

    def remember_members(self, codes: dict[int, str], keep: set[int]) -> None:
        if self.store is None:
            self._members = {i: c for i, c in {**self._members, **codes}.items() if i in keep}


def complete_task(task: dict, evaluator: Any) -> dict:
    """A task from a parent may name just the data set and budget: add what the prompts need to know."""
    if "description" in task:
        return task
    facts = evaluator.task_facts() if hasattr(evaluator, "task_facts") else {}
    return {"iterations": 1, "target_accuracy": None, **facts, **task}


# --- prompt pieces ----------------------------------------------------------------------------------
def input_shape(task: dict) -> str:
    s = task["image_size"]
    return f"(B, {task['in_channels']}, {s}, {s})"


def max_downsamples(size: int) -> int:
    return max(0, int(math.log2(max(1, size))) - 1)


def _best_fields(state: dict) -> dict:
    best = state.get("best") or {}
    acc = f"{best['accuracy']:.4f}" if best.get("accuracy") is not None else "n/a"
    parent = state.get("parent")
    label = f"Current best network (accuracy {acc})"
    if parent:  # evolution: the Generator mutates the parent, not the best
        best = parent
        label = f"Parent network (iteration {parent['iteration']}, {parent.get('fitness_name', 'fitness')} " \
                f"{_num(parent.get('fitness'))})"
    return {
        "best_code": (best.get("code") or prompts.seed_source(state["task"]["dataset"])).strip(),
        "best_accuracy": acc, "base_label": label,
        "best_iteration": best.get("iteration", "-"),
        "best_params": human(best["params"]) if best.get("params") else "n/a",
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _task_fields(task: dict) -> dict:
    return {
        "task": task["description"], "input_shape": input_shape(task), "num_classes": task["num_classes"],
        "in_channels": task["in_channels"], "image_size": task["image_size"],
        "max_params": human(task["max_params"]), "max_downsamples": max_downsamples(task["image_size"]),
        "steps_text": task.get("steps_text", "one epoch"),
    }


def improver_prompt(state: dict, note: str = "") -> str:
    task, last = state["task"], state.get("last") or {}
    out = last.get("outcome") or {}
    if out.get("kind") == "ok":
        details = f"accuracy {out.get('accuracy', 0):.4f}, {human(out.get('params') or 0)} parameters"
    else:
        details = f"diagnosis: {out.get('diagnosis', '')}"
    if last.get("code") and last.get("iteration") != (state.get("best") or {}).get("iteration"):
        details += f"\nIts code:\n```python\n{last['code'].strip()}\n```"
    window = _shown_window(state)
    text = prompts.render(
        "improver", **_task_fields(task), **_best_fields(state),
        last_iteration=last.get("iteration", "-"), last_outcome=out.get("kind", "none"), last_details=details,
        window=json.dumps(window, indent=1) if window else "(empty)",
    )
    return f"{text}\n\n{note}" if note else text


def _shown_window(state: dict) -> list[dict]:
    """The memory as the Improver reads it. The seed's baseline entry is left out: it says nothing the
    best network does not, and small models copy its placeholder suggestion verbatim."""
    return [{k: v for k, v in t.items() if k != "iteration"} for t in state.get("window") or []
            if t.get("iteration") != 0]


def usable_proposal(parsed: dict | None, err: str, iteration: int) -> dict:
    """The Improver's proposal, or a concrete fallback when it is unreadable or a copied placeholder such
    as "(none: starting point)"."""
    sugg = (parsed or {}).get("suggestion", "").strip()
    if parsed is None:
        why = f"(improver failure) {err}"
    elif sugg.startswith("(") or not sugg:
        why = f"(improver failure) placeholder suggestion {sugg!r}"
    else:
        return parsed
    return {"problem": f"{why} {(parsed or {}).get('problem', '')}"[:300].strip(),
            "suggestion": FALLBACK_CHANGES[iteration % len(FALLBACK_CHANGES)]}


def reflect_prompt(state: dict, note: str = "") -> str:
    """Evolution: the Improver's role is reflection — what did the last mutations teach, and which
    mutation of the selected parent should come next."""
    task, last, parent = state["task"], state.get("last") or {}, state.get("parent") or {}
    name = parent.get("fitness_name", "fitness")
    out = last.get("outcome") or {}
    if out.get("kind") == "ok":
        details = f"{name} {_num(last.get('fitness'))}"
        if last.get("parent") is not None:
            details += f" (its parent, iteration {last['parent']}: {_num(last.get('parent_fitness'))})"
    else:
        details = f"failed: {out.get('kind')}: {out.get('diagnosis', '')}"
    members = sorted(state.get("population") or [], key=lambda m: -(m.get("fitness") or -math.inf))
    population = "\n".join(f"- iteration {m['iteration']}: {name} {_num(m.get('fitness'))}, "
                           f"{human(m.get('params') or 0)} parameters" for m in members[:8])
    window = _shown_window(state)
    text = prompts.render(
        "reflect", **_task_fields(task), **_best_fields(state), fitness_name=name,
        last_iteration=last.get("iteration", "-"), last_details=details, population=population or "(empty)",
        window=json.dumps(window, indent=1) if window else "(empty)",
    )
    return f"{text}\n\n{note}" if note else text


def generator_prompt(state: dict, note: str = "") -> str:
    text = prompts.render("generator", **_task_fields(state["task"]), **_best_fields(state),
                          suggestion=(state.get("proposal") or {}).get("suggestion", FALLBACK_SUGGESTION))
    return f"{text}\n\n{note}" if note else text


def repair_prompt(state: dict, code: str | None, failed: dict) -> str:
    return prompts.render("repair", **_task_fields(state["task"]), code=(code or "(no code)").strip(),
                          outcome=failed.get("kind", ""), diagnosis=failed.get("diagnosis", ""),
                          suggestion=(state.get("proposal") or {}).get("suggestion", FALLBACK_SUGGESTION))


# --- recording an evaluated candidate --------------------------------------------------------------
def _record(deps: Deps, state: dict, iteration: int, code: str | None, proposal: dict, outcome: Outcome,
            extra: dict) -> dict:
    """The state update for one finished iteration (and its line in results.jsonl)."""
    opts = deps.options
    key = code_key(code) if code else None
    parent = state.get("parent") or {}
    res = deps.once("results", iteration, "evaluate", lambda: {
        "outcome": outcome.kind, **outcome.to_dict(), "problem": proposal.get("problem", ""),
        "suggestion": proposal.get("suggestion", ""), "code_key": key, "fitness": opts.fitness(outcome),
        **({"parent": parent["iteration"], "parent_fitness": parent.get("fitness")} if parent else {}), **extra,
    })
    if key:
        deps.remember_code(key, res)
    outcome = Outcome.from_dict(res)
    fit = res.get("fitness")
    if deps.store is not None and code:
        deps.store.save_candidate(iteration, code)
    triple = {"iteration": iteration, "problem": proposal.get("problem", "")[:300],
              "suggestion": proposal.get("suggestion", "")[:300], "outcome": outcome.kind}
    if outcome.ok:
        if outcome.accuracy is not None:
            triple["accuracy"] = round(outcome.accuracy, 4)
        if opts.proxy in outcome.scores:
            triple["score"] = round(outcome.scores[opts.proxy], 4)
    else:
        triple["diagnosis"] = outcome.diagnosis
    if parent:
        triple["parent"] = parent["iteration"]
        if fit is not None and parent.get("fitness") is not None:
            triple["delta"] = round(fit - parent["fitness"], 4)
    update: dict[str, Any] = {
        "window": [triple],
        "last": {"iteration": iteration, "code": code, "outcome": outcome.to_dict(), "llm": extra.get("llm", {}),
                 "repairs": len(extra.get("repairs", [])), "escape": (extra.get("escape") or {}).get("name"),
                 "fitness": fit, **({"parent": parent["iteration"], "parent_fitness": parent.get("fitness")}
                                    if parent else {})},
        "iteration": iteration + 1,
        "counts": {outcome.kind: 1, "evaluated": 1},
        "proposal": None,
        "candidate": None,
        **({"parent": None} if parent else {}),
    }
    best = state.get("best") or {}
    best_fit = best.get("fitness", best.get("accuracy"))
    if fit is not None and (best_fit is None or fit > best_fit):
        update["best"] = {"iteration": iteration, "accuracy": outcome.accuracy, "params": outcome.params,
                          "flops": outcome.flops, "code": code, "fitness": fit,
                          **({"score": outcome.scores[opts.proxy]} if opts.proxy in outcome.scores else {})}
        if deps.store is not None and code:
            deps.store.save_best(code)
    if opts.strategy == "evolution":
        update["population"] = _survivors(state.get("population") or [], iteration, fit, outcome, opts.population)
        deps.remember_members({iteration: code} if code and fit is not None else {},
                              {m["iteration"] for m in update["population"]})
    return update


def _survivors(population: list[dict], iteration: int, fit: float | None, outcome: Outcome, size: int) -> list[dict]:
    """Add a scored child; when the population is over `size`, the worst member (the oldest among equals)
    leaves. A failed child never joins."""
    members = list(population)
    if fit is not None:
        members.append({"iteration": iteration, "fitness": fit, "params": outcome.params})
    while len(members) > size:
        members.remove(min(members, key=lambda m: (m["fitness"], m["iteration"])))
    return members


# --- nodes -----------------------------------------------------------------------------------------
def make_nodes(deps: Deps | Callable[[dict], Deps]) -> dict:
    """The node functions bound to `deps`, or to `deps(task)` when it is a factory (embedding: the
    parent's task names the data set and the LLM)."""

    def setup(state: dict) -> tuple[Deps, dict]:
        d = deps(state["task"]) if callable(deps) else deps
        return d, complete_task(state["task"], d.evaluator)

    def seed(state: dict) -> dict:
        """Iteration 0: evaluate the data set's seed architecture, so the run has a baseline."""
        deps, task = setup(state)
        code = prompts.seed_source(task["dataset"])
        outcome, code, _ = _assess(deps, 0, [code], 0, train=True)  # trained (and scored): the baseline
        baseline = {"problem": "baseline: the seed architecture, unchanged", "suggestion": "(none: starting point)"}
        return {**_record(deps, state, 0, code, baseline, outcome, {}), "task": task}

    def select(state: dict) -> dict:
        """Evolution: pick the parent by tournament (seeded by the iteration, so a resume picks the same)."""
        deps, _ = setup(state)
        opts = deps.options
        it = state.get("iteration", 1)
        members = state.get("population") or []
        rng = random.Random(f"{opts.seed}:{it}")
        if members:
            member = max(rng.sample(members, min(opts.tournament, len(members))),
                         key=lambda m: (m["fitness"], -m["iteration"]))
        else:  # every candidate so far failed: mutate the best (or the seed)
            best = state.get("best") or {}
            member = {"iteration": best.get("iteration", 0), "fitness": best.get("fitness"), "params": best.get("params")}
        code = deps.member_code(member["iteration"]) or (state.get("best") or {}).get("code") \
            or prompts.seed_source(state["task"]["dataset"])
        return {"parent": {**member, "code": code, "fitness_name": opts.fitness_name}}

    def improve(state: dict) -> dict:
        """Prompt Improver: diagnose the latest result, suggest one change (JSON). Escapes failure loops."""
        deps, task = setup(state)
        changed = {"task": task} if task is not state["task"] else {}
        state = {**state, "task": task}
        opts = deps.options
        it = state.get("iteration", 1)
        esc = choose_escape(state.get("window") or [], opts.streak, opts.temperature) if opts.escape else None
        if esc is not None and esc.name == "restart":
            proposal = {"problem": f"stuck: {esc.streak} x {esc.outcome} in a row", "suggestion": RESTART_SUGGESTION}
            rec = deps.once("trace", it, "improve", lambda: {"escape": esc.to_dict(), "prompt": "",
                                                              "response": json.dumps(proposal), "seconds": 0.0})
            escape = {**esc.to_dict(), "temperature": esc.temperature}
            return {"proposal": {**proposal, "llm_seconds": 0.0, "escape": escape}, **changed}
        make_prompt = reflect_prompt if state.get("parent") else improver_prompt
        prompt = make_prompt(state, esc.improver_note() if esc else "")
        temperature = esc.temperature if esc else None
        rec = deps.once("trace", it, "improve",
                        lambda: _ask(deps.improver, "improver_system", prompt, temperature))
        parsed, err = parse_improver(rec["response"])
        parsed = usable_proposal(parsed, err, it) if opts.escape else (
            parsed or {"problem": f"(improver failure) {err}"[:300], "suggestion": FALLBACK_SUGGESTION})
        escape = {**esc.to_dict(), "temperature": esc.temperature} if esc else None
        return {"proposal": {**parsed, "llm_seconds": rec["seconds"], "escape": escape}, **changed}

    def generate(state: dict) -> dict:
        """Code Generator: write the complete modified Net (a minimal edit when escaping a loop)."""
        deps, _ = setup(state)
        opts = deps.options
        it = state.get("iteration", 1)
        esc = (state.get("proposal") or {}).get("escape")
        note = generator_note(esc) if esc else ""
        prompt = generator_prompt(state, note)
        temperature = esc.get("temperature") if esc else None
        width = opts.ladder_width if opts.fidelity == "ladder" else 1
        codes, errors, fixes, seconds = [], [], [], 0.0
        for j in range(width):  # ladder: more variants of the same change, each a little hotter
            t = temperature if j == 0 else min(1.2, (temperature or opts.temperature) + 0.15 * j)
            rec = deps.once("trace", it, "generate" if j == 0 else f"generate.{j}",
                            lambda: _ask(deps.generator, "generator_system", prompt, t))
            code, err = extract_code(rec["response"])
            code, fix = _fix(code, state) if opts.escape else (code, "")
            codes.append(code)
            errors.append(err)
            fixes.append(fix)
            seconds += rec["seconds"]
        fix = "; ".join(f for f in fixes if f)
        return {"candidate": {"code": codes[0], "error": errors[0], "llm_seconds": round(seconds, 3), "attempt": 0,
                              "repairs": [], **({"variants": codes} if width > 1 else {}),
                              **({"autofix": fix} if fix else {})}}

    def evaluate(state: dict) -> dict:
        """Evaluator: repeat check, static check + sandboxed training; then repair, or record the triple."""
        deps, _ = setup(state)
        opts = deps.options
        it = state.get("iteration", 1)
        cand = state.get("candidate") or {}
        proposal = state.get("proposal") or {}
        attempt = cand.get("attempt", 0)
        codes = [c for c in (cand.get("variants") or [cand.get("code")]) if c]
        code, ladder = cand.get("code"), {}
        if not codes:
            outcome = Outcome("invalid_code", cand.get("error") or "no code was generated", seconds=0.0,
                              stage="static")
        else:
            outcome, code, ladder = _assess(deps, it, codes, attempt)
        if outcome.stage in ("static", "preflight") and attempt < opts.repairs:
            return {"candidate": {**cand, "code": code, "variants": None, "failed": outcome.to_dict()}}
        llm = {"improver_seconds": proposal.get("llm_seconds"), "generator_seconds": cand.get("llm_seconds")}
        extra = {"llm": llm, "repairs": cand.get("repairs", []), "escape": proposal.get("escape"), **ladder,
                 **({"autofix": cand["autofix"]} if cand.get("autofix") else {})}
        return _record(deps, state, it, code, proposal, outcome, extra)

    def repair(state: dict) -> dict:
        """Show the Generator its own failing code, the failing line and the shape trace; get a fix."""
        deps, _ = setup(state)
        it = state.get("iteration", 1)
        cand = state["candidate"]
        failed = cand["failed"]
        attempt = cand.get("attempt", 0) + 1
        prompt = repair_prompt(state, cand.get("code"), failed)
        rec = deps.once("trace", it, f"repair{attempt}",
                        lambda: _ask(deps.generator, "generator_system", prompt, REPAIR_TEMPERATURE))
        code, err = extract_code(rec["response"])
        code, fix = _fix(code, state) if deps.options.escape else (code, "")
        history = cand.get("repairs", []) + [{"attempt": attempt - 1, "outcome": failed.get("kind"),
                                              "diagnosis": failed.get("diagnosis", "")}]
        return {"candidate": {"code": code, "error": err, "attempt": attempt, "repairs": history,
                              "llm_seconds": (cand.get("llm_seconds") or 0) + rec["seconds"],
                              **({"autofix": fix} if fix else {})}}

    return {"seed": seed, "select": select, "improve": improve, "generate": generate, "evaluate": evaluate,
            "repair": repair}


def _fix(code: str | None, state: dict) -> tuple[str | None, str]:
    """The deterministic fixes of small models' commonest slips (agent/parsing.py), recorded as one note."""
    if not code:
        return code, ""
    code, brackets = autofix(code)
    code, restored = restore_definitions(code, _best_fields(state)["best_code"])
    return code, "; ".join(n for n in (brackets, restored) if n)


def _repeat_outcome(deps: Deps, iteration: int, code: str) -> Outcome | None:
    """A verbatim repeat of an earlier candidate costs no container: tell the LLM instead."""
    prev = deps.earlier_code(code_key(code), iteration)
    if prev is None:
        return None
    got = prev.get("outcome", "?") + (f" {prev['accuracy']:.4f}" if prev.get("accuracy") is not None else "")
    return Outcome("invalid_code", f"identical to the code of iteration {prev['iteration']} (which got {got}); "
                                   f"apply the suggested change instead of repeating it", seconds=0.0, stage="static")


def _assess(deps: Deps, iteration: int, codes: list[str], attempt: int, *, train: bool = False
            ) -> tuple[Outcome, str, dict]:
    """Evaluate at the run's fidelity: (outcome, the code it belongs to, ladder record).

    train: one epoch. proxy: the zero-cost score only (`train=True`, for the seed, also trains it).
    ladder: score every variant, train only the best-scoring valid one. A verbatim repeat of an earlier
    candidate costs no container (with escapes on)."""
    opts = deps.options
    if opts.fidelity == "train":
        return _check(deps, iteration, codes[0], attempt, lambda c: _evaluate_once(deps, iteration, c, attempt)), \
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
    trained = _evaluate_once(deps, iteration, codes[j], attempt)
    trained.scores = {**scored[j].scores, **trained.scores}
    trained.proxy_seconds = scored[j].proxy_seconds
    return trained, codes[j], _ladder(opts, scored, j)


def _check(deps: Deps, iteration: int, code: str, attempt: int, run: Callable[[str], Outcome]) -> Outcome:
    return (_repeat_outcome(deps, iteration, code) if deps.options.escape else None) or run(code)


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


def _evaluate_once(deps: Deps, iteration: int, code: str, attempt: int = 0) -> Outcome:
    """Each evaluation attempt is recorded once (trace node `check<attempt>`): a redo after a crash reuses it."""
    rec = deps.once("trace", iteration, f"check{attempt}",
                    lambda: {"outcome": deps.evaluator.evaluate(code).to_dict()})
    return Outcome.from_dict(rec["outcome"])


def _ask(client: ChatClient, system_name: str, prompt: str, temperature: float | None) -> dict:
    system = prompts.load(system_name).template.strip()
    reply = client.ask(system, prompt, temperature=temperature)
    return {"system": system, "prompt": prompt, "response": reply.text, "seconds": round(reply.seconds, 3),
            "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "llm": client.spec, "temperature": temperature}
