"""The AST policy: what a net needs passes, what an escape needs is rejected with a reason."""
import json

import pytest

from nasloop import prompts
from nasloop.agent.llm.parsing import extract_code
from tests.conftest import CANDIDATES, ROOT, candidate
from nasloop.tools.static_check import check_source
from nasloop.tools.torch_names import fallback

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
    assert check_source(prompts.seed_source("default")) is None
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


# --- Bypasses found by an attacker: each passed the earlier policy, each is a real candidate program. ---

@pytest.mark.parametrize("name,reason,line", [
    ("policy_match_class_dunder", "class pattern may not read the dunder or private attribute '__class__'", 8),
    ("policy_match_mapping_dunder", "mapping pattern may not read the dunder or private key '__builtins__'", 8),
    ("policy_self_rebound", "binding the name 'self' is not allowed", 6),
    ("policy_torch_library", "'torch.library' is outside the namespaces a network needs", 6),
    ("policy_module_as_value", "the module 'torch' may only be used through its attributes", 5),
    ("policy_torch_from_file", "'.from_file'", 9),
    ("policy_tensor_tofile", "'.tofile'", 9),
    ("policy_tensor_private_self", "'._typed_storage' is not allowed: it is a private attribute of tensors", 14),
    ("policy_coroutine_frame", "async code is not allowed", 6),
    ("policy_typing_eval", "'typing.get_type_hints' is not allowed", 11),
    ("policy_update_wrapper", "'functools.update_wrapper' is not allowed", 15),
    ("policy_compilation_unit", "access to '.CompilationUnit' is not allowed", 6),
    ("policy_format_runtime", "'.format' is allowed only on a string literal", 6),
])
def test_policy_bypasses_are_rejected(name, reason, line):
    v = check_source(candidate(name))
    assert v is not None and v.kind == "invalid_code", name
    assert reason in v.reason and f"(candidate.py:{line})" in v.reason, v.reason


@pytest.mark.parametrize("code", [
    "self = torch\n",
    "for self in [1]:\n    pass\n",
    "with torch.no_grad() as cls:\n    pass\n",
    "import torch as self\n",
    "from torch import nn as cls\n",
    "y = (self := 1)\n",
    "y = [1 for self in range(2)]\n",
    "y = {cls: 1 for cls in range(2)}\n",
    "try:\n    pass\nexcept Exception as self:\n    pass\n",
    "match 1:\n    case self:\n        pass\n",
    "match [1]:\n    case [*cls]:\n        pass\n",
    "match {}:\n    case {**self}:\n        pass\n",
    "f = lambda x, self: self._C\n",
    "def f(x, self):\n    return self._C\n",
    "def f(x, *, cls=None):\n    return cls\n",
    "def f(*self):\n    return self\n",
    "def f(**cls):\n    return cls\n",
    "def f():\n    global self\n",
    "def self():\n    pass\n",
    "class cls:\n    pass\n",
    "self = 1\ndel self\n",
])
def test_self_and_cls_are_only_first_parameters(code):
    v = check_source(src(code))
    assert v is not None and v.kind == "invalid_code", code
    assert "candidate.py:" in v.reason and ("'self'" in v.reason or "'cls'" in v.reason or "global" in v.reason)


