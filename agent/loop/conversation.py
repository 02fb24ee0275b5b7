"""The Generator's conversation a repair continues (agent/loop/nodes.py `repair`), rebuilt from the trace:
every turn is recorded, so a resumed run sends the same messages."""
from __future__ import annotations

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
