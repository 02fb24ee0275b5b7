"""Replay, report and train-best on a recorded fixture run (produced by a real short search with the
0.5B model on digits, checked in small), and the report in a real headless browser."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nasloop.agent.runs.replay import CLEAR, KEYS, interactive, load_steps, replay
from nasloop.agent.runs.report import pareto, write_report
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-digits"


@pytest.fixture
def run_dir(tmp_path):
    dst = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, dst)
    return dst


def test_replay_steps_follow_the_run(run_dir):
    steps = load_steps(str(run_dir))
    evals = [s for s in steps if s.node == "evaluate"]
    assert [s.iteration for s in evals] == list(range(len(evals))) and len(evals) >= 3
    assert steps[0].node in ("check0", "evaluate") and steps[0].iteration == 0
    first_llm = next(s for s in steps if s.node == "improve")
    assert first_llm.iteration == 1 and "Task: image classification on digits" in first_llm.prompt
    assert all(len(s.window) <= 5 for s in steps)
    assert evals[-1].window[-1]["iteration"] == evals[-1].iteration
    best = max((s.outcome.get("accuracy") or 0) for s in evals)
    assert evals[-1].best["accuracy"] == pytest.approx(best)


def test_replay_plain_and_filter(run_dir):
    lines: list[str] = []
    replay(str(run_dir), plain=True, out=lines.append)
    text = "\n".join(lines)
    assert "iteration 0 · evaluate" in text and "memory window after this step:" in text
    kinds = {s.outcome["outcome"] for s in load_steps(str(run_dir)) if s.node == "evaluate"}
    for kind in kinds:
        lines.clear()
        replay(str(run_dir), plain=True, outcome=kind, out=lines.append)
        shown = re.findall(r"outcome: (\w+)", "\n".join(b for b in lines if "· evaluate" in b.splitlines()[0]))
        assert shown and set(shown) == {kind}


def test_replay_keys(run_dir):
    steps = load_steps(str(run_dir))
    keys = iter(["n", "n", "p", "j 2", "x", "f ok", "q"])
    shown: list[str] = []
    interactive(steps, read=lambda: next(keys), write=shown.append)
    heads = [s.splitlines()[0] for s in shown]
    assert heads[0].startswith("── step 1/") and heads[1].startswith("── step 2/") and heads[3].startswith("── step 2/")
    assert "iteration 2" in heads[4] and shown[5].startswith("keys:")
    assert all(KEYS in s.splitlines()[-1] for s in shown[:5])  # every step shows the keys
    assert not any(s.startswith(CLEAR) for s in shown)  # no terminal: no escape codes


def test_replay_says_where_it_ends_and_redraws_on_a_terminal(run_dir):
    steps = load_steps(str(run_dir))
    keys = iter(["p", "f ok", *["n"] * len(steps), "q"])
    shown: list[str] = []
    interactive(steps, read=lambda: next(keys), write=shown.append, redraw=True)
    assert shown[1] == "this is the first step (n next, q quit)"
    assert shown[-1].startswith("end of the run: that was the last of") and "p back" in shown[-1]
    pages = [s for s in shown if s.startswith(CLEAR)]
    assert len(pages) >= 3 and "last step" in pages[-1].splitlines()[-1]
    assert "in this view" in pages[-1].splitlines()[-1]  # filtered to ok: where in the filtered list


def test_replay_of_an_unreadable_run(tmp_path):
    from nasloop.errors import RunError

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text('{"version": 99}')
    (tmp_path / "r" / "results.jsonl").write_text('{"iteration": 0, "node": "evaluate"}\n')
    with pytest.raises(RunError, match="newer nasloop"):
        load_steps(str(tmp_path / "r"))


def test_pareto_front():
    pts = [(100, 0.5, 1), (200, 0.6, 2), (150, 0.4, 3), (300, 0.55, 4), (50, 0.3, 5)]
    assert pareto(pts) == [(50, 0.3, 5), (100, 0.5, 1), (200, 0.6, 2)]


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    html = write_report(run_dir)
    assert {p.name for p in run_dir.glob("report-*.png")} == {
        "report-accuracy.png", "report-outcomes.png", "report-pareto.png", "report-time.png"}
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page
    table = page[page.index("<h2>Every iteration</h2>"):page.index("<h2>Top ")]
    assert table.count("<tr><td>") == 5  # the seed and four iterations: what was asked, by whom, what came of it
    assert "(seed)" in table and "(fallback)" in table and "1 repair(s)" in table and "SyntaxError" in table
    top = page[page.index("<h2>Top "):]
    assert top.count("<th>accuracy</th>") == 1  # ranked by accuracy: one column, not two both called so
    # the code travels in the page (a mailed report has no candidates/ folder beside it)
    assert 'href="candidates/' not in page and 'download="0000.py" href="data:text/x-python;base64,' in top
    # the best net's code near the top, before the charts; each candidate's change against its parent, collapsed
    best = page.index("<h2>Best net: iteration ")
    assert best < page.index("<h2>Accuracy per iteration</h2>") and "class Net(nn.Module)" in page[best:best + 4000]
    assert table.count("<details><summary>+") >= 2 and "@@ " in table and "best so far" in table
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--enable-logging=stderr",
         "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-images="4/4"' in proc.stdout, proc.stdout[:500]
    assert 'data-errors="0"' in proc.stdout
    console_errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "rror" in ln]
    assert not console_errors, console_errors


def test_a_run_stopped_early_does_not_look_complete(run_dir):
    lines = (run_dir / "results.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "results.jsonl").write_text("".join(lines[:-1]))
    page = write_report(run_dir).read_text()
    assert f"Stopped early: 3 of 4 iterations after the seed (resume with: nasloop search --resume {run_dir})" in page
    assert "<td>iterations</td><td>4</td>" in page  # the run's settings


def test_a_run_still_searching_says_running(run_dir):
    from nasloop.agent.runs.store import RunStore

    store = RunStore.open(run_dir)
    store.mark_running()  # as nasloop search does while it streams
    assert store.running()
    assert "Running: 4 of 4 iterations after the seed so far" in write_report(run_dir).read_text()
    lines = (run_dir / "results.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "results.jsonl").write_text("".join(lines[:-1]))
    assert "Running: 3 of 4 iterations after the seed so far" in write_report(run_dir).read_text()
    (run_dir / "running").write_text("0/0/999999/1")  # another machine's (or a killed search's) mark: not believed
    assert not store.running() and "Stopped early: 3 of 4" in write_report(run_dir).read_text()
    store.clear_running()
    assert not (run_dir / "running").exists()


def test_interactive_replay_starts_filtered_by_outcome(run_dir):
    steps = load_steps(str(run_dir))
    shown: list[str] = []
    interactive(steps, read=lambda: "q", write=shown.append, kind="invalid_code")
    assert "iteration 2 ·" in shown[0].splitlines()[0]  # the fixture's only invalid_code iteration
