"""nasloop stopped from outside (a `timeout -s TERM` wrapper, a closed terminal) leaves nothing behind:
no container, no job directory; the deadline inside the container holds even if nasloop dies hard."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasloop.sandbox.docker_sandbox import CONTAINER_LABEL

pytestmark = pytest.mark.integration


def ours(client, before: set[str]) -> list:
    return [c for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}) if c.id not in before]


def wait_for_training(tmp: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until a job's out/ holds the harness's training marker: a candidate is inside a container now."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(tmp.glob("nasloop-job*/**/out/training")):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError("no candidate started training")


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_search_stopped_by_timeout_wrapper_leaves_nothing(docker_engine, tmp_path, warm):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = {c.id for c in docker_engine.containers.list(all=True)}
    env = {**os.environ, "TMPDIR": str(tmp), "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "x"}
    cmd = ["timeout", "-s", "TERM", "600", sys.executable, "-m", "nasloop.agent.app.cli", "search", "--dataset", "digits",
           "--train-subset", "512", "--min-steps", "5000", "--llm", "openai:gpt-4o-mini", "--iterations", "1",
           "--runs-dir", str(tmp_path / "runs"), *([] if warm else ["--no-warm"])]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_training(tmp, proc)
    assert ours(docker_engine, before)
    proc.send_signal(signal.SIGTERM)  # what `timeout` does when its time is up: it forwards TERM to nasloop
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Resume with: nasloop search --resume" in err and "Traceback" not in err
    assert ours(docker_engine, before) == []
    assert list(tmp.iterdir()) == []  # no job directory, no worker directories
    # the seed was stopped under training: it has no outcome (a resume trains it), not a false runtime error
    recorded = [line for f in (tmp_path / "runs").glob("*/results.jsonl") for line in f.read_text().splitlines()]
    assert recorded == []


def test_the_deadline_inside_holds_when_nasloop_is_killed(docker_engine, tmp_path):
    """SIGKILL cannot be handled: the container's own kill-timer ends the candidate anyway."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = {c.id for c in docker_engine.containers.list(all=True)}
    cand = Path(__file__).resolve().parent.parent / "candidates" / "infinite_forward.py"
    proc = subprocess.Popen([sys.executable, "-m", "nasloop.agent.app.cli", "evaluate", str(cand), "--dataset", "digits",
                             "--train-subset", "256", "--timeout", "8", "--no-warm"],
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    # until the container runs: killed between create and start, its owner leaves a container that never ran
    # the candidate (status "created", removed with the orphans when nasloop next starts), and the kill-timer
    # inside, which this test is about, has not been started either
    while not any(c.status == "running" for c in ours(docker_engine, before)) and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.communicate()
    left = ours(docker_engine, before)
    assert left, "the container should have outlived its owner for this test"
    time.sleep(8 + 10 + 5)  # the harness's limit plus the kill-timer's margin
    for c in left:
        c.reload()
        assert c.status == "exited", c.status
        c.remove(force=True)


def test_ctrl_c_during_an_llm_call_exits_at_once_with_the_resume_hint(docker_engine, tmp_path):
    """LangGraph runs a node in a worker thread while the CLI streams its progress: Ctrl-C must not wait
    for the LLM's reply to finish."""
    from nasloop.agent.llm.models import resolve_model

    resolve_model("qwen2.5-coder-0.5b")
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "nasloop.agent.app.cli", "search", "--dataset", "digits",
                             "--train-subset", "256", "--min-steps", "5", "--llm", "llamacpp:qwen2.5-coder-0.5b",
                             "--max-tokens", "1536", "--iterations", "1", "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*/results.jsonl")):  # the seed is recorded
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(2)  # the Improver is generating now
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.time() - sent < 15, "Ctrl-C waited for the LLM call"
    assert proc.returncode == 130 and "Resume with: nasloop search --resume" in err, err[-1500:]
