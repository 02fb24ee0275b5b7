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


def trained(fn, *tensors: torch.Tensor) -> int:
    """All FLOPs of one forward and backward of fn (sum of its output)."""
    count = StepCount(list(tensors))
    with count:
        out = fn(*tensors)
        count.backward = True
        out.sum().backward()
    return count.flops[0] + count.flops[1]


def test_kernels_called_by_name_cost_what_the_layer_they_implement_costs():
    """An attacker's read of op_cost (in-place products, conv_tbc, an LSTM's or attention's CPU kernel,
    mkldnn_convolution): each was charged one tensor's size, 100-4000x less than its arithmetic."""
    x, w = torch.randn(N, D, requires_grad=True), torch.randn(D, M, requires_grad=True)
    product = 2 * N * D * M
    flops, other = charged(lambda a, b: a.new_zeros(N, M).addmm_(a, b), x, w)
    assert flops - other == product  # the registry's own formula (the zeros: op_cost)
    assert charged(lambda a, b: torch.addbmm(a.new_zeros(N, M), a[None], b[None]), x, w)[0] >= product
    seq = torch.randn(10, 4, D)  # (time, batch, channels)
    kernel = torch.randn(3, D, M)
    assert charged(lambda s, k: torch.conv_tbc(s, k, torch.zeros(M), 1), seq, kernel)[0] >= 2 * 10 * 4 * 3 * D * M
    image, filt = torch.randn(2, 8, 16, 16), torch.randn(16, 8, 3, 3)
    conv, _ = charged(lambda i, f: F.conv2d(i, f, padding=1), image, filt)
    direct, other = charged(lambda i, f: torch.mkldnn_convolution(i, f, None, [1, 1], [1, 1], [1, 1], 1), image, filt)
    assert other == direct >= conv
    lstm = nn.LSTM(D, M)
    steps = torch.randn(10, 4, D)
    assert trained(lambda s: lstm(s)[0], steps) >= 2 * 2 * 10 * 4 * 4 * M * (D + M)  # forward and backward: 4 gates
    q = torch.randn(2, 4, 256, 16, requires_grad=True)
    attention = 4 * 2 * 4 * 256 * 256 * 16
    assert charged(lambda t: F.scaled_dot_product_attention(t, t, t), q)[0] >= attention


def test_a_formula_that_cannot_read_its_arguments_charges_the_largest_tensor():
    count = StepCount([])
    count.registry = {torch.ops.aten.mm: lambda *a, **k: 1 // 0}
    with count, torch.no_grad():
        torch.randn(N, D) @ torch.randn(D, M)
    assert count.flops[0] >= N * M
