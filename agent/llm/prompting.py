"""The prompts the loop sends, filled from the graph state: the Improver's (or, in evolution, the
reflection's), the Generator's and the repair's. The templates themselves are text files in prompts/.
"""
from __future__ import annotations

import ast
import difflib
import io
import json
import math
import tokenize
from functools import lru_cache

from nasloop import prompts
from nasloop.agent.llm.parsing import CHANGE_OPS, describe_change
from nasloop.agent.llm.stream import LONG_LINE
from nasloop.tools.text import human
from nasloop.agent.python_source import parse_source

FALLBACK_SUGGESTION = "Make one small, safe change to the best network that should raise its accuracy."
# When the Improver's reply is unreadable or copies a placeholder, the Generator gets one of these concrete,
# shape-safe changes instead of a vague one (a small model applies a concrete change far more reliably).
FALLBACK_CHANGES = (
    "Increase the number of output channels of the last convolution by 50% (and of its BatchNorm and the "
    "input features of the final nn.Linear), keeping every other layer as it is.",
    "Add one convolution with padding 1, its own BatchNorm2d and a ReLU right after the last convolution, "
    "with the same number of input and output channels.",
    "Replace the first convolution's kernel size 3 with 5 and its padding 1 with 2.",
    "Add nn.Dropout(0.2) right before the final nn.Linear, defined in __init__.",
    "Replace every F.relu in forward with F.silu, changing nothing else.",
    "Increase the number of output channels of the first convolution by 50% (and of its BatchNorm and the "
    "input channels of the second convolution), keeping every other layer as it is.",
    # A classifier on the flattened last map, not its global average: the CIFAR-10 seed-43 search gained
    # most (0.53 -> 0.56) where its net made that change; one epoch is too short for the average to catch up.
    "Replace F.adaptive_avg_pool2d(x, 1) before the final nn.Linear with self.pool(x), so that the nn.Linear "
    "reads the whole flattened feature map (its in_features: channels x height x width of that map).",
)
# The fallbacks that add no parameters: once a change in the memory went over the budget, the others could
# push the net over it too (seed 44: "widen the first conv by 50%" came right after a budget error).
NO_GROWTH = frozenset(FALLBACK_CHANGES[3:5])


def input_shape(task: dict) -> str:
    s = task["image_size"]
    return f"(B, {task['in_channels']}, {s}, {s})"


def max_downsamples(size: int) -> int:
    return max(0, int(math.log2(max(1, size))) - 1)


def best_fields(state: dict) -> dict:
    best = state.get("best") or {}
    acc = f"{best['accuracy']:.4f}" if best.get("accuracy") is not None else "n/a"
    parent = state.get("parent")
    label = f"Current best network (accuracy {acc})"
    if parent:  # evolution: the Generator mutates the parent, not the best
        best = parent
        label = f"Parent network (iteration {parent['iteration']}, {parent.get('fitness_name', 'fitness')} " \
                f"{_num(parent.get('fitness'))})"
    seed = prompts.seed_source(state["task"]["dataset"])
    return {
        "best_code": plain_code(best.get("code") or seed, seed).strip(),
        "best_accuracy": acc, "base_label": label,
        "best_iteration": best.get("iteration", "-"),
        "best_params": human(best["params"]) if best.get("params") else "n/a",
        "best_layers": best.get("layers") or "(not traced)",
        "best_input": _input_shape(state["task"]),  # for the loop's edits: the traced table starts after it
    }


def _input_shape(task: dict) -> tuple[int, int, int] | None:
    size, channels = task.get("image_size"), task.get("in_channels")
    return (channels, size, size) if isinstance(size, int) and isinstance(channels, int) else None


