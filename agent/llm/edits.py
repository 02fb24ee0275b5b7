"""The Generator's edit replies: search/replace blocks against the net in its prompt, applied by the loop.

Why: the Generator's reply was the whole net again, 360 to 390 tokens of which about nine lines in ten
were copied from its prompt, decoded at ~18 tokens/s on a 2-core CPU (about 20 s per call). A reply of
only the changed lines is 25 to 130 tokens. The format is the one code assistants use:

    <<<<<<< SEARCH
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
    =======
            self.conv2 = nn.Conv2d(16, 48, 3, padding=1)
    >>>>>>> REPLACE

Told only in words, the 1.5B model wrote the whole net anyway (8 of 8 recorded prompts); after one example
turn (prompts/edit_example_*.txt) it wrote blocks, and 6 of 8 applied. A block applies where its SEARCH
lines are in the net, exactly or line by line with other indentation and blank lines; a block that
matches nowhere is a failure with its own phase ("edit"), which the repair turn answers with the whole net.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EDIT_PHASE = "edit"  # the failure phase of a reply whose edits do not apply to the net
_BLOCK = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*\n(.*?)^[ \t]*={5,9}[ \t]*\n(.*?)^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$",
                    re.DOTALL | re.MULTILINE)
_OPEN = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH", re.MULTILINE)


@dataclass(frozen=True)
class EditResult:
    """What applying a reply's blocks made: the edited net, or None where a block matched nowhere."""

    code: str | None
    blocks: int
    applied: int
    unmatched: tuple[str, ...] = ()  # the SEARCH text of each block that matched nowhere

    def failure(self) -> dict:
        """The failure as data (Outcome.failure): the phase, how many blocks applied, what was not found."""
        return {"phase": EDIT_PHASE, "blocks": self.blocks, "applied": self.applied,
                "unmatched": [s[:300] for s in self.unmatched]}

    def diagnosis(self) -> str:
        """The failure as the model reads it."""
        if not self.blocks:
            return "the reply opens a SEARCH/REPLACE block but never closes it (=======, >>>>>>> REPLACE)"
        first = self.unmatched[0].strip().splitlines()
        shown = first[0].strip() if first else "(empty)"
        return (f"{len(self.unmatched)} of your {self.blocks} SEARCH blocks matched no lines of the module "
                f"(the first: `{shown}`)")


def has_edits(reply: str) -> bool:
    """Whether a reply is written as search/replace blocks (it opens at least one)."""
    return bool(_OPEN.search(reply or ""))


def apply_edits(base: str, reply: str) -> EditResult:
    """Apply every block of `reply` to `base` in order; each block's SEARCH is looked for in the net as
    the blocks before it left it."""
    blocks = _BLOCK.findall(reply or "")
    code, unmatched = base, []
    for search, replace in blocks:
        edited = _replace_once(code, search.rstrip("\n"), replace.rstrip("\n"))
        if edited is None:
            unmatched.append(search)
        else:
            code = edited
    ok = bool(blocks) and not unmatched
    return EditResult(code if ok else None, len(blocks), len(blocks) - len(unmatched), tuple(unmatched))


def _replace_once(code: str, search: str, replace: str) -> str | None:
    """`code` with the first place whose lines are `search` replaced by `replace`, or None. Lines are
    compared stripped, blank ones skipped; `replace` is re-indented by the difference between the indent
    found and the indent the SEARCH was written with (small models often drop a level)."""
    want = [ln.strip() for ln in search.splitlines() if ln.strip()]
    if not want:
        return None
    lines = code.splitlines()
    for start in range(len(lines)):
        end = _match_at(lines, start, want)
        if end is None:
            continue
        found = _indent(lines[start])
        written = _indent(next(ln for ln in search.splitlines() if ln.strip()))
        new = [_reindent(ln, written, found) for ln in replace.splitlines()]
        return "\n".join(lines[:start] + new + lines[end:]) + "\n"
    return None


def _match_at(lines: list[str], start: int, want: list[str]) -> int | None:
    """The index after the last line matched when `want` matches from `start` (blank lines skipped)."""
    if lines[start].strip() != want[0]:
        return None
    i, k = start, 0
    while i < len(lines) and k < len(want):
        if lines[i].strip():
            if lines[i].strip() != want[k]:
                return None
            k += 1
        i += 1
    return i if k == len(want) else None


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _reindent(line: str, written: str, found: str) -> str:
    if not line.strip():
        return ""
    return " " * max(0, len(_indent(line)) + len(found) - len(written)) + line.lstrip()
