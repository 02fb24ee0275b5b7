"""Run the harness on one candidate in a locked-down Docker container (docker SDK).

Every run gets: no network, a read-only root, a small tmpfs /tmp, a non-root user, no capabilities,
no-new-privileges, a pids limit, memory == memory+swap, a CPU quota, a file-size limit, read-only mounts
of the job and the data (training images and labels, test images — never the test labels), one writable
out/ directory the host reads back as hostile bytes, only the environment variables set here, GPUs only
when asked, and three clocks: the host's wall-clock limit, a short pre-flight deadline (import, build and
meta-device forward must finish in `preflight_s`), and a kill-timer inside the container (`timeout -s
KILL` as PID 1, which the candidate cannot signal) that holds even if the host process dies. The
container is removed whatever happens, Ctrl-C and SIGTERM of nasloop included (see `LIVE`).

Two kinds of image share this code path:
  * `host-mounts` (label nasloop.mode=host-mounts, built by `python -m nasloop.sandbox.image`): an empty root file
    system; the host's interpreter and virtualenv are bind-mounted read-only at their own paths. Works
    without a container registry.
  * self-contained (sandbox/Dockerfile): interpreter, torch and the harness are inside the image.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig, Ulimit
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from nasloop.sandbox import outputs
from nasloop.sandbox.base import (
    CHECK_IMPORTS, LIVE, RUNNER_PATH, SANDBOX_UID, Job, JobDir, Limits, RawResult, SandboxUnavailable, harness_env,
    remove_tree, tail_text,
)
from nasloop.sandbox.host import PeakSampler, owner_label, owner_state
from nasloop.sandbox.visible import masking_mounts

DEFAULT_IMAGE = "nasloop-sandbox:local"
# Run as the sandbox user on a job's out/ mounted at /x: empties and removes the directories named (hex) in
# its arguments, without recursion and at a constant path length (each subdirectory is first moved up to
# /x), so a tree of any depth or shape goes; bounded, so it ends.
CLEAR = """
import os, sys
n = 0
for name in sys.argv[1:]:
    top = os.path.join(b'/x', bytes.fromhex(name))
    todo = [top]
    while todo and n < 1000000:
        d = todo.pop()
        try:
            os.chmod(d, 0o700)
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            n += 1
            try:
                if e.is_dir(follow_symlinks=False):  # moving a directory writes its '..': chmod first
                    os.chmod(e.path, 0o700)
                    todo.append(os.path.join(b'/x', b'.clear%d' % n))
                    os.rename(e.path, todo[-1])
                else:
                    os.unlink(e.path)
            except OSError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass
"""
MODE_LABEL = "nasloop.mode"
HOST_MOUNTS = "host-mounts"
CONTAINER_LABEL = "nasloop.owner"  # boot id / pid namespace / pid / start time of the nasloop process
IMAGE_DIR = "/nasloop"  # where the image (or the host mounts) keep the harness
HARNESS_FILES = ("runner.py", "preflight.py", "counting.py", "steps.py", "device_data.py", "zero_cost.py", "worker.py")
REMOVE_TRIES = 4
ENGINE_HINT = ("Docker engine not reachable: start it (e.g. 'sudo systemctl start docker' or 'make docker-engine') "
               "or pass --sandbox process")


def docker_client(timeout: float = 30.0) -> docker.DockerClient:
    """A client whose engine answered a ping, or SandboxUnavailable with a one-line reason."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except (DockerException, requests.RequestException, OSError) as exc:
        raise SandboxUnavailable(ENGINE_HINT) from exc


def gpu_requests(gpus: str) -> list[DeviceRequest]:
    """Translate --gpus all|none|0,1 into docker device requests."""
    gpus = (gpus or "none").strip()
    if gpus == "none":
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[g.strip() for g in gpus.split(",") if g.strip()], capabilities=[["gpu"]])]


def host_mounts() -> dict[str, dict]:
    """Read-only bind mounts that make the host's interpreter and venv usable in an empty image."""
    paths = ["/usr", "/lib", "/lib64", "/bin", sys.base_prefix, sys.prefix]
    mounts: dict[str, dict] = {}
    for p in paths:
        if os.path.exists(p):
            mounts[os.path.realpath(p) if p in (sys.base_prefix, sys.prefix) else p] = {"bind": p, "mode": "ro"}
    for f in HARNESS_FILES:  # the harness and the modules it imports, read-only
        mounts[str(RUNNER_PATH.with_name(f))] = {"bind": f"{IMAGE_DIR}/{f}", "mode": "ro"}
    return mounts


