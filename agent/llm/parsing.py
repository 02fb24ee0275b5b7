"""Reading LLM replies that small models get slightly wrong.

The deterministic fixes of generated code live in agent/fixes/ (one module per fix; registry.py lists them).

Improver: a JSON object, a typed change {problem, change: {operator, target, arguments}} (the loop's, held to
`grammar.change_schema()` where the backend can) or {problem, suggestion} (a reflection's {lesson, suggestion} reads
the same) — also accepted with single quotes (Python literal),
inside a code fence, or as `problem: ... / suggestion: ...` lines. Generator: one python code block
defining `class Net`. Anything unreadable returns an error string instead of raising, so the loop can
record it as an outcome.
"""
from __future__ import annotations

import ast
import json
import re

from nasloop.agent.fixes.changes import residual_shape
from nasloop.tools.text import traced_rows


def _lenient_json(blob: str) -> object:
    """JSON that may hold raw line breaks inside its strings (small models, and llama.cpp's JSON grammar, write them)."""
    return json.loads(blob, strict=False)


REPLY_CHARS = 300  # per field of the Improver's reply: as much as the memory window keeps

# The Improver's typed change: what kind of edit, to which layer, with which arguments, and why. The
# Generator implements it; the loop compares kind, target and arguments (not the prose) to spot a repeat.
CHANGE_OPS = ("widen", "deepen", "change_kernel", "change_activation", "add_normalisation",
              "remove_normalisation", "add_residual", "change_downsampling", "change_head", "other")
_OP_TEXT = {"widen": "Widen", "deepen": "Deepen (add layers)", "change_kernel": "Change the kernel size of",
            "change_activation": "Change the activation of", "add_normalisation": "Add normalisation to",
            "remove_normalisation": "Remove normalisation from", "add_residual": "Add a residual connection around",
            "change_downsampling": "Change the downsampling of", "change_head": "Change the classifier head",
            "other": "Change"}


def describe_change(change: dict) -> str:
    """The typed change as the one-line suggestion the memory, the repeat check and the Generator read
    (a reason, where an unconstrained backend adds one, is not part of it: the same edit is a repeat)."""
    op = change.get("operator", "other")
    target = str(change.get("target") or "").strip()
    args = str(change.get("arguments") or "").strip()
    head = " ".join(x for x in (_OP_TEXT.get(op, "Change"), target) if x)
    return f"{head}: {args}" if args else head


CODE_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def parse_improver(text: str, layers: str = "") -> tuple[dict | None, str]:
    """({'problem', 'suggestion'}, '') or (None, why it could not be read). `layers`: the best net's traced
    layers, which settle a typed change's channel numbers (`settle_change`)."""
    text = (text or "").strip()
    if not text:
        return None, "the Improver returned an empty reply"
    for blob in _json_candidates(text):
        for loader in (_lenient_json, ast.literal_eval):
            try:
                data = loader(blob)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(data, dict):
                got = _pick(data, layers)
                if got:
                    return got, ""
    lines = dict(re.findall(r"(?im)^\W*(problem|suggestion)\W*[:=]\s*(.+)$", text))
    lower = {k.lower(): v.strip().strip('",') for k, v in lines.items()}
    if lower.get("suggestion"):
        return {"problem": lower.get("problem", ""), "suggestion": lower["suggestion"]}, ""
    return None, f"the Improver's reply has no readable {{problem, suggestion}} JSON: {text[:120]!r}"


def _json_candidates(text: str) -> list[str]:
    """Substrings that may be the JSON object: fenced blocks, then the outermost braces."""
    out = [m.group(2) for m in CODE_FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start:end + 1])
    out.append(text)
    return out


