"""What the harness checks of the training steps (INSIDE the sandbox, next to runner.py, which imports it;
imports only the standard library, torch and counting.py beside it): which steps are counted, and that the
net's weights change only through the optimizer.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn as nn

if __package__:  # part of nasloop (tests, host tools)
    from nasloop.sandbox.counting import own_modules, own_tensors
    from nasloop.sandbox.preflight import failure
else:  # the harness's neighbour, beside this file
    from counting import own_modules, own_tensors  # type: ignore[no-redef]
    from preflight import failure  # type: ignore[no-redef]

# torch's own layers whose forward updates their running statistics (exact types: a subclass may redefine it)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
         nn.InstanceNorm3d)
STATS = ("running_mean", "running_var", "num_batches_tracked")


class StepWatch:
    """What the harness checks of each training step, so that a net learns only from the steps it is given.

    Which steps are counted (StepCount) is drawn from the operating system's randomness (not the seed), so no
    net can know: the first, one later step, and each other with a probability set so that counting costs
    about SHARE of the training time (from the times of the steps so far; never below 1/EVERY): every step
    where counting is cheap (a CIFAR-sized net on a CPU: +1.5% per counted step), fewer where the dispatcher's
    bookkeeping is a large part of a step (a tiny net: 2x). A net doing more work on some steps (feeding the
    batches it kept, whose labels their gradients revealed, into its loss again) is counted doing it with a
    probability that grows with how often it does so.

    The weights are the harness's: the optimizer trains `shadow`, a copy the net cannot reach, from copies of
    the gradients, and `keep` writes it into the net's parameters after each step. After each step's forward
    and backward, and after the predictions, the net's parameters must be those tensors holding exactly the
    shadow's bytes, its gradients plain tensors (a subclass runs its own code inside the optimizer), and its
    buffers as they were (but the running statistics of torch's normalisation layers): a net that trains
    itself on kept batches (in forward, a hook, through `.data`, new Parameters, or weights kept as buffers)
    is refused at the first step it does so, and what it writes while the optimizer runs is overwritten."""

    EVERY, SHARE = 32, 0.1

    def __init__(self, steps: int, model: nn.Module, params: list[torch.Tensor]) -> None:
        self.later = 1 + int.from_bytes(os.urandom(4), "little") % (steps - 1) if steps > 1 else 0
        self.model, self.params, self.counted_steps = model, params, 0
        self.ids = [id(p) for p in params]
        self.timed = {True: [0, 0.0], False: [0, 0.0]}  # counted or not: steps, seconds
        self.began, self.counted = 0.0, False
        registries = [object.__getattribute__(m, "__dict__").get("_buffers") for m in own_modules(model)
                      if type(m) in NORMS]
        stats = {id(b) for reg in registries if type(reg) is dict for name, b in reg.items() if name in STATS}
        # a weight viewing a larger storage could be trained through the rest of it (as_strided)
        self.view = next((n for n, p in own_tensors(model, buffers=False).items()
                          if p.untyped_storage().nbytes() != p.numel() * p.element_size()), None)
        with torch.no_grad():
            self.shadow = [p.detach().clone() for p in params]
            self.fixed = {n: _bits(b).clone() for n, b in own_tensors(model).items()
                          if id(b) not in stats and id(b) not in {id(p) for p in params}}

    def rate(self) -> float:
        """The chance that a step is counted: SHARE over what counting adds to a step, within [1/EVERY, 1]."""
        (n_on, s_on), (n_off, s_off) = self.timed[True], self.timed[False]
        if n_on < 1 or n_off < 3:
            return 1 / self.EVERY
        extra = (s_on / n_on) / max(s_off / n_off, 1e-9) - 1
        return 1.0 if extra <= self.SHARE else max(1 / self.EVERY, self.SHARE / extra)

    def counts(self, step: int) -> bool:
        draw = int.from_bytes(os.urandom(4), "little") / 2**32
        self.counted = step in (0, self.later) or draw < self.rate()
        self.counted_steps += self.counted
        self.began = time.perf_counter()
        return self.counted

    def changed(self, step: int) -> dict | None:
        """After a step's forward and backward: a failure where the net's weights, gradients or buffers are not
        what they must be; else the gradients are copied to the shadow, for the optimizer."""
        if step > 0:
            timed = self.timed[self.counted]
            timed[0], timed[1] = timed[0] + 1, timed[1] + time.perf_counter() - self.began
        wrong = self.unchanged(f"during training step {step}")
        grads = [p.grad for p in self.params]
        odd = next((i for i, g in enumerate(grads) if g is not None and type(g) is not torch.Tensor), None)
        if wrong:
            return wrong
        if odd is not None:
            return failure("train", "WeightError", f"the gradient of a weight is a {type(grads[odd]).__name__} at "
                                                   f"training step {step}: a net's gradients are plain tensors")
        with torch.no_grad():
            for p, s, g in zip(self.params, self.shadow, grads, strict=True):
                s.grad = None if g is None else g.detach().clone()
                p.grad = None  # the next step's backward starts afresh, and its forward reads no gradient
        return None

    def unchanged(self, when: str) -> dict | None:
        """A failure where a parameter is not the tensor the optimizer was given, holding the shadow's bytes,
        or a buffer (other than a normalisation layer's statistics) differs from what it was."""
        if self.view is not None:
            return failure("train", "WeightError", f"the weight {self.view} views a larger storage: a weight "
                                                   f"holds its own values")
        now = own_tensors(self.model)
        params = list(own_tensors(self.model, buffers=False).items())
        if [id(t) for _, t in params] != self.ids:
            return failure("train", "WeightError", f"the net replaced its weights {when}: only the training's "
                                                   f"optimizer may change them")
        pairs: list[tuple[str, torch.Tensor | None, torch.Tensor]] = [
            (n, _bits(t), _bits(s)) for (n, t), s in zip(params, self.shadow, strict=True)]
        pairs += [(n, _bits(now[n]) if n in now else None, kept) for n, kept in self.fixed.items()]
        if not pairs:
            return None
        # every byte (a NaN equals itself), read back from a GPU in one transfer
        same = torch.stack([(b == k).all() if b is not None and b.shape == k.shape
                            else torch.zeros((), dtype=torch.bool, device=k.device) for _, b, k in pairs]).tolist()
        if all(same):
            return None
        name = pairs[same.index(False)][0]
        return failure("train", "WeightError", f"the net changed its {'buffer' if name in self.fixed else 'weight'} "
                                               f"{name} {when}: only the training's optimizer may change weights")

    def keep(self) -> None:
        """After the optimizer's step: the shadow written into the net's parameters."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)


def plain(out: object) -> torch.Tensor:
    """The net's output, refused unless a plain tensor: a subclass's __torch_function__ would run the net's
    code in the harness's own calls on it (`.float()`, `argmax`), where no step is counted."""
    if type(out) is not torch.Tensor:
        raise TypeError(f"Net returned a {type(out).__name__}, not a torch.Tensor")
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of the tensor's whole storage, as a flat uint8 tensor (no copy)."""
    return torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())