@pytest.mark.parametrize("code,reason", [
    ("p = torch.package.PackageImporter('x.pt')\n", "'torch.package' is outside"),
    ("o = torch.ops.aten.add\n", "'torch.ops' is outside"),
    ("d = torch.utils.data.DataLoader\n", "'torch.utils' is outside"),
    ("c = torch.utils.checkpoint.checkpoint\n", "'torch.utils' is outside"),
    ("from torch.utils import cpp_extension\n", "import from 'torch.utils'"),
    ("from torch import utils\n", "'torch.utils' is outside"),
    ("s = torch.jit.script\n", "access to '.script' is not allowed"),
    ("e = torch.export.export\n", "'torch.export' is outside"),
    ("g = torch.fx.symbolic_trace\n", "'torch.fx' is outside"),
    ("o = torch.onnx.export\n", "'torch.onnx' is outside"),
    ("d = torch.distributed.init_process_group\n", "'torch.distributed' is outside"),
    ("m = torch.multiprocessing.spawn\n", "multiprocessing"),
    ("b = torch.backends.cudnn\n", "'torch.backends' is outside"),
    ("a = torch.cuda.memory.CUDAPluggableAllocator\n", "'torch.cuda' is outside"),
    ("o = torch.overrides.TorchFunctionMode\n", "'torch.overrides' is outside"),
    ("s = torch.storage\n", "'.storage'"),
    ("s = torch.amp.autocast\n", "'torch.amp' is outside"),
    ("w = nn.modules.module.weakref\n", "'torch.nn.modules.module.weakref' is outside"),
    ("c = torch.compile(nn.Linear(1, 1))\n", "'.compile'"),
    ("torch.set_default_device('meta')\n", "'torch.set_default_device' is not allowed"),
    ("c = F.torch.set_default_device\n", "'torch.nn.functional.torch.set_default_device' is not allowed"),
    ("from torch import set_default_device\n", "'torch.set_default_device' is not allowed"),
    ("b = torch.frombuffer(bytearray(4), dtype=torch.uint8)\n", "'.frombuffer'"),
    ("m = torch.get_device_module()\n", "'.get_device_module'"),
    ("x = torch.ones(2).numpy()\n", "'.numpy'"),
    ("s = torch.ones(2).untyped_storage()\n", "'.untyped_storage'"),
    ("s = torch.ones(2).storage()\n", "'.storage'"),
    ("p = torch.ones(2).data_ptr()\n", "'.data_ptr'"),
    ("x = torch.ones(2).set_(torch.ones(3))\n", "'.set_'"),
    ("x = torch.ones(2).share_memory_()\n", "'.share_memory_'"),
    ("u = torch.UntypedStorage(4)\n", "'.UntypedStorage'"),
    ("h = nn.Module.register_forward_hook\n", "'torch.nn.Module.register_forward_hook' is not allowed: registering"),
    ("h = nn.modules.module.register_module_forward_hook(print)\n", "registering hooks or operators"),
    ("h = torch.Tensor.register_hook\n", "registering hooks or operators"),
    ("from typing import get_type_hints\n", "'typing.get_type_hints' is not allowed"),
    ("import functools\nd = functools.singledispatch\n", "'functools.singledispatch' is not allowed"),
    ("import functools\nw = functools.wraps(print)\n", "'functools.wraps' is not allowed"),
    ("m = torch\n", "the module 'torch' may only be used through its attributes"),
    ("m = nn.functional\n", "the module 'nn.functional' may only be used"),
    ("print(F)\n", "the module 'F' may only be used"),
    ("import math\nxs = [math]\n", "the module 'math' may only be used"),
    ("async def f():\n    pass\n", "async code"),
    ("def g():\n    yield 1\nf = g().gi_frame\n", "'.gi_frame'"),
    ("def g():\n    yield 1\nb = g().cr_frame.f_builtins\n", "'.f_builtins'"),
    ("match 1:\n    case int(_x=y):\n        pass\n", "private attribute '_x'"),
    ("match {}:\n    case {'_x': y}:\n        pass\n", "private key '_x'"),
    ("from torch.nn import Conv2d\nConv2d.forward = print\n", "imported name 'Conv2d'"),
    ("from torch.nn import functional as nn\n", "the name 'nn' is imported as two different objects"),
])
def test_namespaces_outside_the_allowlist_are_rejected(code, reason):
    v = check_source(src(code))
    assert v is not None and v.kind == "invalid_code", code
    assert reason in v.reason and "candidate.py:" in v.reason, v.reason


@pytest.mark.parametrize("code", [
    "n = torch.linalg.norm(torch.ones(2))\n",
    "f = torch.fft.fft2(torch.ones(2, 2))\n",
    "e = torch.special.erf(torch.ones(2))\n",
    "class STE(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n        return x.sign()\n",
    "w = nn.utils.parametrizations.weight_norm(nn.Linear(2, 2))\n",
    "s = nn.utils.spectral_norm\n",
    "i = nn.init.kaiming_normal_\n",
    "from torch.nn import init\nz = init.zeros_\n",
    "from torch.nn import Conv2d\nc = Conv2d\n",  # an imported class is a value like any other
    "c = nn.modules.conv.Conv2d\n",
    "t = torch.Tensor\nd = torch.float32\ng = torch.Generator().manual_seed(0)\n",
    "x = torch.no_such_function\n",  # does not resolve on the host: fails at run time, with a reason
    "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n",  # a harmless query small models write
    "import math\nr = math.sqrt(2)\n",
    "import functools\np = functools.partial(F.relu, inplace=False)\nc = functools.lru_cache(maxsize=None)\n",
    "import typing\nT = typing.Optional[int]\nfrom typing import List, Tuple\n",
    "import collections\nd = collections.OrderedDict()\ni = collections.abc.Iterable\n",
    "import itertools\nc = list(itertools.chain([1], [2]))\n",
    "match (1, 2):\n    case (a, b):\n        pass\n    case {'k': v}:\n        pass\n"
    "    case complex(real=r):\n        pass\n",
])
def test_the_namespaces_a_network_needs_pass(code):
    assert check_source(src(code)) is None, check_source(src(code))


