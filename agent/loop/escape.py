"""Noticing that the search is stuck, and changing something real when it is.

The published loop with a small model produced the same failure thirteen times in a row: the memory
held the error text, but nothing changed when it repeated. Here a streak of N equivalent failures
(same outcome class, same diagnosis once numbers are blanked) selects an escape that escalates:

  streak == N      "told":       the Improver is told its last suggestions failed the same way, and the
                                 Generator is asked for a minimal edit of the best net instead of a rewrite
  streak == N + 1  "hotter":     as above, and both LLMs sample at a higher temperature (bounded)
  streak >= N + 2  "restart":    the Improver's proposal is replaced by a conservative one: restart from
                                 the best code and change a single width: the channels of one convolution

Verbatim repeats of earlier code are detected too (`code_key`), so they cost no container.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_STREAK = 2
MAX_TEMPERATURE = 1.1
RESTART_SUGGESTION = ("Restart from the best network exactly as it is and change ONE hyper-parameter only: "
                      "the width (channels) of one convolution, keeping every shape consistent.")


@dataclass(frozen=True)
class Escape:
    """Which escape the next iteration uses, and why."""

    name: str  # told | hotter | restart
    streak: int
    outcome: str
    diagnosis: str
    temperature: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "streak": self.streak, "outcome": self.outcome}

    def improver_note(self) -> str:
        return (f"WARNING: the last {self.streak} candidates all failed the same way ({self.outcome}: "
                f"{self.diagnosis[:160]}). Your previous suggestions did not fix it. Suggest something "
                f"DIFFERENT and simpler that avoids this failure.")

    def generator_note(self) -> str:
        return generator_note(self.to_dict())


def generator_note(escape: dict) -> str:
    """What the Generator is told during an escape (`escape` as recorded in the proposal)."""
    return ("Make a MINIMAL edit of the current best network: keep everything else exactly as it is. "
            f"The last {escape['streak']} attempts failed with {escape['outcome']}; make sure this one does not.")


def signature(triple: dict) -> tuple[str, str]:
    """Outcome class + diagnosis with numbers blanked: `2x2048 and 8192x10` ≈ `2x4096 and 8192x10`."""
    diag = re.sub(r"\d+", "#", triple.get("diagnosis", ""))
    diag = re.sub(r"candidate\.py:#.*?(\||$)", "", diag)
    return triple.get("outcome", ""), diag.strip()[:120]


def failure_streak(window: list[dict]) -> int:
    """How many of the most recent triples are the same failure."""
    if not window or window[-1].get("outcome") == "ok":
        return 0
    last = signature(window[-1])
    n = 0
    for t in reversed(window):
        if signature(t) != last:
            break
        n += 1
    return n


def choose_escape(window: list[dict], threshold: int = DEFAULT_STREAK, base_temperature: float = 0.7) -> Escape | None:
    """The escape for the next iteration, or None when the search is not stuck."""
    n = failure_streak(window)
    if threshold < 1 or n < threshold:
        return None
    last = window[-1]
    kind, diag = last.get("outcome", ""), last.get("diagnosis", "")
    if n == threshold:
        return Escape("told", n, kind, diag)
    temp = min(MAX_TEMPERATURE, base_temperature + 0.2 * (n - threshold))
    if n == threshold + 1:
        return Escape("hotter", n, kind, diag, temperature=temp)
    return Escape("restart", n, kind, diag, temperature=temp)


def code_key(code: str) -> str:
    """Identity of a candidate for repeat detection: comments, blank lines and trailing spaces ignored."""
    lines = []
    for line in code.splitlines():
        line = re.sub(r"\s+#.*$|^\s*#.*$", "", line).rstrip()
        if line.strip():
            lines.append(line)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
