"""The harness's pre-flight, and failures as data (imported by runner.py, next to it; INSIDE the sandbox).

Before any real allocation the candidate is built and run on the meta device: its parameters, output
shape, FLOPs per image and structure (a hash of its operations and shapes) are known in milliseconds,
and a net over a budget, with the wrong output, or equal to an earlier one fails here with the numbers a
repair needs. Every failure is a record of fields (phase, exception type, failing layer, shapes), never
prose for someone to re-parse. Like runner.py it imports only the standard library and torch.
"""
from __future__ import annotations

import hashlib
import time
import traceback

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

if __package__:  # part of nasloop (tests, host tools)
    from nasloop.sandbox.counting import StepCount, own_tensors, set_training, tensor_count
else:  # the harness's neighbour, beside this file
    from counting import StepCount, own_tensors, set_training, tensor_count  # type: ignore[no-redef]  # noqa: F401

TEXT = 1500  # characters of any one text field (message, traceback) in the result
LAYERS = 40  # leaf layers reported from a passed pre-flight

# --- failures as data --------------------------------------------------------------------------
def safe_str(obj: object, limit: int = TEXT) -> str:
    """str(obj) that never raises (a candidate's exception may define a __str__ that does)."""
    try:
        text = str(obj)
    except BaseException:  # noqa: BLE001 - anything the candidate's __str__ throws
        try:
            text = object.__repr__(obj)
        except BaseException:  # noqa: BLE001
            text = "<unprintable>"
    return text[:limit] if isinstance(text, str) else "<unprintable>"


def type_name(exc: BaseException) -> str:
    try:
        name = type.__dict__["__name__"].__get__(type(exc))
        return name if isinstance(name, str) else "Exception"
    except BaseException:  # noqa: BLE001
        return "Exception"


def oom_kind(exc: BaseException, device: str) -> str | None:
    """'gpu' or 'host' when the exception is the allocator's own out-of-memory type."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "gpu" if device == "cuda" else "host"
    if isinstance(exc, MemoryError):
        return "host"
    return None


def error(phase: str, exc: BaseException, device: str = "cpu") -> dict:
    """A failure record: phase, exception type, message, the deepest candidate frame, traceback tail."""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "candidate.py"]
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001 - formatting touches the candidate's objects
        frames, tb = [], ""
    where = None
    if frames:
        f = frames[-1]
        where = {"line": f.lineno, "function": safe_str(f.name, 80), "code": safe_str((f.line or "").strip(), 200)}
    rec = {"status": "error", "phase": phase, "exc_type": type_name(exc), "message": safe_str(exc),
           "traceback": tb[-TEXT:], "where": where}
    oom = oom_kind(exc, device)
    if oom:
        rec["oom"] = oom
    return rec


def failure(phase: str, exc_type: str, message: str, **extra) -> dict:
    return {"status": "error", "phase": phase, "exc_type": exc_type, "message": message, **extra}


# --- pre-flight on the meta device: shapes, interface and size before any real allocation ------------
class ShapeTrace:
    """Forward hooks recording each leaf module's output shape, and which module was running at a failure.

    Modules are keyed by id(): a candidate module that defines __eq__ (and so loses __hash__) must not
    break the harness."""

    def __init__(self, model: nn.Module):
        self.names = {id(m): (n or "net") for n, m in model.named_modules()}
        self.done: list[dict] = []
        self.stack: list[tuple[nn.Module, list[int] | str]] = []
        self.handles = []
        for _, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    @staticmethod
    def shape(x) -> list[int] | str:
        if isinstance(x, torch.Tensor):
            return [int(d) for d in x.shape[1:]]
        if isinstance(x, (tuple, list)) and x:
            return ShapeTrace.shape(x[0])
        return type(x).__name__

    @staticmethod
    def _leaf(mod: nn.Module) -> bool:
        return not any(True for _ in mod.children())

    def _pre(self, mod, args) -> None:
        self.stack.append((mod, self.shape(args)))

    def _post(self, mod, args, out) -> None:
        if self.stack:
            self.stack.pop()
        if self._leaf(mod) and len(self.done) < 200:
            self.done.append({"name": self.names.get(id(mod), "?"), "type": type(mod).__name__,
                              "out": self.shape(out), "params": self.params(mod)})

    @staticmethod
    def params(mod: nn.Module) -> int:
        try:
            return int(sum(p.numel() for p in mod.parameters(recurse=False)))
        except Exception:  # noqa: BLE001 - the candidate's module: a count is a fact to report, not a need
            return -1

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def record(self) -> dict:
        """{"layers": [{name, type, out}], "failed": {name, type, repr, args, in} | None}."""
        failed = None
        if self.stack:
            mod, shape_in = self.stack[-1]
            leaf = self._leaf(mod)
            failed = {"name": self.names.get(id(mod), "?"), "type": type(mod).__name__, "leaf": leaf,
                      "repr": safe_str(mod, 200).splitlines()[0][:120] if leaf else type(mod).__name__,
                      "in": shape_in}
        return {"layers": self.done[-60:], "failed": failed}


class OpTrace(TorchDispatchMode):
    """Every tensor operation of building and running the net, with its shapes, arguments (never values)
    and grad mode, hashed as it goes: the net's structure as computed, blind to names, formatting and
    comments, and to how the code is written (a module or a functional call). The build's operations
    carry the weight initialisation; `key()` adds which parameters train."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()

    @staticmethod
    def _arg(a) -> str:
        if isinstance(a, torch.Tensor):
            return "T" + "x".join(str(int(d)) for d in a.shape) + str(a.dtype)[6:]
        if isinstance(a, (list, tuple)):
            return "[" + ",".join(OpTrace._arg(x) for x in a) + "]"
        return repr(a) if isinstance(a, (int, float, bool, type(None), str)) else type(a).__name__

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        grad = "g" if torch.is_grad_enabled() else "n"
        self.hash.update(f"{func}{grad}({self._arg(list(args))};{self._arg(sorted((kwargs or {}).items()))})\n".encode())
        return func(*args, **(kwargs or {}))

    def key(self, model: nn.Module) -> str:
        trains = "".join("1" if p.requires_grad else "0" for p in own_tensors(model, buffers=False).values())
        final = self.hash.copy()
        final.update(trains.encode())
        return final.hexdigest()[:16]


