"""The process sandbox's kill-timer and reaper: `supervise.py SECONDS UID NPROC COMMAND...` (standard library
only). UID -1 runs COMMAND as this process's user; otherwise (nasloop as root) this process stays root and
COMMAND runs as UID, limited to NPROC processes of that user: then the candidate cannot kill its supervisor.

It runs COMMAND (the harness) as its child and kills it after SECONDS, like `timeout -s KILL` did; and it is
a child subreaper (PR_SET_CHILD_SUBREAPER): a process the candidate forks and detaches (fork, setsid, fork:
out of the process group the host kills) is re-parented to it, not to init. When the harness ends, every
process still under it is killed, so nothing a candidate starts outlives its job. (Measured before: such a
process, left running, wrote a forged result into the next job's output directory, and the host scored it.)
The host's parent-death signal (SIGTERM) ends it the same way.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
POLL_S = 0.05


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc: a command name may hold spaces and parentheses)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def end_all(rounds: int = 200) -> None:
    """Kill and reap every process under this one: a killed process's own children come to this one next,
    so until none is left (bounded, against a fork loop)."""
    me = os.getpid()
    for _ in range(rounds):
        left = children(me)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap()
        time.sleep(0.01)


def reap(harness: int = -1) -> int | None:
    """Collect every child that ended; the harness's exit code when it is one of them (128 + signal, as a
    shell reports a killed command)."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == harness:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _stop(*_: object) -> None:
    """SIGTERM (the host stops the job, or nasloop died): everything under this process goes, then it."""
    end_all()
    os._exit(143)


def main(argv: list[str]) -> int:
    limit, uid, nproc, command = float(argv[1]), int(argv[2]), int(argv[3]), argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, _stop)
    me = os.getpid()
    harness = os.fork()
    if harness == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            if uid >= 0:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            # Armed after setuid (a change of user clears it) and before exec (which keeps it): if this
            # supervisor is SIGKILLed (Ray kills a dead worker's children), the harness dies with it at once,
            # not after the seconds its imports take (CI: a harness outlived its worker by that window).
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() == me:
                os.execv(command[0], command)
        finally:
            os._exit(127)
    deadline = time.monotonic() + limit
    code = None
    while code is None:
        code = reap(harness)
        if code is None and time.monotonic() > deadline:
            try:
                os.kill(harness, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = float("inf")
        time.sleep(POLL_S if code is None else 0)
    end_all()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
