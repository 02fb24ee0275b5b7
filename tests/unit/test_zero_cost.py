"""Zero-cost proxies on tiny hand-made nets where the answer is known."""
import math

import torch
import torch.nn as nn

from nasloop.sandbox import zero_cost as zc


def mlp(width=16, zero_layer=False):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                        nn.Linear(width, 3))
    if zero_layer:
        with torch.no_grad():  # a dead layer: no path from input to output carries anything
            net[3].weight.zero_()
            net[3].bias.zero_()
    return net


X = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
Y = torch.arange(8) % 3


def test_synflow_of_a_net_with_a_zeroed_layer_is_zero():
    assert zc.synflow(mlp(zero_layer=True), X, Y) == 0.0
    assert zc.synflow(mlp(), X, Y) > 0


def test_synflow_restores_the_weights():
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    zc.synflow(net, X, Y)
    assert all(torch.equal(before[k].double(), v) for k, v in net.state_dict().items())


def test_naswot_of_identical_inputs_is_singular():
    same = X[:1].repeat(8, 1, 1, 1)
    assert zc.naswot(mlp(), same, Y) == float("-inf")  # identical codes: K has rank 1
    assert math.isfinite(zc.naswot(mlp(), X, Y))


def test_naswot_sees_functional_relus():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(torch.nn.functional.relu(self.fc1(x.flatten(1))))

    torch.manual_seed(0)
    assert math.isfinite(zc.naswot(Functional(), X, Y))


def test_gradient_proxies_and_baselines():
    net = mlp()
    assert zc.snip(mlp(), X, Y) > 0 and zc.grad_norm(mlp(), X, Y) > 0
    assert zc.params(net, X, Y) == 12 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    assert zc.flops(net, X, Y) == 2 * (12 * 16 + 16 * 16 + 16 * 3)
    assert math.isfinite(zc.zico(mlp(), X, Y)) and math.isfinite(zc.zen(mlp(), X, Y))


def test_wider_nets_score_higher_on_size_sensitive_proxies():
    wide, narrow = (lambda: mlp(64)), (lambda: mlp(4))
    for name in ("synflow", "params", "flops", "naswot"):
        assert zc.score(wide, [name], X, Y)[name] > zc.score(narrow, [name], X, Y)[name], name


def test_determinism_under_a_seed():
    names = list(zc.PROXIES)
    a = zc.score(lambda: mlp(), names, X, Y, seed=3)
    b = zc.score(lambda: mlp(), names, X, Y, seed=3)
    assert a == b and set(a) == set(zc.PROXIES)


def test_the_cli_knows_the_same_proxies_as_the_harness():
    from nasloop.sandbox.base import PROXY_NAMES

    assert PROXY_NAMES == zc.PROXIES == tuple(zc.FUNCS)


def test_proxies_read_the_registries_not_the_nets_own_methods():
    """A proxy score is a fitness: a net redefining parameters()/modules()/named_children() to look bigger or
    cheaper does not change what params, flops or synflow see."""
    class Boasting(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp()

        def forward(self, x):
            return self.body(x)

        def parameters(self, recurse=True):
            yield nn.Parameter(torch.zeros(10**6))

        def modules(self):
            yield from ()

        def named_children(self):
            yield from ()

    honest, boasting = mlp(), Boasting()
    assert zc.params(boasting, X, Y) == zc.params(honest, X, Y) == sum(p.numel() for p in honest.parameters())
    assert zc.flops(boasting, X, Y) == zc.flops(honest, X, Y) > 0
    assert zc.synflow(boasting, X, Y) == zc.synflow(mlp(), X, Y) > 0