def largest_layers(model: nn.Module) -> list[dict]:
    """The three modules holding the most tensors, each with the width a repair would cut (a convolution's
    output channels, a linear layer's output features) so the host can say how far to cut it."""
    own = [(sum(p.numel() for p in m.parameters(recurse=False)) + sum(b.numel() for b in m.buffers(recurse=False)),
            name, m) for name, m in model.named_modules() if name]
    top = sorted((t for t in own if t[0]), key=lambda t: (t[0], t[1]), reverse=True)[:3]
    return [{"name": name, "type": type(m).__name__, "params": int(n), **_width(m)} for n, name, m in top]


def _width(module: nn.Module) -> dict:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
        width = module.out_channels
    elif isinstance(module, nn.Linear):
        width = module.out_features
    else:
        return {}
    return {"width": width} if type(width) is int else {}


def over_budget(params: int, max_params: int, model: nn.Module | None = None) -> dict | None:
    """A BudgetError naming the largest layers, so a repair knows which ones to shrink."""
    if not max_params or params <= max_params:
        return None
    top = largest_layers(model) if model is not None else []
    # "conv3 (Conv2d, 73,728 parameters)": written bare ("conv3 Conv2d 73,728"), the 1.5B model took the
    # counts for channel numbers and the whole fact for a layer's name in its next suggestions
    largest = ("; largest layers: " + ", ".join(f"{t['name']} ({t['type']}, {t['params']:,} parameters)"
                                                for t in top)) if top else ""
    return failure("interface", "BudgetError", f"Net has {params:,} parameters; the budget is {max_params:,}"
                   f"{largest}. Use fewer or narrower layers", largest=top, max_params=max_params)


