"""The loop's nodes: seed, improve, generate, evaluate. Each returns a small state update.

Nodes get their collaborators from `Deps` (LLM clients, evaluator, run store); they never keep
anything that grows with the run in the state. Every LLM call and every evaluation goes through
`store.once(...)`, so a step redone after a crash reuses what was already recorded.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import prompts
from agent.llm import ChatClient
from agent.parsing import extract_code, parse_improver
from agent.run_store import RunStore
from tools.outcome import Outcome, human

FALLBACK_SUGGESTION = "Make one small, safe change to the best network that should raise its accuracy."


class EvaluatorLike(Protocol):
    def evaluate(self, source: str) -> Outcome: ...


@dataclass
class Deps:
    """What the nodes call. `store` may be None (embedding without a run directory)."""

    improver: ChatClient
    generator: ChatClient
    evaluator: EvaluatorLike
    store: RunStore | None = None
    _memo: dict = field(default_factory=dict)

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


def improver_prompt(state: dict) -> str:
    task, last = state["task"], state.get("last") or {}
    out = last.get("outcome") or {}
    if out.get("kind") == "ok":
        details = f"accuracy {out.get('accuracy', 0):.4f}, {human(out.get('params') or 0)} parameters"
    else:
        details = f"diagnosis: {out.get('diagnosis', '')}"
    if last.get("code") and last.get("iteration") != (state.get("best") or {}).get("iteration"):
        details += f"\nIts code:\n```python\n{last['code'].strip()}\n```"
    window = [{k: v for k, v in t.items() if k != "iteration"} for t in state.get("window") or []]
    return prompts.render(
        "improver", **_task_fields(task), **_best_fields(state),
        last_iteration=last.get("iteration", "-"), last_outcome=out.get("kind", "none"), last_details=details,
        window=json.dumps(window, indent=1) if window else "(empty)",
    )


def generator_prompt(state: dict) -> str:
    return prompts.render("generator", **_task_fields(state["task"]), **_best_fields(state),
                          suggestion=(state.get("proposal") or {}).get("suggestion", FALLBACK_SUGGESTION))


# --- recording an evaluated candidate --------------------------------------------------------------
def _record(deps: Deps, state: dict, iteration: int, code: str | None, proposal: dict, outcome: Outcome,
            llm: dict) -> dict:
    """The state update for one finished iteration (and its line in results.jsonl)."""
    res = deps.once("results", iteration, "evaluate", lambda: {
        "outcome": outcome.kind, **outcome.to_dict(), "problem": proposal.get("problem", ""),
        "suggestion": proposal.get("suggestion", ""), "code_sha": _sha(code), "llm": llm,
    })
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
        "last": {"iteration": iteration, "code": code, "outcome": outcome.to_dict(), "llm": llm},
        "iteration": iteration + 1,
        "counts": {outcome.kind: 1, "evaluated": 1},
        "proposal": None,
        "candidate": None,
    }
    best = state.get("best") or {}
    if outcome.ok and (outcome.accuracy or 0) > (best.get("accuracy") or -1):
        update["best"] = {"iteration": iteration, "accuracy": outcome.accuracy, "params": outcome.params,
                          "flops": outcome.flops, "code": code}
        if deps.store is not None and code:
            deps.store.save_best(code)
    return update


def _sha(code: str | None) -> str | None:
    return hashlib.sha256(code.encode()).hexdigest()[:16] if code else None


# --- nodes -----------------------------------------------------------------------------------------
def make_nodes(deps: Deps) -> dict:
    """The node functions bound to `deps`."""

    def seed(state: dict) -> dict:
        """Iteration 0: evaluate the data set's seed architecture, so the run has a baseline."""
        code = prompts.seed_source(state["task"]["dataset"])
        outcome = _evaluate_once(deps, 0, code)
        return _record(deps, state, 0, code, {"problem": "baseline", "suggestion": "seed architecture"},
                       outcome, {})

    def improve(state: dict) -> dict:
        """Prompt Improver: diagnose the latest result, suggest one change (JSON)."""
        it = state.get("iteration", 1)
        prompt = improver_prompt(state)
        rec = deps.once("trace", it, "improve", lambda: _ask(deps.improver, "improver_system", prompt))
        parsed, err = parse_improver(rec["response"])
        if parsed is None:
            parsed = {"problem": f"(improver failure) {err}"[:300], "suggestion": FALLBACK_SUGGESTION}
        return {"proposal": {**parsed, "llm_seconds": rec["seconds"]}}

    def generate(state: dict) -> dict:
        """Code Generator: write the complete modified Net."""
        it = state.get("iteration", 1)
        prompt = generator_prompt(state)
        rec = deps.once("trace", it, "generate", lambda: _ask(deps.generator, "generator_system", prompt))
        code, err = extract_code(rec["response"])
        return {"candidate": {"code": code, "error": err, "llm_seconds": rec["seconds"]}}

    def evaluate(state: dict) -> dict:
        """Evaluator: static check + sandboxed training; record the triple, update best."""
        it = state.get("iteration", 1)
        cand = state.get("candidate") or {}
        proposal = state.get("proposal") or {}
        code = cand.get("code")
        if code:
            outcome = _evaluate_once(deps, it, code)
        else:
            outcome = Outcome("invalid_code", cand.get("error") or "no code was generated", seconds=0.0)
        llm = {"improver_seconds": proposal.get("llm_seconds"), "generator_seconds": cand.get("llm_seconds")}
        return _record(deps, state, it, code, proposal, outcome, llm)

    return {"seed": seed, "improve": improve, "generate": generate, "evaluate": evaluate}


def _evaluate_once(deps: Deps, iteration: int, code: str) -> Outcome:
    """The recorded outcome of `iteration` if a crash interrupted it after the fact, else a new evaluation."""
    rec = deps.recorded("results", iteration, "evaluate")
    return Outcome.from_dict(rec) if rec else deps.evaluator.evaluate(code)


def _ask(client: ChatClient, system_name: str, prompt: str) -> dict:
    system = prompts.load(system_name).template.strip()
    reply = client.ask(system, prompt)
    return {"system": system, "prompt": prompt, "response": reply.text, "seconds": round(reply.seconds, 3),
            "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "llm": client.spec}
