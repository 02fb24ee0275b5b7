"""Fix `change`, "Change the downsampling of X: stride N": the loop sets the conv's stride and strides the
shortcut beside it in a residual sum by the same factor (agent/fixes/downsample.py). Each edit is checked on
the real pre-flight and trained for one step, as in test_change_edits.py."""
from __future__ import annotations

import pytest

from tests.unit.test_change_edits import BASE, edit, runs, traced


def rows(code: str) -> dict[str, str]:
    """layer -> its traced output ("64x8x8")."""
    return {line.split()[0]: line.split("-> ")[1].split()[0] for line in traced(code)[1].splitlines()}


def test_a_conv_gets_the_stride_asked_for_and_the_map_after_it_shrinks():
    code, note = edit("change_downsampling", "conv2", BASE, "stride 2")
    assert note == "downsampling of conv2: stride 1 -> 2"
    assert "self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False, stride=2)" in code
    assert traced(code)[0] is None and rows(code)["conv2"] == "64x8x8" and rows(code)["conv3"] == "128x4x4"
    runs(code)
    positional = BASE.replace("nn.Conv2d(32, 64, 3, padding=1, bias=False)", "nn.Conv2d(32, 64, 3, 2, 1, bias=False)")
    back, note = edit("change_downsampling", "conv2", positional, "stride 1")
    assert "nn.Conv2d(32, 64, 3, 1, 1, bias=False)" in back and note.endswith("stride 2 -> 1")
    assert rows(back)["conv2"] == "64x16x16"


def test_the_shortcut_of_a_residual_sum_is_strided_with_its_conv():
    """CIFAR-10 (seed 43, at 4a91357): the Generator strided such a conv and not its shortcut, 4 times."""
    residual, _ = edit("add_residual", "conv2")
    code, note = edit("change_downsampling", "conv2", residual, "stride 2")
    assert note.endswith("its shortcut self.conv2_shortcut: stride 1 -> 2")
    assert "self.conv2_shortcut = nn.Conv2d(32, 64, 1, bias=False, stride=2)" in code
    assert traced(code)[0] is None and rows(code)["conv2"] == rows(code)["conv2_shortcut"] == "64x8x8"
    runs(code)
    back, note = edit("change_downsampling", "conv2", code, "stride 1")  # and undone, both sides
    assert note.endswith("stride 2 -> 1") and traced(back)[0] is None and rows(back)["conv2_shortcut"] == "64x16x16"


def test_an_identity_shortcut_becomes_a_strided_one_by_one_conv():
    same = BASE.replace("nn.Conv2d(32, 64, 3, padding=1, bias=False)", "nn.Conv2d(32, 32, 3, padding=1, bias=False)"
                        ).replace("nn.BatchNorm2d(64)", "nn.BatchNorm2d(32)").replace("nn.Conv2d(64, 128", "nn.Conv2d(32, 128")
    residual, _ = edit("add_residual", "conv2", same)
    assert "x = (self.conv2(x) + x)" in residual
    code, note = edit("change_downsampling", "conv2", residual, "stride 2")
    assert "x = (self.conv2(x) + self.conv2_shortcut(x))" in code
    assert "self.conv2_shortcut = nn.Conv2d(32, 32, 1, stride=2, bias=False)" in code and "identity shortcut" in note
    assert traced(code)[0] is None and runs(code) == runs(residual) + 32 * 32


@pytest.mark.parametrize("arguments", ["", "stride 3", "by pooling", "2"])
def test_only_a_stride_of_one_or_two_is_made(arguments):
    assert edit("change_downsampling", "conv2", BASE, arguments) == (None, "")


def test_a_map_from_before_the_conv_read_after_it_leaves_the_change_to_the_generator():
    """`identity = x` taken before conv2 and added after it: a stride on conv2 alone would break the sum."""
    blocky = BASE.replace("        x = self.conv2(x)\n", "        identity = self.conv2_shortcut(x)\n        x = self.conv2(x)\n"
                          ).replace("        x = self.bn2(x)\n        x = F.relu(x)\n",
                                    "        x = self.bn2(x)\n        x = F.relu(x + identity)\n").replace(
        "        self.bn2 = nn.BatchNorm2d(64)\n", "        self.bn2 = nn.BatchNorm2d(64)\n"
        "        self.conv2_shortcut = nn.Conv2d(32, 64, 1, bias=False)\n")
    assert traced(blocky)[0] is None
    assert edit("change_downsampling", "conv2", blocky, "stride 2") == (None, "")
    assert edit("change_downsampling", "pool", BASE, "stride 1") == (None, "")  # called twice: the Generator's
    assert edit("change_downsampling", "conv2", BASE, "stride 1") == (None, "")  # its stride already
