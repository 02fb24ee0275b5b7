"""The loop's nodes: seed, improve, generate, evaluate, repair. Each returns a small state update.

Nodes get their collaborators from `Deps` (LLM clients, evaluator, run store, options); they never keep
anything that grows with the run in the state. Every LLM call and every evaluation goes through
`Deps.once(...)`, so a step redone after a crash reuses what was already recorded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import prompts
from agent.escape import RESTART_SUGGESTION, choose_escape, code_key, generator_note
from agent.llm import ChatClient
from agent.parsing import autofix, extract_code, parse_improver
from agent.run_store import RunStore
from tools.outcome import Outcome, human

FALLBACK_SUGGESTION = "Make one small, safe change to the best network that should raise its accuracy."


class EvaluatorLike(Protocol):
    def evaluate(self, source: str) -> Outcome: ...


@dataclass(frozen=True)
class LoopOptions:
    """Behaviour beyond the published loop; `plain()` switches all of it off (the paper's loop)."""

    repairs: int = 1  # cheap repair attempts for candidates failing the static check or the pre-flight
    escape: bool = True  # failure-loop escape and verbatim-repeat detection
    streak: int = 2  # equivalent failures in a row that count as a loop
    temperature: float = 0.7  # the LLMs' base temperature (escapes raise it, bounded)

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
    return {
        "best_code": (best.get("code") or prompts.seed_source(state["task"]["dataset"])).strip(),
        "best_accuracy": f"{best['accuracy']:.4f}" if best.get("accuracy") is not None else "n/a",
        "best_iteration": best.get("iteration", "-"),
        "best_params": human(best["params"]) if best.get("params") else "n/a",
    }


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
    window = [{k: v for k, v in t.items() if k != "iteration"} for t in state.get("window") or []]
    text = prompts.render(
        "improver", **_task_fields(task), **_best_fields(state),
        last_iteration=last.get("iteration", "-"), last_outcome=out.get("kind", "none"), last_details=details,
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
    key = code_key(code) if code else None
    res = deps.once("results", iteration, "evaluate", lambda: {
        "outcome": outcome.kind, **outcome.to_dict(), "problem": proposal.get("problem", ""),
        "suggestion": proposal.get("suggestion", ""), "code_key": key, **extra,
    })
    if key:
        deps.remember_code(key, res)
    outcome = Outcome.from_dict(res)
    if deps.store is not None and code:
        deps.store.save_candidate(iteration, code)
    triple = {"iteration": iteration, "problem": proposal.get("problem", "")[:300],
              "suggestion": proposal.get("suggestion", "")[:300], "outcome": outcome.kind}
    if outcome.ok:
        triple["accuracy"] = round(outcome.accuracy or 0.0, 4)
    else:
        triple["diagnosis"] = outcome.diagnosis
    update: dict[str, Any] = {
        "window": [triple],
        "last": {"iteration": iteration, "code": code, "outcome": outcome.to_dict(), "llm": extra.get("llm", {}),
                 "repairs": len(extra.get("repairs", [])), "escape": (extra.get("escape") or {}).get("name")},
        "iteration": iteration + 1,
        "counts": {outcome.kind: 1, "evaluated": 1},
        "proposal": None,
        "candidate": None,
    }
    best = state.get("best") or {}
    if outcome.ok and outcome.accuracy is not None and outcome.accuracy > (best.get("accuracy") or -1):
        update["best"] = {"iteration": iteration, "accuracy": outcome.accuracy, "params": outcome.params,
                          "flops": outcome.flops, "code": code}
        if deps.store is not None and code:
            deps.store.save_best(code)
    return update


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
        outcome = _evaluate_once(deps, 0, code)
        baseline = {"problem": "baseline: the seed architecture, unchanged", "suggestion": "(none: starting point)"}
        return {**_record(deps, state, 0, code, baseline, outcome, {}), "task": task}

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
        prompt = improver_prompt(state, esc.improver_note() if esc else "")
        temperature = esc.temperature if esc else None
        rec = deps.once("trace", it, "improve",
                        lambda: _ask(deps.improver, "improver_system", prompt, temperature))
        parsed, err = parse_improver(rec["response"])
        if parsed is None:
            parsed = {"problem": f"(improver failure) {err}"[:300], "suggestion": FALLBACK_SUGGESTION}
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
        rec = deps.once("trace", it, "generate",
                        lambda: _ask(deps.generator, "generator_system", prompt, temperature))
        code, err = extract_code(rec["response"])
        code, fix = autofix(code) if code and opts.escape else (code, "")
        return {"candidate": {"code": code, "error": err, "llm_seconds": rec["seconds"], "attempt": 0,
                              "repairs": [], **({"autofix": fix} if fix else {})}}

    def evaluate(state: dict) -> dict:
        """Evaluator: repeat check, static check + sandboxed training; then repair, or record the triple."""
        deps, _ = setup(state)
        opts = deps.options
        it = state.get("iteration", 1)
        cand = state.get("candidate") or {}
        proposal = state.get("proposal") or {}
        code, attempt = cand.get("code"), cand.get("attempt", 0)
        if not code:
            outcome = Outcome("invalid_code", cand.get("error") or "no code was generated", seconds=0.0,
                              stage="static")
        else:
            outcome = _repeat_outcome(deps, it, code) if opts.escape else None
            outcome = outcome or _evaluate_once(deps, it, code, attempt)
        if outcome.stage in ("static", "preflight") and attempt < opts.repairs:
            return {"candidate": {**cand, "failed": outcome.to_dict()}}
        llm = {"improver_seconds": proposal.get("llm_seconds"), "generator_seconds": cand.get("llm_seconds")}
        extra = {"llm": llm, "repairs": cand.get("repairs", []), "escape": proposal.get("escape"),
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
                        lambda: _ask(deps.generator, "generator_system", prompt, None))
        code, err = extract_code(rec["response"])
        code, fix = autofix(code) if code and deps.options.escape else (code, "")
        history = cand.get("repairs", []) + [{"attempt": attempt - 1, "outcome": failed.get("kind"),
                                              "diagnosis": failed.get("diagnosis", "")}]
        return {"candidate": {"code": code, "error": err, "attempt": attempt, "repairs": history,
                              "llm_seconds": (cand.get("llm_seconds") or 0) + rec["seconds"],
                              **({"autofix": fix} if fix else {})}}

    return {"seed": seed, "improve": improve, "generate": generate, "evaluate": evaluate, "repair": repair}


def _repeat_outcome(deps: Deps, iteration: int, code: str) -> Outcome | None:
    """A verbatim repeat of an earlier candidate costs no container: tell the LLM instead."""
    prev = deps.earlier_code(code_key(code), iteration)
    if prev is None:
        return None
    got = prev.get("outcome", "?") + (f" {prev['accuracy']:.4f}" if prev.get("accuracy") is not None else "")
    return Outcome("invalid_code", f"identical to the code of iteration {prev['iteration']} (which got {got}); "
                                   f"apply the suggested change instead of repeating it", seconds=0.0, stage="static")


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
