"""Types shared by the sandbox backends: what a job is, which limits apply, what comes back."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from nasloop.errors import SandboxUnavailable  # noqa: F401 - raised here, part of this package's API

RUNNER_PATH = Path(__file__).with_name("runner.py")
SUPERVISOR_PATH = Path(__file__).with_name("supervise.py")  # the process sandbox's kill-timer and reaper
# The zero-cost proxies the harness knows (sandbox/zero_cost.py, which cannot import this package inside
# the sandbox, has the same tuple; a unit test keeps them equal). Here so the CLI need not import torch.
PROXY_NAMES = ("naswot", "synflow", "snip", "grad_norm", "zen", "zico", "params", "flops")
SANDBOX_UID = 65534  # nobody: the user candidates run as (container and, when the host is root, process)



@dataclass(frozen=True)
class Limits:
    """Resource limits for one evaluation. `gpus` is 'none', 'all' or a comma list of device ids."""

    memory_bytes: int = 6 * 1024**3
    cpus: float = 2.0
    pids: int = 256
    timeout_s: float = 600.0
    gpus: str = "none"
    log_bytes: int = 64 * 1024  # how much of the log is kept for the diagnosis
    tmpfs_bytes: int = 256 * 1024**2
    preflight_s: float = 60.0  # import + build + meta-device forward must be over by then
    runtime: str | None = None  # a Docker runtime such as 'runsc' (gVisor); None: the engine's default
    huge_pages: bool = True  # back big CPU tensors with transparent huge pages (see harness_env)


def harness_env(lim: Limits) -> dict[str, str]:
    """The environment every backend gives the harness. THP_MEM_ALLOC_ENABLE makes torch align CPU tensors of
    2 MiB and more to huge pages and madvise them so: a training step allocates and frees hundreds of MiB
    of activations, and with 4 KiB pages the kernel faults and zeroes each page again, every step
    (measured: a third of a CIFAR-10 step's time was system time; bench/evaluator.py P2b)."""
    threads = str(max(1, int(lim.cpus)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONDONTWRITEBYTECODE": "1",
            **({"THP_MEM_ALLOC_ENABLE": "1"} if lim.huge_pages else {})}


@dataclass(frozen=True)
class Job:
    """One candidate to run: its source, the harness config and the sandbox's view of the data set
    (training images and labels, test images; never the test labels)."""

    source: str
    config: dict
    data_dir: Path
    output_dir: Path | None = None  # where the host exports the trained weights (train-best); None: nowhere
    # called with (step, steps) as training goes, for a display; stays on the host (never sent to a worker)
    on_progress: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)


# What every backend runs once with its interpreter before any candidate: without these the harness cannot
# start, and that is the sandbox's fault (e.g. nasloop run by another interpreter), never a candidate's.
CHECK_IMPORTS = ("import importlib.util as u, sys; "
                 "sys.exit(0 if all(u.find_spec(m) for m in ('torch', 'numpy', 'safetensors')) else 3)")


@dataclass
class RawResult:
    """Raw facts about one run; `tools.outcome` classifies them.

    Host-observed: exit_code, timed_out, preflight_timed_out, oom_killed (the engine's flag),
    peak_memory_bytes (the container's cgroup), wall_seconds, infra_error, out_overflow, worker_died, worker_lost.
    Produced inside the sandbox (reported): result, predictions, tensors (read by the host as data)."""

    exit_code: int | None = None
    timed_out: bool = False
    preflight_timed_out: bool = False
    oom_killed: bool = False
    result: dict | None = None  # the harness's result.json, bounded and sanitised
    predictions: np.ndarray | None = None  # predicted test classes (int64), read from safetensors
    tensors: int | None = None  # values in the trained state_dict (parameters + buffers), counted by the host
    output_problem: str | None = None  # why an output file was refused (not a regular file, too large...)
    stderr_tail: str = ""
    wall_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    infra_error: str | None = None  # the sandbox failed (engine gone...), not the candidate
    out_overflow: bool = False  # stopped for writing more into out/ than outputs.OUT_BYTES / OUT_ENTRIES
    worker_died: bool = False  # a warm worker vanished under this candidate
    worker_lost: bool = False  # a Ray evaluation worker was lost twice under it (sandbox/ray_pool.py): not its fault


class Sandbox(Protocol):
    """A backend that runs the harness on a job under limits."""

    limits: Limits

    def run(self, job: Job) -> RawResult: ...


# --- the job directory: in/ written by the host, out/ the only place the candidate may write --------------
class JobDir:
    """A private host directory for one job. in/ (candidate.py, config.json) is host-owned and read-only to
    the candidate; out/ belongs to the sandbox user. The host never writes into out/ and reads it back
    only through `sandbox.outputs` (no symlink followed, regular files only, sizes bounded)."""

    def __init__(self, job: Job, config: dict, root: Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="nasloop-job-", dir=root))
        os.chmod(self.path, 0o755)
        self.inp, self.out = self.path / "in", self.path / "out"
        self.inp.mkdir(mode=0o755)
        self.out.mkdir(mode=0o700)
        os.chmod(self.inp, 0o755)
        (self.inp / "candidate.py").write_text(job.source, encoding="utf-8")
        (self.inp / "config.json").write_text(json.dumps(config), encoding="utf-8")
        for f in self.inp.iterdir():
            os.chmod(f, 0o644)
        give_to_sandbox_user(self.out)

    def remove(self) -> bool:
        """Remove the job's directory; False where something stayed. A host that is not root cannot empty a
        directory the candidate made in out/ (it is the sandbox user's, mode 0700 if it likes): what stays is
        then locked (0700, the host's), so no later candidate reaches it (a warm worker's jobs share one
        mount), and the Docker backends have it emptied by a container running as the sandbox user."""
        if remove_tree(self.path):
            return True
        try:
            os.chmod(self.path, 0o700)
        except OSError:
            pass
        return False


