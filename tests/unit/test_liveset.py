"""The registry a signal handler uses to end every sandbox at once (sandbox/base.py LiveSet)."""
from __future__ import annotations

import pytest

from nasloop.errors import SandboxUnavailable
from nasloop.sandbox.base import LiveSet


def test_stop_all_runs_every_cleanup_once_even_when_one_fails():
    live, ran = LiveSet(), []

    def broken() -> None:
        raise OSError("engine gone")

    live.add(broken)
    live.add(lambda: ran.append("a"))
    assert live.stop_all() == 1 and ran == ["a"]
    assert live.stop_all() == 0 and ran == ["a"]


def test_a_closed_set_ends_what_registers_late_and_starts_nothing():
    """A node in another thread may finish creating a container after the signal: it is ended as it
    registers; a sandbox asked to start afterwards refuses."""
    live, ran = LiveSet(), []
    live.add_sweep("engine", lambda: ran.append("sweep"))
    live.add(lambda: ran.append("first"))
    live.check_open()
    live.close()
    assert ran == ["first", "sweep"]
    live.add(lambda: ran.append("late"))
    assert ran == ["first", "sweep", "late"] and live.cleanups == {}
    with pytest.raises(SandboxUnavailable, match="stopping"):
        live.check_open()
    live.close()
    assert ran.count("sweep") == 2  # every close sweeps: the handler closes again after its grace period
