"""Evaluation workers on Ray: W actors, each owning one sandbox (a warm container by default) on one GPU
or a CPU share, behind the one `Sandbox` interface (`run(job) -> RawResult`).

Only raw results cross back: the test labels stay in the driver, which classifies every result itself
(tools/outcome.py), exactly as with one local sandbox. Local mode starts Ray in this process with the
machine's resources (`ray.init`); an address (`auto`, `ray://...`, or RAY_ADDRESS) joins a cluster. The
data set's arrays go into Ray's object store once; a worker on a node that lacks the data directory
writes them out from there once.

Faults: an actor that dies under a candidate (crash, `ray.kill`, node lost) is restarted by Ray (or, once
Ray gives up, replaced by a new one) and the candidate is run once more; a second loss is a `sandbox_error`
for that candidate only (`RawResult.worker_lost`) — never the candidate's fault, and the search goes on.
No worker at all is `SandboxUnavailable`: the search stops, resumable. A restarted worker's sandbox removes
the containers its dead predecessor left (their owner process is gone: docker_sandbox.remove_orphans).
After `close()` (Ctrl-C) nothing a worker returns is believed: the candidate is run again on resume.
Ray's auto-init is switched off: a graph thread that touches Ray after `close()` would otherwise start a
second local Ray whose processes the kernel kills when that thread ends (Ray ties them to the thread that
started them), leaving this process attached to a dead cluster until Ray ends it a minute later.

The process sandbox gives a candidate no network isolation: the CLI does not put it behind Ray workers,
whose cluster a candidate on the same host could reach.
"""
from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nasloop.sandbox.base import LIVE, Job, Limits, RawResult, SandboxUnavailable

RESTARTS = 4  # how often Ray restarts one worker before the pool replaces it
STOP_S = 20.0  # how long a worker may take to stop its container on close
START_S = 120.0  # how long a restarted or new worker may take to answer
RUN_GRACE_S = 120.0  # beyond the sandbox's own timeout: a worker silent for longer is taken as lost
POLL_S = 0.5  # how often the driver asks a busy worker for its candidate's training steps (a display)


class SandboxWorker:
    """A Ray actor: one sandbox of `kind`, and the data set where this node can read it."""

    def __init__(self, kind: str, limits: Limits, options: dict):
        import ray

        from nasloop.sandbox import make_sandbox

        gpus = ray.get_gpu_ids()
        if gpus:  # the container sees only the GPU Ray gave this worker
            limits = replace(limits, gpus=",".join(str(int(g)) for g in gpus))
        self.sandbox = make_sandbox(kind, limits=limits, **options)
        self.dirs: dict[str, Path] = {}
        self.steps: tuple[int, int] | None = None  # the running candidate's (step, steps), for `progress`

    def _data_dir(self, host_dir: str, arrays: Any) -> Path:
        """The data directory on this node: the driver's own where it exists (same machine or shared file
        system), else the arrays from the object store, written out once."""
        if host_dir not in self.dirs:
            path = Path(host_dir)
            if not path.is_dir():
                path = Path(tempfile.mkdtemp(prefix="nasloop-data-"))
                for name, array in arrays.items():
                    np.save(path / f"{name}.npy", array, allow_pickle=False)
                os.chmod(path, 0o755)
            self.dirs[host_dir] = path
        return self.dirs[host_dir]

    def run(self, job: Job, arrays: Any) -> RawResult:
        self.steps = None
        return self.sandbox.run(replace(job, data_dir=self._data_dir(str(job.data_dir), arrays), on_progress=self._note))

    def _note(self, step: int, steps: int) -> None:
        self.steps = (step, steps)

    def progress(self) -> tuple[int, int] | None:
        """The running candidate's training steps so far: answered while `run` runs (max_concurrency=2)."""
        return self.steps

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        closer = getattr(self.sandbox, "close", None)
        if closer is not None:
            closer()


