"""LLM time per iteration: the recorded prompts of a real run replayed through one model, each technique
off and on, printed as ratios against today's way of calling the model, measured in the same process.

    python bench/llm.py [--run tests/fixtures/run-digits] [--llm llamacpp:qwen2.5-coder-1.5b]
                        [--iterations 2] [--configs today,contexts,early_stop,repair_context,lookup2,lookup15,constrained]
                        [--roles improver,generator]

Every call is greedy (temperature 0), in the order the run made them (Improver, Generator, repairs):

- today:       one llama.cpp context shared by both roles, the reply read to its end, free-text JSON
- contexts:    one context per role, so each call re-reads only what changed since that role's last call
- early_stop:  as contexts, and a reply stops once its code block (or JSON object) is complete
- repair_context: as early_stop, and the Generator's repairs run on a context of their own
- lookupN:     as repair_context, and the Generator drafts up to N tokens by prompt lookup: the continuation of
               the longest earlier match of its context's end (agent/llm/lookup.py; the search's default is 15)
- constrained: as early_stop, and the Improver's reply is held to the JSON schema by a grammar
- checked:     as constrained, each sampled token checked against the grammar, which runs over the whole
               vocabulary only where the token fails (agent/llm/grammar_check.py)
- rendered:    as repair_context, with each Improver prompt rendered by today's code from the state the run's
               records give before its iteration (not the recorded text) and held to the loop's typed-change
               grammar (where the backend is constrained), and each repair of code the model
               wrote as it is the next turn of the Generator's conversation (agent/loop/nodes.py
               `conversation`): what a change of the prompts saves

A repair recorded as such a turn ("answered" in its trace record: the code shown as the reply before it) is
replayed as the loop sends it: after the turns before it, on the Generator's context (which holds this
replay's own replies to them).

"same" says whether what the loop reads from each reply (the code block, the {problem, suggestion} object)
is identical to today's; the constrained row changes the Improver's text by design and reports how many of
its replies parse instead. Nothing is asserted: machines are noisy, the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasloop.agent.llm.client import LLMSettings, make_clients  # noqa: E402
from nasloop.agent.llm.grammar import improver_schema, reply_schema  # noqa: E402
from nasloop.agent.llm.parsing import extract_code, parse_improver  # noqa: E402
from nasloop.agent.llm.prompting import best_fields, improver_prompt, improver_turn, repair_turn  # noqa: E402
from nasloop.agent.llm.stream import code_complete, json_complete  # noqa: E402
from nasloop.agent.loop.record import TraceStep  # noqa: E402
from nasloop.agent.runs.fork import state_at  # noqa: E402
from nasloop.agent.runs.store import RunStore  # noqa: E402

TODAY = LLMSettings(temperature=0.0, context_per_role=False, repair_context=False, early_stop=False, constrained=False,
                    lookup=0, grammar_check=False)
CONFIGS = {
    "today": TODAY,
    "contexts": replace(TODAY, context_per_role=True),
    "early_stop": replace(TODAY, context_per_role=True, early_stop=True),
    "repair_context": replace(TODAY, context_per_role=True, early_stop=True, repair_context=True),
    "constrained": replace(TODAY, context_per_role=True, early_stop=True, constrained=True),
    "checked": replace(TODAY, context_per_role=True, early_stop=True, constrained=True, grammar_check=True),
}


def config(name: str) -> LLMSettings:
    if name == "rendered":
        return CONFIGS["repair_context"]
    if name.startswith("lookup"):
        return replace(CONFIGS["repair_context"], lookup=int(name[6:] or 2))
    return CONFIGS[name]


@dataclass
class Row:
    name: str
    seconds: dict[str, float] = field(default_factory=dict)  # by role
    tokens: dict[str, int] = field(default_factory=dict)  # completion tokens by role
    read: dict[str, int] = field(default_factory=dict)  # prompt tokens read anew (not from the KV cache), by role
    replies: list = field(default_factory=list)  # what the loop reads from each reply
    parsed: int = 0
    improver_calls: int = 0


def calls(run: Path, iterations: int) -> list[dict]:
    """The run's LLM calls of its first `iterations` iterations, in the order they were made."""
    recs = [r for r in RunStore.open(run, writable=False).trace() if r.get("prompt") and 1 <= r["iteration"] <= iterations]
    return sorted(recs, key=lambda r: (r["iteration"], *TraceStep.of(r).order()))


