"""The loop's nodes: seed, (select,) improve, generate, evaluate, repair. Each returns a small state update.

Two strategies share them (LoopOptions.strategy): `loop` improves the best net so far; `evolution`
mutates a parent picked from a population by tournament (node `select`), the Improver writes a reflection
on what the last mutations taught, and the worst member leaves the population. Three fidelities decide
what "evaluate" means: `train` (one epoch), `proxy` (zero-cost score only) and `ladder` (several
generated variants are scored by the proxy, only the best one is trained; both numbers are recorded).

Nodes get their collaborators from `Deps` (agent/deps.py); they never keep anything that grows with the
run in the state. Prompts are built in agent/llm/prompting.py, evaluations at the run's fidelity in
agent/loop/fidelity.py; every LLM call and evaluation is recorded once, so a step redone after a crash reuses it.
The nodes of a round with several workers are in agent/loop/rounds.py; agent/graph.py wires them all.
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable, Sequence, TypeAlias

from langgraph.runtime import Runtime

from nasloop import prompts
from nasloop.agent.loop import record
from nasloop.agent.loop.conversation import built_instead, conversation, converses, improver_conversation
from nasloop.agent.loop.events import announce, llm_progress, training_events
from nasloop.agent.loop.fidelity import REPEAT_PHASE, assess, repairs_allowed
from nasloop.agent.deps import Deps, complete_task
from nasloop.agent.loop.escape import RESTART_SUGGESTION, choose_escape, code_key, generator_note
from nasloop.agent.llm.client import ChatClient
from nasloop.agent.fixes.registry import Context, apply_stage
from nasloop.agent.fixes.changes import EDITED, branch_layers
from nasloop.agent.llm.grammar import improver_schema, offered_changes, reply_schema, targets_by_operator
from nasloop.agent.llm.parsing import describe_change, extract_code, parse_improver
from nasloop.agent.llm.stream import DEGENERATE, StopRule, code_complete, json_complete
from nasloop.agent.llm.prompting import (FALLBACK_SUGGESTION, best_fields, fallback_change, generator_prompt,
                                         improver_prompt, improver_turn, reflect_prompt, repair_prompt, repair_turn,
                                         tried_note, usable_proposal)
from nasloop.tools.outcome import DUPLICATE_PHASE, Outcome

IMPROVE = record.TraceStep("improve").to_dict()
REPAIR_TEMPERATURE = 0.2  # a repair is a precise edit of given code: sample close to greedy


# --- recording an evaluated candidate --------------------------------------------------------------
def _record(deps: Deps, state: dict, iteration: int, code: str | None, proposal: dict, outcome: Outcome,
            extra: dict) -> dict:
    """The state update for one finished iteration; its results.jsonl record and everything derived from
    it (triple, fitness, best) come from agent/loop/record.py."""
    opts = deps.options
    key = code_key(code) if code else None
    parent = state.get("parent") or {}
    res = deps.once("results", iteration, "evaluate", lambda: record.result_record(
        outcome, proposal, key, opts.fitness(outcome), parent, extra))
    res = {**res, "iteration": iteration}
    if key:
        deps.remember_code(key, res)
    if deps.store is not None and code:
        deps.store.save_candidate(iteration, code)
    fit = record.fitness(res)
    update: dict[str, Any] = {
        "window": [record.triple(res, opts.proxy)],
        "last": record.last_entry(res, code),
        "iteration": iteration + 1,
        "counts": {res["outcome"]: 1, "evaluated": 1},
        "proposal": None,
        "candidate": None,
        **({"parent": None} if parent else {}),
    }
    if record.improves(state.get("best"), res):
        update["best"] = record.best_entry(res, code, opts.proxy)
        if deps.store is not None and code:
            deps.store.save_best(code)
    if opts.strategy == "evolution":
        update["population"] = survivors(state.get("population") or [], iteration, fit, res.get("params"),
                                          opts.population)
        deps.remember_members({iteration: code} if code and fit is not None else {},
                              {m["iteration"] for m in update["population"]})
    return update


def survivors(population: list[dict], iteration: int, fit: float | None, params: int | None,
               size: int) -> list[dict]:
    """Add a scored child; when the population is over `size`, the worst member (the oldest among equals)
    leaves. A failed child never joins."""
    members = list(population)
    if fit is not None:
        members.append({"iteration": iteration, "fitness": fit, "params": params})
    while len(members) > size:
        members.remove(min(members, key=lambda m: (m["fitness"], m["iteration"])))
    return members


# --- nodes -----------------------------------------------------------------------------------------
DepsSource: TypeAlias = Deps | Callable[[dict], Deps] | None


def setup(source: DepsSource, state: dict, runtime: Runtime | None) -> tuple[Deps, dict]:
    """The run's collaborators and the completed task. The invocation's runtime context wins over what
    the graph was built with."""
    context = getattr(runtime, "context", None)
    if isinstance(context, Deps):
        d = context
    elif isinstance(source, Deps):
        d = source
    elif source is not None:
        d = source(state["task"])
    else:
        raise TypeError("no collaborators: build_graph(deps) or invoke(..., context=Deps(...))")
    return d, complete_task(state["task"], d.evaluator)

def seed(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Iteration 0: evaluate the data set's seed architecture, so the run has a baseline."""
    announce(runtime, state, "seed")
    deps, task = setup(source, state, runtime)
    code = prompts.seed_source(task["dataset"])
    outcome, code, _ = assess(deps, 0, [code], 0, train=True, progress=training_events(runtime, 0))  # the baseline
    calibrate = getattr(deps.evaluator, "calibrate", None)
    if callable(calibrate):  # the FLOP budget from the seed's speed (tools/evaluator.py)
        calibrate(outcome)
    baseline = {"problem": "baseline: the seed architecture, unchanged", "suggestion": "(none: starting point)"}
    return {**_record(deps, state, 0, code, baseline, outcome, {}), "task": task}

