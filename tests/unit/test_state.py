"""The memory window reducer: bounded, ordered, failures kept."""
from nasloop.agent.state import count_add, window_add, window_reducer


def t(i, outcome="ok"):
    return {"iteration": i, "problem": f"p{i}", "suggestion": f"s{i}", "outcome": outcome}


def test_window_keeps_last_k_in_order():
    w = []
    for i in range(12):
        w = window_add(w, [t(i)])
    assert [x["iteration"] for x in w] == [7, 8, 9, 10, 11]


def test_failures_are_kept_like_successes():
    w = []
    for i, kind in enumerate(["ok", "shape_error", "timeout", "host_oom", "ok", "syntax_error"]):
        w = window_add(w, t(i, kind))
    assert [x["outcome"] for x in w] == ["shape_error", "timeout", "host_oom", "ok", "syntax_error"]


def test_configurable_k_and_empty_updates():
    r = window_reducer(2)
    assert r([t(0), t(1)], [t(2)]) == [t(1), t(2)]
    assert r([t(0)], None) == [t(0)]
    assert window_add(None, []) == []


def test_counts_add():
    assert count_add({"ok": 1}, {"ok": 1, "timeout": 1}) == {"ok": 2, "timeout": 1}
