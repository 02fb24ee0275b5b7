"""Fix `change` (stage change): the Improver's typed change, applied to the base net by the loop where the
traced shapes fix every number of it (a residual connection, a norm added or removed, one more conv after a
conv). The candidate of such a change is made without a Generator call (agent/loop/nodes.py `generate`).

In five CIFAR-10 searches (three commits) the Generator's candidate failed for 35 of the 53 repairs on three
operators whose edit is mechanical: `add_residual` (9 of 22 failed: shortcuts of the wrong width or size,
"Attempting to broadcast a dimension of length 64", even when told the shortcut's shape), and
`remove_normalisation` / `add_normalisation` (the Generator wrote an earlier net again, 28 repairs, and a
repair of a repeat repeated it again in a third of them). Each such call is 10-25 s. Made first as the
repair of those failures (four searches at 7024a11-a74e180), 18 of 21 edits trained as made. The edit
touches only the target's lines, keeps the net's own style, and is checked like any candidate. Where the
net does not have the shape the edit needs (a layer called twice, nested calls on a computed argument, a
first layer whose input is not traced), or the arguments ask for more, there is no edit and the Generator
writes the candidate as before.
"""
from __future__ import annotations

import ast
import re
from typing import Callable

from nasloop.agent.fixes.downsample import downsample
from nasloop.agent.fixes.kernel import change_kernel
from nasloop.agent.fixes.net_source import NetSource, applies, self_attr
from nasloop.tools.text import traced_rows

Row = tuple[str, str, tuple[int, ...]]


INPUT = "(input)"  # the row of the net's input, before the traced table's first (not a layer's name)


def apply_change(base: str, change: dict, layers: str, net_input: tuple[int, ...] | None = None) -> tuple[str | None, str]:
    """(the base net with the change applied, what was done), or (None, "") where this operator, target or
    net has no mechanical edit. `layers`: the base net's traced layer table (tools/text.py `layer_lines`);
    `net_input`: the shape of one input (channels, height, width), which the table does not give."""
    edit = _EDITS.get(str(change.get("operator") or ""))
    target = str(change.get("target") or "").strip()
    net = NetSource.parse(base)
    rows = traced_rows(layers)
    if rows and net_input and len(net_input) == 3:
        rows = [(INPUT, "Input", tuple(net_input)), *rows]
    if edit is None or net is None or not rows or not target:
        return None, ""
    return edit(net, target, rows, str(change.get("arguments") or ""))


def branch_layers(base: str, layers: str) -> set[str]:
    """The layers whose one call in forward reads something other than the output of the layer traced just
    before them (a shortcut, a branch: `NetSource.fed_by`): a residual around one is not the residual the table
    suggests. In CIFAR-10 searches (seed 44 at c205380, seed 45 at e0b1499) each of the three "Add a residual
    connection around conv3_shortcut" went to the Generator, and none of its nets ran."""
    net, rows = NetSource.parse(base), traced_rows(layers)
    names = [r[0] for r in rows]
    out = set()
    for before, name in zip(names, names[1:], strict=False):
        found = net.call(name) if net is not None else None
        if found is not None and not net.fed_by(found, before):  # type: ignore[union-attr]
            out.add(name)
    return out


def residual_shape(target: str, rows: list[Row]) -> tuple[int, int, int] | None:
    """(input channels, output channels, stride) of a residual connection around `target`, from the traced
    rows: its input is the previous row's output. None where the table cannot say (the first layer, whose
    input is not traced; a layer traced twice; a map that grows or shrinks unevenly; a flat output)."""
    at = [i for i, r in enumerate(rows) if r[0] == target]
    if len(at) != 1 or at[0] == 0:
        return None
    (ci, hi, wi), (co, ho, wo) = _map(rows[at[0] - 1]), _map(rows[at[0]])
    if 0 in (ci, co, ho, wo) or ho > hi or wo > wi or hi % ho or wi % wo or hi // ho != wi // wo:
        return None
    return ci, co, hi // ho


def _map(row: Row) -> tuple[int, int, int]:
    shape = row[2]
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (0, 0, 0)


def _residual(net: NetSource, target: str, rows: list[Row], _args: str) -> tuple[str | None, str]:
    """`x = self.conv3(x)` becomes `x = (self.conv3(x) + self.conv3_shortcut(x))`, with a new 1x1 conv that
    matches channels and stride (none where the shapes already match). For `all`, around every conv applied
    as `x = self.conv3(x)` whose input the table gives (not the first layer, not one already in a sum): in
    CIFAR-10 searches "Add a residual connection around all" went to the Generator 4 times; two of its nets
    were the best so far (seed 45), one failed its run and its repair (seed 44, at a02ccb4)."""
    if target != "all":
        note = _residual_around(net, target, rows)
        return net.result(note) if note else (None, "")
    alone = {self_attr(stmt.value.func) for stmt in net.forward.body  # type: ignore[attr-defined]
             if applies(stmt, lambda f: self_attr(f) is not None)}  # `x = self.conv3(x)`, not in a sum
    notes = [_residual_around(net, name, rows) for name, kind, _ in rows if kind == "Conv2d" and name in alone]
    done = [n for n in notes if n]
    return net.result("; ".join(done)) if done else (None, "")


