"""Fix `change`, operator `change_downsampling`: a conv's stride set to what the Improver's typed change asks
("Change the downsampling of conv2: stride 2"), and the shortcut beside it in a residual sum strided by the
same factor, so both sides of the sum keep one map size (agent/fixes/changes.py registers it).

In a CIFAR-10 search (seed 43, at 4a91357) all 6 failed candidates of 20 were the Generator's, 4 of them this
change on a net with residual sums: the conv strided, its shortcut not ("Attempting to broadcast a dimension
of length 16"), then the same in the repair.
"""
from __future__ import annotations

import ast
import re

from nasloop.agent.fixes.net_source import NetSource, self_attr

_STRIDE = re.compile(r"^\s*stride\s*=?\s*([12])\s*$", re.IGNORECASE)
_GLOBALS = {"self", "F", "torch", "nn"}  # names forward reads that are not maps


def downsample(net: NetSource, target: str, rows: list[tuple[str, str, tuple[int, ...]]],
               args: str) -> tuple[str | None, str]:
    """`self.conv2 = nn.Conv2d(32, 64, 3, padding=1)` gets `stride=2` for "stride 2" (its stride set to 1 for
    "stride 1"); in `x = (self.conv2(x) + self.conv2_shortcut(x))` the shortcut's stride changes by the same
    factor, and an identity shortcut `(self.conv2(x) + x)` becomes a new strided 1x1 conv. Only for a conv
    called once, in an assignment of forward, with its stride a literal, and where nothing after it reads a
    map from before it (`out = out + identity` with `identity` taken earlier: the sum's sides would differ)."""
    wanted, at = _STRIDE.match(args or ""), [i for i, r in enumerate(rows) if r[0] == target]
    if wanted is None or len(at) != 1 or rows[at[0]][1] != "Conv2d" or len(rows[at[0]][2]) != 3:
        return None, ""
    new, define, found = int(wanted.group(1)), net.definition(target), net.call(target)
    old = stride_of(define)
    if found is None or define is None or old is None or old == new:
        return None, ""
    stmt = net.statement(found[0])
    if stmt is None or not isinstance(net.forward.body[stmt], ast.Assign) or _reads_stale(net, stmt):
        return None, ""
    shortcut = _shortcut(net, net.forward.body[stmt], found, rows[at[0]][2][0], old, new)
    if shortcut is None:
        return None, ""
    net.spans.append(_set_stride(net, define, new))
    return net.result(f"downsampling of {target}: stride {old} -> {new}" + shortcut)


def stride_of(define: ast.Assign | None) -> int | None:
    """The literal stride of `self.X = nn.Conv2d(...)` (1 where none is given); None where it is not a
    literal (an expression, a pair of unequal strides) or the layer is not a Conv2d."""
    call = define.value if define is not None else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "Conv2d"):
        return None
    value = next((k.value for k in call.keywords if k.arg == "stride"), call.args[3] if len(call.args) > 3 else None)
    if value is None:
        return 1
    if isinstance(value, ast.Tuple) and len(value.elts) == 2 and ast.dump(value.elts[0]) == ast.dump(value.elts[1]):
        value = value.elts[0]
    return value.value if isinstance(value, ast.Constant) and type(value.value) is int and value.value > 0 else None


def _set_stride(net: NetSource, define: ast.Assign, stride: int) -> tuple[ast.AST, str]:
    """The span edit that gives the conv defined by `define` this stride (its stride argument replaced, or
    `stride=` added as the last argument)."""
    call = define.value
    assert isinstance(call, ast.Call)
    value = next((k.value for k in call.keywords if k.arg == "stride"), call.args[3] if len(call.args) > 3 else None)
    if value is not None:
        return value, str(stride)
    text = net.segment(call).rstrip()
    return call, f"{text[:-1].rstrip().rstrip(',')}, stride={stride})"


def _shortcut(net: NetSource, stmt: ast.Assign, found: tuple[ast.Call, str], channels: int, old: int,
              new: int) -> str | None:
    """Edit the other side of the residual sum around the conv (in its statement), if any: what was done
    ("" where the conv is in no sum), or None where the sum's other side cannot follow the new stride."""
    call, arg = found
    sums = [n for n in ast.walk(stmt.value) if isinstance(n, ast.BinOp)
            and any(c is call for side in (n.left, n.right) for c in ast.walk(side))]
    if not sums:
        return ""
    inner = sums[-1]  # the innermost sum holding the conv's call
    other = inner.right if any(c is call for c in ast.walk(inner.left)) else inner.left
    if not isinstance(inner.op, ast.Add):
        return None
    if isinstance(other, ast.Name) and other.id == arg and new > old:  # an identity shortcut
        define = net.definition(self_attr(call.func) or "")
        if define is None:
            return None
        name = net.fresh(f"{self_attr(call.func)}_shortcut")
        net.add_layer(define, name, f"nn.Conv2d({channels}, {channels}, 1, stride={new}, bias=False)")
        net.spans.append((other, f"self.{name}({arg})"))
        return f"; its identity shortcut is self.{name}, a 1x1 conv of stride {new}"
    side = self_attr(other.func) if isinstance(other, ast.Call) else None
    define = net.definition(side) if side else None
    stride = stride_of(define)
    if (define is None or stride is None or not isinstance(other, ast.Call) or len(other.args) != 1
            or not isinstance(other.args[0], ast.Name) or other.args[0].id != arg or (stride * new) % old):
        return None
    net.spans.append(_set_stride(net, define, stride * new // old))
    return f"; its shortcut self.{side}: stride {stride} -> {stride * new // old}"


def _reads_stale(net: NetSource, at: int) -> bool:
    """Whether a statement of forward after statement `at` reads a variable last assigned before it (a map
    from before the conv, whose size the new stride does not change)."""
    body = net.forward.body
    assigned: dict[str, int] = {a.arg: -1 for a in net.forward.args.args}
    for i, stmt in enumerate(body):
        if i > at:
            reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            if any(assigned.get(name, at) < at for name in reads - _GLOBALS):
                return True
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                assigned[n.id] = i
    return False