def rendered_calls(run: Path, recs: list[dict]) -> list[dict]:
    """The calls as today's code would make them, in order (a repair's form depends on the calls before)."""
    done: list[dict] = []
    for rec in recs:
        done.append(rendered(run, rec, done))
    return done


def rendered(run: Path, rec: dict, done: list[dict]) -> dict:
    """A call as today's code would make it: an Improver prompt rendered from the run's records (a retry
    keeps the note it was sent with), a repair of the model's own code as a turn; other calls as recorded."""
    step = TraceStep.of(rec)
    if step.kind == "repair":
        return repair_as_turn(run, rec, turns_before(rec, done))
    if step.kind != "improve" or '"lesson"' in rec["prompt"]:
        return rec
    note = rec["prompt"].partition("\n\nYour suggestion ")
    state = state_at(RunStore.open(run, writable=False), rec["iteration"])
    best = best_fields(state)
    chat = rec.get("chat") or {}
    continued = chat.get("start", rec["iteration"]) < rec["iteration"]
    # a turn after which the latest candidate became the best shows its changes to the best spoken of before
    before = next((r.get("chat") or {} for r in reversed(done) if TraceStep.of(r) == TraceStep("improve")), {})
    was = before.get("best") if continued and before.get("best") != chat.get("best") else None
    was_best = RunStore.open(run, writable=False).candidate_code(was) if was is not None else None
    prompt = improver_turn(state, was_best=was_best) if continued else improver_prompt(state)
    return {**rec, "prompt": f"{prompt}\n\nYour suggestion {note[2]}" if note[1] else prompt,
            "schema": improver_schema(best["best_layers"], state.get("window") or [], best["best_code"])}


def turns_before(rec: dict, calls: list[dict]) -> list[dict]:
    """The Generator's calls of the repair's iteration before it (its generation, earlier repairs)."""
    return [r for r in calls if r["iteration"] == rec["iteration"] and TraceStep.of(r).kind in ("generate", "repair")
            and TraceStep.of(r).order() < TraceStep.of(rec).order()]


def repair_as_turn(run: Path, rec: dict, before: list[dict]) -> dict:
    """A repair recorded as a prompt of its own, as a turn where the loop now sends one: the code it showed
    becomes the reply to the turn before it, every repair before it in the iteration being a turn too."""
    if "answered" in rec:
        return rec
    shown = rec["prompt"].partition("Your code:\n```python\n")[2].rpartition("\n```")[0].strip()
    chained = [TraceStep.of(r).kind == "generate" or "answered" in r for r in before] == [True] * len(before)
    if not before or not chained or not shown or "degenerated into" in rec["prompt"]:
        return rec
    result = next(r for r in RunStore.open(run, writable=False).results() if r["iteration"] == rec["iteration"])
    failed = (result.get("repairs") or [])[TraceStep.of(rec).attempt - 1]
    turn = repair_turn({"kind": failed["outcome"], "diagnosis": failed["diagnosis"]}, failed.get("suggestion"))
    return {**rec, "prompt": turn, "answered": f"```python\n{shown}\n```"}


def conversation(rec: dict, calls: list[dict]) -> list[tuple[str, str]]:
    """The turns a repair recorded as a turn is sent after: each earlier call's prompt, answered by the
    code the next one showed (the loop's `conversation`); for an Improver call that continued its
    conversation, the recorded calls since its start with their recorded replies (the loop's
    `improver_conversation`); [] for any other call."""
    chat = rec.get("chat") or {}
    if TraceStep.of(rec).kind == "improve" and chat.get("start", rec["iteration"]) < rec["iteration"]:
        earlier = {r["iteration"]: r for r in calls if TraceStep.of(r) == TraceStep("improve")}
        return [(earlier[n]["prompt"], earlier[n]["response"]) for n in range(chat["start"], rec["iteration"])
                if n in earlier]
    if "answered" not in rec:
        return []
    before = turns_before(rec, calls)
    answers = [r["answered"] for r in before[1:]] + [rec["answered"]]
    return [(r["prompt"], a) for r, a in zip(before, answers, strict=True)]