def _residual_around(net: NetSource, target: str, rows: list[Row]) -> str | None:
    """Add the residual around `target` to the net's pending edits; what was done, or None where it cannot."""
    shape, found, define = residual_shape(target, rows), net.call(target), net.definition(target)
    if shape is None or found is None or define is None:
        return None
    before = rows[[r[0] for r in rows].index(target) - 1][0]
    if not (net.reads_input(found) if before == INPUT else net.fed_by(found, before)):
        return None
    (ci, co, stride), (call, arg) = shape, found
    if (ci, stride) == (co, 1):
        net.spans.append((call, f"({net.segment(call)} + {arg})"))
        return f"residual around {target}: its input added to its output"
    name = net.fresh(f"{target}_shortcut")
    layer = f"nn.Conv2d({ci}, {co}, 1" + (f", stride={stride}" if stride > 1 else "") + ", bias=False)"
    net.add_layer(define, name, layer)
    net.spans.append((call, f"({net.segment(call)} + self.{name}({arg}))"))
    return f"residual around {target} through self.{name} = {layer}"


def _norms(target: str, rows: list[Row]) -> list[str]:
    """The norm layers a removal means: every one for `all`, the target where it is one, else the norm that
    follows the target."""
    is_norm = {name for name, kind, _ in rows if "Norm" in kind}
    if target == "all":
        return sorted(is_norm, key=[r[0] for r in rows].index)
    if target in is_norm:
        return [target]
    at = [i for i, r in enumerate(rows) if r[0] == target]
    nxt = rows[at[0] + 1][0] if len(at) == 1 and at[0] + 1 < len(rows) else None
    return [nxt] if nxt in is_norm else []


def _remove_norm(net: NetSource, target: str, rows: list[Row], _args: str) -> tuple[str | None, str]:
    """`self.bn2 = nn.BatchNorm2d(64)` becomes `self.bn2 = nn.Identity()`: forward stays as it is."""
    done = []
    for name in _norms(target, rows):
        define = net.definition(name)
        if define is not None:
            net.spans.append((define.value, "nn.Identity()"))
            done.append(f"self.{name}")
    return net.result(f"normalisation removed: {', '.join(done)} = nn.Identity()")


def _unnormed(target: str, rows: list[Row]) -> list[tuple[str, str, int]]:
    """(layer, norm kind, channels) for each conv (or hidden linear layer) the change normalises whose
    output no norm layer follows: the target, or every such layer for `all`."""
    out = []
    for i, (name, kind, shape) in enumerate(rows):
        if target not in ("all", name) or [r[0] for r in rows].count(name) > 1:
            continue
        followed = i + 1 < len(rows) and "Norm" in rows[i + 1][1]
        last = i == len(rows) - 1
        if kind == "Conv2d" and len(shape) == 3 and not followed:
            out.append((name, "BatchNorm2d", shape[0]))
        elif kind == "Linear" and len(shape) == 1 and not followed and not last:
            out.append((name, "BatchNorm1d", shape[0]))
    return out


def _add_norm(net: NetSource, target: str, rows: list[Row], _args: str) -> tuple[str | None, str]:
    """`x = self.conv2(x)` becomes `x = self.conv2_bn(self.conv2(x))`, with a new norm layer of its width; or
    the norm removed as `self.bn2 = nn.Identity()` right after it is a norm again (`_restored`)."""
    done = []
    for name, kind, channels in _unnormed(target, rows):
        found, define = net.call(name), net.definition(name)
        if found is None or define is None:
            continue
        removed = _restored(net, name, rows)
        if removed is not None:
            net.spans.append((removed.value, f"nn.{kind}({channels})"))
            done.append(f"self.{self_attr(removed.targets[0])} = nn.{kind}({channels}) again")
            continue
        norm = net.fresh(f"{name}_bn")
        net.add_layer(define, norm, f"nn.{kind}({channels})")
        net.spans.append((found[0], f"self.{norm}({net.segment(found[0])})"))
        done.append(f"self.{norm} = nn.{kind}({channels}) after self.{name}")
    return net.result("normalisation added: " + "; ".join(done))


