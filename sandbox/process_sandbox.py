"""Fallback backend for machines without a Docker engine (`--sandbox process`): weaker, but not naked.

The harness runs as a child process in a new session with a scrubbed environment, under a supervisor
(sandbox/supervise.py: the kill-timer, which holds when nasloop dies: the parent-death signal reaches it, and
the harness arms its own for the supervisor, which a supervisor such as Ray may SIGKILL alone; and a child
subreaper, so that no process the candidate forks and detaches outlives the job), with rlimits on memory
(address space), file size and core dumps; stdout/stderr are read through pipes of which only bounded
tails are kept, and outputs are read back from out/ as hostile bytes, as with Docker.

When nasloop runs as root and nobody (65534) can run the interpreter and read the data set (checked once
per data set), the child runs as nobody: the test labels (mode 0600, and the downloaded archives, mode
0700) and the parent's /proc entries are then out of its reach; copies elsewhere are not (scikit-learn's
bundled digits data set holds its labels, where a package directory is readable). Otherwise the child
has the user's rights; nasloop then makes itself non-dumpable so the child cannot read
/proc/<parent>/environ or memory, but it can read anything else the user can — the test labels included (a
warning says so). There is no network or file-system isolation, no process-count limit, and the memory
limit is per process: use it only when Docker is not available (e.g. a GPU machine without Docker).
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nasloop.sandbox import outputs
from nasloop.sandbox.base import (
    CHECK_IMPORTS, LIVE, RUNNER_PATH, SANDBOX_UID, SUPERVISOR_PATH, Job, JobDir, Limits, RawResult, SandboxUnavailable, harness_env,
    tail_text,
)

PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


class _TailReader(threading.Thread):
    """Drain a pipe, keeping only the last `limit` bytes (a 1 GB flood costs no memory)."""

    def __init__(self, stream, limit: int):
        super().__init__(daemon=True)
        self.stream, self.limit, self.data = stream, limit, bytearray()

    def run(self) -> None:
        for chunk in iter(lambda: self.stream.read(65536), b""):
            self.data += chunk
            if len(self.data) > 2 * self.limit:
                del self.data[: len(self.data) - self.limit]


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class ProcessSandbox:
    """Runs the harness in a child process under rlimits; see the module docstring for what it lacks."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        _prctl(PR_SET_DUMPABLE, 0)  # a same-user child must not read our environment or memory
        self._droppable: dict[str, bool] = {}
        self.check_runtime()

    def check_runtime(self) -> None:
        """The child's interpreter (this one, isolated: -I drops user site-packages) must have what the
        harness imports; if not, the sandbox is unusable — a one-line error, never a candidate's failure."""
        try:
            code = subprocess.run([sys.executable, "-I", "-c", CHECK_IMPORTS], env={"PATH": "/usr/bin:/bin"},
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=60).returncode
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"the process sandbox cannot start {sys.executable}: {exc}") from exc
        if code != 0:
            raise SandboxUnavailable(f"the sandbox interpreter {sys.executable} (isolated, -I) lacks torch, numpy or "
                                     f"safetensors (exit {code}): run nasloop from the project's environment")

    def can_drop(self, data_dir: Path) -> bool:
        """Whether the child can run as nobody here: we are root, and nobody can start the interpreter and
        read the harness and the data set (a cache under root's home directory is not readable)."""
        key = str(data_dir)
        if key not in self._droppable:
            ok = os.geteuid() == 0
            if ok:
                probe = ("import os, sys; sys.exit(0 if all(os.access(p, os.R_OK) for p in sys.argv[1:]) else 3)")
                files = [str(RUNNER_PATH), str(Path(data_dir) / "train_x.npy")]
                try:
                    ok = subprocess.run([sys.executable, "-I", "-c", probe, *files], user=SANDBOX_UID,
                                        group=SANDBOX_UID, extra_groups=[], cwd="/", timeout=30,
                                        capture_output=True).returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
            if not ok:
                print("nasloop: warning: the process sandbox runs candidates with your own rights: they can read "
                      "what you can, the test labels included (use Docker for a judge you can trust)",
                      file=sys.stderr)
            self._droppable[key] = ok
        return self._droppable[key]

    def _preexec(self) -> None:  # runs in the child, before exec
        lim = self.limits
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the supervisor then kills everything under it
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (outputs.WEIGHT_BYTES + 2**20,) * 2)
        if lim.memory_bytes and lim.gpus == "none":
            # torch maps several GB of address space it never touches; leave headroom for that. CUDA reserves
            # a virtual range larger than host and device memory together, so with GPUs an address-space cap
            # makes cudaGetDeviceCount fail: there only Docker's cgroup limits memory.
            cap = lim.memory_bytes + 8 * 1024**3
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def run(self, job: Job) -> RawResult:
        LIVE.check_open()
        lim = self.limits
        raw = RawResult()
        t0 = time.perf_counter()
        jd = JobDir(job, {**job.config, "deadline_s": lim.timeout_s + 5})
        proc, key = None, None
        try:
            env = {"HOME": str(jd.out), "PATH": "/usr/bin:/bin", **harness_env(lim), **gpu_env(lim.gpus)}
            # as root, the supervisor stays root (the candidate cannot kill it) and runs the harness as nobody
            uid = SANDBOX_UID if self.can_drop(Path(job.data_dir)) else -1
            proc = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR_PATH), f"{lim.timeout_s + 10:g}", str(uid), str(lim.pids),
                 sys.executable, "-I",
                 str(RUNNER_PATH), str(jd.inp / "config.json"), str(jd.inp / "candidate.py"),
                 str(Path(job.data_dir).resolve()), str(jd.out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=jd.out, env=env, start_new_session=True, preexec_fn=self._preexec,
            )
            key = LIVE.add(_stopper(proc, jd))
            log = _TailReader(proc.stdout, lim.log_bytes)
            log.start()
            watcher = outputs.ProgressWatcher(jd.out, job.on_progress, overflow=lambda: _killpg(proc))
            with watcher:
                self._wait(proc, jd.out, raw)
            raw.out_overflow = watcher.overflowed
            log.join(5)
            raw.stderr_tail = tail_text(bytes(log.data), lim.log_bytes)
            outputs.collect(jd.out, raw, job.output_dir)
        except OSError as exc:
            raw.infra_error = f"process sandbox: {exc}"
        finally:
            raw.wall_seconds = time.perf_counter() - t0
            if proc is not None:
                _killpg(proc)
            jd.remove()
            if key is not None:
                LIVE.discard(key)
        return raw

    def _wait(self, proc: subprocess.Popen, out_dir: Path, raw: RawResult) -> None:
        """The short pre-flight deadline, then the full limit; the whole process group is killed after."""
        def wait(seconds: float) -> int:
            try:
                return proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                raise TimeoutError from None

        outputs.wait_in_phases(wait, self.limits, out_dir, raw)
        _killpg(proc)
        if raw.exit_code is None:
            raw.exit_code = proc.wait()


def gpu_env(gpus: str) -> dict[str, str]:
    """The devices the child may see, the way Docker's device requests decide them for a container."""
    return {} if gpus == "all" else {"CUDA_VISIBLE_DEVICES": "" if gpus == "none" else gpus}


def _stopper(proc: subprocess.Popen, jd: JobDir):
    def stop() -> None:
        _killpg(proc)
        jd.remove()
    return stop


def _killpg(proc: subprocess.Popen) -> None:
    """Stop a job: SIGTERM to its supervisor, which kills everything under it (what the candidate detached
    from the process group too), then SIGKILL to the group, whatever is left of it."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=3)
        except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the harness and anything it forked in its session
    except (ProcessLookupError, PermissionError):
        pass