def _pick(data: dict, layers: str = "") -> dict | None:
    norm = {str(k).lower().strip(): v for k, v in data.items()}
    if isinstance(norm.get("change"), dict):  # the typed change nested one level down
        norm = {**norm, **{str(k).lower().strip(): v for k, v in norm.pop("change").items()}}
    op = str(norm.get("operator") or "").strip().lower().replace(" ", "_")
    if op in CHANGE_OPS:  # a typed change
        fields = {k: _field(norm.get(k)) for k in ("target", "arguments")}
        change = settle_change({"operator": op, **fields}, layers)
        if not (change["target"] or change["arguments"]) or (op == "other" and not change["arguments"]):
            # "widen" what, by how much; "other" with nothing said: "Change all: None, no changes made." came
            # three times in a row in a CIFAR-10 search (seed 45, at c205380), each built as an earlier net
            return None
        return {"problem": str(norm.get("problem") or "").strip(), "suggestion": describe_change(change),
                "change": change}
    sugg = norm.get("suggestion") or norm.get("suggestions") or norm.get("change")
    if isinstance(sugg, list):
        sugg = " ".join(str(s) for s in sugg)
    if not sugg or not str(sugg).strip():
        return None
    prob = norm.get("problem") or norm.get("lesson") or norm.get("diagnosis") or ""
    if isinstance(prob, list):
        prob = " ".join(str(p) for p in prob)
    return {"problem": str(prob).strip(), "suggestion": str(sugg).strip()}


_COPIED_FACT = re.compile(r"^([A-Za-z_][\w.]*)\s+\(?[A-Z][A-Za-z0-9]*\b")  # "conv3 Conv2d 73,728, fc ...", "conv3 (Conv2d, ..."
_CHANNELS = re.compile(r"channel|width|wider|filters|neurons|units", re.IGNORECASE)
_KERNEL = re.compile(r"kernel|\b\d+\s*x\s*\d+\b", re.IGNORECASE)


_LAYER_WIDTH = re.compile(r"^([A-Za-z_][\w.]*) Conv\w* -> (\d+)", re.MULTILINE)
_FROM_TO = re.compile(r"\b(\d{1,4})\s*(?:channels?|filters?)?\s*(?:->|→|to)\s*(\d{1,4})\b")


def settle_change(change: dict, layers: str = "") -> dict:
    """Two slips of the 1.5B model, measured in a CIFAR-10 search (seed 44): it labels a channel change
    `change_kernel` (4 of the first 8 changes), and the Generator, told "Change the kernel size of conv1: 32
    -> 64 channels", returned the net unchanged three times; and it copies a layer fact from its prompt as the
    target ("conv3 Conv2d 73,728, fc Linear 65,290."). The operator follows the arguments where they name
    only channels (or only a kernel), the target keeps the layer's name; `operator_given` keeps the label."""
    op, target, args = change["operator"], change["target"], change["arguments"]
    fact = _COPIED_FACT.match(target)
    if fact:
        change = {**change, "target": fact.group(1)}
    change = _settle_target(change, layers)
    channels, kernel = bool(_CHANNELS.search(args)), bool(_KERNEL.search(args))
    settled = "widen" if op == "change_kernel" and channels and not kernel else \
        "change_kernel" if op == "widen" and kernel and not channels else op
    if settled != op:
        change = {**change, "operator": settled, "operator_given": op}
    if settled == "add_residual":
        return _settle_residual(change, layers)
    return _settle_widths(change, layers) if settled == "widen" else change


def residual_shortcut(target: str, layers: str) -> str:
    """What a residual connection around `target` must add, from the traced shapes: its input where that is
    its output's shape, else its input through a 1x1 conv that matches channels and stride. Told only "Add a
    residual connection around conv3", the 1.5B Generator built shortcuts of the wrong width or size in 4
    of 16 such changes (three CIFAR-10 searches at 167743a: "Invalid channel dimensions", "Expected 16 in
    dimension 2 but got 8"), and no repair fixed one. "" where the table cannot say (agent/fixes/changes.py
    `residual_shape`)."""
    rows = traced_rows(layers)
    shape = residual_shape(target, rows)
    if shape is None:
        return ""
    (ci, co, stride), out = shape, rows[[r[0] for r in rows].index(target)][2]
    head = f"its input ({ci}x{out[1] * stride}x{out[2] * stride}) added to its output ({'x'.join(map(str, out))})"
    if (ci, stride) == (co, 1):
        return head
    return f"{head} through a new shortcut nn.Conv2d({ci}, {co}, 1" + (f", stride={stride})" if stride > 1 else ")")


