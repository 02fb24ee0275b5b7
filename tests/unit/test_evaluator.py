"""The evaluator's own logic: the static check costs no sandbox run; the LangChain tool is the same call."""
import tempfile
from pathlib import Path

import numpy as np

from nasloop.sandbox.base import Limits, RawResult
from tests.conftest import candidate
from nasloop.tools.datasets import PreparedData
from nasloop.tools.evaluator import Evaluator, TrainSettings

_DIR = Path(tempfile.mkdtemp(prefix="nasloop-test-data-"))
np.save(_DIR / "test_y.npy", np.array([0, 1, 2, 3, 4]))
DATA = PreparedData(name="digits", path=_DIR, num_classes=10, in_channels=1, image_size=32, train_images=10,
                    test_images=5, flip=False, mean=(0.3,), std=(0.3,))


class RecordingSandbox:
    """Unit-test stand-in for a backend: returns a canned harness result and remembers the job."""

    limits = Limits()

    def __init__(self):
        self.jobs = []

    def run(self, job):
        self.jobs.append(job)
        return RawResult(exit_code=0, wall_seconds=1.0, result={"status": "ok", "accuracy": 0.9, "params": 7, "steps": 3},
                         predictions=np.array([0, 1, 0, 0, 4]), tensors=7)


def test_static_violations_cost_no_sandbox_run():
    sb = RecordingSandbox()
    out = Evaluator(DATA, sb).evaluate(candidate("banned_import"))
    assert out.kind == "invalid_code" and out.stage == "static" and sb.jobs == []


def test_harness_config_carries_the_recipe_and_the_task():
    sb = RecordingSandbox()
    ev = Evaluator(DATA, sb, TrainSettings(min_steps=7, max_params=1000, preflight=False))
    out = ev.evaluate(candidate("ok_tiny"))
    cfg = sb.jobs[0].config
    assert out.ok and out.accuracy == 0.6  # scored by the host against its labels, not the reported 0.9
    assert sb.jobs[0].data_dir == _DIR / "sandbox"  # the sandbox's view: no test labels
    assert (cfg["min_steps"], cfg["max_params"], cfg["preflight"], cfg["in_channels"], cfg["flip"]) == (7, 1000, False, 1, False)
    facts = ev.task_facts()
    assert facts["description"].startswith("digits: 10 classes, input tensors of shape (B, 1, 32, 32)")


def test_langchain_tool_is_the_same_evaluation():
    tool = Evaluator(DATA, RecordingSandbox()).as_tool()
    assert tool.name == "evaluate_network"
    assert tool.invoke({"source": candidate("ok_tiny")})["accuracy"] == 0.6
    assert tool.invoke({"source": candidate("syntax_error")})["kind"] == "syntax_error"


def test_the_seed_sets_a_flop_budget_from_the_timeout_that_travels_to_the_harness():
    from nasloop.tools.outcome import Outcome

    sb = RecordingSandbox()  # timeout 600 s
    ev = Evaluator(DATA, sb)
    seed = Outcome("ok", accuracy=0.5, flops=20_000_000, train_seconds=10.0, seconds=14.0)
    assert ev.calibrate(seed) == 600_000_000  # 20M FLOPs x (half of 600 s / 10 s)
    ev.evaluate(candidate("ok_tiny"))
    assert sb.jobs[-1].config["max_flops"] == 600_000_000
    capped = Evaluator(DATA, sb, TrainSettings(max_flops=50_000_000))
    assert capped.calibrate(seed) == 50_000_000  # --max-flops caps it
    assert Evaluator(DATA, sb).calibrate(Outcome("runtime_error", "boom")) == 0  # a failed seed sets nothing
    tiny = Outcome("ok", accuracy=0.8, flops=150_000, train_seconds=2.5)  # mostly fixed costs: not scaled
    assert Evaluator(DATA, sb).calibrate(tiny) == 200_000_000
