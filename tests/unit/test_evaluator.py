"""The evaluator's own logic: the static check costs no sandbox run; the LangChain tool is the same call."""
from sandbox.base import Limits, RawResult
from tests.conftest import candidate
from tools.datasets import PreparedData
from tools.evaluator import Evaluator, TrainSettings

DATA = PreparedData(name="digits", path=None, num_classes=10, in_channels=1, image_size=32, train_images=10,  # type: ignore[arg-type]
                    test_images=5, flip=False, mean=(0.3,), std=(0.3,))


class RecordingSandbox:
    """Unit-test stand-in for a backend: returns a canned harness result and remembers the job."""

    limits = Limits()

    def __init__(self):
        self.jobs = []

    def run(self, job):
        self.jobs.append(job)
        return RawResult(exit_code=0, wall_seconds=1.0, result={"status": "ok", "accuracy": 0.5, "params": 7})


def test_static_violations_cost_no_sandbox_run():
    sb = RecordingSandbox()
    out = Evaluator(DATA, sb).evaluate(candidate("banned_import"))
    assert out.kind == "invalid_code" and out.stage == "static" and sb.jobs == []


def test_harness_config_carries_the_recipe_and_the_task():
    sb = RecordingSandbox()
    ev = Evaluator(DATA, sb, TrainSettings(min_steps=7, max_params=1000, preflight=False))
    out = ev.evaluate(candidate("ok_tiny"))
    cfg = sb.jobs[0].config
    assert out.ok and out.accuracy == 0.5
    assert (cfg["min_steps"], cfg["max_params"], cfg["preflight"], cfg["in_channels"], cfg["flip"]) == (7, 1000, False, 1, False)
    assert sb.jobs[0].nonce and len(sb.jobs[0].nonce) == 32
    facts = ev.task_facts()
    assert facts["description"].startswith("digits: 10 classes, input tensors of shape (B, 1, 32, 32)")


def test_langchain_tool_is_the_same_evaluation():
    tool = Evaluator(DATA, RecordingSandbox()).as_tool()
    assert tool.name == "evaluate_network"
    assert tool.invoke({"source": candidate("ok_tiny")})["accuracy"] == 0.5
    assert tool.invoke({"source": candidate("syntax_error")})["kind"] == "syntax_error"
