"""What a counted step charges for operations torch's FLOP registry has no formula for (counting.op_cost):
a net that computes its layers through them must not run for free against --max-flops."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasloop.sandbox.counting import StepCount

N, D, M = 16, 64, 32  # a batch of N vectors of D values against M of them: N*M*D multiply-adds as a product


def charged(fn, *tensors: torch.Tensor, known: tuple = ()) -> tuple[int, int]:
    """(all FLOPs, the part op_cost charged) of one forward of fn."""
    count = StepCount([*tensors, *known])
    with count, torch.no_grad():
        fn(*tensors)
    return count.flops[0], count.other[0]


def test_a_matrix_product_costs_the_same_however_it_is_written():
    x, w = torch.randn(N, D), torch.randn(M, D)
    product, _ = charged(lambda a, b: a @ b.T, x, w)
    assert product == 2 * N * M * D  # torch's own formula
    disguises = {
        "multiply and sum": lambda a, b: (a[:, None, :] * b[None]).sum(-1),
        "distances": lambda a, b: torch.cdist(a, b),
        "a matrix-vector product per row": lambda a, b: torch.stack([torch.mv(b, r) for r in a]),
        "dot products": lambda a, b: torch.stack([torch.dot(r, c) for r in a for c in b]),
        "an embedding bag weighted by the inputs": lambda a, b: F.embedding_bag(
            torch.arange(D).repeat(N), b.T.contiguous(), torch.arange(0, N * D, D), mode="sum",
            per_sample_weights=a.reshape(-1)),
    }
    for how, fn in disguises.items():
        flops, other = charged(fn, x, w)
        assert other > 0 and flops >= product / 2, (how, flops, product)


def test_a_bilinear_form_a_fourier_transform_and_a_solve_cost_their_arithmetic():
    x = torch.randn(N, D)
    bilinear = nn.Bilinear(D, D, M)
    flops, _ = charged(lambda a: bilinear(a, a), x)
    assert flops >= 2 * N * M * D * D
    flops, _ = charged(lambda a: torch.fft.rfft(a).abs(), x)
    assert flops >= 5 * N * D * 6 // 2  # log2(64) = 6, a real input's transform: half the spectrum
    a = torch.randn(D, D)
    flops, _ = charged(lambda m: torch.linalg.solve(m, m), a)
    assert flops >= 2 * D ** 3


def test_views_and_copies_are_free_and_elementwise_work_costs_one_flop_per_value():
    x = torch.randn(N, D)
    assert charged(lambda a: a.view(D, N).T.reshape(-1)[::2].clone(), x) == (0, 0)
    assert charged(lambda a: a.relu(), x) == (N * D, N * D)


def test_an_honest_convolutional_net_pays_little_for_its_other_operations():
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(64, 10))
    x = torch.randn(4, 3, 32, 32)
    flops, other = charged(net, x, known=(*net.parameters(), *net.buffers()))
    assert 0 < other < 0.03 * flops