def _restored(net: NetSource, name: str, rows: list[Row]) -> ast.Assign | None:
    """The definition `self.<norm> = nn.Identity()` of the layer traced right after `name` and fed by it: a
    norm removed (`_remove_norm`) that adding one makes a norm again, so the edit gives the net from before
    the removal, code for code, and the loop knows it as that earlier net (`_held_edits`). In a CIFAR-10
    search (seed 45, at e0b1499) "Add normalisation to conv1" after bn1 was removed added conv1_bn in front
    of the identity: the net of 14 iterations before, which only the pre-flight saw, and its repair failed."""
    at = [i for i, r in enumerate(rows) if r[0] == name]
    if len(at) != 1 or at[0] + 1 >= len(rows) or rows[at[0] + 1][1] != "Identity":
        return None
    after = rows[at[0] + 1][0]
    define, found = net.definition(after), net.call(after)
    value = define.value if define is not None else None
    identity = (isinstance(value, ast.Call) and not value.args and not value.keywords and isinstance(value.func, ast.Attribute)
                and value.func.attr == "Identity")
    return define if identity and found is not None and net.fed_by(found, name) else None


def _deepen(net: NetSource, target: str, rows: list[Row], args: str) -> tuple[str | None, str]:
    """After the statements `x = self.conv2(x)`, `x = self.bn2(x)`, `x = F.relu(x)` (each on its own line, as
    the seeds write them) come `x = self.conv2_deep(x)`, its norm (where conv2 has one) and the same
    activation line: one more conv of conv2's width, 3x3, same map size, so nothing after it changes. Only
    where that is what the arguments ask for (`_one_conv`)."""
    at = [i for i, r in enumerate(rows) if r[0] == target]
    if len(at) != 1 or rows[at[0]][1] != "Conv2d" or len(rows[at[0]][2]) != 3 or not _one_conv(args, rows[at[0]][2][0]):
        return None, ""
    # a norm removed as nn.Identity() still has its line in the run: the new conv gets no norm there
    channels, norms = rows[at[0]][2][0], {name: kind for name, kind, _ in rows if "Norm" in kind or kind == "Identity"}
    define, block = net.definition(target), _block(net.forward.body, target, norms)
    if define is None or block is None:
        return None, ""
    var, norm, act, first = block
    conv = net.fresh(f"{target}_deep")
    net.add_layer(define, conv, f"nn.Conv2d({channels}, {channels}, 3, padding=1, bias=False)")
    last = act or norm or first
    indent = " " * last.col_offset
    added = [f"{indent}{var} = self.{conv}({var})\n"]
    kind = norms.get(self_attr(norm.value.func) or "", "") if norm is not None else ""  # type: ignore[attr-defined]
    if "Norm" in kind:
        bn = net.fresh(f"{conv}_bn")
        net.add_layer(define, bn, f"nn.{kind}({channels})")
        added.append(f"{indent}{var} = self.{bn}({var})\n")
    if act is not None:
        added.append(f"{indent}{net.segment(act)}\n")
    net.lines += [(last.end_lineno or last.lineno, line) for line in added]
    return net.result(f"deepened after {target}: self.{conv} = nn.Conv2d({channels}, {channels}, 3, padding=1)"
                      + (", with its norm" if "Norm" in kind else "") + (" and activation" if act is not None else ""))


_WIDTHS = re.compile(r"^\s*(\d+)\s*->\s*(\d+)\s*channels?\s*$")
_SAME_WIDTH = ("BatchNorm2d", "Identity", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
               "Dropout", "Dropout2d", "ReLU", "ReLU6", "SiLU", "GELU", "LeakyReLU", "Hardswish", "Mish")


