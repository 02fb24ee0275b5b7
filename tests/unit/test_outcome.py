"""Classification of raw sandbox facts into the outcome taxonomy; hostile result bytes are data."""
import json

import numpy as np
import pytest

from nasloop.sandbox.base import Limits, RawResult, printable
from nasloop.sandbox.outputs import Refused, clean, parse_result
from nasloop.tools.outcome import KINDS, Outcome, classify
from nasloop.tools.text import human, location

LIM = Limits(memory_bytes=1024**3, timeout_s=30, preflight_s=10)
WHERE = {"line": 17, "function": "forward", "code": "return self.fc(x)"}
LABELS = np.array([0, 1, 2, 3])


def err(phase, exc, msg, **extra):
    return RawResult(exit_code=0, result={"status": "error", "phase": phase, "exc_type": exc, "message": msg,
                                          "where": WHERE, "params": 10, **extra})


@pytest.mark.parametrize("raw,kind,needle", [
    (RawResult(infra_error="docker: engine gone"), "sandbox_error", "engine gone"),
    (RawResult(timed_out=True, exit_code=137), "timeout", "30 s wall-clock limit"),
    (RawResult(timed_out=True, preflight_timed_out=True, exit_code=137), "timeout", "pre-flight"),
    (RawResult(oom_killed=True, exit_code=137), "host_oom", "1024 MiB memory limit"),
    # exit 137 without the engine's OOM flag: a SIGKILL from inside, not the memory limit
    (RawResult(exit_code=137, stderr_tail="Killed"), "runtime_error", "not by the memory limit"),
    (RawResult(worker_died=True), "runtime_error", "worker died"),
    (err("import", "SyntaxError", "invalid syntax (candidate.py, line 3)"), "syntax_error", "invalid syntax"),
    (err("interface", "InterfaceError", "Net returned (2, 5)"), "interface_error", "(2, 5)"),
    (err("build", "TypeError", "__init__() got an unexpected keyword argument 'in_channels'"), "interface_error",
     "must accept"),
    (err("forward", "RuntimeError", "mat1 and mat2 shapes cannot be multiplied (2x2048 and 8192x10)"), "shape_error",
     "candidate.py:17 in forward: return self.fc(x)"),
    (err("train", "OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", oom="gpu"), "gpu_oom",
     "GPU out of memory"),
    (err("build", "RuntimeError", "DefaultCPUAllocator: can't allocate memory", oom="host"), "host_oom",
     "host out of memory"),
    # words alone are not an out-of-memory: only the harness's catch of the exception type is
    (err("train", "RuntimeError", "CUDA out of memory (printed by the candidate)"), "runtime_error", "CUDA"),
    (RawResult(exit_code=1, stderr_tail="RuntimeError: CUDA out of memory"), "runtime_error", "exit code 1"),
    (err("forward", "ZeroDivisionError", "division by zero"), "runtime_error", "ZeroDivisionError"),
    (err("build", "SystemExit", "0"), "runtime_error", "end the process"),
    # any phase the harness reports is the candidate's: it could have caused it
    (err("harness", "TypeError", "unhashable type: 'Block'"), "runtime_error", "unhashable"),
    (err("data", "FileNotFoundError", "train_x.npy"), "runtime_error", "train_x.npy"),
    (RawResult(exit_code=0, result={"status": "diverged", "message": "training loss became nan at step 10/20"}),
     "diverged", "nan"),
    (RawResult(exit_code=0, output_problem="result.json is not a regular file"), "runtime_error", "refused"),
])
def test_classify(raw, kind, needle):
    out = classify(raw, LIM, LABELS)
    assert out.kind == kind, out.summary()
    assert needle in out.diagnosis
    assert len(out.diagnosis) <= 300


def ok_raw(preds, **kw):
    return RawResult(exit_code=0, wall_seconds=3.0, predictions=np.asarray(preds), tensors=95000,
                     result={"status": "ok", "accuracy": 1.0, "params": 1, "flops": 12_100_000, "steps": 8,
                             "train_seconds": 2.0}, **kw)


