"""What a net holds and what one training step costs, counted without the net's help (INSIDE the sandbox,
next to runner.py and preflight.py; imports only torch).

The net's own methods (`parameters()`, `state_dict()`, `named_children()`...) are the candidate's to
redefine, so nothing here calls them: the registries are read as nn.Module keeps them, and a step's
operations are seen at the dispatcher, below anything the net can override.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode


def own_tensors(model: nn.Module, buffers: bool = True) -> dict[str, torch.Tensor]:
    """The net's parameters (and buffers), each once, by dotted name, read from nn.Module's own registries
    without calling a method the net could redefine. A net whose parameters() returned nothing passed a 2M
    budget with 4.5M trained weights, and its state_dict() exported 160 values as the host-counted size. The
    budget counts, the optimizer trains and the exported weights hold these tensors: every buffer (a
    non-persistent one added after the count was a place to hide values from the host), and a tensor shared
    under two names once (else the host counts a tied layer twice). A registry that is not nn.Module's own
    dict, or a tensor of a type torch does not define, is refused (TypeError): the harness cannot count what
    it cannot read."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # modules, then tensors, by id
    stack: list[tuple[str, object]] = [("", model)]
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        state = object.__getattribute__(module, "__dict__")
        for registry in ("_parameters", "_buffers") if buffers else ("_parameters",):
            for name, tensor in _registry(state, registry, prefix):
                if tensor is None or id(tensor) in seen:
                    continue
                if type(tensor) not in _tensor_types():
                    raise TypeError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor or nn.Parameter")
                seen.add(id(tensor))
                out[prefix + name] = tensor  # type: ignore[assignment]  # a torch tensor type (checked above)
        children = [(name, sub) for name, sub in _registry(state, "_modules", prefix) if sub is not None]
        for name, sub in reversed(children):
            if not issubclass(type(sub), nn.Module):
                raise TypeError(f"{prefix}{name} is a {type(sub).__name__} in the module registry")
            stack.append((f"{prefix}{name}.", sub))
    return out


def _registry(state: dict, name: str, prefix: str) -> list[tuple[str, object]]:
    table = state.get(name)
    if type(table) is not dict:
        raise TypeError(f"{prefix or 'Net.'}{name} is not nn.Module's own registry")
    return list(dict.items(table))


def _tensor_types() -> tuple[type, ...]:
    params = nn.parameter
    return tuple(t for t in (torch.Tensor, nn.Parameter, getattr(params, "Buffer", None),
                             getattr(params, "UninitializedParameter", None), getattr(params, "UninitializedBuffer", None))
                 if t is not None)