def select(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Evolution: pick the parent by tournament (seeded by the iteration, so a resume picks the same)."""
    announce(runtime, state, "select")
    deps, _ = setup(source, state, runtime)
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

def improve(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Prompt Improver: diagnose the latest result, suggest one change (JSON). Escapes failure loops."""
    announce(runtime, state, "improve")
    deps, task = setup(source, state, runtime)
    changed = {"task": task} if task is not state["task"] else {}
    state = {**state, "task": task}
    opts = deps.options
    it = state.get("iteration", 1)
    esc = choose_escape(state.get("window") or [], opts.streak, opts.temperature) if opts.escape else None
    if esc is not None and esc.name == "restart":
        proposal = {"problem": f"stuck: {esc.streak} x {esc.outcome} in a row", "suggestion": RESTART_SUGGESTION}
        rec = deps.once("trace", it, "improve", lambda: {"escape": esc.to_dict(), "prompt": "", "step": IMPROVE,
                                                          "response": json.dumps(proposal), "seconds": 0.0})
        escape: dict | None = {**esc.to_dict(), "temperature": esc.temperature}
        return {"proposal": {**proposal, "source": "restart", "llm_seconds": 0.0, "escape": escape}, **changed}
    # the memory as the Improver reads it; with several workers it also lists this round's pending changes
    seen = (state.get("window") or []) + (state.get("round") or [])
    make_prompt = reflect_prompt if state.get("parent") else improver_prompt
    chat = None if esc else improver_conversation(deps, state, it)
    turns, start = (chat.turns, chat.start) if chat else ((), it)
    prompt = improver_turn(state, built_instead(deps, it - 1), chat.was_best) if chat else \
        make_prompt({**state, "window": seen}, esc.improver_note() if esc else "")
    # where a later iteration may continue this conversation (agent/loop/conversation.py)
    begun = {} if esc or not converses(deps, state) else \
        {"chat": {"start": start, "best": (state.get("best") or {}).get("iteration")}}
    temperature = esc.temperature if esc else None
    best = best_fields(state)
    layers = "" if state.get("parent") else best["best_layers"]
    schema = reply_schema("lesson") if state.get("parent") else \
        improver_schema(layers, seen, best["best_code"], _held_edits(deps, best, it))

    def ask(attempt: int, text: str) -> dict:
        step = record.TraceStep("improve", variant=attempt)
        return deps.once("trace", it, step.node, lambda: {
            **_ask(deps.improver, "improver_system", text, temperature, stop=json_complete, schema=schema,
                   progress=llm_progress(runtime, it, step.node), history=turns), **begun, "step": step.to_dict()})

    rec = ask(0, prompt)
    seconds, source = rec["seconds"], "model"
    parsed, err = parse_improver(rec["response"], layers)
    if not opts.replace_suggestions:
        kept = parsed or {"problem": f"(improver failure) {err}"[:300], "suggestion": FALLBACK_SUGGESTION}
    else:
        kept = _usable(deps, best, parsed, err, it, seen)
        if kept is not parsed and parsed is not None:  # a repeat or a placeholder: ask once more, with the list
            rec = ask(1, f"{prompt}\n\n{tried_note(parsed, seen)}")
            seconds, source = seconds + rec["seconds"], "model-retry"
            parsed, err = parse_improver(rec["response"], layers)
            kept = _usable(deps, best, parsed, err, it, seen)
    if kept is not parsed and opts.replace_suggestions and layers:
        kept = {**kept, **(_made_fallback(deps, best, schema, state.get("window")) or {})}
    escape = {**esc.to_dict(), "temperature": esc.temperature} if esc else None
    return {"proposal": {**kept, "source": source if kept is parsed else "fallback", "llm_seconds": seconds,
                         "escape": escape}, **changed}

def generate(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Code Generator: write the complete modified Net (a minimal edit when escaping a loop). A mechanical
    change (a residual, a norm added or removed, one more conv) is made by the loop instead: `_edit`."""
    announce(runtime, state, "generate")
    deps, _ = setup(source, state, runtime)
    opts = deps.options
    it = state.get("iteration", 1)
    width = opts.ladder_width if opts.fidelity == "ladder" else 1
    edited = _edit(deps, state) if width == 1 else None  # a ladder scores several written variants
    if edited is not None:  # the change is mechanical: the loop makes it, no call
        return edited
    esc = (state.get("proposal") or {}).get("escape")
    note = generator_note(esc) if esc else ""
    prompt = generator_prompt(state, note)
    temperature = esc.get("temperature") if esc else None
    codes, errors, fixes, stops, seconds = [], [], [], [], 0.0  # fixes: of every variant
    for j in range(width):  # ladder: more variants of the same change, each a little hotter
        t = temperature if j == 0 else min(1.2, (temperature or opts.temperature) + 0.15 * j)
        step = record.TraceStep("generate", variant=j)
        rec = deps.once("trace", it, step.node, lambda t=t, step=step: {
            **_ask(deps.generator, "generator_system", prompt, t, stop=code_complete,
                   progress=llm_progress(runtime, it, step.node)), "step": step.to_dict()})
        code, err, made = _code(rec["response"], state, opts.fixes, 0)
        codes.append(code)
        errors.append(err)
        stops.append(rec.get("stop"))
        fixes += [{**f, "variant": j} for f in made] if width > 1 else made
        seconds += rec["seconds"]
    return {"candidate": {"code": codes[0], "error": errors[0], "llm_seconds": round(seconds, 3), "attempt": 0,
                          "stop": stops[0],
                          "repairs": [], "fixes": fixes, **({"variants": codes} if width > 1 else {})}}

def evaluate(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Evaluator: repeat check, static check + sandboxed training; then repair, or record the triple."""
    announce(runtime, state, "evaluate")
    deps, _ = setup(source, state, runtime)
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
        # repeats and duplicates are of iterations before this round (with one worker: before this one)
        before = (state.get("last") or {}).get("iteration", it - 1) + 1
        outcome, code, ladder = assess(deps, it, codes, attempt, before=min(before, it), progress=training_events(runtime, it))
    if outcome.stage in ("static", "preflight") and attempt < repairs_allowed(opts.repairs, outcome):
        return {"candidate": {**cand, "code": code, "variants": None, "failed": outcome.to_dict()}}
    llm = {"improver_seconds": proposal.get("llm_seconds"), "generator_seconds": cand.get("llm_seconds")}
    fixes = (cand.get("fixes") or []) + ladder.pop("fixes", [])
    first = next((h["duplicate_of"] for h in cand.get("repairs", []) if "duplicate_of" in h), None)
    extra = {"llm": llm, "repairs": cand.get("repairs", []), "escape": proposal.get("escape"), **ladder,
             **({"fixes": fixes} if fixes else {}), **({"duplicate_of": first} if first is not None else {})}
    return _record(deps, state, it, code, proposal, outcome, extra)

def repair(source: DepsSource, state: dict, runtime: Runtime) -> dict:
    """Show the Generator its own failing code, the failing line and the shape trace; get a fix."""
    announce(runtime, state, "repair")
    deps, _ = setup(source, state, runtime)
    it = state.get("iteration", 1)
    cand = state["candidate"]
    failed = cand["failed"]
    attempt = cand.get("attempt", 0) + 1
    # A verbatim repeat means the change was too vague for the model to apply: give it a concrete one,
    # sampled at the base temperature (near-greedy would reproduce the same code).
    repeat = (failed.get("failure") or {}).get("phase") in (REPEAT_PHASE, DUPLICATE_PHASE)
    asked = ((state.get("proposal") or {}).get("suggestion", ""),
             *(h.get("suggestion", "") for h in cand.get("repairs", [])))
    change = fallback_change(it + attempt, state.get("window"), asked) if repeat else None
    turns = conversation(deps, it, attempt, cand)
    if turns is not None:  # the next turn of the Generator's conversation, on its context
        prompt, client, extra = repair_turn(failed, change), deps.generator, {"answered": turns[-1][1]}
    else:
        prompt = repair_prompt(state, cand.get("code"), failed, change, degenerated=cand.get("stop") in DEGENERATE)
        client, extra = deps.generator.repairs, {}
    step = record.TraceStep("repair", attempt)
    rec = deps.once("trace", it, step.node, lambda: {
        **_ask(client, "generator_system", prompt, None if repeat else REPAIR_TEMPERATURE, stop=code_complete,
               progress=llm_progress(runtime, it, step.node), history=turns or ()), **extra, "step": step.to_dict()})
    code, err, made = _code(rec["response"], state, deps.options.fixes, attempt)
    of = (failed.get("failure") or {}).get("of") if repeat else None
    history = cand.get("repairs", []) + [{"attempt": attempt - 1, "outcome": failed.get("kind"),
                                          "diagnosis": failed.get("diagnosis", ""),
                                          **({"suggestion": change} if change else {}),
                                          **({"duplicate_of": of} if of is not None else {})}]
    return {"candidate": {"code": code, "error": err, "attempt": attempt, "repairs": history, "stop": rec.get("stop"),
                          "llm_seconds": (cand.get("llm_seconds") or 0) + rec["seconds"],
                          "fixes": (cand.get("fixes") or []) + made}}


def _edit(deps: Deps, state: dict) -> dict | None:
    """The candidate of a mechanical change (fix `change`, agent/fixes/changes.py): the base net with the
    Improver's typed change applied by the loop, with no Generator call. None where the change is not
    mechanical, the net's shape or the change's arguments do not allow the edit, or fix `change` is off:
    the Generator writes the candidate. It is checked like any other; where it fails, the Generator repairs
    it (its repair prompt shows the edit and the failure)."""
    change = (state.get("proposal") or {}).get("change")
    if not change:
        return None
    code, edits = _apply_change(deps, best_fields(state), change)
    if not edits or not code:
        return None
    return {"candidate": {"code": code, "error": "", "llm_seconds": 0.0, "attempt": 0, "stop": None, "repairs": [],
                          "fixes": [{**e.to_dict(), "attempt": 0} for e in edits]}}


# The mechanical changes a fallback makes, in this order; growth last, and none while the window holds a
# change that went over the budget.
FALLBACK_OPERATORS = ("add_residual", "add_normalisation", "remove_normalisation", "deepen")


def _made_fallback(deps: Deps, best: dict, schema: dict, window: list[dict] | None) -> dict | None:
    """In place of a fallback change the Generator would write (the Improver's reply unreadable, a repeat, a
    placeholder): the first mechanical change the Improver was offered (not tried, not held off:
    `_held_edits`) whose edit the loop can make on the best net, as a typed change: its suggestion and
    change (`generate` then makes the edit, as for the Improver's own). It costs no Generator call: in a
    CIFAR-10 search (seed 45, at e0b1499) a reply saying "None of the above changes were tried." got the
    fallback "read the whole flattened map"; the Generator's net (42 s) went over the FLOP budget, and so
    did its repair (47 s). The problem keeps why the reply was not used; None where no change is offered
    that the loop can make, or fix `change` is off."""
    if "change" not in deps.options.fixes:
        return None
    grows = not any(t.get("over_budget") for t in window or [])
    offered = offered_changes(schema)
    for op in FALLBACK_OPERATORS[:None if grows else -1]:
        for target in (t for o, t in offered if o == op and t != "all"):
            change = {"operator": op, "target": target, "arguments": ""}
            code, edits = _apply_change(deps, best, change)
            if code and edits:
                return {"suggestion": describe_change(change), "change": change}
    return None


def _held_edits(deps: Deps, best: dict, it: int) -> set[tuple[str, str]]:
    """The mechanical changes the Improver is not offered: those whose edit of the best net gives a net
    evaluated before, and a residual around a shortcut or branch (`branch_layers`). The memory window holds
    only the last k changes; in a CIFAR-10 search (seed 44, at c205380) the edit of a change made 9 iterations
    before, on the same best, was that net again (a repeat, then a failed repair by the Generator)."""
    if "change" not in deps.options.fixes:
        return set()
    held = {("add_residual", name) for name in branch_layers(best["best_code"], best["best_layers"])}
    for op, names in targets_by_operator(best["best_layers"]).items():
        for target in [*names, "all"] if op in EDITED else ():
            code, edits = _apply_change(deps, best, {"operator": op, "target": target, "arguments": ""})
            if edits and code and deps.earlier_code(code_key(code), it) is not None:
                held.add((op, target))
    return held


def _usable(deps: Deps, best: dict, parsed: dict | None, err: str, it: int, seen: list[dict]) -> dict:
    """`usable_proposal`, and a repeat also where the loop would make the typed change itself and its edit
    gives a net evaluated before. `_held_edits` cannot offer a widen's every width: in a CIFAR-10 search
    (seed 45, at ca2581f) "Widen conv1: 64 -> 128 channels" on the best net gave iteration 2's net again,
    and the repeat cost a repair call of 54 s (and a NameError)."""
    kept = usable_proposal(parsed, err, it, seen)
    change = (parsed or {}).get("change") if kept is parsed else None
    code, edits = _apply_change(deps, best, change) if change else (None, [])
    prev = deps.earlier_code(code_key(code), it) if code and edits else None
    if prev is None:
        return kept
    why = f"(improver repeat) its edit gives the net of iteration {prev['iteration']} again;"
    return {"problem": f"{why} {(parsed or {}).get('problem', '')}"[:300].strip(), "suggestion": fallback_change(it, seen)}


def _apply_change(deps: Deps, best: dict, change: dict) -> tuple[str | None, list]:
    """The best net (`best_fields`) with a typed change applied by fix `change`, and its edits (none where the
    change is not mechanical or the fix is off)."""
    ctx = Context(change=change, layers=best["best_layers"], net_input=best.get("best_input"))
    return apply_stage("change", best["best_code"], ctx, deps.options.fixes)


def _code(reply: str, state: dict, enabled: tuple[str, ...], attempt: int) -> tuple[str | None, str, list[dict]]:
    """(code, why there is none, fixes made) from a Generator reply: the code block, or what the enabled
    `reply` fixes make of a reply without one; then the enabled `source` fixes (agent/fixes/registry.py)."""
    code, err = extract_code(reply)
    edits: list = []
    ctx = Context(base_code=best_fields(state)["best_code"])
    if code is None:
        code, edits = apply_stage("reply", reply, ctx, enabled)
        err = "" if code else err
    if code:
        code, more = apply_stage("source", code, ctx, enabled)
        edits += more
    return code, err, [{**e.to_dict(), "attempt": attempt} for e in edits]


def _ask(client: ChatClient, system_name: str, prompt: str, temperature: float | None, *, stop: StopRule,
         progress: Callable[[int, float], None], schema: dict | None = None,
         history: Sequence[tuple[str, str]] = ()) -> dict:
    system = prompts.load(system_name).template.strip()
    reply = client.ask(system, prompt, temperature=temperature, schema=schema, stop=stop, progress=progress,
                       history=history)
    return {"system": system, "prompt": prompt, "response": reply.text, **reply.costs(), "llm": client.spec,
            "temperature": temperature}
