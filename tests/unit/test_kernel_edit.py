"""Fix `change`, "Change the kernel size of X: KxK": the loop sets the conv's kernel and moves its padding by
half the difference, so every map keeps its size (agent/fixes/kernel.py). Each edit is checked on the real
pre-flight and trained for one step, as in test_change_edits.py."""
from __future__ import annotations

import pytest

from tests.unit.test_change_edits import BASE, edit, runs, traced
from tests.unit.test_downsample_edit import rows


def test_a_conv_gets_the_kernel_asked_for_at_the_same_map_size():
    code, note = edit("change_kernel", "conv2", BASE, "5x5")
    assert "self.conv2 = nn.Conv2d(32, 64, 5, padding=2, bias=False)" in code
    assert note == "kernel 5x5 with padding kept to the map size: conv2 3x3"
    assert traced(code)[0] is None and rows(code) == rows(BASE)
    assert runs(code) == runs(BASE) + 32 * 64 * (25 - 9)
    one, _ = edit("change_kernel", "conv2", BASE, "1x1")
    assert "nn.Conv2d(32, 64, 1, padding=0, bias=False)" in one and rows(one) == rows(BASE)
    runs(one)


def test_a_strided_conv_keeps_its_output_size_too():
    strided = BASE.replace("nn.Conv2d(32, 64, 3, padding=1, bias=False)", "nn.Conv2d(32, 64, 3, 2, 1, bias=False)")
    code, _ = edit("change_kernel", "conv2", strided, "7x7")
    assert "nn.Conv2d(32, 64, 7, 2, 3, bias=False)" in code and rows(code) == rows(strided)
    runs(code)


def test_a_conv_without_padding_gets_one_written_or_keeps_its_size_by_none():
    bare = BASE.replace("nn.Conv2d(32, 64, 3, padding=1, bias=False)", "nn.Conv2d(32, 64, 1, bias=False)")
    code, _ = edit("change_kernel", "conv2", bare, "3x3")
    assert "nn.Conv2d(32, 64, 3, bias=False, padding=1)" in code and rows(code) == rows(bare)
    positional = bare.replace("nn.Conv2d(32, 64, 1, bias=False)", "nn.Conv2d(32, 64, 1)")
    code, _ = edit("change_kernel", "conv2", positional, "5x5")
    assert "nn.Conv2d(32, 64, 5, padding=2)" in code and rows(code) == rows(positional)
    runs(code)


def test_all_changes_the_spatial_convs_and_leaves_the_shortcuts():
    """CIFAR-10 (seed 44, at 3e541f8): "Change the kernel size of all: 3x3" on a net with 1x1 shortcuts, and
    the Generator made the shortcuts 3x3 without padding (a sum of two map sizes)."""
    residual, _ = edit("add_residual", "conv2")
    five, _ = edit("change_kernel", "all", residual, "5x5")
    code, note = edit("change_kernel", "all", five, "3x3")
    assert "self.conv2_shortcut = nn.Conv2d(32, 64, 1" in code and code.count(", 3, padding=1") == 3
    assert note == "kernel 3x3 with padding kept to the map size: conv1 5x5, conv2 5x5, conv3 5x5"
    assert traced(code)[0] is None and rows(code) == rows(residual) and runs(code) == runs(residual)


@pytest.mark.parametrize("arguments", ["", "5", "4x4", "3x5", "larger"])
def test_only_a_square_odd_kernel_is_made(arguments):
    assert edit("change_kernel", "conv2", BASE, arguments) == (None, "")


@pytest.mark.parametrize("before", [
    "nn.Conv2d(32, 64, 3, padding=0, bias=False)",  # 1x1 would need a padding of -1 to keep the size
    "nn.Conv2d(32, 64, 3, padding=2, dilation=2, bias=False)",  # a dilated kernel spans more than its size
    "nn.Conv2d(32, 64, kernel_size=(3, 5), padding=1, bias=False)",  # not square
])
def test_a_conv_the_edit_cannot_keep_the_size_of_is_left_to_the_generator(before):
    code = BASE.replace("nn.Conv2d(32, 64, 3, padding=1, bias=False)", before)
    assert edit("change_kernel", "conv2", code, "1x1" if "padding=0" in before else "5x5") == (None, "")


def test_the_kernel_a_conv_has_is_no_change():
    assert edit("change_kernel", "conv2", BASE, "3x3") == (None, "")


def test_all_is_not_offered_the_kernel_its_spatial_convs_share():
    """A net of 3x3 convs and a 1x1 shortcut: "all: 3x3" would change nothing the edit changes."""
    from nasloop.agent.llm.grammar import kernel_choices

    residual, _ = edit("add_residual", "conv2")
    choices = kernel_choices(residual, ["conv1", "conv2", "conv2_shortcut", "conv3"])
    assert choices["all"] == {"enum": ["1x1", "5x5", "7x7"]}
    assert choices["conv2_shortcut"] == {"enum": ["3x3", "5x5", "7x7"]}