OWN_MODULE_API = """
        self.register_buffer("mask", torch.ones(1))
        self.register_parameter("scale", nn.Parameter(torch.ones(1)))
        self.register_module("head", nn.Identity())
        self.add_module("tail", nn.Identity())
        self._cache = {}
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @classmethod
    def build(cls, n):
        return cls._make(n)

    @classmethod
    def _make(cls, n):
        def block(self, c):
            return self._cache.get(c)
        return cls(n)

    @staticmethod
    def act(x):
        return F.relu(x)
"""


def test_the_module_api_on_self_stays_allowed():
    code = src().replace("        self.fc = nn.Linear(in_channels, num_classes)\n",
                         "        self.fc = nn.Linear(in_channels, num_classes)" + OWN_MODULE_API)
    assert "register_parameter" in code and check_source(code) is None, check_source(code)


def _recorded_replies() -> list[str]:
    """The code of every model reply recorded in tests/fixtures (generator and repair nodes)."""
    codes = []
    for trace in sorted((ROOT / "tests" / "fixtures").rglob("trace.jsonl")):
        for line in trace.read_text().splitlines():
            code, _ = extract_code(json.loads(line).get("response") or "")
            if code:
                codes.append(code)
    return codes


ATTACKS = {"banned_import", "fake_result", "fork_bomb", "network_attempt", "os_exit", "read_environment",
           "sys_exit", "write_outside_tmp", "missing_net", "syntax_error"}


def test_every_legitimate_network_in_the_repository_passes():
    nets = [*(ROOT / "prompts" / "seeds").glob("*.py"), *(ROOT / "bench" / "fixtures" / "proxy_nets").glob("*.py"),
            *(ROOT / "tests" / "fixtures").rglob("*.py"),
            *(p for p in CANDIDATES.glob("*.py") if p.stem not in ATTACKS and not p.stem.startswith(("policy_", "attack_", "warm_")))]
    assert len(nets) > 45
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in nets}
    sources.update({f"reply {i}": code for i, code in enumerate(_recorded_replies())})
    assert len(sources) > len(nets)
    verdicts = {name: check_source(code) for name, code in sources.items()}
    # Recorded replies with bracket slips stay syntax errors; nothing legitimate is invalid_code.
    assert not {n: v for n, v in verdicts.items() if v is not None and v.kind != "syntax_error"}
    assert sum(v is None for v in verdicts.values()) > 45


def test_attack_candidates_stay_rejected():
    for name in sorted(ATTACKS - {"syntax_error"}):
        v = check_source(candidate(name))
        assert v is not None and v.kind == "invalid_code", name


def test_without_torch_on_the_host_known_namespaces_are_still_refused():
    assert "'torch.utils'" in fallback(("torch", "utils", "data"))
    assert "'torch.load'" in fallback(("torch", "load"))
    assert fallback(("torch", "nn", "Conv2d")) is None


@pytest.mark.parametrize("body, hint", [
    ("        self.fc = nn.Linear(4, 2)\n", "write forward(self, x)"),  # the model stopped after __init__
    ("        self.fc = nn.Linear(4, 2)\n\n        def forward(self, x):\n            return self.fc(x)\n",
     "candidate.py:10 is inside another method"),
])
def test_a_net_without_forward_is_refused_before_any_sandbox(body, hint):
    """nn.Module's own forward raises NotImplementedError, which the pre-flight takes for a meta-device limit:
    without this check the net failed in training, with no repair (seed 45 of a CIFAR-10 search)."""
    code = ("import torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n"
            "    def __init__(self, num_classes=10, in_channels=3):\n        super().__init__()\n" + body)
    v = check_source(code)
    assert v is not None and v.kind == "invalid_code" and "Net has no forward method" in v.reason, v
    assert hint in v.reason
    assert check_source(code.replace("class Net(nn.Module)", "class Net(nn.Sequential)")) is None  # inherited
