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
    from nasloop.sandbox.counting import own_tensors
    from nasloop.sandbox.preflight import failure
else:  # the harness's neighbour, beside this file
    from counting import own_tensors  # type: ignore[no-redef]
    from preflight import failure  # type: ignore[no-redef]


class StepWatch:
    """What the harness checks of each training step, so that a net learns only from the steps it is given.

    Which steps are counted (StepCount) is drawn from the operating system's randomness (not the seed), so no
    net can know: the first, one later step, and each other with a probability set so that counting costs
    about SHARE of the training time (from the times of the steps so far; never below 1/EVERY): every step
    where counting is cheap (a CIFAR-sized net on a CPU: +1.5% per counted step), fewer where the dispatcher's
    bookkeeping is a large part of a step (a tiny net: 2x). A net doing more work on some steps (feeding the
    batches it kept, whose labels their gradients revealed, into its loss again) is counted doing it with a
    probability that grows with how often it does so.

    And after every step's forward and backward (the only places the net's code runs), its weights must be
    the tensors the optimizer was given, holding the values the optimizer left: a net that trains itself on
    kept batches inside a step (an SGD step of its own in forward or in a backward hook, through `.data`, a
    copy or a new Parameter) is refused whichever step it does so at."""

    EVERY, SHARE = 32, 0.1

    def __init__(self, steps: int, model: nn.Module, params: list[torch.Tensor]) -> None:
        self.later = 1 + int.from_bytes(os.urandom(4), "little") % (steps - 1) if steps > 1 else 0
        self.model, self.params, self.counted_steps = model, params, 0
        self.ids = [id(p) for p in params]
        self.timed = {True: [0, 0.0], False: [0, 0.0]}  # counted or not: steps, seconds (the first left out)
        self.began, self.counted = 0.0, False
        with torch.no_grad():
            self.kept = [p.detach().clone() for p in params]

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
        """After a step's forward and backward: a failure where the net's weights are not what the optimizer
        left (the first step is exempt: a lazy layer makes its weights there)."""
        if step == 0:
            return None
        timed = self.timed[self.counted]
        timed[0], timed[1] = timed[0] + 1, timed[1] + time.perf_counter() - self.began
        now = list(own_tensors(self.model, buffers=False).items())
        if [id(t) for _, t in now] != self.ids:
            return failure("train", "WeightError", f"the net replaced its weights during training step {step}: "
                                                   f"only the training's optimizer may change them")
        pairs = list(zip(now, self.kept, strict=True))
        shaped = [t.shape == k.shape and t.dtype == k.dtype for (_, t), k in pairs]
        # bit for bit (a NaN equals itself), read back in one transfer from a GPU
        same = torch.stack([(_bits(t) == _bits(k)).all() if ok else torch.zeros((), dtype=torch.bool, device=k.device)
                            for ((_, t), k), ok in zip(pairs, shaped, strict=True)]).tolist() if pairs else []
        if all(same):
            return None
        name = now[same.index(False)][0]
        return failure("train", "WeightError", f"the net changed its weight {name} during training step {step}: "
                                               f"only the training's optimizer may change weights")

    def keep(self) -> None:
        """After the optimizer's step: the values the next step must begin and end its forward with."""
        with torch.no_grad():
            for p, kept in zip(self.params, self.kept, strict=True):
                if p.shape != kept.shape:  # grown at the first step (a lazy layer)
                    kept.resize_(p.shape)
                kept.copy_(p)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.uint8)