def replay(name: str, settings: LLMSettings, spec: str, recs: list[dict]) -> Row:
    improver, generator = make_clients(spec, spec, replace(settings, max_tokens=settings.max_tokens))
    improver.ask("You are terse.", "Say OK.")  # load and touch the weights outside the timing
    row = Row(name)
    for r in recs:
        is_improver = TraceStep.of(r).kind == "improve"
        client = improver if is_improver else generator.repairs if TraceStep.of(r).kind == "repair" else generator
        history = conversation(r, recs)
        client = generator if history and not is_improver else client
        first = "lesson" if '"lesson"' in r["prompt"] else "problem"
        reply = client.ask(r["system"], r["prompt"], temperature=0.0,
                           schema=(r.get("schema") or reply_schema(first)) if is_improver else None,
                           stop=json_complete if is_improver else code_complete, history=history)
        role = "improver" if is_improver else "generator"
        row.seconds[role] = row.seconds.get(role, 0.0) + reply.seconds
        row.tokens[role] = row.tokens.get(role, 0) + (reply.completion_tokens or 0)
        row.read[role] = row.read.get(role, 0) + (reply.prompt_tokens or 0) - (reply.prefix_tokens or 0)
        if is_improver:
            got = parse_improver(reply.text)[0]
            row.improver_calls += 1
            row.parsed += got is not None
            row.replies.append(json.dumps(got, sort_keys=True))
        else:
            row.replies.append(extract_code(reply.text)[0])
        print(f"  [{name}] iteration {r['iteration']} {r['node']}: {reply.seconds:.1f} s, "
              f"{reply.completion_tokens} tokens, prompt {reply.prompt_tokens} (reused {reply.prefix_tokens}), "
              f"drafted {reply.drafted_tokens} (kept {reply.accepted_tokens}), stop {reply.stop}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "tests" / "fixtures" / "run-digits")
    ap.add_argument("--llm", default="llamacpp:qwen2.5-coder-1.5b")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=LLMSettings.max_tokens)
    ap.add_argument("--configs", default="today,contexts,early_stop,repair_context,lookup2,lookup15,constrained")
    ap.add_argument("--roles", default="improver,generator",
                    help="the calls to replay: improver (Improver and reflection), generator (with its repairs)")
    args = ap.parse_args()
    roles = set(args.roles.split(","))
    if roles - {"improver", "generator"}:
        raise SystemExit(f"bench/llm.py: unknown role(s) {', '.join(sorted(roles - {'improver', 'generator'}))}: "
                         f"use improver and/or generator")
    recs = [r for r in calls(args.run, args.iterations)
            if ("improver" if TraceStep.of(r).kind == "improve" else "generator") in roles]
    if not recs:
        raise SystemExit(f"bench/llm.py: no recorded {args.roles} calls in the first {args.iterations} "
                         f"iterations of {args.run}")
    print(f"{len(recs)} recorded calls of {args.iterations} iterations from {args.run}, model {args.llm}", flush=True)
    rows = []
    for name in args.configs.split(","):
        t0 = time.perf_counter()
        these = rendered_calls(args.run, recs) if name == "rendered" else recs
        rows.append(replay(name, replace(config(name), max_tokens=args.max_tokens), args.llm, these))
        print(f"  [{name}] {time.perf_counter() - t0:.0f} s", flush=True)
    base = rows[0]
    per_it = sum(base.seconds.values()) / args.iterations
    print(f"\n| config | LLM s / iteration | vs {base.name} | improver s | improver tokens read | generator s | "
          f"generator tok/s | same as {base.name} |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        total = sum(row.seconds.values()) / args.iterations
        gen_rate = row.tokens.get("generator", 0) / max(row.seconds.get("generator", 0.0), 1e-9)
        grammar_first = next((r for r in rows if r.name == "constrained"), None)
        if row.name == "constrained":
            same = f"{row.parsed}/{row.improver_calls} Improver replies parse"
        elif row.name == "checked" and grammar_first is not None:
            same = "as constrained: " + ("yes" if row.replies == grammar_first.replies else "NO")
        elif row.name == "rendered":
            same = "its Improver prompts differ by design"
        else:
            same = "yes" if row.replies == base.replies else "NO: " + ", ".join(
                str(i) for i, (a, b) in enumerate(zip(row.replies, base.replies, strict=False)) if a != b)
        print(f"| {row.name} | {total:.1f} | {total / per_it:.2f}x | {row.seconds.get('improver', 0):.1f} | "
              f"{row.read.get('improver', 0)} | {row.seconds.get('generator', 0):.1f} | {gen_rate:.1f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