@lru_cache(maxsize=32)  # a pure function of two strings, asked for the same best net by every node
def plain_code(code: str, seed: str) -> str:
    """The code as the prompts show it: without the comments the seed does not have, and without docstrings.
    The Generator writes its instructions into comments ("# Widen conv1 to 32 channels (why: ...)") that go
    stale with the next change; the 1.5B Improver read their numbers as facts (it asked to widen conv1 "32 ->
    64" where conv1 had 64), and every later prompt read them again. The seed's docstring ("three conv-BN-ReLU
    stages ...") is stale from the first change on, and the Generator and each repair copied it into every
    net (about 25 tokens decoded per call). Code that does not tokenize is shown as it is."""
    keep = {line.strip() for line in seed.splitlines()}
    try:
        comments = [t.start for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return code
    lines: list[str | None] = list(code.splitlines())
    for row, col in comments:
        line = lines[row - 1]
        if line is not None and line.strip() not in keep:
            lines[row - 1] = line[:col].rstrip() or None  # a comment line of its own goes altogether
    for first, last in _docstring_lines(code):
        if last < len(lines) and lines[last] is not None and not str(lines[last]).strip():
            last += 1  # and the blank line under it
        lines[first - 1:last] = [None] * (last - first + 1)
    return "\n".join(line for line in lines if line is not None)


def _docstring_lines(code: str) -> list[tuple[int, int]]:
    """The (first, last) line of each docstring that stands on lines of its own, in a body it does not make
    up alone (removing it leaves valid code)."""
    try:
        tree = parse_source(code)
    except (SyntaxError, ValueError):
        return []
    spans = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not body:
            continue
        doc = body[0]
        if len(body) > 1 and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) \
                and isinstance(doc.value.value, str) and doc.end_lineno is not None \
                and doc.end_lineno < body[1].lineno and doc.lineno > getattr(node, "lineno", 0):
            spans.append((doc.lineno, doc.end_lineno))
    return spans


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _task_fields(task: dict) -> dict:
    return {
        "task": task["description"], "input_shape": input_shape(task), "num_classes": task["num_classes"],
        "in_channels": task["in_channels"], "image_size": task["image_size"],
        "max_params": human(task["max_params"]), "max_downsamples": max_downsamples(task["image_size"]),
        "steps_text": task.get("steps_text", "one epoch"),
    }


def improver_prompt(state: dict, note: str = "") -> str:
    base = best_fields(state)
    text = prompts.render("improver", **_task_fields(state["task"]), **base, **_latest_fields(state, base["best_code"]),
                          window=window_text(state), operators=", ".join(CHANGE_OPS))
    return f"{text}\n\n{note}" if note else text


def improver_turn(state: dict, instead: str = "", was_best: str | None = None) -> str:
    """The Improver's next turn in its conversation (agent/loop/conversation.py `improver_conversation`):
    the latest candidate, built from the change of the reply above or, where a repair of a repeat made
    another change, that one `instead`; and the question. The rest is in the turns before it. The change
    is not quoted back: quoted ("built from your change as "Add a residual connection around conv3: its
    input (64x8x8) ..."), the 1.5B model copied it as the arguments of its next change, operator "other",
    in 3 of 4 turns (CIFAR-10, seed 44, at 97d2f99), and its replies grew from about 60 tokens to 96.

    Where the latest candidate is the new best, `was_best` is the best network the conversation spoke of
    until now: the turn shows the candidate's changes to it and the new best's layer table, and the
    conversation goes on about the new best.

    Where the loop made the candidate from the change itself (`last["edited"]`), its changes are the change
    the reply above asked for, and the turn says so instead of showing them: in CIFAR-10 searches (seeds 44
    and 45, at c205380) 17 of 40 candidates were such edits, and a turn's diff was 100-200 tokens (read at
    about 45 a second)."""
    base = best_fields(state)
    edited = bool((state.get("last") or {}).get("edited")) and not instead
    built = (f'"{instead}" instead (for your change the Generator wrote an earlier network again)' if instead
             else "your change above, which the loop made exactly as asked" if edited else "your change above")
    if was_best is not None:
        shown = plain_code(was_best, prompts.seed_source(state["task"]["dataset"])).strip()
        fields = _latest_fields(state, shown, shown=True, diff=not edited)
        return prompts.render("improver_turn_best", **base, **fields, built=built)
    return prompts.render("improver_turn", **base, **_latest_fields(state, base["best_code"], diff=not edited),
                          built=built)


def _latest_fields(state: dict, best_code: str, shown: bool = False, diff: bool = True) -> dict:
    """The latest candidate as the Improver reads it: its outcome, and its changes to `best_code` (not where
    it is the best itself, unless `shown`; not at all without `diff`)."""
    last = state.get("last") or {}
    out = last.get("outcome") or {}
    if out.get("kind") == "ok":
        details = f"accuracy {out.get('accuracy', 0):.4f}, {human(out.get('params') or 0)} parameters"
    else:
        details = f"diagnosis: {out.get('diagnosis', '')}"
    if diff and last.get("code") and (shown or last.get("iteration") != (state.get("best") or {}).get("iteration")):
        seed = prompts.seed_source(state["task"]["dataset"])
        details += "\n" + changes_text(best_code, plain_code(last["code"], seed))
    return {"last_iteration": last.get("iteration", "-"), "last_outcome": out.get("kind", "none"),
            "last_details": details}


