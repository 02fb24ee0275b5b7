"""Zero-cost proxies: score an untrained net from one minibatch (or no data), each as its paper defines it.

Runs INSIDE the sandbox next to runner.py (the candidate's code is still untrusted); imports only torch.
Every proxy takes a freshly initialised model and returns a float; higher means "predicted better".

  naswot     Mellor et al. 2021: log|det K_H|, K_H[i,j] = units where ReLU codes of inputs i and j agree
  synflow    Tanaka et al. 2020: sum |θ · dR/dθ| with |θ|, all-ones input, R = sum of outputs (data-free)
  snip       Lee et al. 2019: sum |θ · dL/dθ| on one labelled minibatch
  grad_norm  Abdelfattah et al. 2021: sum over layers of ||dL/dθ||_2
  zen        Lin et al. 2021: log E||f(x) - f(x + αε)|| / α + Σ log(BN batch std) (data-free, Gaussian input)
  zico       Li et al. 2023: Σ_layers log Σ_θ mean|g| / std(g), gradients over several minibatches
  params, flops  the baselines
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:  # part of nasloop (tests, host tools)
    from nasloop.sandbox.counting import StepCount, own_modules, own_tensors, set_training
else:  # the harness's neighbour, beside this file
    from counting import StepCount, own_modules, own_tensors, set_training  # type: ignore[no-redef]

PROXIES = ("naswot", "synflow", "snip", "grad_norm", "zen", "zico", "params", "flops")


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of convolutions and linear layers (what the proxies' papers sum over), found in nn.Module's
    registries: the net's own modules() and parameters() are its to redefine (a proxy is a fitness)."""
    found = [object.__getattribute__(m, "__dict__").get("_parameters", {}).get("weight") for m in own_modules(model)
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    return [w for w in found if isinstance(w, torch.Tensor)]


def _zero_grad(model: nn.Module) -> None:
    for t in own_tensors(model).values():
        t.grad = None


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """ReLU codes are recorded at torch.relu/torch.relu_, which nn.ReLU and F.relu both reach, plus
    hooks on the other rectifier modules."""
    codes: list[torch.Tensor] = []

    def record(out):
        codes.append((out.detach().flatten(1) > 0).float())
        return out

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            record(out)

    hooks = [m.register_forward_hook(hook) for m in own_modules(model) if isinstance(m, (nn.ReLU6, nn.GELU, nn.SiLU))]
    relu, relu_ = torch.relu, torch.relu_
    torch.relu = lambda t, *a, **k: record(relu(t, *a, **k))  # type: ignore[assignment]
    torch.relu_ = lambda t, *a, **k: record(relu_(t, *a, **k))  # type: ignore[assignment]
    try:
        set_training(model, False)
        with torch.no_grad():
            model(x)
    finally:
        torch.relu, torch.relu_ = relu, relu_
        for h in hooks:
            h.remove()
    c = torch.cat(codes, dim=1) if codes else torch.zeros(x.shape[0], 1, device=x.device)
    k = c @ c.t() + (1 - c) @ (1 - c).t()
    sign, logdet = torch.linalg.slogdet(k.double())
    return float(logdet) if sign > 0 else float("-inf")


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    tensors = own_tensors(set_training(model, False))
    with torch.no_grad():
        for t in tensors.values():
            if t.is_floating_point():
                t.data = t.data.double()
        signs = {n: torch.sign(p) for n, p in tensors.items() if p.is_floating_point()}
        for _, p in tensors.items():
            if p.is_floating_point():
                p.abs_()
    _zero_grad(model)
    out = model(torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device))
    torch.sum(out).backward()
    score = sum(float((w.detach() * w.grad).abs().sum()) for w in _weights(model) if w.grad is not None)
    with torch.no_grad():
        for n, p in tensors.items():
            if n in signs:
                p.mul_(signs[n])
    return score


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    set_training(model, True)
    _zero_grad(model)
    F.cross_entropy(model(x), y).backward()
    return [w for w in _weights(model) if w.grad is not None]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return sum((float((w.detach() * w.grad).abs().sum()) for w in _loss_grads(model, x, y) if w.grad is not None), 0.0)


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return sum((float(w.grad.norm()) for w in _loss_grads(model, x, y) if w.grad is not None), 0.0)


def zen(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float = 0.01) -> float:
    last = [m for m in own_modules(model) if isinstance(m, nn.Linear)]
    feats: list[torch.Tensor] = []

    def grab(_m, inp):
        feats.append(inp[0].detach())

    handle = last[-1].register_forward_pre_hook(grab) if last else None
    set_training(model, True)
    try:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            base = torch.randn(x.shape, generator=g).to(x.device)
            noise = torch.randn(x.shape, generator=g).to(x.device)
            out1, out2 = model(base), model(base + alpha * noise)
    finally:
        if handle:
            handle.remove()
    f1, f2 = (feats[0], feats[1]) if len(feats) >= 2 else (out1, out2)
    delta = float((f1 - f2).flatten(1).norm(dim=1).mean())
    bn = sum(math.log(math.sqrt(float(m.running_var.mean())) + 1e-12)
             for m in own_modules(model) if isinstance(m, nn.BatchNorm2d) and m.running_var is not None)
    return math.log(delta / alpha + 1e-12) + bn


def zico(model: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: int = 2) -> float:
    grads: dict[int, list[torch.Tensor]] = {}
    for xb, yb in zip(x.chunk(splits), y.chunk(splits), strict=False):
        for i, w in enumerate(_loss_grads(model, xb, yb)):
            if w.grad is not None:
                grads.setdefault(i, []).append(w.grad.detach().flatten().clone())
    score = 0.0
    for gs in grads.values():
        g = torch.stack(gs)
        mean, std = g.abs().mean(0), g.std(0)
        ok = std > 0
        val = float((mean[ok] / std[ok]).sum())
        if val > 0:
            score += math.log(val)
    return score


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The parameters, read from the registries (not the net's own parameters())."""
    return float(sum(torch.Tensor.numel(t) for t in own_tensors(model, buffers=False).values()))


def flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """One image's forward, counted at the dispatcher (FlopCounterMode calls the net's named_children())."""
    set_training(model, False)
    one = x[:1]
    count = StepCount([*own_tensors(model).values(), one])
    with torch.no_grad(), count:
        model(one)
    return float(count.flops[0] - count.other[0])  # torch's formulas: the proxy of the papers


FUNCS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "naswot": naswot, "synflow": synflow, "snip": snip, "grad_norm": grad_norm, "zen": zen, "zico": zico,
    "params": params, "flops": flops,
}


def score(make_model: Callable[[], nn.Module], names: list[str], x: torch.Tensor, y: torch.Tensor,
          seed: int = 0) -> dict[str, float]:
    """Each proxy on a freshly initialised model (same seed), so one proxy cannot disturb another."""
    return score_timed(make_model, names, x, y, seed)[0]


def score_timed(make_model: Callable[[], nn.Module], names: list[str], x: torch.Tensor, y: torch.Tensor,
                seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """`score` plus the seconds each proxy took (model construction included: it is part of the cost)."""
    out, seconds = {}, {}
    for name in names:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        out[name] = FUNCS[name](make_model(), x, y)
        seconds[name] = round(time.perf_counter() - t0, 4)
    return out, seconds
