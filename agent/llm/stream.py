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

DEGENERATE = ("repeated_line", "repeated_block", "long_line")  # stop reasons meaning the reply fell into a loop
REPEATS = 8  # the same non-blank line this many times in a row: a repetition loop
BLOCK_MAX = 12  # a loop over a block of up to this many lines ...
BLOCK_LINES = 32  # ... is cut once its repeats cover this many lines (a net with 3 to 5 stages never does)
BLOCK_REPEATS = 4  # ... and, for a block longer than 8 lines, once it came this many times
WINDOW = 16  # a longer loop: its last this many lines came three times, word for word
_NUMBER = re.compile(r"\d+")
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
    if len(done) >= BLOCK_LINES and (repeated_block(kept := [ln for ln in done if ln]) or repeated_window(kept)):
        return "repeated_block"
    if method_again(lines[:-1]):
        return "repeated_block"
    return None


_DEF = re.compile(r"^([ \t]*)(class|def)\s+(\w+)")


def method_again(lines: list[str]) -> bool:
    """A class's method is begun a second time (`def forward` twice in `class Net`, no decorator): the reply
    went back into code it already wrote. Seen from the 1.5B model in a repair (CIFAR-10, seed 45, at e0b1499):
    the end of `__init__`, then `def forward` and its body again, three times, until the block rule cut it at
    1,003 tokens (91 s); cut here at the second `def forward`. Nested functions, other classes' methods and a
    property's setter (decorated) are not repeats."""
    methods: dict[str, int] = {}
    indent: int | None = None  # of the current class's methods: its first def's
    decorated = False
    for line in lines:
        m = _DEF.match(line)
        if m is None:
            decorated = line.lstrip().startswith("@") or (decorated and not line.strip())
            continue
        width, kind, name = len(m.group(1).expandtabs()), m.group(2), m.group(3)
        if kind == "class":
            methods, indent = {}, None
        elif indent is None or width == indent:
            if name in methods and not decorated:
                return True
            indent, methods[name] = width, width
        decorated = False
    return False


def repeated_window(lines: list[str], size: int = WINDOW) -> bool:
    """The last `size` finished lines came, word for word, three times: a loop over a block longer than
    BLOCK_MAX. Seen from the 1.5B model in a repair: 15 lines from the end of `__init__` through `def
    forward` into its body, over and over to the 1,536-token limit (100 s). No net repeats 16 lines word
    for word (layer names differ)."""
    if len(lines) < 3 * size:
        return False
    text, tail = "\n" + "\n".join(lines), "\n" + "\n".join(lines[-size:])  # matches start at a line's start
    seen, at = 0, text.find(tail)
    while at >= 0 and seen < 3:  # overlapping matches count: a loop shorter than `size` overlaps itself
        seen, at = seen + 1, text.find(tail, at + 1)
    return seen >= 3


def repeated_block(lines: list[str]) -> bool:
    """The finished lines end in one block of 2..BLOCK_MAX lines over and over, numbers aside, for
    BLOCK_LINES lines (a block of more than 8 lines: BLOCK_REPEATS times). Seen from the 1.5B model:
    `conv3 / bn3 / relu / pool` copied until the token limit, `self.conv3_9 = ... / self.bn3_9 = ... /
    self.pool = ...` counting up to conv3_13 and on, and a commented 9-line stage copied 20 times (about
    1,500 tokens, 100 s on a CPU, each). A real net of 3 to 5 stages repeats a stage's shape a few times,
    not ten."""
    for period in range(2, BLOCK_MAX + 1):
        span = max(BLOCK_LINES, BLOCK_REPEATS * period)
        if len(lines) < span:
            break
        tail = [_NUMBER.sub("#", ln) for ln in lines[-span:]]
        if all(tail[i] == tail[i % period] for i in range(period, span)):
            return True
    return False


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
