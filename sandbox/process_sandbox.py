"""Fallback backend for machines without a Docker engine (`--sandbox process`): weaker, but not naked.

The harness runs as a child process in a new session with a scrubbed environment, rlimits on memory
(address space), file size and core dumps, a wall-clock timeout that kills the whole process group,
and stdout/stderr read through pipes of which only bounded tails are kept. It has no network or
file-system isolation: use it only when Docker is not available, and say so to the user.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sandbox.base import RUNNER_PATH, Job, Limits, RawResult, parse_result, tail_text


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


class ProcessSandbox:
    """Runs the harness in a child process under rlimits; see the module docstring for what it lacks."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()

    def _preexec(self) -> None:  # runs in the child, before exec
        lim = self.limits
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024**2, 64 * 1024**2))
        if lim.memory_bytes:
            # torch maps several GB of address space it never touches; leave headroom for that.
            cap = lim.memory_bytes + 8 * 1024**3
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def run(self, job: Job) -> RawResult:
        lim = self.limits
        workdir = Path(tempfile.mkdtemp(prefix="nasloop-job-"))
        raw = RawResult()
        t0 = time.perf_counter()
        try:
            (workdir / "candidate.py").write_text(job.source, encoding="utf-8")
            config = dict(job.config)
            if job.output_dir is not None:
                Path(job.output_dir).mkdir(parents=True, exist_ok=True)
                config["output_dir"] = str(Path(job.output_dir).resolve())
            (workdir / "config.json").write_text(json.dumps(config), encoding="utf-8")
            threads = str(max(1, int(lim.cpus)))
            env = {"HOME": str(workdir), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": threads,
                   "MKL_NUM_THREADS": threads, "PYTHONDONTWRITEBYTECODE": "1"}
            proc = subprocess.Popen(
                [sys.executable, "-I", str(RUNNER_PATH), str(workdir / "config.json"),
                 str(workdir / "candidate.py"), str(Path(job.data_dir).resolve())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=workdir, env=env, start_new_session=True, preexec_fn=self._preexec,
            )
            out = _TailReader(proc.stdout, 1024**2)
            err = _TailReader(proc.stderr, lim.log_bytes)
            out.start()
            err.start()
            try:
                proc.stdin.write((job.nonce + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                raw.exit_code = proc.wait(timeout=lim.timeout_s)
            except subprocess.TimeoutExpired:
                raw.timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the harness and anything it forked
                except ProcessLookupError:
                    pass
                if raw.exit_code is None:
                    raw.exit_code = proc.wait()
            out.join(5)
            err.join(5)
            raw.result, raw.forged_lines = parse_result(bytes(out.data).decode("utf-8", "replace"), job.nonce)
            raw.stderr_tail = tail_text(bytes(err.data), lim.log_bytes)
            raw.oom_killed = raw.exit_code == -signal.SIGKILL and not raw.timed_out
        except OSError as exc:
            raw.infra_error = f"process sandbox: {exc}"
        finally:
            raw.wall_seconds = time.perf_counter() - t0
            shutil.rmtree(workdir, ignore_errors=True)
        return raw
