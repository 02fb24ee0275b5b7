"""nasloop warm worker: PID 1 of one long-lived sandbox container; imports torch once and runs each
candidate in a fresh child process (fork), so a candidate costs its own work, not an interpreter start.

Runs INSIDE the container and imports nothing of the project except the harness next to it (runner.py).

Between candidates every other process in the container is killed (kill(-1) from PID 1 reaches all of
them, however they daemonised), /tmp and /dev/shm are emptied, and zombies are reaped, so nothing of one
candidate survives into the next. The worker makes itself non-dumpable (its memory and /proc entries are
out of the children's reach), ignores every catchable signal (and PID 1 of a namespace cannot be
sent SIGKILL or SIGSTOP from inside), and enforces each job's pre-flight and full
deadlines itself; the host keeps its own deadline on top and replaces a worker that stops answering.

Protocol, one JSON object per line on a Unix socket the HOST listens on, in a directory mounted read-only
(the host accepts this one connection, then closes and removes the listener; no candidate can plant or
reach anything there):  worker → {"ready": true}; host → {"job": NAME, "timeout": s, "preflight": s};
worker → {"job": NAME, "exit_code", "signal", "timed_out", "preflight_timed_out"}.
Job NAME is a directory under /jobs with in/ (config.json, candidate.py) and out/ (written by the child).

Usage:  python -I worker.py SOCKET_PATH
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 - imports numpy and torch: the point of a warm worker
import safetensors.torch  # noqa: E402,F401 - so the children do not import it
import torch  # noqa: E402
import torch.utils.flop_counter  # noqa: E402,F401

JOBS, DATA, SCRATCH = "/jobs", "/data", ("/tmp", "/dev/shm", "/dev/mqueue")
PR_SET_DUMPABLE = 4


def harden() -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def warm_up() -> None:
    """Pay PyTorch's one-time costs here, once, not in every child: the meta device's first use (~1 s),
    the FLOP counter, a first real forward and backward. One thread only: no thread pool exists to be
    broken by fork."""
    torch.set_num_threads(1)

    class Tiny(torch.nn.Module):
        def __init__(self, num_classes: int = 10, in_channels: int = 3):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(4, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    runner.preflight(Tiny, 10, 3, 8, 0)
    model = Tiny()
    with torch.utils.flop_counter.FlopCounterMode(display=False):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1]))
    loss.backward()


def child(conn: socket.socket, name: str) -> None:
    """In the forked child: a new session, the job's log as stdout/stderr, then the harness (which ends
    the process with os._exit)."""
    try:
        set_signals(signal.SIG_DFL)  # the harness's kill-timer (SIGALRM) must act again
        # Close every inherited descriptor, the host's control socket above all (conn.close() alone would
        # leave it open while the makefile() reader holds it): the candidate must not talk to the host.
        os.closerange(3, 4096)
        os.setsid()
        job = os.path.join(JOBS, name)
        fd = os.open(os.path.join(job, "out", "log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir("/tmp")
        runner.main(["runner.py", os.path.join(job, "in", "config.json"), os.path.join(job, "in", "candidate.py"),
                     DATA, os.path.join(job, "out")])
    finally:
        os._exit(1)


def wait_for(pid: int, name: str, timeout: float, preflight: float) -> dict:
    """Wait for the child under both deadlines; kill it on either."""
    t0 = time.monotonic()
    mark = os.path.join(JOBS, name, "out", runner.TRAINING_MARK)
    reply: dict[str, Any] = {"job": name, "exit_code": None, "signal": None, "timed_out": False, "preflight_timed_out": False}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                reply["signal"] = os.WTERMSIG(status)
                reply["exit_code"] = 128 + reply["signal"]
            else:
                reply["exit_code"] = os.WEXITSTATUS(status)
            return reply
        elapsed = time.monotonic() - t0
        in_preflight = preflight < timeout and not os.path.lexists(mark)
        if not reply["timed_out"] and (elapsed > timeout or (in_preflight and elapsed > preflight)):
            reply["timed_out"], reply["preflight_timed_out"] = True, in_preflight
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def set_signals(action) -> None:
    """Every catchable signal to `action`: SIG_IGN in the worker (a candidate's os.kill(1, SIGINT) must not
    raise KeyboardInterrupt in it), SIG_DFL again in each child."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, action)
        except (OSError, ValueError):
            pass


def remove(path: str) -> None:
    """Remove what a candidate left, however it tried to keep it: permissions taken away (chmod 000) and
    trees too deep for a recursive walk in Python are handled by chmod/rm themselves."""
    subprocess.run(["chmod", "-R", "u+rwx", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", "--one-file-system", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sweep() -> None:
    """Kill every other process in the container, reap them, empty the scratch file systems."""
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            break  # no process left but us
        time.sleep(0.005)
    remove_ipc()
    mounts = mount_points()
    for top in SCRATCH:
        for entry in os.listdir(top) if os.path.isdir(top) else []:
            path = os.path.join(top, entry)
            if any(m == path or m.startswith(path + "/") for m in mounts):
                continue  # a mount point the host made (the interpreter under /tmp/...): not the candidate's
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    remove(path)
                else:
                    os.unlink(path)
            except OSError:
                pass


def mount_points() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return []


def remove_ipc() -> None:
    """Remove System V shared memory, message queues and semaphores: they outlive their makers, and the
    container's IPC namespace is shared by every candidate this worker runs."""
    libc = ctypes.CDLL(None, use_errno=True)
    for kind, rm in (("shm", lambda i: libc.shmctl(i, 0, None)), ("msg", lambda i: libc.msgctl(i, 0, None)),
                     ("sem", lambda i: libc.semctl(i, 0, 0))):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                rm(int(fields[1]))  # IPC_RMID (0)


def serve(conn: socket.socket) -> None:
    buf = conn.makefile("rb")
    conn.sendall(b'{"ready": true}\n')
    for line in buf:
        req = json.loads(line)
        name = os.path.basename(str(req["job"]))
        pid = os.fork()
        if pid == 0:
            child(conn, name)
        reply = wait_for(pid, name, float(req["timeout"]), float(req.get("preflight") or req["timeout"]))
        sweep()
        conn.sendall((json.dumps(reply) + "\n").encode())


def main(argv: list[str]) -> int:
    harden()
    set_signals(signal.SIG_IGN)
    warm_up()
    sweep()  # what warming up left in /tmp (torch's compile cache directory): the first candidate sees none
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(argv[1])  # the host's listener: it accepts this one connection and removes itself
    serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