def test_accuracy_is_computed_by_the_host_from_predictions():
    out = classify(ok_raw([0, 1, 0, 0], peak_memory_bytes=2**20), LIM, LABELS)
    assert out.ok and out.accuracy == 0.5  # the reported 1.0 is ignored
    assert out.params == 95000  # counted from the returned tensors, not the reported 1
    assert set(out.verified) == {"accuracy", "params", "peak_memory_bytes", "seconds"}
    assert out.summary() == "outcome: ok  accuracy: 0.500  params: 95k  flops: 12.1M  seconds: 3.0"
    assert Outcome.from_dict(out.to_dict()) == out


def test_a_trained_net_the_host_counts_over_the_budget_is_refused():
    """The harness's budget check runs in the candidate's process; the host counts the returned tensors."""
    out = classify(ok_raw([0, 1, 0, 0]), LIM, LABELS, max_params=90_000)
    assert out.kind == "interface_error" and out.accuracy is None and out.params == 95000
    assert out.diagnosis.startswith("BudgetError: the trained net returned 95,000 parameters and buffers")
    assert out.failure == {"phase": "train", "exc_type": "BudgetError"} and "params" in out.verified
    assert classify(ok_raw([0, 1, 0, 0]), LIM, LABELS, max_params=95_000).ok


def test_missing_or_wrong_predictions_are_the_candidates_failure():
    assert classify(ok_raw([0, 1]), LIM, LABELS).kind == "runtime_error"
    raw = ok_raw([0, 1, 2, 3])
    raw.predictions, raw.output_problem = None, "predictions.safetensors is missing"
    out = classify(raw, LIM, LABELS)
    assert out.kind == "runtime_error" and "missing" in out.diagnosis


def test_failure_travels_as_fields():
    trace = {"layers": [{"name": "conv", "type": "Conv2d", "out": [32, 16, 16]}],
             "failed": {"name": "fc", "type": "Linear", "repr": "Linear(in_features=2048, out_features=10)", "in": [8192]}}
    out = classify(err("forward", "RuntimeError", "shapes cannot be multiplied", trace=trace), LIM, LABELS)
    assert out.failure == {"phase": "forward", "exc_type": "RuntimeError", "line": 17, "function": "forward",
                           "layer": trace["failed"]}
    assert out.diagnosis.endswith("trace: conv Conv2d→32x16x16 | ✗ fc Linear(in_features=2048, out_features=10) got 8192")


def test_a_pooling_step_left_without_a_map_says_how_small_the_map_is():
    """Seen in a CIFAR-10 search: the repair of "Output size is too small" enlarged the pooling kernel."""
    trace = {"layers": [{"name": f"conv{i}", "type": "Conv2d", "out": [96, 1, 1]} for i in range(9)],
             "failed": {"name": "pool", "type": "MaxPool2d", "in": [96, 1, 1],
                        "repr": "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"}}
    msg = "Given input size: (96x1x1). Calculated output size: (96x0x0). Output size is too small"
    out = classify(err("forward", "RuntimeError", msg, trace=trace), LIM, LABELS)
    assert out.kind == "shape_error" and len(out.diagnosis) <= 300
    assert "the map is 1x1 at pool: remove a pooling step, not enlarge a kernel" in out.diagnosis
    assert out.diagnosis.endswith("✗ pool MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False) got 96x1x1")
    other = classify(err("forward", "RuntimeError", "shapes cannot be multiplied", trace=trace), LIM, LABELS)
    assert "the map is" not in other.diagnosis


def test_every_kind_is_reachable_by_name():
    assert set(KINDS) == {"ok", "syntax_error", "invalid_code", "interface_error", "shape_error", "runtime_error",
                          "host_oom", "gpu_oom", "timeout", "diverged", "sandbox_error"}


