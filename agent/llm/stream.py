"""When to stop reading a streamed reply: the part the loop uses is complete, or the reply degenerated.

Stopping changes nothing the loop reads: the Generator's code block is taken from the reply either way
(agent/llm/parsing.py), and the Improver's JSON object is complete. What is saved is the chatter after it
("This modification increases...") and, above all, a small model's repetition loop that would otherwise
run to the token limit (a minute or more on a CPU).

A rule is a function of the text so far that returns why to stop (a short name, recorded with the call)
or None to go on.
"""
from __future__ import annotations

import re
from typing import Callable

StopRule = Callable[[str], "str | None"]

DEGENERATE = ("repeated_line", "long_line")  # the stop reasons that mean the reply fell into a loop
REPEATS = 8  # the same non-blank line this many times in a row: a repetition loop
LONG_LINE = 400  # characters: no sane line of a module is this long; a repetition loop within a line is
LONG_JSON_LINE = 3000  # a JSON reply is often one line: only a runaway one is cut
_CLOSED_BLOCK = re.compile(r"```[^\n]*\n(.*?)\n[ \t]*```", re.DOTALL)


def degenerate(text: str, long_line: int = LONG_LINE) -> str | None:
    """`repeated_line` or `long_line` when the reply has fallen into a loop, else None."""
    lines = text.split("\n")
    if len(lines[-1]) > long_line:
        return "long_line"
    done = [ln.strip() for ln in lines[:-1]]
    if len(done) >= REPEATS and done[-1] and all(ln == done[-1] for ln in done[-REPEATS:]):
        return "repeated_line"
    return None


def code_complete(text: str) -> str | None:
    """The Generator's rule: stop once a closed code block defines `class Net`, or on degeneration."""
    for body in _CLOSED_BLOCK.findall(text):
        if re.search(r"^class Net\b", body, re.MULTILINE):
            return "code_closed"
    return degenerate(text)


def json_complete(text: str) -> str | None:
    """The Improver's rule: stop once the first JSON object is closed (braces balanced outside strings)."""
    start = text.find("{")
    if start >= 0:
        depth, quote, escaped = 0, "", False
        for ch in text[start:]:
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return "json_closed"
    return degenerate(text, long_line=LONG_JSON_LINE)
