"""Real searches: the bundled 0.5B GGUF through llama-cpp-python, the Docker sandbox, real digits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasloop.agent.runs.store import RunStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ["--dataset", "digits", "--train-subset", "512", "--min-steps", "30", "--max-tokens", "1024",
         "--llm", "llamacpp:qwen2.5-coder-0.5b"]


def nasloop(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nasloop.agent.app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def only_run(runs: Path) -> Path:
    dirs = [p for p in runs.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def model_ready():
    """Assemble (once) and verify the bundled 0.5B model."""
    from nasloop.agent.llm.models import resolve_model

    return resolve_model("qwen2.5-coder-0.5b")


def expected_calls(results: list[dict]) -> list[tuple[int, str]]:
    """The (iteration, node) of each iteration's Improver and Generator calls, sorted: no Generator call where
    the loop made a mechanical change itself (fix `change`: it is in the candidate's fixes, at attempt 0)."""
    made = {r["iteration"] for r in results for f in r.get("fixes") or [] if (f["name"], f.get("attempt")) == ("change", 0)}
    return sorted((r["iteration"], n) for r in results[1:] for n in ("generate", "improve")
                  if n == "improve" or r["iteration"] not in made)


def test_a_search_killed_mid_iteration_resumes_and_finishes(docker_engine, model_ready, tmp_path):
    """A real three-iteration search, killed with SIGKILL mid-iteration 2 and resumed: nothing lost, nothing
    done twice, and the finished run has what a user reads (one search, where two cost CI ~100 s more)."""
    proc = nasloop("search", *SMALL, "--iterations", "3", "--runs-dir", str(tmp_path), start_new_session=True)
    deadline = time.time() + 600
    run = None
    while time.time() < deadline:  # kill mid-iteration 2: after its Improver reply is recorded
        time.sleep(0.5)
        dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
        if dirs and (dirs[0] / "trace.jsonl").exists():
            run = dirs[0]
            if any(t["iteration"] == 2 for t in RunStore.open(run).trace()):
                break
        assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert run is not None
    before = RunStore.open(run)
    done = [r["iteration"] for r in before.results()]
    assert done in ([0, 1], [0, 1, 2]), done
    improve2 = next(t for t in before.trace() if t["iteration"] == 2 and t["node"] == "improve")

    resumed = nasloop("search", "--resume", str(run))
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-2000:]
    assert "resuming at iteration" in err and "iter 3/3" in err
    after = RunStore.open(run)
    results = after.results()
    assert [r["iteration"] for r in results] == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert results[0]["outcome"] == "ok" and results[0]["accuracy"] > 0.2  # the seed trains for real
    trace = after.trace()
    keys = [(t["iteration"], t["node"]) for t in trace]
    assert len(keys) == len(set(keys))  # every step recorded once
    assert sorted(k for k in keys if k[1] in ("improve", "generate")) == expected_calls(results)
    llm_steps = [t for t in trace if t["node"] in ("improve", "generate") or t["node"].startswith("repair")]
    assert all(t["response"].strip() and t["seconds"] > 0 for t in llm_steps)
    assert (0, "check0") in keys
    assert next(t for t in trace if t["iteration"] == 2 and t["node"] == "improve") == improve2
    summary = json.loads((run / "summary.json").read_text())
    best_acc = max((r.get("accuracy") or 0) for r in results)
    assert summary["evaluated"] == 4 and summary["best"]["accuracy"] == pytest.approx(best_acc)
    assert (run / "best.py").is_file() and (run / "checkpoints.sqlite").is_file()
    assert f"run directory: {run}" in out and "best accuracy:" in out


def test_broken_llm_endpoint_is_one_line_and_resumable(docker_engine, tmp_path):
    env = {**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "not-used"}
    proc = nasloop("search", "--dataset", "digits", "--train-subset", "256", "--min-steps", "10",
                   "--llm", "openai:gpt-4o-mini", "--iterations", "1", "--runs-dir", str(tmp_path), env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("nasloop: error: LLM 'openai:gpt-4o-mini' failed"), err[-2000:]
    assert "resume with: nasloop search --resume" in last and "Traceback" not in err
    run = only_run(tmp_path)
    assert [r["iteration"] for r in RunStore.open(run).results()] == [0]  # the seed's result is kept