def _widen(net: NetSource, target: str, rows: list[Row], args: str) -> tuple[str | None, str]:
    """`self.conv3 = nn.Conv2d(64, 128, 3, ...)` becomes `nn.Conv2d(64, 192, 3, ...)` for "128 -> 192 channels",
    the norm after it `nn.BatchNorm2d(192)`, and the next conv's (or a pooled head's) input 192: the layers
    the traced table shows reading its output, up to the next conv or Linear (any other reader of the wider
    map is resized by the pre-flight's shape fix). Only for a conv applied as `x = self.conv3(x)`, with the
    traced width as the old one, and no identity shortcut after it (`x = x + identity`: the sum's other side
    would keep the old width). In a CIFAR-10 search (seed 44, at dbde637) two of the first three changes were
    widens ("Widen conv1: 32 -> 64 channels"), each a Generator call of about 45 s that copied the net."""
    wanted, at = _WIDTHS.match(args or ""), [i for i, r in enumerate(rows) if r[0] == target]
    if wanted is None or len(at) != 1 or rows[at[0]][1] != "Conv2d" or len(rows[at[0]][2]) != 3:
        return None, ""
    old, new = int(wanted.group(1)), int(wanted.group(2))
    stmt = next((s for s in net.forward.body if applies(s, lambda f: self_attr(f) == target)), None)
    if rows[at[0]][2][0] != old or new <= old or stmt is None or _identity_sum_after(net, stmt):
        return None, ""
    spans = [_size_span(net, target, "out_channels", 1, old)]
    for before, (name, kind, _shape) in zip(rows[at[0]:], rows[at[0] + 1:], strict=False):
        found = net.call(name)
        reads = found is not None and net.fed_by(found, before[0])  # not a shortcut beside the conv
        if kind in ("Conv2d", "Linear"):
            spans.append(_size_span(net, name, "in_channels" if kind == "Conv2d" else "in_features", 0, old)
                         if reads else None)
            break
        if kind not in _SAME_WIDTH:
            return None, ""
        if kind == "BatchNorm2d":
            spans.append(_size_span(net, name, "num_features", 0, old) if reads else None)
    if any(span is None for span in spans):
        return None, ""
    net.spans += [(node, str(new)) for node in spans]  # type: ignore[misc]
    return net.result(f"widened {target}: {old} -> {new} channels, and what reads it")


def _size_span(net: NetSource, name: str, keyword: str, pos: int, old: int) -> ast.expr | None:
    """The literal size argument of `self.<name> = nn.<Layer>(...)` that is `old` (one group: no depthwise)."""
    define = net.definition(name)
    call = define.value if define is not None else None
    if not isinstance(call, ast.Call) or any(k.arg == "groups" for k in call.keywords):
        return None
    arg = next((k.value for k in call.keywords if k.arg == keyword), None)
    arg = call.args[pos] if arg is None and len(call.args) > pos else arg
    return arg if isinstance(arg, ast.Constant) and arg.value == old else None


def _identity_sum_after(net: NetSource, stmt: ast.stmt) -> bool:
    """A sum in forward after `stmt` with a plain variable on one side (`x = x + identity`, `(self.conv3(x) +
    x)`): an identity shortcut, whose width a widen upstream would change on one side only."""
    after = net.forward.body[net.forward.body.index(stmt) + 1:]
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)
               and (isinstance(n.left, ast.Name) or isinstance(n.right, ast.Name))
               for s in after for n in ast.walk(s))


_KERNEL_3 = re.compile(r"\b3\s*[x×*]\s*3\b")
_MORE = re.compile(r"\b(two|three|four|five|several|multiple|blocks|layers)\b", re.IGNORECASE)


def _one_conv(args: str, channels: int) -> bool:
    """Whether a deepen's free arguments ask for no more than one 3x3 conv of the layer's own width: no
    number but 1, 3x3 and that width, no plural ("", "add one 3x3 conv", "1 conv layer, 64 channels"; not
    "2 conv layers", "5x5", "128 channels"). The loop makes the change in place of the Generator only where
    the edit is what was asked."""
    numbers = re.findall(r"\d+", _KERNEL_3.sub(" ", args))
    return not _MORE.search(args) and all(int(n) in (1, channels) for n in numbers)


def _block(body: list[ast.stmt], target: str, norms: dict[str, str]) -> tuple[str, ast.Assign | None, ast.Assign | None, ast.Assign] | None:
    """(the variable, the norm statement, the activation statement, the conv statement) of the conv-norm-act
    run of statements in forward that starts with `V = self.<target>(V)`; None where there is no such run."""
    for i, stmt in enumerate(body):
        var = applies(stmt, lambda f: self_attr(f) == target)
        if var is None:
            continue
        norm = act = None
        for nxt in body[i + 1:i + 3]:
            if norm is None and act is None and applies(nxt, lambda f: self_attr(f) in norms) == var:
                norm = nxt
            elif act is None and applies(nxt, _activation) == var:
                act = nxt
            else:
                break
        return var, norm, act, stmt  # type: ignore[return-value]
    return None


def _activation(func: ast.expr) -> bool:
    """`F.relu`, `torch.relu`, `F.silu`, ...: a functional activation."""
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("F", "torch")
            and func.attr.rstrip("_") in ("relu", "relu6", "silu", "gelu", "elu", "leaky_relu", "mish", "hardswish",
                                         "selu", "tanh", "sigmoid"))


_EDITS: dict[str, Callable[[NetSource, str, list[Row], str], tuple[str | None, str]]] = {
    "add_residual": _residual, "remove_normalisation": _remove_norm, "add_normalisation": _add_norm,
    "deepen": _deepen, "widen": _widen, "change_downsampling": downsample, "change_kernel": change_kernel}
EDITED = tuple(_EDITS)  # the operators the loop can apply itself
