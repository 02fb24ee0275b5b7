"""The conversations a call continues, rebuilt from the trace (every turn is recorded, so a resumed run sends
the same messages): the Generator's, which a repair continues (agent/loop/nodes.py `repair`), and the
Improver's, which the next iteration's diagnosis continues, a new best shown in it (`improve`)."""
from __future__ import annotations

from dataclasses import dataclass

from nasloop.agent.deps import Deps
from nasloop.agent.llm.stream import DEGENERATE, LONG_LINE
from nasloop.agent.loop import record

CONVERSATION_CHARS = 12_000  # of the turns a repair continues: with a 1,536-token reply, well inside n_ctx 6,144


def conversation(deps: Deps, it: int, attempt: int, cand: dict) -> list[tuple[str, str]] | None:
    """The Generator's conversation repair `attempt` continues: its generation and the repairs since, each a
    (prompt, reply) turn. A turn's reply is the code that failed, as a code block (the model's own reply,
    or what a fix made of it: the code the diagnosis speaks of); the context that wrote the reply still
    holds it up to the first edit, so a repair reads ~100 new prompt tokens instead of ~600 (the code again,
    the fixed instructions). None where there is no code to show, the reply degenerated into a loop, a turn
    is missing, or the conversation grew long: that repair is a prompt of its own (`repair_prompt`)."""
    code = (cand.get("code") or "").strip()
    if not code or cand.get("stop") in DEGENERATE or max(map(len, code.splitlines())) > LONG_LINE:
        return None
    recs = []
    for n in range(attempt):  # the generation, then repairs 1 .. attempt-1
        step = record.TraceStep("generate") if n == 0 else record.TraceStep("repair", n)
        rec = deps.recorded("trace", it, step.node)
        if not rec or (n > 0 and rec.get("answered") is None):
            return None
        recs.append(rec)
    answers = [r["answered"] for r in recs[1:]] + [f"```python\n{code}\n```"]
    turns = [(r["prompt"], a) for r, a in zip(recs, answers, strict=True)]
    return turns if sum(len(a) + len(b) for a, b in turns) <= CONVERSATION_CHARS else None


IMPROVE_NODE = record.TraceStep("improve").node
RETRY_NODE = record.TraceStep("improve", variant=1).node


def converses(deps: Deps, state: dict) -> bool:
    """Whether this step's Improver call belongs to a conversation a later iteration may continue: the loop's
    diagnosis with one worker (not a reflection, not a round), where the run has the conversation on."""
    return deps.options.improver_chat and not state.get("parent") and not state.get("round")


@dataclass(frozen=True)
class ImproverChat:
    """The Improver's conversation a diagnosis continues: its (prompt, reply) turns, the iteration that began
    it, and, where the latest candidate is the new best, the code of the best the turns spoke of until now."""

    turns: list[tuple[str, str]]
    start: int
    was_best: str | None = None


def improver_conversation(deps: Deps, state: dict, it: int) -> ImproverChat | None:
    """The Improver's turns since its conversation began, where iteration `it` continues it: each (prompt,
    reply) of iterations start .. it-1. The Improver's prompt is ~1,500 tokens, and at 167743a about 740 of
    them were read anew on every call (8.6-9.8 s of its 12-15 s, CIFAR-10): the memory window slides and the
    latest candidate changes, everything after them is read again. As the next turn, only the latest
    candidate and the question are new; the context still holds the rest.

    The best net may change during a conversation to the latest candidate a turn shows (`was_best`: that turn
    shows its changes to the old best and its layer table, ~300 tokens). Begun anew, the prompt was read
    again from the best net's code on (1,000 tokens, 21-25 s of a CIFAR-10 search's Improver calls at 58e8066,
    against 8-14 s for a turn), and a search that improves changes its best every few iterations.

    None (a prompt of its own, which begins a conversation) where the best changed otherwise (a candidate
    the conversation never showed), the conversation already has `k` calls (the first prompt's memory window,
    up to k triples, and the turns since: at most 2k-1 triples in view, never fewer than the window's k), a
    call was asked again or its change replaced by a fallback (the Generator built a change the reply does not
    say), another model wrote a reply (a fork), an escape or a reflection, a round of several workers, a turn
    is missing, the old best's code is not at hand, or the turns grew long. (A change a repair of a repeat
    made instead is said in the next turn: `built_instead`.)"""
    k = deps.options.k
    if not converses(deps, state) or it < 2:
        return None
    start = ((deps.recorded("trace", it - 1, IMPROVE_NODE) or {}).get("chat") or {}).get("start")
    if not isinstance(start, int) or not 1 <= start < it or it - start >= k:
        return None
    turns, bests = [], []
    for n in range(start, it):
        rec, result = deps.recorded("trace", n, IMPROVE_NODE), deps.recorded("results", n, "evaluate")
        chat = (rec or {}).get("chat") or {}
        if (rec is None or chat.get("start") != start or rec.get("llm") != deps.improver.spec
                or result is None or deps.recorded("trace", n, RETRY_NODE) is not None
                or record.suggestion_source(result) != "model"):
            return None
        turns.append((rec["prompt"], rec["response"]))
        bests.append(chat.get("best"))
    bests.append((state.get("best") or {}).get("iteration"))
    # each call n spoke of the best of call n-1, or of candidate n-1 as the new best
    if any(now not in (before, n - 1) for n, before, now in zip(range(start + 1, it + 1), bests[:-1], bests[1:],
                                                                    strict=True)):
        return None
    was_best = None
    if bests[-1] != bests[-2]:
        was_best = deps.member_code(bests[-2])
        if was_best is None:
            return None
    if sum(len(a) + len(b) for a, b in turns) > CONVERSATION_CHARS:
        return None
    return ImproverChat(turns, start, was_best)


def built_instead(deps: Deps, iteration: int) -> str:
    """The change a repair of a repeat had the Generator make instead of the Improver's, for `iteration`'s
    candidate ("" where it was built from the Improver's own): the Improver's next turn says so. In a
    CIFAR-10 search (seed 45, at 66bcdec) the Generator wrote the best net again for 6 of 12 changes, and
    ending the conversation at each such repair let only 3 of 12 diagnoses continue one."""
    result = deps.recorded("results", iteration, "evaluate") or {}
    return next((h["suggestion"] for h in reversed(result.get("repairs") or []) if h.get("suggestion")), "")
