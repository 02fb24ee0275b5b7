"""The AST policy: what a net needs passes, what an escape needs is rejected with a reason."""
import pytest

import prompts
from tests.conftest import candidate
from tools.static_check import check_source

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
NET = """
class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)
{extra}
    def forward(self, x):
        return self.fc(x.mean((2, 3)))
"""


def src(top: str = "", extra: str = "") -> str:
    return HEADER + top + NET.format(extra=extra)


def test_seed_and_good_candidates_pass():
    assert check_source(prompts.seed_source("digits")) is None
    assert check_source(candidate("ok_tiny")) is None
    assert check_source(src(extra="    def _make_layer(self, c):\n        return self._helper(c)\n")) is None
    assert check_source("from __future__ import annotations\n" + src("import math\nfrom typing import List\n")) is None


def test_syntax_error_names_the_line():
    v = check_source(candidate("syntax_error"))
    assert v.kind == "syntax_error" and "candidate.py:7" in v.reason


def test_missing_net_is_invalid():
    v = check_source(candidate("missing_net"))
    assert v.kind == "invalid_code" and "class Net" in v.reason


@pytest.mark.parametrize("code,reason", [
    ("import os\n", "import of 'os'"),
    ("import subprocess as sp\n", "import of 'subprocess'"),
    ("from socket import socket\n", "import from 'socket'"),
    ("import numpy as np\n", "import of 'numpy'"),
    ("from torch import *\n", "'from torch import *'"),
    ("x = eval('1')\n", "'eval'"),
    ("exec('import os')\n", "'exec'"),
    ("f = open('/etc/passwd')\n", "'open'"),
    ("m = __import__('os')\n", "'__import__'"),
    ("g = getattr(torch, 'load')\n", "'getattr'"),
    ("k = ().__class__\n", "dunder attribute '.__class__'"),
    ("o = torch.os\n", "'.os'"),
    ("w = torch.load('x.pt')\n", "'.load'"),
    ("p = torch._C\n", "private attribute '._C'"),
    ("torch.manual_seed = print\n", "imported module 'torch'"),
    ("nn.functional.relu = lambda x: x\n", "imported module 'nn'"),
    ("s = '{0.__globals__}'.format(print)\n", "format strings"),
    ("exit(0)\n", "'exit'"),
    ("b = __builtins__\n", "'__builtins__'"),
])
def test_escapes_are_rejected(code, reason):
    v = check_source(src(code))
    assert v is not None and v.kind == "invalid_code", code
    assert reason in v.reason and "candidate.py:" in v.reason


def test_main_guard_is_allowed():
    assert check_source(src() + "\nif __name__ == '__main__':\n    print(Net())\n") is None


DROPPED_LAYER = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(x)
        x = self.conv2(x)
        return self.fc(x.flatten(1))
'''


def test_layers_used_but_never_defined_are_named_with_what_is_defined():
    v = check_source(DROPPED_LAYER)
    assert v is not None and v.kind == "invalid_code"
    assert "Net uses self.pool, self.conv2 but never assigns them" in v.reason
    assert "candidate.py:13" in v.reason and "defines: conv1, fc" in v.reason


@pytest.mark.parametrize("fix", [
    "        self.pool = nn.AdaptiveAvgPool2d(1)\n        self.conv2 = nn.Identity()\n",
    "        self.add_module('pool', nn.AdaptiveAvgPool2d(1))\n        self.register_module('conv2', nn.Identity())\n",
])
def test_defined_layers_pass(fix):
    src = DROPPED_LAYER.replace("        self.fc = nn.Linear", fix + "        self.fc = nn.Linear")
    assert check_source(src) is None


def test_module_methods_and_local_base_classes_are_not_flagged():
    src = DROPPED_LAYER.replace("x = self.pool(x)", "x = x if self.training else x").replace(
        "x = self.conv2(x)", "x = self.helper(x)") + "\n    def helper(self, x):\n        return x\n"
    assert check_source(src) is None
    derived = DROPPED_LAYER.replace("class Net(nn.Module)", "class Base(nn.Module):\n    pass\n\n\nclass Net(Base)")
    assert check_source(derived) is None  # Base might define them: left to the pre-flight