def remove_tree(path: Path | str) -> bool:
    """Remove a directory a candidate wrote into, however it is shaped: Python's recursive rmtree raises
    RecursionError on a tree 1,000 levels deep and stops at a directory made unreadable (chmod 000), so
    what it leaves goes to chmod and rm, which walk without recursion. Whether it is gone."""
    try:
        shutil.rmtree(path)
        return True
    except (OSError, RecursionError):
        pass
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return not os.path.lexists(path)


def give_to_sandbox_user(path: Path) -> None:
    """out/ must be writable by the sandbox user: chown when we are root, else open it to others for
    writing only (0733: create files, not list them). Never 0777."""
    if os.geteuid() == 0:
        os.chown(path, SANDBOX_UID, SANDBOX_UID)
        os.chmod(path, 0o700)
    else:
        os.chmod(path, 0o733)


def printable(text: Any, keep_newlines: bool = True) -> str:
    """Text from the sandbox made safe for a terminal, a JSON file and an HTML page: control characters
    (ANSI escapes included), bidi overrides and lone surrogates become visible escapes."""
    if not isinstance(text, str):
        text = str(text)
    out = []
    for ch in text:
        o = ord(ch)
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o < 0xE000 or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069 or o in (0x200E, 0x200F):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def tail_text(data: bytes, limit: int) -> str:
    """The last `limit` bytes of a log, decoded and made printable."""
    return printable(data[-limit:].decode("utf-8", "replace"))


@dataclass
class LiveSet:
    """What this process has running in sandboxes, so a signal handler can end all of it at once.

    `close()` is for a process that is leaving: it ends everything registered, and from then on anything
    registered late (a container whose creation was in flight when the signal came) is ended as it is added,
    so a node still running in another thread cannot start what nobody would stop. `sweeps` run at every
    close, after the cleanups: they catch what no cleanup was registered for yet (the docker sandboxes sweep
    this process's own containers by label)."""

    cleanups: dict[int, Any] = field(default_factory=dict)
    sweeps: dict[str, Any] = field(default_factory=dict)
    closing: bool = False

    def add(self, fn) -> int:
        key = id(fn)
        self.cleanups[key] = fn
        if self.closing:
            self.stop_all()
        return key

    def discard(self, key: int) -> None:
        self.cleanups.pop(key, None)

    def check_open(self) -> None:
        """Called before a sandbox creates anything (a job directory, a container, a process)."""
        if self.closing:
            raise SandboxUnavailable("nasloop is stopping: no new sandbox is started")

    def add_sweep(self, name: str, fn) -> None:
        self.sweeps[name] = fn

    def stop_all(self) -> int:
        """Run every registered cleanup (kill containers and processes, remove job directories)."""
        n = 0
        for key in list(self.cleanups):
            fn = self.cleanups.pop(key, None)
            if fn is not None:
                n += _quietly(fn)
        return n

    def close(self) -> int:
        """End everything now and refuse to keep anything started from here on (see the class)."""
        self.closing = True
        n = self.stop_all()
        for fn in list(self.sweeps.values()):
            _quietly(fn)
        return n


def _quietly(fn) -> int:
    """Best effort at shutdown: each cleanup is independent, one failing must not skip the others."""
    try:
        fn()
        return 1
    except Exception:  # noqa: BLE001
        return 0


LIVE = LiveSet()