def tensor_count(model: nn.Module) -> int:
    """Parameters AND buffers (a net cannot hide weights from the budget in register_buffer), each storage
    counted whole and once: a parameter that is a 10-value view of a 3M-value storage, trained through
    `as_strided` over all of it, holds 3M values (numel said 10)."""
    sizes: dict[int, int] = {}
    for t in own_tensors(model).values():
        n = torch.Tensor.numel(t)
        key, whole = -id(t), n
        try:
            storage = torch.Tensor.untyped_storage(t)
            whole = max(n, storage.nbytes() // max(1, torch.Tensor.element_size(t)))
            if storage.data_ptr():  # a meta tensor has no address: counted alone
                key = storage.data_ptr()
        except (RuntimeError, NotImplementedError, ValueError):  # no storage (lazy, sparse): its numel
            pass
        sizes[key] = max(sizes.get(key, 0), whole)
    return int(sum(sizes.values()))


_FRESH = (torch.ops.aten.lift_fresh, torch.ops.aten.lift_fresh_copy)
FRESH_VALUES = 4096  # constants this small in all, made in the step, are not weights kept from before


class StepCount(TorchDispatchMode):
    """One real training step, counted: its FLOPs by torch's own formulas (torch.utils.flop_counter's
    registry) and, for every other operation, by op_cost; forward and backward apart (`backward` is set between them), and how many values it read
    from tensors it neither made nor was given (`known`: the registered tensors, the batch and its labels).
    torch's FlopCounterMode calls the net's own named_children(), which a net can override to learn that it
    is being counted and behave; this mode calls nothing of the net's. And it counts the backward, where a
    hook or an autograd Function can run work of its own. A tensor kept as a plain attribute (not a
    parameter, not a buffer) and trained by hand is read here: its values count as the net's parameters."""

    def __init__(self, known: list[torch.Tensor], model: nn.Module | None = None) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry, self.known = flop_registry, {id(t) for t in known}
        self.storages = {_storage(t) for t in known} - {0}  # `.data` of a parameter is a new tensor on its storage
        self.made: set[int] = set()  # ids of the tensors this step's operations returned
        self.hidden: dict[int, int] = {}  # id -> values of a tensor read that is neither made nor known
        self.fresh: dict[int, int] = {}  # id -> values of a constant made in the step (`torch.tensor(...)`)
        self.held = 0  # what the registered tensors hold after the step (tensor_count; the runner sets it)
        self.flops = [0, 0]  # forward, backward: every operation's, torch's formulas or op_cost's
        self.other = [0, 0]  # the part of `flops` charged by op_cost (operations torch has no formula for)
        self.backward = False
        # the forward's FLOPs by module, as FlopCounterMode gives them ("Global", "Net", "Net.conv3"), named
        # from the registries and followed by torch's global module hooks, not by any method of the net
        self.names = module_names(model) if model is not None else {}
        self.stack: list[str] = []
        self.counts: dict[str, dict] = {}
        self.hooks: list = []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.hooks = [register_module_forward_pre_hook(self._enter_module),
                      register_module_forward_hook(self._leave_module)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()
        return super().__exit__(*exc)

    def _enter_module(self, module: nn.Module, args: object) -> None:
        if id(module) in self.names:
            self.stack.append(self.names[id(module)])

    def _leave_module(self, module: nn.Module, args: object, out: object) -> None:
        if id(module) in self.names and self.stack:
            self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fresh = func._overloadpacket in _FRESH  # `torch.tensor(0.1)` in forward: a constant made just now
        for t in _tensors((args, kwargs)):
            if id(t) not in self.made and id(t) not in self.known and _storage(t) not in self.storages:
                (self.fresh if fresh else self.hidden)[id(t)] = torch.Tensor.numel(t)
        count = _registered(self.registry, func)
        try:
            n = int(count(*args, **kwargs, out_val=out)) if count is not None else op_cost(func, args, kwargs, out)
        except Exception:  # noqa: BLE001 - a formula that cannot read these arguments: the largest tensor
            count, n = None, max((torch.Tensor.numel(t) for t in _tensors((args, kwargs, out))), default=0)
        if n:
            self.flops[self.backward] += n
            if count is None:
                self.other[self.backward] += n
            for name in {"Global", *self.stack} if not self.backward else ():
                per_op = self.counts.setdefault(name, {})
                per_op[func._overloadpacket] = per_op.get(func._overloadpacket, 0) + n
        self.made.update(id(t) for t in _tensors(out))
        return out

    def unregistered(self) -> int:
        """Values the step read from outside the registries: hidden tensors, and the constants it made when
        they pass FRESH_VALUES together (weights kept as Python numbers, rebuilt 4,096 at a time)."""
        fresh = sum(self.fresh.values())
        return sum(self.hidden.values()) + (fresh if fresh > FRESH_VALUES else 0)


# Operations that compute nothing (aliases, allocations, copies); views are known by their schema.
_FREE = {"_unsafe_view", "alias", "detach", "lift_fresh", "empty", "empty_strided", "new_empty", "empty_like",
         "_local_scalar_dense", "_to_copy", "copy_", "clone", "contiguous"}


def op_cost(func, args: tuple, kwargs: dict, out: object) -> int:
    """FLOPs charged for an operation torch's FLOP registry has no formula for (it counts matrix products,
    convolutions and attention; everything else was free, so a convolution written as unfold, multiply and
    sum cost 0 against --max-flops). An operation that contracts values (a matrix-vector or dot product, a
    distance matrix, a bilinear form, a weighted embedding bag, a Fourier transform, a matrix solve) costs
    what its arithmetic does; any other costs one FLOP per value of the largest tensor it reads or writes,
    and a view, a copy or an allocation nothing (a honest net's activations and normalisations add a few
    per cent of its convolutions)."""
    name = func._overloadpacket.__name__
    if getattr(func, "is_view", False) or name in _FREE:
        return 0
    tensors = _tensors((args, kwargs, out))
    if not tensors:
        return 0
    numel = [torch.Tensor.numel(t) for t in tensors]
    largest = max(numel)
    special = _formula(name)
    if special is not None:
        try:
            return int(max(largest, special(args, tensors)))
        except (IndexError, TypeError, ValueError, RuntimeError):
            pass
    return int(largest)


def _registered(registry: dict, func):
    """torch's FLOP formula for an operation, or for the operation it is the in-place form of (`addmm_`,
    `baddbmm_`: the registry knows only `addmm`, `baddbmm`, so an in-place product was charged as a copy)."""
    packet = func._overloadpacket
    found = registry.get(packet)
    name = packet.__name__
    if found is None and name.endswith("_") and not name.endswith("__"):
        base = getattr(getattr(torch.ops, func.namespace, None), name[:-1], None)
        found = registry.get(base) if base is not None else None
    return found


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(torch.Tensor.size(t))


def _trilinear(args: tuple, tensors: list[torch.Tensor]) -> int:
    """aten._trilinear (F.bilinear): every input unsqueezed where `expand` says, then broadcast together."""
    shapes = []
    for t, expand in zip(args[:3], args[3:6], strict=True):
        shape = list(_shape(t))
        for d in sorted(expand):
            shape.insert(d, 1)
        shapes.append(shape)
    return 2 * int(torch.Size(torch.broadcast_shapes(*shapes)).numel())


def _fft(args: tuple, tensors: list[torch.Tensor]) -> int:
    """About 5 N log2 L for N values transformed along lengths L (the radix-2 count)."""
    dims = args[1] if len(args) > 1 else []
    shape = _shape(args[0])
    length = 1
    for d in dims:
        length *= shape[d]
    return 5 * max(torch.Tensor.numel(t) for t in tensors) * max(1, math.ceil(math.log2(max(2, length))))


def _by_index(args: tuple, tensors: list[torch.Tensor]) -> int:
    """An embedding bag sums one weight row per index: indices x row length, twice (the weights multiply)."""
    index = max((t for t in tensors if not torch.Tensor.is_floating_point(t)), key=torch.Tensor.numel)
    rows = [t for t in tensors if torch.Tensor.is_floating_point(t) and torch.Tensor.dim(t) >= 2]
    return 2 * torch.Tensor.numel(index) * max(_shape(t)[-1] for t in rows)


def _matrix(args: tuple, tensors: list[torch.Tensor]) -> int:
    """A solve, inverse, determinant or decomposition: about 2 n^3 per n x n matrix."""
    a = max((t for t in tensors if torch.Tensor.dim(t) >= 2), key=torch.Tensor.numel)
    return 2 * torch.Tensor.numel(a) * _shape(a)[-1]


def _floats(tensors: list[torch.Tensor], dims: int) -> list[torch.Tensor]:
    return [t for t in tensors if torch.Tensor.is_floating_point(t) and torch.Tensor.dim(t) >= dims]


def _recurrent(args: tuple, tensors: list[torch.Tensor]) -> int:
    """An RNN layer's kernel (`mkldnn_rnn_layer`, `_cudnn_rnn`): every weight matrix applied at every time
    step of every sequence, twice that for its backward."""
    x = args[0]
    steps = torch.Tensor.numel(x) // max(1, _shape(x)[-1])
    weights = sum(torch.Tensor.numel(t) for t in tensors if torch.Tensor.is_floating_point(t) and torch.Tensor.dim(t) == 2)
    return 2 * steps * weights


def _attention(args: tuple, tensors: list[torch.Tensor]) -> int:
    """A fused attention kernel outside the registry (the CPU flash kernel, a transformer layer's fast path):
    each query against each key, 4 L D per query, plus its projections' weights applied to every token."""
    maps = _floats(tensors, 3)
    big = max(maps, key=torch.Tensor.numel)
    length = max(_shape(t)[-2] for t in maps)
    tokens = torch.Tensor.numel(big) // max(1, _shape(big)[-1])
    weights = sum(torch.Tensor.numel(t) for t in tensors if torch.Tensor.is_floating_point(t) and torch.Tensor.dim(t) == 2)
    return 4 * torch.Tensor.numel(big) * length + 2 * tokens * weights


def _convolution(args: tuple, tensors: list[torch.Tensor]) -> int:
    """A convolution kernel called by name (`mkldnn_convolution`, `cudnn_convolution_relu`...): each output
    (or, transposed, each input) value costs its kernel's weights per output channel (weight: (out, in, k...))."""
    weight = args[1] if torch.Tensor.dim(args[1]) >= 3 else args[2]
    return 2 * max(torch.Tensor.numel(t) for t in tensors) * torch.Size(_shape(weight)[1:]).numel()


def _tbc(weight: torch.Tensor, tensors: list[torch.Tensor]) -> int:
    """conv_tbc: a 1-D convolution whose weight is (kernel, in, out)."""
    return 2 * max(torch.Tensor.numel(t) for t in tensors) * torch.Size(_shape(weight)[:-1]).numel()


_CONV = re.compile(r"(^|_)conv(olution|_depthwise|\dd)")


def _largest_twice(args: tuple, tensors: list[torch.Tensor]) -> int:
    return 2 * max(torch.Tensor.numel(t) for t in tensors)


_CONTRACTING = {
    "mv": _largest_twice, "addmv": _largest_twice, "dot": _largest_twice, "vdot": _largest_twice,
    "linalg_vecdot": _largest_twice, "_trilinear": _trilinear,
    "addbmm": lambda args, ts: 2 * torch.Tensor.numel(args[1]) * _shape(args[2])[-1],
    "conv_tbc": lambda args, ts: _tbc(args[1], ts), "conv_tbc_backward": lambda args, ts: 2 * _tbc(args[2], ts),
    "_euclidean_dist": lambda args, ts: 2 * torch.Tensor.numel(ts[-1]) * _shape(args[0])[-1],
    "_cdist_forward": lambda args, ts: 3 * torch.Tensor.numel(ts[-1]) * _shape(args[0])[-1],
    "_cdist_backward": lambda args, ts: 3 * torch.Tensor.numel(args[0]) * _shape(args[1])[-1],
    "_pdist_forward": lambda args, ts: 3 * torch.Tensor.numel(ts[-1]) * _shape(args[0])[-1],
    "_pdist_backward": lambda args, ts: 3 * torch.Tensor.numel(args[0]) * _shape(args[1])[-1],
    "linalg_matrix_exp": lambda args, ts: 10 * _matrix(args, ts),  # a dozen matrix products
    "cholesky": _matrix, "cholesky_solve": _matrix, "cholesky_inverse": _matrix, "triangular_solve": _matrix,
    "lu_solve": _matrix, "lu_unpack": _matrix, "geqrf": _matrix, "ormqr": _matrix, "orgqr": _matrix,
}


def _formula(name: str):
    """The arithmetic of a contracting operation, or None (then: the largest tensor it touches)."""
    if name in _CONTRACTING:
        return _CONTRACTING[name]
    if name.startswith("_fft_"):
        return _fft
    if name.startswith("_embedding_bag"):
        return _by_index
    if name.startswith("_foreach_"):  # one operation over a list of tensors: all of them
        return lambda args, ts: sum(torch.Tensor.numel(t) for t in ts)
    backward = 2 if "backward" in name else 1
    for part, formula in (("rnn", _recurrent), ("attention", _attention), ("transformer", _attention)):
        if part in name:
            return lambda args, ts, f=formula: backward * f(args, ts)
    if _CONV.search(name):
        return lambda args, ts: backward * _convolution(args, ts)
    if "linalg_" in name and "norm" not in name and "cross" not in name:  # solve, inv, det, eig, svd, qr, lstsq
        return _matrix
    return None


def set_training(model: nn.Module, training: bool) -> nn.Module:
    """train()/eval() without calling the net: nn.Module.train() is the net's to redefine, and it walks the
    net's own children(). A net whose train(False) replayed the batches it kept (their labels read from its
    logits' gradient) trained uncounted just before its predictions. The flag is written into each module's
    __dict__ (not through setattr: a `training` property of the net's would run its setter)."""
    for m in own_modules(model):
        object.__getattribute__(m, "__dict__")["training"] = training
    return model


def own_modules(model: nn.Module) -> list[nn.Module]:
    """The net and every module under it, each once, from the registries (not the net's own modules())."""
    out: list[nn.Module] = []
    seen: set[int] = set()
    stack: list[object] = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen or not issubclass(type(module), nn.Module):
            continue
        seen.add(id(module))
        out.append(module)  # type: ignore[arg-type]
        stack += [sub for _, sub in reversed(_registry(object.__getattribute__(module, "__dict__"), "_modules", ""))
                  if sub is not None]
    return out


def module_names(model: nn.Module) -> dict[int, str]:
    """id -> "Net" or "Net.<path>" for the net and each module under it, from the registries."""
    names: dict[int, str] = {}
    stack: list[tuple[str, object]] = [("Net", model)]
    while stack:
        name, module = stack.pop()
        if id(module) in names:
            continue
        names[id(module)] = name
        stack += [(f"{name}.{child}", sub) for child, sub in _registry(object.__getattribute__(module, "__dict__"),
                                                                         "_modules", name) if sub is not None]
    return names


def _tensors(tree: object) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _storage(t: torch.Tensor) -> int:
    try:
        return int(torch.Tensor.untyped_storage(t).data_ptr())
    except (RuntimeError, NotImplementedError):  # no storage (sparse, some wrappers): compared by identity only
        return 0
