"""What the Improver reads about the latest candidate and the memory: the candidate's edits to the best net
as a diff (the lines that changed, in a fraction of the tokens), its whole code where it rewrote the net,
and the window one JSON object per line."""
from __future__ import annotations

import json

from nasloop import prompts
from nasloop.agent.llm.prompting import improver_prompt
from tests.fakes import task

BEST = prompts.seed_source("cifar10")


def _prompt(code: str, window: list[dict] | None = None) -> str:
    best = {"iteration": 2, "code": BEST, "accuracy": 0.5, "params": 95_000, "layers": "conv1 Conv2d -> 32x32x32 (864)"}
    last = {"iteration": 3, "code": code, "outcome": {"kind": "ok", "accuracy": 0.45, "params": 120_000}}
    return improver_prompt({"task": task(), "best": best, "last": last, "window": window or []})


def test_a_small_edit_of_the_best_net_reaches_the_improver_as_the_lines_it_changed():
    line = next(x for x in BEST.splitlines() if "nn.Conv2d(" in x and "in_channels" not in x)
    wider = line.replace(", 3, padding=1", ", 5, padding=2")
    assert wider != line
    edited = BEST.replace(line, wider + "  # kernel 5")
    text = _prompt(edited)
    assert "Its changes to the best network" in text
    diff = text.split("```diff\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert f"-{line}" in diff and f"+{wider}" in diff  # without the Generator's comment (see below)
    assert len(diff) <= 6  # the changed line with one line of context each side, not the net again
    assert text.count("def forward") == 1


def test_a_rewritten_net_is_shown_whole_and_a_copy_is_named_as_one():
    rewrite = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n" \
              "        self.fc = nn.Linear(3072, 10)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    text = _prompt(rewrite)
    assert "Its code:\n```python\n" + rewrite.strip() + "\n```" in text and "```diff" not in text
    assert "Its code is the best network's, unchanged." in _prompt(BEST + "\n")


def test_the_window_is_one_json_object_per_line():
    window = [{"iteration": i, "problem": f"problem {i}", "suggestion": f"Widen conv{i}: 32 -> 64 channels",
               "outcome": "ok", "accuracy": 0.4 + i / 100} for i in (1, 2, 3)]
    text = _prompt(BEST, window)
    shown = text.split("what happened):\n", 1)[1].split("\n\n", 1)[0]
    assert shown.count("\n") == len(window) + 1  # "[", one line per entry, "]"
    assert [t["suggestion"] for t in json.loads(shown)] == [t["suggestion"] for t in window]


def test_comments_the_generator_added_are_not_shown_again_and_the_seeds_are():
    """The Generator comments its edits ("# Widen conv1 to 32 channels"); once the net changes again the
    comment is stale, and the 1.5B Improver took its numbers as the layer's."""
    seed_comment = next(x for x in BEST.splitlines() if x.strip().startswith("#"))
    line = next(x for x in BEST.splitlines() if "nn.Conv2d(in_channels" in x)
    noted = BEST.replace(line, line + "  # Widen conv1 to 32 channels (why: more features)")
    noted = noted.replace(seed_comment, seed_comment + "\n        # added: a comment line of its own")
    best = {"iteration": 2, "code": noted, "accuracy": 0.5, "params": 95_000, "layers": ""}
    text = improver_prompt({"task": task(), "best": best, "last": {}, "window": []})
    assert "Widen conv1 to 32" not in text and "added: a comment" not in text
    assert f"\n{line}\n" in text and f"\n{seed_comment}\n" in text
    assert "Its code is the best network's, unchanged." in _prompt(noted)  # comments alone change nothing


def test_docstrings_are_not_shown_and_the_code_shown_still_compiles():
    """The seed's docstring ("three conv-BN-ReLU stages ...") is stale after the first change, and the
    Generator copied it into every net: both roles read it, and every generation decoded it again."""
    from nasloop.agent.llm.prompting import generator_prompt

    doc = next(x for x in BEST.splitlines() if x.strip().startswith('"""'))
    best = {"iteration": 2, "code": BEST, "accuracy": 0.5, "params": 95_000, "layers": ""}
    state = {"task": task(), "best": best, "last": {}, "window": [], "proposal": {"suggestion": "Widen conv1"}}
    for text in (improver_prompt(state), generator_prompt(state)):
        shown = text.split("```python\n", 1)[1].split("\n```", 1)[0]
        assert doc.strip() not in text and "class Net(nn.Module):\n    def __init__" in shown
        compile(shown, "shown.py", "exec")
    only = 'def f():\n    """Its whole body."""\n\n\nclass A:\n    """Two\n    lines."""\n    x = 1\n'
    shown = _prompt_code(only)
    assert '"""Its whole body."""' in shown and "Two" not in shown and "lines." not in shown
    compile(shown, "shown.py", "exec")


def _prompt_code(code: str) -> str:
    from nasloop.agent.llm.prompting import plain_code

    return plain_code(code, BEST)
