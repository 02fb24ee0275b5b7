"""The JSON schemas the Improver's replies are held to where the backend can constrain its output (llama.cpp
grammars, structured output), and the facts of the best net they are built from: the layers each operator
can act on, the stride that flips a layer's downsampling, the kernel each conv has.

A constrained reply always parses (agent/llm/parsing.py reads it), names a layer the net has, is no change
the memory holds, and carries arguments the Generator can build.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection, Mapping, Sequence

from nasloop.agent.llm.parsing import CHANGE_OPS, REPLY_CHARS
from nasloop.agent.python_source import parse_source


def reply_schema(first: str) -> dict:
    """The JSON schema of the Improver's reply: {first, suggestion}, `first` being problem (loop) or lesson
    (evolution's reflection). Backends that can constrain their output are held to it; the length bound
    makes a constrained reply end well within the token limit (a small model can ramble inside a string)."""
    fields = {name: {"type": "string", "maxLength": REPLY_CHARS} for name in (first, "suggestion")}
    return {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}


def change_schema(targets: Mapping[str, Sequence[str]] | None = None, tried: Collection[tuple[str, str]] = (),
                  per_target: Mapping[str, Mapping[str, dict]] | None = None) -> dict:
    """The JSON schema of the loop Improver's reply: the diagnosis and one typed change. Backends that can
    constrain their output (llama.cpp grammars, structured output) are held to it: every reply parses.

    Given the layers each operator can act on in the best net (`targets_by_operator`), the target is one of
    them (or "all"), and an (operator, target) pair in `tried` is not offered: one alternative per operator
    with a target left. Measured in CIFAR-10 searches with the 1.5B model: a free target was a name the net
    does not have in 66 of 142 replies ("conv3_normed_downsampled", "conv3.conv1.weight.data.downsample(0,
    1))"), and a suggestion the memory already held came back in 7 and 12 of 20 iterations; each cost a
    second call of about 14 s, which chose a new change only in about half of them (the rest fell back to a
    fixed list). Each operator's arguments are the values it takes (`ARGUMENTS`); an operator in
    `per_target` offers only the targets it maps, each with its own arguments (one alternative per distinct
    arguments): the stride that flips a layer's downsampling, the kernels a conv does not have yet.

    The alternatives are the value of one key, "change", after the problem: a grammar checks each sampled
    token against every alternative still open, so with the alternatives at the root all of them (up to a
    dozen) stayed open through the whole problem sentence, and the Improver decoded at 14 tokens/s where the
    Generator, unconstrained, decoded at 21 (CIFAR-10, seed 45)."""
    free = {"type": "string", "maxLength": 120}

    def change(operator: dict, target: dict, arguments: dict = free) -> dict:
        fields = {"operator": operator, "target": target, "arguments": arguments}
        return {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}

    def reply(change: dict) -> dict:
        fields = {"problem": PROBLEM, "change": change}
        return {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}

    offered = [(op, [t for t in dict.fromkeys([*targets.get(op, ()), "all"]) if (op, t) not in tried])
               for op in CHANGE_OPS if targets and targets.get(op)]
    alternatives = []
    for op, names in offered:
        own = (per_target or {}).get(op)
        groups: dict[str, list[str]] = {}
        for name in names:
            if own is None or name in own:
                groups.setdefault(json.dumps(own[name] if own else ARGUMENTS.get(op, free)), []).append(name)
        alternatives += [change({"const": op}, {"enum": group}, json.loads(args)) for args, group in groups.items()]
    if not alternatives:  # no traced layers, or (many workers, a tiny net) every pair tried: any change
        return reply(change({"type": "string", "enum": list(CHANGE_OPS)}, {"type": "string", "maxLength": 60}))
    return reply({"anyOf": alternatives})


# The problem: at most 160 characters. Without the reason field the 1.5B model wrote two sentences (220
# characters, 50 tokens: "... still below the target accuracy of 0.7500. The model has 95k parameters,
# which might be too large ..."), and the memory window shows five of them to every later Improver call. (A
# one-sentence pattern, a group with an alternative in it, crashed llama.cpp's grammar sampler.)
PROBLEM = {"type": "string", "maxLength": 160}


def improver_schema(layers: str, seen: Sequence[dict], code: str = "",
                    known: Collection[tuple[str, str]] = ()) -> dict:
    """The loop Improver's schema for a best net traced as `layers` (its source `code`), given the memory
    `seen` (the window and, with several workers, the round's pending changes): its targets, no tried pair
    (nor a `known` one: its result is known), per layer the stride that flips its downsampling and the
    kernels it does not have."""
    targets = targets_by_operator(layers)
    tried = held_off({k for t in seen if (k := change_key(t.get("change")))} | set(known), layers, targets)
    strides = {name: {"const": stride} for name, stride in downsampling_strides(layers).items()}
    kernels = kernel_choices(code, targets.get("change_kernel", []))
    activations = activation_choices(code, targets.get("change_activation", []))
    widths = width_choices(layers, targets.get("widen", []))
    return change_schema(targets, tried, {"change_downsampling": strides, "change_kernel": kernels,
                                          "change_activation": activations, "widen": widths})


def held_off(tried: set[tuple[str, str]], layers: str, targets: Mapping[str, Sequence[str]]) -> set[tuple[str, str]]:
    """The tried pairs, the pairs that undo a tried normalisation change, and "all" of an operator whose one
    target is held off (it is the same change). Undone, the change that made the best gives the net before it
    again: in a CIFAR-10 search (seed 45, at 58e8066) "Remove normalisation from bn3" made the best, and the
    next two changes were "Add normalisation to conv3" and "... to all" (conv3 the only conv without a norm),
    two duplicates of an earlier net, each then repaired by the Generator (29-37 s)."""
    rows = _LAYER.findall(layers or "")
    before = {name: prev for (prev, _), (name, _) in zip(rows, rows[1:], strict=False)}
    after = {name: nxt for (name, _), (nxt, kind) in zip(rows, rows[1:], strict=False) if "Norm" in kind}
    conv = {name for name, kind in rows if "Conv" in kind}
    out = set(tried)
    for op, target in tried:
        if op == "remove_normalisation":  # a norm (or the conv it follows) back after its conv
            layer = target if target in conv or target == "all" else before.get(target)
            out |= {("add_normalisation", layer)} if layer else set()
        elif op == "add_normalisation" and (target == "all" or target in after):
            out.add(("remove_normalisation", "all" if target == "all" else after[target]))
    return out | {(op, "all") for op, names in targets.items() if len(names) == 1 and (op, names[0]) in out}


# The arguments of a typed change other than "other": no decimal point. Of the 1.5B model's typed changes in
# CIFAR-10 searches, 12 of 16 with a decimal point in their arguments failed ("Change the downsampling of
# conv3: (0.75, 0.75)" became F.max_pool2d(x, 0.75)), and 25 of 96 without one.
WHOLE_NUMBERS = {"type": "string", "pattern": '^[^."\\\\]{0,120}$'}

KERNELS = ("1x1", "3x3", "5x5", "7x7")
ACTIVATIONS = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "GELU": "gelu", "SiLU": "silu", "ELU": "elu"}  # nn. / F.

# Each operator's arguments, where it takes set values. Measured with the 1.5B model on CIFAR-10 (seeds 44,
# 45, with free arguments): 5 of 13 failed candidates came from a downsampling argument nobody can build
# ("0" became stride=(0, 0), "1/4" a stride of 0.5, "(2, 2)) -> (4, 4)" diverged twice), and operators
# that take no argument got one anyway ("Add a residual connection around all: 74k -> 158k parameters").
ARGUMENTS: dict[str, dict] = {
    "widen": {"type": "string", "pattern": "^[0-9]{1,4} -> [0-9]{1,4} channels$"},
    "change_kernel": {"enum": list(KERNELS)},
    "change_activation": {"enum": list(ACTIVATIONS)},
    "add_normalisation": {"const": ""}, "remove_normalisation": {"const": ""}, "add_residual": {"const": ""},
    # deepen: one 3x3 conv of the layer's width, which the loop builds. With free arguments (CIFAR-10, seeds 44
    # and 45, at ca2581f and 645553a) the 1.5B model wrote "+50 layers", "2x channels" and shapes copied from the
    # table ("128x16x16 -> 144x16x16"): 3 of those 6 Generator candidates failed, and 0 of the 7 the loop made
    "deepen": {"const": ""},
    # "other" with no arguments: "Change all" in 7 of its 8 uses in CIFAR-10 searches, and 4 of those failed
    "other": {"type": "string", "minLength": 12, "maxLength": 120},
    "change_downsampling": WHOLE_NUMBERS, "change_head": WHOLE_NUMBERS,
}


def flat_schema(schema: dict) -> dict:
    """`change_schema`'s alternatives folded into one change object (every operator with every target
    offered anywhere, any arguments), for backends whose structured output takes no alternatives."""
    change = schema["properties"]["change"]
    if "anyOf" not in change:
        return schema
    alts = change["anyOf"]
    ops = [a["properties"]["operator"]["const"] for a in alts]
    names = list(dict.fromkeys(t for a in alts for t in a["properties"]["target"]["enum"]))
    props = {"operator": {"type": "string", "enum": list(dict.fromkeys(ops))},
             "target": {"type": "string", "enum": names}, "arguments": {"type": "string", "maxLength": 120}}
    return {**schema, "properties": {**schema["properties"], "change": {**alts[0], "properties": props}}}


_LAYER = re.compile(r"^([A-Za-z_][\w.]*) ([A-Z]\w*)", re.MULTILINE)


def layer_names(layers: str) -> list[str]:
    """The module names of a traced layer table ("conv1 Conv2d -> 64x32x32 (2k)" per line), in order."""
    return list(dict.fromkeys(name for name, _ in _LAYER.findall(layers or "")))


def targets_by_operator(layers: str) -> dict[str, list[str]]:
    """The layers of a traced table each operator can act on: convolutions are widened, re-kerneled,
    wrapped in a residual, normalised where no norm layer follows them; norm layers are removed; a conv or a
    pool downsamples; the head is a Linear; anything can be re-activated or changed, and anything but a norm
    layer deepened after. In CIFAR-10 searches (seeds 43-45), 18 of 60 typed changes named a layer their
    operator cannot act on ("Add normalisation to bn2", "Change the downsampling of fc"), and in 12 of those
    18 iterations the Generator, given nothing to do, wrote an earlier net again, which cost a repair (about
    21 s). "Deepen conv2_deep_deep_bn" (seed 44, at c205380) went to the Generator, which wrote the net
    before it again; "Deepen conv2_deep_deep" is the same change, and the loop makes it itself."""
    traced = _LAYER.findall(layers or "")
    names = layer_names(layers)
    kinds = dict(traced)
    conv = [n for n in names if "Conv" in kinds[n]]
    normed = {a for (a, _), (_, after) in zip(traced, traced[1:], strict=False) if "Norm" in after}
    out = {"widen": conv, "change_kernel": conv, "add_residual": conv,
           "add_normalisation": [n for n in conv if n not in normed],
           "remove_normalisation": [n for n in names if "Norm" in kinds[n]],
           "change_downsampling": [n for n in names if n in conv or ("Pool" in kinds[n] and "Adaptive" not in kinds[n])],
           "change_head": [n for n in names if kinds[n] == "Linear"],
           "deepen": [n for n in names if "Norm" not in kinds[n]]}
    return {op: out.get(op, names) for op in CHANGE_OPS} if names else {}


_SHAPE = re.compile(r"^([A-Za-z_][\w.]*) [A-Z]\w* -> \d+x(\d+)x(\d+)", re.MULTILINE)


def downsampling_strides(layers: str) -> dict[str, str]:
    """The stride each downsampling target of a traced table is offered: "stride 1" for a conv or pool that
    shrinks the map now, "stride 2" for one that keeps it (not where the map is 2x2 or less: nothing left to
    halve). A layer shrinks the map where its output is smaller than the line before it (the first line is
    compared with the largest map in the table). None for a layer the table traces twice. Told "Change the
    downsampling of conv3: stride 2" where conv3 has stride 1, the Generator has one thing to do; free
    arguments gave "0", "1/4" and "(2, 2)) -> (4, 4)"."""
    shapes = [(name, int(h), int(w)) for name, h, w in _SHAPE.findall(layers or "")]
    if not shapes:
        return {}
    shrinks: set[str] = set()
    before = max(h * w for _, h, w in shapes)
    for name, h, w in shapes:
        if h * w < before:
            shrinks.add(name)
        before = h * w
    small = {name for name, h, w in shapes if min(h, w) <= 2}
    # a layer called twice (the seeds' one `self.pool`): its stride is every call's; told "Change the
    # downsampling of pool: stride 1" the Generator wrote `self.pool(x, stride=1)` (seed 43, at 2e5aa83)
    shared = {name for name, _, _ in shapes if [n for n, _, _ in shapes].count(name) > 1}
    return {name: "stride 1" if name in shrinks else "stride 2"
            for name in targets_by_operator(layers).get("change_downsampling", [])
            if (name in shrinks or name not in small) and name not in shared}


_ACTIVATION = re.compile(r"\b(?:F|torch)\.(relu|leaky_relu|gelu|silu|elu)\b|\bnn\.(ReLU|LeakyReLU|GELU|SiLU|ELU)\b")


def activation_choices(code: str, names: Sequence[str]) -> dict[str, dict]:
    """The activations a layer (and "all") may be changed to: where the net uses one activation throughout,
    not that one ("Change the activation of conv2: ReLU" in a ReLU net leaves nothing to do)."""
    used = {f or ACTIVATIONS[m] for f, m in _ACTIVATION.findall(code or "")}
    left = [name for name, fn in ACTIVATIONS.items() if used != {fn}]
    return {name: {"enum": left} for name in [*names, "all"]}


def conv_kernels(code: str) -> dict[str, int]:
    """The square kernel of each conv the net's code defines as `self.X = nn.Conv2d(...)` (a literal, or a
    tuple of two equal literals), by X; anything else is left out."""
    try:
        tree = parse_source(code or "")
    except SyntaxError:
        return {}
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call)):
            continue
        target, call = node.targets[0], node.value
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
                and getattr(call.func, "attr", getattr(call.func, "id", "")) == "Conv2d"):
            continue
        arg = next((k.value for k in call.keywords if k.arg == "kernel_size"), call.args[2] if len(call.args) > 2 else None)
        sizes = arg.elts if isinstance(arg, ast.Tuple) else [arg]
        values = {s.value for s in sizes if isinstance(s, ast.Constant) and isinstance(s.value, int)}
        if len(values) == 1 and len(sizes) in (1, 2):
            out.setdefault(target.attr, values.pop())
    return out


def kernel_choices(code: str, convs: Sequence[str]) -> dict[str, dict]:
    """The kernels each conv (and "all") may be changed to: not the one it has. In a CIFAR-10 search (seed 45)
    the 1.5B model, offered every kernel, chose "Change the kernel size of conv2: 3x3" for a 3x3 conv2 in two
    of the first four iterations; the Generator returned the net unchanged (a repair). A net of 3x3 convs with
    1x1 shortcuts is not offered "all: 3x3" (seed 44, at 3e541f8: the Generator made its shortcuts 3x3)."""
    have = conv_kernels(code)
    # "all" is the convs with a spatial kernel (agent/fixes/kernel.py): 1x1 shortcuts keep theirs
    every = {have[c] for c in convs if have[c] != 1} if all(c in have for c in convs) else set()
    out = {}
    for name in [*convs, "all"]:
        own = {have[name]} if name in have else every if name == "all" and len(every) == 1 else set()
        left = [k for k in KERNELS if int(k[0]) not in own]
        out[name] = {"enum": left}
    return out


_CONV_WIDTH = re.compile(r"^([A-Za-z_][\w.]*) Conv\w* -> (\d+)x", re.MULTILINE)
WIDER = (1.5, 2)  # the widths a conv is offered, as multiples of its traced width


def width_choices(layers: str, convs: Sequence[str]) -> dict[str, dict]:
    """The widths each conv may be widened to: 1.5x and 2x its traced width, rounded up to a multiple of 8
    ("Widen conv3: 128 -> 192 channels"), and for "all" "+50% channels" or "2x channels" (no decimal point:
    see WHOLE_NUMBERS). With any number allowed, the 1.5B model asked for "128 -> 1536 channels" (CIFAR-10,
    seed 45, at ee6ea11): over the FLOP budget, a Generator repair. A conv the table gives no width keeps
    the free "N -> M channels"."""
    have = {name: int(width) for name, width in _CONV_WIDTH.findall(layers or "")}
    out = {name: {"enum": list(dict.fromkeys(f"{have[name]} -> {-(-int(have[name] * f) // 8) * 8} channels"
                                             for f in WIDER))}
           if name in have else ARGUMENTS["widen"] for name in convs}
    return {**out, "all": {"enum": ["+50% channels", "2x channels"]}} if convs else out


def offered_changes(schema: dict) -> list[tuple[str, str]]:
    """The (operator, target) pairs a loop Improver schema (`change_schema`) offers, in its order; none where
    it offers any change (no traced layers)."""
    alts = schema.get("properties", {}).get("change", {}).get("anyOf", [])
    return [(alt["properties"]["operator"]["const"], target) for alt in alts
            for target in alt["properties"]["target"]["enum"]]


def change_key(change: dict | None) -> tuple[str, str] | None:
    """What the memory compares a typed change by, to hold the Improver off it (`change_schema`)."""
    if not change or not change.get("operator") or not change.get("target"):
        return None
    return str(change["operator"]), str(change["target"])
