"""Pure helpers of the in-sandbox harness (importing it touches no file descriptor)."""
import torch
import torch.nn as nn

from sandbox import runner


def test_import_does_not_redirect_stdout():
    assert runner._CHANNEL == {"fd": 1, "nonce": ""}


def test_shape_trace_records_leaves_and_the_failing_module():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 10))
    trace = runner.ShapeTrace(model)
    try:
        model(torch.zeros(2, 3, 8, 8))
    except RuntimeError:
        pass
    text = trace.text()
    trace.remove()
    assert text.startswith("0 Conv2d→8x8x8 | 1 MaxPool2d→8x4x4 | 2 Flatten→128 | ✗ 3 Linear(in_features=100")
    assert text.endswith("got 128")
    assert not model._forward_hooks and not model[0]._forward_pre_hooks


def test_shape_trace_is_bounded_and_keeps_the_failure():
    model = nn.Sequential(*[nn.Identity() for _ in range(60)], nn.Linear(5, 2))
    trace = runner.ShapeTrace(model)
    try:
        model(torch.zeros(1, 7))
    except RuntimeError:
        pass
    text = trace.text(limit=120)
    assert len(text) <= 120 and text.startswith("… |") and "✗ 60 Linear" in text


def test_random_crop_keeps_shape_and_content_range():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = runner.random_crop(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= x.min() and y.max() <= x.max()


def test_one_cycle_schedule():
    lrs = [runner.lr_at(s, 100, 0.1) for s in range(100)]
    assert max(lrs) == 0.1 and lrs.index(0.1) == 19 and lrs[0] < 0.01 and lrs[-1] < 0.01
