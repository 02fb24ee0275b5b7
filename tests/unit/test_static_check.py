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