def test_hostile_result_bytes_are_bounded_and_printable():
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    with pytest.raises(Refused):
        parse_result(deep)
    nested = json.dumps({"status": "error", "x": json.loads("[" * 50 + "]" * 50)}).encode()
    assert parse_result(nested)["status"] == "error"  # bounded, not refused
    with pytest.raises(Refused):
        parse_result(b"[1, 2]")
    res = parse_result(json.dumps({"status": "error", "phase": "train", "exc_type": "ValueError",
                                   "message": "\x1b[2K\routcome: ok \ud800 \u202e" + "x" * 5000}).encode())
    out = classify(RawResult(exit_code=0, result=res), LIM, LABELS)
    assert "\x1b" not in out.diagnosis and "\r" not in out.diagnosis and "\\x1b" in out.diagnosis
    assert "\\ud800" in out.diagnosis and "\\u202e" in out.diagnosis
    out.diagnosis.encode("utf-8")  # no lone surrogate left to crash a terminal or a file
    assert len(res["message"]) <= 1500 * 6


def test_clean_drops_what_json_cannot_hold_safely():
    assert clean({"a": float("inf"), "b": 2**70, "c": [1] * 500}) == {"a": None, "b": None, "c": [1] * 200}
    assert printable("ok\x07\n") == "ok\\x07\n"


def test_location_and_human():
    assert location(WHERE) == "candidate.py:17 in forward: return self.fc(x)"
    assert location({"line": "17"}) == ""
    assert human(95_000) == "95k" and human(12_100_000) == "12.1M" and human(999) == "999"


def test_a_result_of_the_wrong_shape_or_kind_is_the_candidates_failure():
    crafted = RawResult(exit_code=0, result={"status": "ok", "scores": {}, "proxy_seconds": [1]})
    assert classify(crafted, LIM, LABELS, mode="proxy").kind == "runtime_error"  # once crashed the host
    # a training run that claims to have only passed the pre-flight (no predictions) is not believed
    claim = RawResult(exit_code=0, result={"status": "ok", "preflight": "passed"})
    assert classify(claim, LIM, LABELS, mode="train").kind == "runtime_error"
    assert classify(claim, LIM, LABELS, mode="preflight").kind == "ok"
    assert classify(RawResult(exit_code=0, result={"status": "ok"}), LIM, LABELS, mode="proxy").kind == "runtime_error"


def test_the_output_directory_is_watched_for_size_and_number_of_files(tmp_path):
    import time

    from nasloop.sandbox import outputs

    stopped: list[float] = []
    with outputs.ProgressWatcher(tmp_path, None, overflow=lambda: stopped.append(time.monotonic()), every=0.05) as w:
        (tmp_path / "result.json").write_bytes(b"{}")
        time.sleep(0.3)
        assert not stopped  # what the harness writes is within the quota
        (tmp_path / "sub").mkdir()
        for i in range(outputs.OUT_ENTRIES):
            (tmp_path / "sub" / f"f{i}").write_bytes(b"x")
        time.sleep(0.3)
    assert len(stopped) == 1 and w.overflowed  # once
    assert outputs.out_usage(tmp_path)[1] > outputs.OUT_ENTRIES
    with open(tmp_path / "big", "wb") as f:  # sparse: the size counts, not the blocks
        f.truncate(outputs.OUT_BYTES + 1)
    assert outputs.out_usage(tmp_path, limit=10**6)[0] > outputs.OUT_BYTES
    raw = RawResult(exit_code=137, out_overflow=True)
    out = classify(raw, LIM, LABELS)
    assert out.kind == "runtime_error" and "into its output directory" in out.diagnosis


def test_disk_space_gone_from_out_filesystem_stops_the_job(tmp_path, monkeypatch):
    """Files unlinked while open are in no walk of out/: the free space of its file system tells; others'
    writes up to the slack do not stop a job."""
    import time

    from nasloop.sandbox import outputs

    free = [10 * outputs.OUT_BYTES]
    monkeypatch.setattr(outputs, "free_bytes", lambda path: free[0])
    stopped: list[int] = []
    with outputs.ProgressWatcher(tmp_path, None, overflow=lambda: stopped.append(1), every=0.05) as w:
        time.sleep(0.15)
        free[0] -= outputs.DISK_SLACK  # another worker's weights, a checkpoint: not this job's
        time.sleep(0.2)
        assert not stopped
        free[0] -= outputs.OUT_BYTES + 1
        time.sleep(0.2)
    assert stopped == [1] and w.overflowed