class RaySandbox:
    """`Sandbox` over `workers` Ray actors; `run` may be called from several threads at once (the graph's
    fanned-out candidates), each call taking the next idle worker."""

    def __init__(self, kind: str, workers: int, limits: Limits, *, address: str | None = None,
                 gpus_per_worker: float | None = None, **options: Any):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.limits, self.workers, self.kind = limits, workers, kind
        self._started = start_ray(address)
        import ray

        gpus = float((ray.cluster_resources() or {}).get("GPU", 0)) if gpus_per_worker is None else gpus_per_worker
        self.gpus_per_worker = 1.0 if gpus_per_worker is None and gpus >= workers else (gpus_per_worker or 0.0)
        self.options = options
        self._actor = ray.remote(SandboxWorker).options(  # type: ignore[attr-defined]
            num_cpus=limits.cpus, num_gpus=self.gpus_per_worker, max_restarts=RESTARTS, max_concurrency=2)
        self.actors: list[Any] = [self._actor.remote(kind, limits, options) for _ in range(workers)]
        self.closing = False  # set by close(): results that arrive after it are not believed
        self._idle: queue.Queue = queue.Queue()
        for a in self.actors:
            self._idle.put(a)
        self._arrays: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.lost = 0  # candidates re-queued after their worker died
        share = f"{limits.cpus:g} CPU" + (f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else "")
        self.where = f"{'a Ray cluster' if address else 'local Ray'} ({share} each)"
        self._cleanup_key = LIVE.add(self.close)

    def _data_ref(self, data_dir: Path) -> Any:
        """The data set's arrays in the object store: put once per data directory, shared by every worker."""
        import ray

        key = str(data_dir)
        with self._lock:
            if key not in self._arrays:
                self._arrays[key] = ray.put({p.stem: np.load(p, allow_pickle=False)
                                             for p in sorted(Path(data_dir).glob("*.npy"))})
            return self._arrays[key]

    def run(self, job: Job) -> RawResult:
        from ray.exceptions import ActorUnschedulableError, GetTimeoutError, RayActorError

        if self.closing:
            raise SandboxUnavailable("the evaluation workers are stopping")
        try:
            arrays = self._data_ref(job.data_dir)
        except Exception as exc:
            raise self._stopped(exc) from exc
        report = job.on_progress
        job = replace(job, on_progress=None)  # a display callback stays here: the worker is asked for its steps
        actor = self._idle.get()
        try:
            for _ in range(2):  # a lost worker's candidate is run once more, on a restarted (or new) worker
                try:
                    raw = _result(actor, actor.run.remote(job, arrays), self.limits.timeout_s + RUN_GRACE_S, report)
                    if self.closing:  # stopped under it (Ctrl-C): whatever it returned is not its outcome
                        raise SandboxUnavailable("the evaluation workers were stopped during this candidate")
                    return raw
                except (RayActorError, ActorUnschedulableError, GetTimeoutError) as exc:
                    if self.closing:
                        raise SandboxUnavailable("the evaluation workers were stopped during this candidate") from exc
                    with self._lock:
                        self.lost += 1
                    why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                    actor = self._revive(actor, timed_out=isinstance(exc, GetTimeoutError))
            return RawResult(infra_error=f"the evaluation worker was lost twice under this candidate ({why})",
                             worker_lost=True)
        except SandboxUnavailable:
            raise
        except Exception as exc:
            raise self._stopped(exc) from exc
        finally:
            self._idle.put(actor)

    def _stopped(self, exc: Exception) -> Exception:
        """What a Ray call that failed under `run` means: the pool was closed under it (Ray is gone, so any
        call fails) — the candidate has no outcome — or, while open, a fault that is not the candidate's."""
        if self.closing:
            return SandboxUnavailable("the evaluation workers were stopped during this candidate")
        return exc

    def _revive(self, actor: Any, timed_out: bool) -> Any:
        """The worker to run on next: the same one once Ray has restarted it, or a new one in its place when
        Ray gave up (restarts spent, node gone) or it stopped answering. No worker at all stops the search."""
        import ray

        if not timed_out:
            try:
                ray.get(actor.pid.remote(), timeout=START_S)
                return actor
            except Exception:  # noqa: BLE001 - dead for good, or not back in time: replace it
                pass
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            fresh: Any = self._actor.remote(self.kind, self.limits, self.options)
            ray.get(fresh.pid.remote(), timeout=START_S)
        except Exception as exc:
            raise SandboxUnavailable(f"no evaluation worker could be started in place of a lost one: "
                                     f"{type(exc).__name__}: {str(exc).strip()[:200]}") from exc
        with self._lock:
            self.actors = [fresh if a is actor else a for a in self.actors]
        return fresh

    def close(self) -> None:
        """Stop every worker's container, then the workers (and Ray, if this pool started it)."""
        import ray

        self.closing = True
        LIVE.discard(self._cleanup_key)
        if not ray.is_initialized():
            return
        try:
            ray.get([a.close.remote() for a in self.actors], timeout=STOP_S)
        except Exception:  # noqa: BLE001 - a dead or stuck worker: killing it below is what is left
            pass
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._started:
            ray.shutdown()
        from nasloop.sandbox.docker_sandbox import docker_client, remove_orphans

        if self.kind in ("warm", "docker"):  # what a killed worker left behind
            try:
                remove_orphans(docker_client())
            except Exception:  # noqa: BLE001 - no engine to clean: nothing was left there
                pass


def _result(actor: Any, ref: Any, timeout: float, report: Any) -> RawResult:
    """`ray.get(ref, timeout)`, asking the busy worker for its candidate's training steps meanwhile so the
    display shows them as with a local sandbox. A worker that does not answer is left to `ray.get` to judge."""
    import ray
    from ray.exceptions import GetTimeoutError

    deadline = time.monotonic() + timeout
    while not ray.wait([ref], timeout=POLL_S)[0]:
        if time.monotonic() > deadline:
            raise GetTimeoutError(f"no result from the worker in {timeout:.0f} s")
        if report is not None:
            try:
                steps = ray.get(actor.progress.remote(), timeout=POLL_S)
            except Exception:  # noqa: BLE001 - a lost or busy worker: the result's ray.get says what happened
                steps = None
            if steps:
                report(*steps)
    return ray.get(ref)


def start_ray(address: str | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local Ray with this machine's resources.
    True when this call started it (so closing the pool shuts it down)."""
    import ray

    _no_auto_init()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, num_cpus=None if address else os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise SandboxUnavailable(f"could not start {where}: {str(exc).strip().splitlines()[0][:200]}") from exc
    return True


def _no_auto_init() -> None:
    """Switch off Ray's auto-init (see the module docstring). Ray reads RAY_ENABLE_AUTO_CONNECT once, when it
    is imported, so a Ray imported before this call is told through its hook module as well."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    try:
        from ray._private import auto_init_hook
    except ImportError:  # a Ray without the hook: nothing to switch off
        return
    auto_init_hook.enable_auto_connect = False
