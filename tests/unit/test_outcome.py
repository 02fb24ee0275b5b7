"""Classification of raw sandbox facts into the outcome taxonomy."""
import pytest

from sandbox.base import Limits, RawResult, parse_result
from tools.outcome import KINDS, Outcome, candidate_location, classify, human

LIM = Limits(memory_bytes=1024**3, timeout_s=30)
TB = 'Traceback (most recent call last):\n  File "candidate.py", line 17, in forward\n    return self.fc(x)\n'


def err(phase, exc, msg, tb=TB):
    return RawResult(exit_code=0, result={"status": "error", "phase": phase, "exc_type": exc, "message": msg,
                                          "traceback": tb, "params": 10})


@pytest.mark.parametrize("raw,kind,needle", [
    (RawResult(infra_error="docker: engine gone"), "sandbox_error", "engine gone"),
    (RawResult(timed_out=True, exit_code=137), "timeout", "30 s wall-clock limit"),
    (RawResult(oom_killed=True, exit_code=137), "host_oom", "1024 MiB memory limit"),
    (RawResult(exit_code=137, stderr_tail="Killed"), "host_oom", "SIGKILL"),
    (err("import", "SyntaxError", "invalid syntax (candidate.py, line 3)"), "syntax_error", "invalid syntax"),
    (err("interface", "InterfaceError", "Net returned (2, 5)"), "interface_error", "(2, 5)"),
    (err("build", "TypeError", "__init__() got an unexpected keyword argument 'in_channels'"), "interface_error",
     "must accept"),
    (err("forward", "RuntimeError", "mat1 and mat2 shapes cannot be multiplied (2x2048 and 8192x10)"), "shape_error",
     "candidate.py:17 in forward: return self.fc(x)"),
    (err("forward", "RuntimeError", "Given input size: (2048x1x1). Calculated output size: (2048x0x0). Output size is too small"),
     "shape_error", "Calculated output size"),
    (err("train", "OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"), "gpu_oom", "GPU out of memory"),
    (err("build", "RuntimeError", "[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"),
     "host_oom", "host out of memory"),
    (err("forward", "ZeroDivisionError", "division by zero"), "runtime_error", "ZeroDivisionError"),
    (err("build", "SystemExit", "0"), "runtime_error", "end the process"),
    (err("data", "FileNotFoundError", "train_x.npy"), "sandbox_error", "harness fault"),
    (RawResult(exit_code=0, result={"status": "diverged", "message": "training loss became nan at step 10/20"}),
     "diverged", "nan"),
    (RawResult(exit_code=1, stderr_tail="RuntimeError: CUDA out of memory"), "gpu_oom", "GPU"),
    (RawResult(exit_code=0, forged_lines=2), "runtime_error", "2 forged result line"),
])
def test_classify(raw, kind, needle):
    out = classify(raw, LIM)
    assert out.kind == kind
    assert needle in out.diagnosis
    assert len(out.diagnosis) <= 300


def test_ok_result_keeps_metrics():
    raw = RawResult(exit_code=0, wall_seconds=3.0, result={"status": "ok", "accuracy": 0.5, "params": 95000,
                                                           "flops": 12_100_000, "train_seconds": 2.0})
    out = classify(raw, LIM)
    assert out.ok and out.accuracy == 0.5 and out.seconds == 3.0
    assert out.summary() == "outcome: ok  accuracy: 0.500  params: 95k  flops: 12.1M  seconds: 3.0"
    assert Outcome.from_dict(out.to_dict()) == out


def test_every_kind_is_reachable_by_name():
    assert set(KINDS) == {"ok", "syntax_error", "invalid_code", "interface_error", "shape_error", "runtime_error",
                          "host_oom", "gpu_oom", "timeout", "diverged", "sandbox_error"}


def test_parse_result_requires_the_nonce():
    good = 'NASLOOP_RESULT {"status": "ok", "accuracy": 0.4, "nonce": "abc"}'
    bad = 'NASLOOP_RESULT {"status": "ok", "accuracy": 0.99, "nonce": "xyz"}'
    assert parse_result(f"{bad}\n{good}\n", "abc") == ({"status": "ok", "accuracy": 0.4}, 1)
    assert parse_result(f"{bad}\n", "abc") == (None, 1)
    assert parse_result(good, "") == (None, 1)


def test_location_and_human():
    assert candidate_location(TB) == "candidate.py:17 in forward: return self.fc(x)"
    assert human(95_000) == "95k" and human(12_100_000) == "12.1M" and human(999) == "999"
