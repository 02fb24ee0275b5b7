"""Real evolution and ladder runs: the bundled 0.5B GGUF, NASWOT scored in the Docker sandbox, real digits."""
from __future__ import annotations

import json
import math

import pytest

from nasloop.agent.runs.store import RunStore
from tests.integration.test_search import SMALL, model_ready, nasloop, only_run  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_evolution_run(docker_engine, model_ready, tmp_path):  # noqa: F811 - fixture
    proc = nasloop("search", *SMALL, "--strategy", "evolution", "--proxy", "naswot", "--population", "2",
                   "--iterations", "2", "--runs-dir", str(tmp_path))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    run = only_run(tmp_path)
    store = RunStore.open(run)
    results = store.results()
    assert [r["iteration"] for r in results] == [0, 1, 2]
    seed = results[0]
    # the seed is trained (the baseline) and scored in the sandbox: its fitness is its NASWOT score
    assert seed["accuracy"] > 0.2 and seed["fitness"] == seed["scores"]["naswot"] > 0
    assert results[1]["parent"] == 0  # the only member then
    assert results[2]["parent"] in ({0, 1} if results[1]["outcome"] == "ok" else {0})
    trace = store.trace()
    nodes = [(t["iteration"], t["node"]) for t in trace]
    assert len(nodes) == len(set(nodes))  # every step recorded once
    assert (0, "score0.0") in nodes and (0, "check0") in nodes
    reflections = [t for t in trace if t["node"] == "improve"]
    assert len(reflections) == 2 and all("Population, best first" in t["prompt"] for t in reflections)
    for r in results[1:]:  # a candidate was scored, never trained, unless it failed before scoring
        assert (r["iteration"], "check0") not in nodes
        if r["outcome"] == "ok":  # a net without rectifiers has no NASWOT score: it never joins the population
            score = r["scores"]["naswot"]
            assert r["fitness"] == (score if math.isfinite(score) else None)
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best"]
    assert best["fitness"] >= seed["fitness"]
    # the best-scored net has an accuracy: the seed's own, or from one training at the end
    assert best["accuracy"] is not None
    assert ((best["iteration"], "final") in nodes) == (best["iteration"] != 0)
    assert "best naswot:" in out and "trained: accuracy" in out
    page = (run / "report.html").read_text()
    assert "Naswot per iteration" in page and "naswot score vs trained accuracy" in page


def test_one_ladder_step(docker_engine, model_ready, tmp_path):  # noqa: F811 - fixture
    proc = nasloop("search", *SMALL, "--fidelity", "ladder", "--ladder-width", "2", "--iterations", "1",
                   "--runs-dir", str(tmp_path))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    run = only_run(tmp_path)
    store = RunStore.open(run)
    results = store.results()
    seed, step = results
    assert seed["accuracy"] > 0.2 and "naswot" in seed["scores"]  # the baseline has both numbers
    nodes = {(t["iteration"], t["node"]) for t in store.trace()}
    assert {(1, "generate"), (1, "generate.1")} <= nodes  # two variants of one change
    scored = {n for i, n in nodes if i == 1 and n.startswith("score")}
    trained = {n for i, n in nodes if i == 1 and n.startswith("check")}
    assert len(trained) <= 1 + len(step.get("repairs", []))  # at most one training per attempt
    if step["outcome"] == "ok":
        assert scored and step["accuracy"] is not None and "naswot" in step["scores"]
        assert step["ladder"]["chosen"] is not None and step["fitness"] == step["accuracy"]
    page = (run / "report.html").read_text()
    assert "naswot score vs trained accuracy" in page  # at least the seed has both numbers
