"""Fix `change`, operator `change_kernel`: a conv's kernel set to what the Improver's typed change asks
("Change the kernel size of conv2: 5x5") with its padding moved by half the difference, so every map keeps
its size and nothing else in the net has to follow (agent/fixes/changes.py registers it). "all" is every
conv with a spatial kernel: the 1x1 convs (shortcuts, projections) keep theirs.

In CIFAR-10 searches (seeds 43 and 44, at 2e5aa83 and 3e541f8) all 6 kernel changes went to the Generator:
5 needed the pre-flight's shape fixes, and one failed ("Change the kernel size of all: 3x3" on a net with
1x1 shortcuts: the shortcuts became 3x3 without padding, "Attempting to broadcast a dimension").
"""
from __future__ import annotations

import ast
import re

from nasloop.agent.fixes.net_source import NetSource

_KERNEL = re.compile(r"^\s*([1357])\s*[x×*]\s*\1\s*$")


def change_kernel(net: NetSource, target: str, rows: list[tuple[str, str, tuple[int, ...]]],
                  args: str) -> tuple[str | None, str]:
    """`self.conv2 = nn.Conv2d(32, 64, 3, padding=1)` becomes `nn.Conv2d(32, 64, 5, padding=2)` for "5x5":
    padding + (new - old) / 2 keeps the output size for any stride. Only for a conv defined on one line as
    `nn.Conv2d(...)` with a literal odd kernel, a literal padding (or none) and no dilation, and only where
    the new padding is not negative (a 3x3 conv without padding cannot become 1x1 at the same size); for
    "all", only where every conv it covers can."""
    wanted = _KERNEL.match(args or "")
    convs = list(dict.fromkeys(r[0] for r in rows if r[1] == "Conv2d"))
    if wanted is None or (target != "all" and target not in convs):
        return None, ""
    new = int(wanted.group(1))
    chosen = convs if target == "all" else [target]
    kernels = {name: _kernel(net.definition(name)) for name in chosen}
    if target == "all":  # the spatial convs; a 1x1 conv is a shortcut or a projection
        chosen = [name for name in chosen if kernels[name] != 1]
    chosen = [name for name in chosen if kernels[name] != new]
    edits = [_resize(net, net.definition(name), new) for name in chosen]
    if not chosen or any(e is None for e in edits):
        return None, ""
    for spans in edits:
        net.spans += spans  # type: ignore[operator]
    what = ", ".join(f"{name} {kernels[name]}x{kernels[name]}" for name in chosen)
    return net.result(f"kernel {new}x{new} with padding kept to the map size: {what}")


def _literal(node: ast.expr | None) -> int | str | None:
    """An int (or a pair of equal ints), or a string ('same'), as written; None for anything else."""
    if isinstance(node, ast.Tuple) and len(node.elts) == 2 and ast.dump(node.elts[0]) == ast.dump(node.elts[1]):
        node = node.elts[0]
    value = node.value if isinstance(node, ast.Constant) else None
    return value if type(value) in (int, str) else None  # type: ignore[return-value]


def _argument(call: ast.Call, keyword: str, position: int) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == keyword),
                call.args[position] if len(call.args) > position else None)


def _conv(define: ast.Assign | None) -> ast.Call | None:
    call = define.value if define is not None else None
    ok = isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "Conv2d"
    return call if ok else None  # type: ignore[return-value]


def _kernel(define: ast.Assign | None) -> int | None:
    call = _conv(define)
    size = _literal(_argument(call, "kernel_size", 2)) if call is not None else None
    return size if isinstance(size, int) else None


def _resize(net: NetSource, define: ast.Assign | None, new: int) -> list[tuple[ast.AST, str]] | None:
    """The span edits that give this conv the kernel `new` at the same output size; None where it cannot."""
    call, old = _conv(define), _kernel(define)
    if call is None or old is None or old % 2 == 0 or any(isinstance(a, ast.Starred) for a in call.args) \
            or any(k.arg is None for k in call.keywords):
        return None
    dilation = _argument(call, "dilation", 5)
    if dilation is not None and _literal(dilation) != 1:
        return None
    kernel, padding = _argument(call, "kernel_size", 2), _argument(call, "padding", 4)
    pad = 0 if padding is None else _literal(padding)
    if kernel is None or pad == "same":  # torch keeps the size itself (stride 1 only, which it checks)
        return None if kernel is None else [(kernel, str(new))]
    if not isinstance(pad, int) or pad + (new - old) // 2 < 0:
        return None
    moved = pad + (new - old) // 2
    if padding is not None:
        return [(kernel, str(new)), (padding, str(moved))]
    if not moved:
        return [(kernel, str(new))]
    # no padding written: `padding=N` after the call's last argument
    last = max([*call.args, *(k.value for k in call.keywords)], key=lambda n: (n.end_lineno, n.end_col_offset))
    if last is kernel:
        return [(kernel, f"{new}, padding={moved}")]
    return [(kernel, str(new)), (last, f"{net.segment(last)}, padding={moved}")]
