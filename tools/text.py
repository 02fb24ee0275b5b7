"""Short, bounded text the host writes from what a candidate's run reported: numbers (`95k`), the
candidate's frame, the pre-flight's shape trace and layer list, and hints read off them.

Every field comes from the candidate's side of the sandbox, so each is type-checked and cut to length
here, before any of it reaches a prompt, a report or the memory window.
"""
from __future__ import annotations

import re

from nasloop.sandbox.base import printable


def human(n: float) -> str:
    """95000 -> '95k', 12100000 -> '12.1M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 or unit == "k" else f"{v:.1f}{unit}"
    return str(int(n))



def location(where: object) -> str:
    """'candidate.py:23 in forward: x = self.fc(x)' from the harness's structured frame."""
    if not isinstance(where, dict) or not isinstance(where.get("line"), int):
        return ""
    return f"candidate.py:{where['line']} in {txt(where.get('function'))}: {txt(where.get('code'))}"[:200]



def trace_text(trace: dict, limit: int = 160) -> str:
    """'conv1 Conv2d→32x32x32 | pool MaxPool2d→32x16x16 | ✗ fc Linear(in_features=8192, ...) got 2048'."""
    found = trace.get("layers")
    layers: list = found if isinstance(found, list) else []
    parts = [f"{txt(lay.get('name'))} {txt(lay.get('type'))}→{_shape(lay.get('out'))}"
             for lay in layers if isinstance(lay, dict)]
    failed = trace.get("failed")
    if isinstance(failed, dict):
        parts.append(f"✗ {txt(failed.get('name'))} {txt(failed.get('repr'))} got {_shape(failed.get('in'))}")
    out = " | ".join(parts)
    while len(out) > limit and len(parts) > 1:
        parts.pop(0)
        out = "… | " + " | ".join(parts)
    return out[-limit:]



def _shape(value: object) -> str:
    if isinstance(value, list):
        return "x".join(str(d) for d in value) or "scalar"
    return txt(value)



def layer_lines(layers: object, limit: int = 40) -> str | None:
    """The pre-flight's layer list as short lines, `conv2 Conv2d -> 64x16x16 (18.5k)`: reported by the
    candidate's side, so only well-formed entries are kept, every field bounded."""
    if not isinstance(layers, list):
        return None
    lines = []
    for lay in layers[:limit]:
        if not isinstance(lay, dict):
            continue
        name, kind, out, n = lay.get("name"), lay.get("type"), lay.get("out"), lay.get("params")
        if not (isinstance(name, str) and isinstance(kind, str)):
            continue
        shape = ("x".join(str(d) for d in out[:4]) if isinstance(out, list) and all(isinstance(d, int) for d in out)
                 else "?")
        size = f" ({human(n)})" if isinstance(n, int) and n > 0 else ""
        lines.append(printable(f"{name[:60]} {kind[:40]} -> {shape}{size}"))
    floor = _one_by_one(layers[:limit])
    if floor and lines:
        lines.append(printable(f"(the feature map is 1x1 from {floor[:60]} on: no further downsampling is possible)"))
    return "\n".join(lines) or None



_ROW = re.compile(r"^([A-Za-z_][\w.]*) ([A-Za-z_]\w*) -> (\d+(?:x\d+)*)\b", re.MULTILINE)


def traced_rows(lines: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, kind, output shape) of each row `layer_lines` wrote, in order (a row whose shape is "?" is left
    out): what the loop reads back from a best net's layer table to compute an edit's channel numbers."""
    return [(name, kind, tuple(int(d) for d in shape.split("x"))) for name, kind, shape in _ROW.findall(lines or "")]


def _one_by_one(layers: list) -> str | None:
    """The first layer whose output map is 1x1, when the net reaches it. The 1.5B Improver kept asking for
    more downsampling of a net already at 1x1 (seed 45: five failures in a row); the traced shapes say it
    cannot be done, so the prompt says so."""
    for lay in layers:
        out = lay.get("out") if isinstance(lay, dict) else None
        if isinstance(out, list) and len(out) == 3 and out[1:] == [1, 1] and isinstance(lay.get("name"), str) \
                and lay.get("type") not in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            return lay["name"]
    return None



def pool_hint(failed: object, msg: str) -> str:
    """A pooling step given a map smaller than its window. In a CIFAR-10 search the 1.5B model's repair
    enlarged the kernel instead (three times, three shape errors): say how small the map already is."""
    if not isinstance(failed, dict) or "Pool" not in txt(failed.get("type")) or "too small" not in msg:
        return ""
    shape = failed.get("in")
    if not (isinstance(shape, list) and len(shape) >= 2 and all(type(d) is int for d in shape[-2:])):
        return ""
    return f" — the map is {shape[-2]}x{shape[-1]} at {txt(failed.get('name'))[:30]}: remove a pooling step, not enlarge a kernel"



def txt(value: object) -> str:
    return value if isinstance(value, str) else ""



def num(value: object):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