def over_flops(flops: int, max_flops: int, counts: dict, batch: int = 2, other: int = 0) -> dict | None:
    """A BudgetError naming the layers that cost the most FLOPs, so a repair knows what to shrink (often:
    downsample earlier). `counts`: the FLOP counter's per-module totals for a batch of `batch` images;
    `other`: the FLOPs per image of operations torch has no formula for (counting.op_cost)."""
    if not max_flops or flops <= max_flops:
        return None
    extra = (f" ({other:,} of them in operations without a FLOP formula in torch, charged by the values they "
             f"touch)") if other * 10 > flops else ""
    names = [n for n in counts if n != "Global"]
    total = {n: int(sum(counts[n].values())) for n in names}
    # each module's own work: its total less its children's (a forward's arithmetic outside any layer counts)
    own = {n: total[n] - sum(total[m] for m in names if m.startswith(n + ".") and "." not in m[len(n) + 1:])
           for n in names}
    top = sorted(((f // batch, n.split(".", 1)[-1]) for n, f in own.items() if f > 0), reverse=True)[:3]
    largest = "; most FLOPs: " + ", ".join(f"{name} ({n:,} FLOPs)" for n, name in top) if top else ""
    return failure("interface", "BudgetError", f"Net needs {flops:,} FLOPs per image{extra}; the budget is "
                   f"{max_flops:,}{largest}. Downsample earlier (stride or pooling) or use narrower layers",
                   flops=flops, max_flops=max_flops, other_flops=other,
                   largest=[{"name": name, "flops": n} for n, name in top])


def wrong_output(out, num_classes: int, in_channels: int, size: int) -> dict | None:
    if type(out) is torch.Tensor and tuple(out.shape) == (2, num_classes):  # not a subclass: steps.py `plain`
        return None
    got = tuple(out.shape) if type(out) is torch.Tensor else type(out).__name__
    return failure("interface", "InterfaceError",
                   f"Net returned {got} for input (2, {in_channels}, {size}, {size}); expected (2, {num_classes})")


def _meta_specific(exc: BaseException) -> bool:
    """Errors that only the meta device causes (data-dependent ops, .item(), mixed devices)."""
    if not isinstance(exc, Exception):
        return False  # SystemExit, KeyboardInterrupt...: the candidate's, on any device
    text = f"{type_name(exc)}: {safe_str(exc)}".lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "device" in text


# A counted training step's FLOPs, forward and backward, may be this many times the forward budget: an
# honest step's backward costs about twice its forward (less where the input needs no gradient).
BACKWARD_SHARE = 3.5


def step_over_budget(count: StepCount, batch: int, first: bool, facts: dict, cfg: dict) -> dict | None:
    """A counted training step (runner.py) against the budgets: its forward's FLOPs per image (reported: the
    costliest counted step's), forward and backward together at most BACKWARD_SHARE times the forward
    budget, and the values it read from tensors no registry holds, counted with the parameters."""
    fwd, bwd = (n // max(1, batch) for n in count.flops)
    if first or fwd > int(facts.get("flops") or 0):
        facts["flops"] = fwd
    # the predictions' allowance (EvalCount): the least a counted step did, which extra work cannot raise
    facts["least_flops"] = fwd if first else min(fwd, int(facts.get("least_flops") or fwd))
    hidden = count.unregistered()
    facts["unregistered"] = max(hidden, int(facts.get("unregistered") or 0))
    facts["params"] = max(int(facts.get("params") or 0), count.held)  # storage grown since the build
    max_flops, max_params = int(cfg.get("max_flops") or 0), int(cfg.get("max_params") or 0)
    if max_flops and max_flops >= fwd and fwd + bwd > BACKWARD_SHARE * max_flops:
        return failure("interface", "BudgetError", f"a training step needs {fwd + bwd:,} FLOPs per image, forward and "
                       f"backward; at most {BACKWARD_SHARE:g}x the budget of {max_flops:,}", flops=fwd, max_flops=max_flops)
    over = over_budget(int(facts.get("params") or 0) + hidden, max_params)
    if over:
        return {**over, "message": f"{over['message']} ({hidden:,} of them in tensors that are neither parameters "
                                   f"nor buffers)"} if hidden else over
    return over_flops(fwd, max_flops, count.counts or FLOP_COUNTS, batch if count.counts else 2,
                      count.other[0] // max(1, batch))


FLOP_COUNTS: dict = {}  # the pre-flight's FLOPs by module (two images): one net per harness process
EVAL_SHARE = 1.5  # a prediction's forward may cost this many times the training forward, per image


class EvalCount:
    """The predictions, counted like a training step: a net may keep the batches it saw while training (the
    gradient of its logits tells their labels) and train on them at its first evaluation forward, where no
    step is counted. Every evaluation forward runs under StepCount: its FLOPs per image meet EVAL_SHARE times
    the training forward's (backward work done in forward counts: it is dispatched too), and the values it
    reads from outside the registries, and the registered tensors after it, meet the parameter budget."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.flops, self.hidden, self.images = model, 0, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = StepCount([*own_tensors(self.model).values(), x])
        with count:
            out = self.model(x)
        self.flops += count.flops[0] + count.flops[1]
        self.hidden = max(self.hidden, count.unregistered())
        self.images += int(x.shape[0])
        return out

    def over_budget(self, facts: dict, cfg: dict) -> dict | None:
        per, train = self.flops // max(1, self.images), int(facts.get("least_flops") or facts.get("flops") or 0)
        facts["eval_flops"] = per
        if per > EVAL_SHARE * train + 1000:
            return failure("interface", "BudgetError", f"a prediction needed {per:,} FLOPs per image, training's forward "
                           f"{train:,} (at most {EVAL_SHARE:g}x): work done only when evaluated", flops=per)
        facts["params"] = max(int(facts.get("params") or 0), tensor_count(self.model))
        facts["unregistered"] = max(self.hidden, int(facts.get("unregistered") or 0))
        over = over_budget(int(facts["params"]) + self.hidden, int(cfg.get("max_params") or 0))
        return over


def preflight(net_cls, num_classes: int, in_channels: int, size: int, max_params: int,
              max_flops: int = 0, known: dict | None = None) -> tuple[dict | None, dict]:
    """Build and run the net on the meta device (no memory), counting its FLOPs on the way: (failure or
    None, facts to report). A net over the parameter or FLOP budget fails here, in milliseconds."""
    t0 = time.perf_counter()
    ops = OpTrace()
    try:
        with torch.device("meta"), ops:
            model = net_cls(num_classes=num_classes, in_channels=in_channels)
        params = tensor_count(model)
    except BaseException as exc:  # noqa: BLE001 - everything the candidate raises is its outcome
        if _meta_specific(exc):
            return None, {"preflight": "inconclusive"}
        return error("build", exc), {"preflight": "failed"}
    info = {"params": params, "preflight": "failed"}
    budget = over_budget(params, max_params, model)
    if budget:
        return budget, {**info, "preflight_seconds": time.perf_counter() - t0}
    trace = None
    try:
        counter = StepCount([], model)  # what a counted training step charges, so both meet one budget
        trace = ShapeTrace(model)
        with torch.device("meta"), counter, ops:
            out = model(torch.empty(2, in_channels, size, size, device="meta"))
    except BaseException as exc:  # noqa: BLE001
        if _meta_specific(exc):
            return None, {"params": params, "preflight": "inconclusive"}
        return {**error("forward", exc), **({"trace": trace.record()} if trace else {})}, info
    finally:
        if trace is not None:
            trace.remove()
    wrong = wrong_output(out, num_classes, in_channels, size)
    if wrong:
        return {**wrong, "trace": trace.record()}, info
    flops, structure = counter.flops[0] // 2, ops.key(model)
    info = {**info, "flops": flops, "structure": structure, "preflight_seconds": time.perf_counter() - t0,
            "layers": trace.record()["layers"][:LAYERS]}  # for the Improver: what each layer makes, and costs
    FLOP_COUNTS.update(counter.counts)  # which layers cost what, for a budget error in training
    costly = over_flops(flops, max_flops, counter.counts, 2, counter.other[0] // 2)
    if costly:
        return costly, info
    if known and structure in known:  # the same net as an earlier candidate: no training, tell the LLM
        return failure("duplicate", "DuplicateError", f"the same network as iteration {known[structure]} "
                       f"(equal operations and shapes; only names or layout differ)", of=known[structure]), info
    return None, {**info, "preflight": "passed"}