class DockerEngine:
    """The engine, the image and the hardened container settings shared by cold and warm sandboxes."""

    def __init__(self, image: str = DEFAULT_IMAGE, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.client = docker_client()
        try:
            img = self.client.images.get(image)
        except ImageNotFound as exc:
            raise SandboxUnavailable(f"sandbox image '{image}' not found: run 'make sandbox-image'") from exc
        except (DockerException, requests.RequestException) as exc:
            raise SandboxUnavailable(f"cannot inspect sandbox image '{image}': {exc}") from exc
        self.image = image
        self.host_mounts = (img.labels or {}).get(MODE_LABEL) == HOST_MOUNTS
        self.python = sys.executable if self.host_mounts else "python"
        remove_orphans(self.client)
        LIVE.add_sweep("docker", lambda: remove_own(self.client))
        self.check_runtime()

    def check_runtime(self) -> None:
        """The sandbox's interpreter must have torch, numpy and safetensors: when it does not (nasloop run
        by another interpreter, a broken image), that is the sandbox's fault, never a candidate's."""
        try:
            out = self.client.containers.run(self.image, [self.python, "-I", "-c", CHECK_IMPORTS], remove=True,
                                             **self.container_settings(volumes={}, gpus="none"))
            del out
        except docker.errors.ContainerError as exc:
            raise SandboxUnavailable(f"the sandbox interpreter {self.python} lacks torch, numpy or safetensors "
                                     f"(exit {exc.exit_status}): run nasloop from the project's environment "
                                     f"or rebuild the image") from exc
        except (DockerException, requests.RequestException) as exc:
            raise SandboxUnavailable(f"cannot start a sandbox container: {str(exc).splitlines()[0][:200]}") from exc

    def container_settings(self, volumes: dict, gpus: str | None = None) -> dict:
        lim = self.limits
        settings = dict(
            environment={"HOME": "/tmp", **harness_env(lim)},
            user=f"{SANDBOX_UID}:{SANDBOX_UID}", working_dir="/tmp", network_mode="none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={lim.tmpfs_bytes}",
                   "/dev/shm": f"rw,nosuid,nodev,noexec,size={lim.tmpfs_bytes}"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=lim.pids,
            mem_limit=lim.memory_bytes, memswap_limit=lim.memory_bytes, nano_cpus=int(lim.cpus * 1e9),
            ulimits=[Ulimit(name="fsize", soft=outputs.WEIGHT_BYTES + 2**20, hard=outputs.WEIGHT_BYTES + 2**20),
                     Ulimit(name="core", soft=0, hard=0)],
            device_requests=gpu_requests(lim.gpus if gpus is None else gpus),
            volumes={**(host_mounts() if self.host_mounts else {}), **volumes},
            mounts=masking_mounts() if self.host_mounts else [],
            log_config=LogConfig(type="json-file", config={"max-size": "4m", "max-file": "2"}),
            labels={CONTAINER_LABEL: owner_label()},
        )
        if lim.runtime:
            settings["runtime"] = lim.runtime
        return settings

    def remove_job_dir(self, jd: JobDir) -> None:
        """Remove a job's directory. On a host that is not root, a directory the candidate made in out/ is the
        sandbox user's: a short container as that user empties it (else it stayed, up to 640 MiB a job, and
        each job's could add to it). Never raises: what still stays, JobDir.remove has locked."""
        if jd.remove():
            return
        try:
            names = [os.fsencode(e.name).hex() for e in os.scandir(jd.out) if e.is_dir(follow_symlinks=False)]
            self.client.containers.run(self.image, [self.python, "-I", "-c", CLEAR, *names[:4096]], remove=True,
                                       **self.container_settings({str(jd.out): {"bind": "/x", "mode": "rw"}}, "none"))
        except (DockerException, requests.RequestException, OSError):
            pass
        remove_tree(jd.path)

    def remove(self, container) -> None:
        """Force-remove, never raising. An engine under load can answer with an error (a kill that got no
        exit event in time) and leave the container running, so a failed removal is tried again."""
        try:
            for attempt in Retrying(stop=stop_after_attempt(REMOVE_TRIES), wait=wait_fixed(0.5),
                                    retry=retry_if_exception(_worth_retrying), reraise=True):
                with attempt:
                    container.remove(force=True)
        except (DockerException, requests.RequestException):
            pass


class DockerSandbox(DockerEngine):
    """The default backend: a fresh container per candidate. `run` never raises for candidate faults;
    infrastructure faults go to `infra_error`."""

    def run(self, job: Job) -> RawResult:
        LIVE.check_open()
        lim = self.limits
        t0 = time.perf_counter()
        raw = RawResult()
        config = {**job.config, "deadline_s": lim.timeout_s + 5}
        jd = JobDir(job, config)
        container, sampler, key = None, None, None
        try:
            volumes = {str(jd.inp): {"bind": "/job", "mode": "ro"}, str(jd.out): {"bind": "/out", "mode": "rw"},
                       str(Path(job.data_dir).resolve()): {"bind": "/data", "mode": "ro"}}
            command = ["/usr/bin/timeout", "-s", "KILL", f"{lim.timeout_s + 10:g}", self.python, "-I",
                       f"{IMAGE_DIR}/runner.py", "/job/config.json", "/job/candidate.py", "/data", "/out"]
            container = self.client.containers.create(self.image, command=command, detach=True,
                                                      **self.container_settings(volumes))
            key = LIVE.add(self._stopper(container, jd))
            container.start()
            sampler = PeakSampler(container.id)
            sampler.start()
            watcher = outputs.ProgressWatcher(jd.out, job.on_progress, overflow=lambda: _kill(container))
            with watcher:
                self._wait(container, jd.out, raw)
            raw.out_overflow = watcher.overflowed
            container.reload()
            state = container.attrs.get("State", {})
            raw.oom_killed = bool(state.get("OOMKilled"))
            if raw.exit_code is None:
                raw.exit_code = state.get("ExitCode")
            raw.stderr_tail = tail_text(container.logs(stdout=True, stderr=True, tail=400), lim.log_bytes)
            outputs.collect(jd.out, raw, job.output_dir)
        except (DockerException, requests.RequestException, OSError) as exc:
            raw.infra_error = f"docker: {str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__}"
        finally:
            raw.wall_seconds = time.perf_counter() - t0
            if sampler is not None:
                raw.peak_memory_bytes = sampler.stop()
            if container is not None:
                self.remove(container)
            self.remove_job_dir(jd)
            if key is not None:
                LIVE.discard(key)
        return raw

    def _stopper(self, container, jd: JobDir):
        def stop() -> None:
            self.remove(container)
            self.remove_job_dir(jd)
        return stop

    def _wait(self, container, out_dir: Path, raw: RawResult) -> None:
        """Wait under the short pre-flight deadline, then (once the harness says training started) under
        the full limit; kill on either."""
        def wait(seconds: float) -> int:
            try:
                return int(container.wait(timeout=seconds).get("StatusCode", -1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                raise TimeoutError from None

        outputs.wait_in_phases(wait, self.limits, out_dir, raw)
        if raw.exit_code is not None:
            return
        _kill(container)
        try:
            container.wait(timeout=30)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            pass  # slow to die (heavy writeback): it is the candidate's timeout still; removal forces it


def _kill(container) -> None:
    try:
        container.kill()
    except (APIError, NotFound):
        pass


def leftover_containers(client: docker.DockerClient | None = None) -> list:
    """Sandbox containers whose owner process is gone, or that belong to this process (should be none
    between evaluations). Containers of other live runs, other kernels or PID namespaces are not listed."""
    client = client or docker_client()
    return [c for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
            if owner_state((c.labels or {}).get(CONTAINER_LABEL, "")) in ("self", "dead")]


def _worth_retrying(exc: BaseException) -> bool:
    """Gone already, or being removed by another thread: done. Anything else from the engine: try again."""
    if isinstance(exc, NotFound):
        return False
    if isinstance(exc, APIError) and exc.status_code == 409 and "in progress" in str(exc):
        return False
    if isinstance(exc, requests.Timeout):
        return False  # a hung engine: waiting again only delays a process that is leaving
    return isinstance(exc, (DockerException, requests.RequestException))


def remove_own(client: docker.DockerClient) -> int:
    """Remove this process's own sandbox containers: run when it leaves on a signal, to catch one whose
    creation was in flight when its node was stopped."""
    return _remove_owned(client, "self")


def remove_orphans(client: docker.DockerClient) -> int:
    """Remove sandbox containers whose owner process died (e.g. a search killed with kill -9)."""
    return _remove_owned(client, "dead")


def _remove_owned(client: docker.DockerClient, state: str) -> int:
    """Remove the sandbox containers whose owner is in `state` (host.owner_state); never raises."""
    removed = 0
    try:
        found = [c for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
                 if owner_state((c.labels or {}).get(CONTAINER_LABEL, "")) == state]
    except (DockerException, requests.RequestException):
        return 0
    for c in found:
        try:
            c.remove(force=True)
            removed += 1
        except (DockerException, requests.RequestException):
            pass
    return removed