def _settle_residual(change: dict, layers: str) -> dict:
    """A residual connection around one layer gets the shortcut its shapes need as its arguments."""
    shortcut = "" if change["arguments"] else residual_shortcut(change["target"], layers)
    return {**change, "arguments": shortcut} if shortcut else change


_LAYER_NAME = re.compile(r"^([A-Za-z_][\w.]*) ", re.MULTILINE)
_DOTTED = re.compile(r"[A-Za-z_][\w.]*")


def _settle_target(change: dict, layers: str) -> dict:
    """A target that names no traced layer but starts with one's dotted name is that layer. The 1.5B model
    wrote "conv3.conv1.weight" in a CIFAR-10 search (seed 44), then copied it from the memory for 13
    iterations, growing it ("conv3.conv1.weight.data.downsample(0, 1)) (candidate.py:27)"); the Generator
    implemented each as code reaching for self.conv3.conv1 (7 of those candidates failed). The given
    target is kept as `target_given`."""
    names = set(_LAYER_NAME.findall(layers or ""))
    target = change["target"]
    dotted = _DOTTED.match(target)
    if not names or target in names or target == "all" or not dotted:
        return change
    parts = dotted.group(0).split(".")
    known = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in names), None)
    return {**change, "target": known, "target_given": target} if known else change


def _settle_widths(change: dict, layers: str) -> dict:
    """A width change whose "from" is not the target's width in the traced best net ("Widen conv2: 16 -> 32
    channels" where conv2 has 64; the 1.5B model copies numbers from the history) starts from the traced width:
    told to change 16 channels that do not exist, the Generator returned the best net unchanged. Its "to" is
    kept where it widens the layer ("64 -> 96"); else the model's ratio is applied, at most doubling: in a
    CIFAR-10 search (seed 44) an uncapped ratio turned "64 -> 1024" for a 1024-channel conv3 into 16,384
    channels, and "256 -> 512" into a doubling each time, over the budget three times. `arguments_given`
    keeps what the model wrote."""
    widths = dict(_LAYER_WIDTH.findall(layers or ""))
    args = change["arguments"]
    pairs = _FROM_TO.findall(args)
    have = widths.get(change["target"])
    if have is None or len(pairs) != 1 or len(re.findall(r"\d+", args)) != 2 or int(pairs[0][0]) in (0, int(have)):
        return change
    (old, new), width = (int(pairs[0][0]), int(pairs[0][1])), int(have)
    target = new if new > width and new > old else max(1, min(round(width * new / old), 2 * width))
    settled = _FROM_TO.sub(f"{width} -> {target}", args, count=1)
    return {**change, "arguments": settled, "arguments_given": args}


_NO_VALUE = re.compile(r"^\W*(?:none|null|n/?a|nothing|unchanged)\b|^\W*no\s+(?:\w+\s+){0,2}changes?\b|^\W*$",
                       re.IGNORECASE)


def _field(value: object) -> str:
    """One field of a typed change; a null written as text ("None", "null", "n/a", "None, no changes made.")
    is no value."""
    text = str(value if value is not None else "").strip()[:REPLY_CHARS]
    return "" if _NO_VALUE.match(text) else text


def extract_code(text: str) -> tuple[str | None, str]:
    """(python source defining Net, '') or (None, why not)."""
    text = text or ""
    blocks = [(lang.lower(), body) for lang, body in CODE_FENCE.findall(text)]
    with_net = [body for lang, body in blocks if lang in ("", "python", "py", "python3") and "class Net" in body]
    if with_net:
        return max(with_net, key=len).strip() + "\n", ""
    if "class Net" in text and "```" not in text:
        return text.strip() + "\n", ""
    if not text.strip():
        return None, "the Generator returned an empty reply"
    if blocks:
        return None, "the Generator's code block does not define class Net"
    return None, "the Generator's reply contains no ```python code block with class Net"