def changes_text(best_code: str, code: str) -> str:
    """The latest candidate as the Improver reads it: its edits to the best network as a diff, which says
    what was tried in a few lines and leaves the rest of the prompt unread-again (the Improver's prompt is
    read anew from the latest candidate on, each iteration); its whole code where it is a rewrite."""
    old, new = best_code.strip().splitlines(), code.strip().splitlines()
    if old == new:
        return "Its code is the best network's, unchanged."
    lines = []
    for line in difflib.unified_diff(old, new, n=1, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        lines.append("..." if line.startswith("@@") else line)
    body = "\n".join(lines)
    if len(body) >= len(code.strip()) * 3 // 4:  # mostly rewritten: the code itself reads better
        return f"Its code:\n```python\n{code.strip()}\n```"
    return ("Its changes to the best network (- a line removed, + a line added, ... lines left as they were):"
            f"\n```diff\n{body}\n```")


def shown_window(state: dict) -> list[dict]:
    """The memory as the Improver reads it. The seed's baseline entry is left out: it says nothing the
    best network does not, and small models copy its placeholder suggestion verbatim. Entries are shown
    whole (the record keeps 300 characters of a problem): clipped to 150 with a "...", the 1.5B Improver
    copied the clipped problem, "..." and all, as its own (seed 44: 8 of 20 problems, 10 distinct)."""
    return [{k: v for k, v in t.items() if k not in ("iteration", "change")} for t in state.get("window") or []
            if t.get("iteration") != 0]


def window_text(state: dict) -> str:
    """The memory window as it appears in the Improver's prompt."""
    window = shown_window(state)  # one line per entry: the same JSON in fewer tokens than an indented dump
    return "[\n" + ",\n".join(json.dumps(t) for t in window) + "\n]" if window else "(empty)"


def usable_proposal(parsed: dict | None, err: str, iteration: int, window: list[dict] | None = None) -> dict:
    """The Improver's proposal, or a concrete fallback when it is unreadable, a copied placeholder such
    as "(none: starting point)", or a suggestion the memory window shows was already tried (small models
    copy their last suggestion word for word: the Generator then repeats its code, or its last slip)."""
    sugg = (parsed or {}).get("suggestion", "").strip()
    tried = {_words(t.get("suggestion", "")): t.get("iteration") for t in window or [] if t.get("iteration") != 0}
    over = over_budget_again(parsed, window)
    if parsed is None:
        why = f"(improver failure) {err}"
    elif sugg.startswith("(") or not sugg:
        why = f"(improver failure) placeholder suggestion {sugg!r}"
    elif _words(sugg[:300]) in tried:  # the window keeps 300 characters of each suggestion
        why = f"(improver repeat) suggestion of iteration {tried[_words(sugg[:300])]} again;"
    elif over is not None:
        why = f"(improver repeat) a larger layer where iteration {over} went over the budget;"
    else:
        return parsed
    return {"problem": f"{why} {(parsed or {}).get('problem', '')}"[:300].strip(),
            "suggestion": fallback_change(iteration, window)}


def fallback_change(n: int, window: list[dict] | None, also_tried: tuple[str, ...] = ()) -> str:
    """The n-th (cyclically) of the concrete changes neither the memory window nor `also_tried` (this
    iteration's own proposal and repairs) holds; while the window holds a change that went over the budget,
    one that adds no parameters where one is left."""
    tried = {_words(t.get("suggestion", "")) for t in window or [] if t.get("iteration") != 0}
    tried |= {_words(s) for s in also_tried}
    fresh = [c for c in FALLBACK_CHANGES if _words(c) not in tried]
    if any(t.get("over_budget") for t in window or []):
        fresh = [c for c in fresh if c in NO_GROWTH] or fresh or [c for c in FALLBACK_CHANGES if c in NO_GROWTH]
    fresh = fresh or list(FALLBACK_CHANGES)
    return fresh[n % len(fresh)]


def over_budget_again(parsed: dict | None, window: list[dict] | None) -> int | None:
    """The iteration whose change grew the same layer the same way (widen or deepen it) and went over the
    budget, if the proposal does that again. In a CIFAR-10 search (seed 44) the 1.5B model widened conv3 five
    times after the first budget error, each time a few more channels: each a new suggestion, each refused."""
    change = (parsed or {}).get("change") or {}
    if change.get("operator") not in ("widen", "deepen") or not change.get("target"):
        return None
    head = describe_change({**change, "arguments": ""}) + ":"
    return next((t.get("iteration") for t in reversed(window or []) if t.get("over_budget")
                 and (t.get("suggestion") or "").startswith(head)), None)


def tried_note(parsed: dict, window: list[dict] | None) -> str:
    """What the Improver is told when its suggestion repeats one already tried (or is a placeholder):
    the list of tried changes, and to suggest a different one. Asked once, before any fallback is used."""
    tried = [t.get("suggestion", "")[:200] + (" (over the budget)" if t.get("over_budget") else "")
             for t in window or [] if t.get("iteration") != 0 and t.get("suggestion")]
    lines = "\n".join(f"- {s}" for s in dict.fromkeys(tried)) or "- (none yet)"
    return (f"Your suggestion \"{parsed.get('suggestion', '')[:200]}\" was already tried or is not a concrete "
            f"change. Changes already tried:\n{lines}\nSuggest a DIFFERENT concrete change (same JSON format).")


def _words(text: str) -> str:
    """A suggestion compared word for word, ignoring case, spacing and punctuation."""
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def reflect_prompt(state: dict, note: str = "") -> str:
    """Evolution: the Improver's role is reflection — what did the last mutations teach, and which
    mutation of the selected parent should come next."""
    task, last, parent = state["task"], state.get("last") or {}, state.get("parent") or {}
    name = parent.get("fitness_name", "fitness")
    out = last.get("outcome") or {}
    if out.get("kind") == "ok":
        details = f"{name} {_num(last.get('fitness'))}"
        if last.get("parent") is not None:
            details += f" (its parent, iteration {last['parent']}: {_num(last.get('parent_fitness'))})"
    else:
        details = f"failed: {out.get('kind')}: {out.get('diagnosis', '')}"
    members = sorted(state.get("population") or [], key=lambda m: -(m.get("fitness") or -math.inf))
    population = "\n".join(f"- iteration {m['iteration']}: {name} {_num(m.get('fitness'))}, "
                           f"{human(m.get('params') or 0)} parameters" for m in members[:8])
    text = prompts.render(
        "reflect", **_task_fields(task), **best_fields(state), fitness_name=name,
        last_iteration=last.get("iteration", "-"), last_details=details, population=population or "(empty)",
        window=window_text(state),
    )
    return f"{text}\n\n{note}" if note else text


def generator_prompt(state: dict, note: str = "") -> str:
    proposal = state.get("proposal") or {}
    suggestion = proposal.get("suggestion", FALLBACK_SUGGESTION)
    text = prompts.render("generator", **_task_fields(state["task"]), **best_fields(state), suggestion=suggestion)
    return f"{text}\n\n{note}" if note else text


def repair_prompt(state: dict, code: str | None, failed: dict, suggestion: str | None = None,
                  degenerated: bool = False) -> str:
    """`suggestion` replaces the Improver's (a repeat: the original change was too vague to be applied).
    A reply that degenerated into a loop of lines (stopped early, or cut off at the token limit) is not
    shown back: the model would copy the loop; it gets the network it was asked to change instead."""
    diagnosis = failed.get("diagnosis", "")
    if degenerated or code and max(map(len, code.splitlines()), default=0) > LONG_LINE:
        code = best_fields(state)["best_code"]
        diagnosis += ("; your reply degenerated into endlessly repeated lines and was cut off. Start again "
                      "from the network below and apply the change in a few short lines")
    return prompts.render("repair", **_task_fields(state["task"]), code=(code or "(no code)").strip(),
                          outcome=failed.get("kind", ""), diagnosis=diagnosis,
                          suggestion=suggestion or (state.get("proposal") or {}).get("suggestion", FALLBACK_SUGGESTION))


def repair_turn(failed: dict, suggestion: str | None = None) -> str:
    """A repair as the next turn of the Generator's conversation (agent/loop/nodes.py `repair`): the model's
    own reply is the turn before it, so only the failure (and, after a repeat, the change to make instead)
    is new to read."""
    change = f"The change to make instead: {suggestion}\n" if suggestion else ""
    return prompts.render("repair_turn", outcome=failed.get("kind", ""), diagnosis=failed.get("diagnosis", ""),
                          change=change)
