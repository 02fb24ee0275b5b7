"""The warm sandbox: one long-lived hardened container per search runs every candidate in a fresh child
process of a worker that imported torch once (sandbox/worker.py), instead of a new container each time.

The container has every setting of the cold sandbox (DockerEngine.container_settings). The host keeps
what it trusts on its side: it writes each job's in/ directory, reads out/ back as hostile bytes, counts
OOM kills in the container's cgroup itself (host_oom), resets and reads the cgroup's memory high-water
mark around each job, and keeps a deadline of its own above the worker's. A worker that stops answering
or dies is replaced, and the candidate it was running is recorded as the one that killed it.
`--no-warm` (the plain DockerSandbox) stays available.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from docker.errors import DockerException

from nasloop.sandbox import outputs
from nasloop.sandbox.base import LIVE, Job, JobDir, RawResult, SandboxUnavailable, remove_tree, tail_text
from nasloop.sandbox.docker_sandbox import IMAGE_DIR, DockerEngine
from nasloop.sandbox.host import memory_files, oom_kills

GRACE_S = 15.0  # the host's deadline above the worker's own
START_S = 120.0  # a worker must import torch and answer within this


class WarmSandbox(DockerEngine):
    """`run(job)` like DockerSandbox, on a worker started at the first job and kept until `close()`."""

    container: Any = None  # the worker's docker Container, None until the first job

    def _start(self) -> None:
        LIVE.check_open()
        self.jobs = Path(tempfile.mkdtemp(prefix="nasloop-jobs-"))
        os.chmod(self.jobs, 0o755)
        self.data_dir: str | None = None
        self._cleanup_key = LIVE.add(self.close)

    def _launch(self, data_dir: Path) -> None:
        """Start the worker container with this data set mounted, and accept its one connection on a socket
        in a fresh host directory that the container sees read-only."""
        LIVE.check_open()
        if getattr(self, "jobs", None) is None:
            self._start()
        self.ctl = Path(tempfile.mkdtemp(prefix="nasloop-ctl-"))
        os.chmod(self.ctl, 0o755)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.ctl / "host.sock"))
        os.chmod(self.ctl / "host.sock", 0o777)  # the worker runs as nobody
        listener.listen(1)
        volumes = {str(self.ctl): {"bind": "/ctl", "mode": "ro"}, str(self.jobs): {"bind": "/jobs", "mode": "rw"},
                   str(Path(data_dir).resolve()): {"bind": "/data", "mode": "ro"}}
        command = [self.python, "-I", f"{IMAGE_DIR}/worker.py", "/ctl/host.sock"]
        try:
            self.container = self.client.containers.run(self.image, command=command, detach=True,
                                                        **self.container_settings(volumes))
            self.data_dir = str(data_dir)
            self.sock = self._accept(listener)
        finally:
            listener.close()
            shutil.rmtree(self.ctl, ignore_errors=True)  # nothing left to connect to
        self.reader = self.sock.makefile("rb")
        ready = self._read(START_S)
        if not (isinstance(ready, dict) and ready.get("ready")):
            logs = tail_text(self.container.logs(tail=20), 600)
            self._drop()
            raise SandboxUnavailable(f"the warm sandbox worker did not start: {logs.strip()[-300:]}")

    def _accept(self, listener: socket.socket) -> socket.socket:
        deadline = time.monotonic() + START_S
        listener.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                conn.settimeout(None)
                return conn
            except (socket.timeout, BlockingIOError):
                pass
            self.container.reload()
            if self.container.status == "exited":
                break
        logs = tail_text(self.container.logs(tail=20), 600)
        self._drop()
        raise SandboxUnavailable(f"the warm sandbox worker did not start: {logs.strip()[-300:]}")

    def _read(self, timeout: float) -> dict | None:
        self.sock.settimeout(timeout)
        try:
            line = self.reader.readline(64 * 1024)
        except (OSError, socket.timeout):
            return None
        try:
            value = json.loads(line) if line else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def run(self, job: Job) -> RawResult:
        lim = self.limits
        t0 = time.perf_counter()
        raw = RawResult()
        jd = None
        try:
            if self.container is None or self.data_dir != str(job.data_dir):
                self._drop()
                self._launch(job.data_dir)
            jd = JobDir(job, {**job.config, "deadline_s": lim.timeout_s + 5}, root=self.jobs)
            ooms = oom_kills(self.container.id)
            self._reset_peak()
            self.sock.sendall((json.dumps({"job": jd.path.name, "timeout": lim.timeout_s,
                                           "preflight": min(lim.preflight_s, lim.timeout_s)}) + "\n").encode())
            # a candidate filling out/ costs the worker: stopped from the watcher's thread, replaced here
            watcher = outputs.ProgressWatcher(jd.out, job.on_progress, overflow=self._halt)
            with watcher:
                reply = self._read(lim.timeout_s + GRACE_S)
            raw.out_overflow = watcher.overflowed
            if raw.out_overflow:
                self._drop()
            else:
                self._account(raw, reply, ooms)
            raw.stderr_tail = tail_text(outputs.read_tail(jd.out, "log", lim.log_bytes), lim.log_bytes)
            outputs.collect(jd.out, raw, job.output_dir)
        except SandboxUnavailable:
            raise
        except (DockerException, requests.RequestException, OSError) as exc:
            raw.infra_error = f"docker: {str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__}"
            self._drop()
        finally:
            raw.wall_seconds = time.perf_counter() - t0
            if jd is not None:
                self.remove_job_dir(jd)
        return raw

    def _account(self, raw: RawResult, reply: dict | None, ooms: int | None) -> None:
        """The worker's report on the child, checked against what the host sees in the cgroup."""
        after = oom_kills(self.container.id)
        raw.oom_killed = ooms is not None and after is not None and after > ooms
        raw.peak_memory_bytes = self._peak()
        if reply is None:  # the worker died or hung: replace it; the candidate is the suspect
            self.container.reload()
            raw.oom_killed = raw.oom_killed or bool(self.container.attrs.get("State", {}).get("OOMKilled"))
            raw.worker_died = not raw.oom_killed
            self._drop()
            return
        raw.exit_code = reply.get("exit_code") if isinstance(reply.get("exit_code"), int) else None
        raw.timed_out = bool(reply.get("timed_out"))
        raw.preflight_timed_out = bool(reply.get("preflight_timed_out"))

    def _reset_peak(self) -> None:
        for f in memory_files(self.container.id):
            try:
                Path(f).write_text("0")
            except OSError:
                pass

    def _peak(self) -> int | None:
        for f in memory_files(self.container.id):
            try:
                return int(Path(f).read_text().strip())
            except (OSError, ValueError):
                continue
        return None

    def _halt(self) -> None:
        """Stop the worker at once, from another thread: its container killed, the socket read woken. The
        thread that runs the job then drops it (`_drop`)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        try:
            self.container.kill()
        except (AttributeError, DockerException, requests.RequestException):
            pass

    def _drop(self) -> None:
        """Stop the current worker (if any); the next job starts a new one. Called from a signal handler
        too, while another thread may be blocked reading the socket: shut the socket down first, which
        wakes that reader; closing its buffered file first would wait forever for the reader's lock."""
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for attr in ("reader", "sock"):
            try:
                getattr(self, attr).close()
            except (AttributeError, OSError):
                pass
        if self.container is not None:
            self.remove(self.container)
        self.container = None

    def close(self) -> None:
        """Remove the worker container and its host directories."""
        self._drop()
        for attr in ("ctl", "jobs"):
            path = getattr(self, attr, None)
            if path is not None:
                remove_tree(path)
            setattr(self, attr, None)
        key = getattr(self, "_cleanup_key", None)
        if key is not None:
            LIVE.discard(key)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
