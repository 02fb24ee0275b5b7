"""Run the harness on one candidate in a locked-down Docker container (docker SDK).

Every run gets: no network, a read-only root, a small tmpfs /tmp, a non-root user, no capabilities,
no-new-privileges, a pids limit, memory == memory+swap, a CPU quota, read-only mounts of the job and the
data, only the environment variables set here, GPUs only when asked, a wall-clock timeout that always
kills, bounded logs, and removal of the container whatever happens (Ctrl-C included).

Two kinds of image share this code path:
  * `host-mounts` (label nasloop.mode=host-mounts, built by `python -m sandbox.image`): an empty root file
    system; the host's interpreter and virtualenv are bind-mounted read-only at their own paths. Works
    without a container registry.
  * self-contained (sandbox/Dockerfile): interpreter, torch and the harness are inside the image.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig

from sandbox.base import RUNNER_PATH, Job, Limits, RawResult, SandboxUnavailable, parse_result, tail_text

DEFAULT_IMAGE = "nasloop-sandbox:local"
MODE_LABEL = "nasloop.mode"
HOST_MOUNTS = "host-mounts"
CONTAINER_LABEL = "nasloop.sandbox"
IMAGE_RUNNER = "/nasloop/runner.py"  # where the self-contained image keeps the harness
HARNESS_FILES = ("runner.py", "zero_cost.py")
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
    return mounts


class DockerSandbox:
    """The default backend. `run` never raises for candidate faults; infra faults go to `infra_error`."""

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
        remove_orphans(self.client)

    # -- one evaluation -------------------------------------------------------------------------
    def run(self, job: Job) -> RawResult:
        lim = self.limits
        workdir = Path(tempfile.mkdtemp(prefix="nasloop-job-"))
        container = None
        t0 = time.perf_counter()
        raw = RawResult()
        try:
            os.chmod(workdir, 0o755)
            config = dict(job.config)
            volumes = {str(workdir): {"bind": "/job", "mode": "ro"},
                       str(Path(job.data_dir).resolve()): {"bind": "/data", "mode": "ro"}}
            if job.output_dir is not None:  # the only writable mount, and only when asked for
                Path(job.output_dir).mkdir(parents=True, exist_ok=True)
                os.chmod(job.output_dir, 0o777)
                volumes[str(Path(job.output_dir).resolve())] = {"bind": "/out", "mode": "rw"}
                config["output_dir"] = "/out"
            (workdir / "candidate.py").write_text(job.source, encoding="utf-8")
            (workdir / "config.json").write_text(json.dumps(config), encoding="utf-8")
            for f in workdir.iterdir():
                os.chmod(f, 0o644)
            if self.host_mounts:
                volumes.update(host_mounts())
                for f in HARNESS_FILES:  # the harness and the modules it imports, read-only
                    volumes[str(RUNNER_PATH.with_name(f))] = {"bind": f"/nasloop/{f}", "mode": "ro"}
                python = sys.executable
            else:
                python = "python"
            threads = max(1, int(lim.cpus))
            container = self.client.containers.create(
                self.image,
                command=[python, "-I", IMAGE_RUNNER, "/job/config.json", "/job/candidate.py", "/data"],
                environment={"HOME": "/tmp", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                             "PYTHONDONTWRITEBYTECODE": "1"},
                user="65534:65534",
                working_dir="/tmp",
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={lim.tmpfs_bytes}"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=lim.pids,
                mem_limit=lim.memory_bytes,
                memswap_limit=lim.memory_bytes,
                nano_cpus=int(lim.cpus * 1e9),
                device_requests=gpu_requests(lim.gpus),
                volumes=volumes,
                log_config=LogConfig(type="json-file", config={"max-size": "4m", "max-file": "2"}),
                labels={CONTAINER_LABEL: str(os.getpid())},  # the owner, to tell leaks from live runs
                stdin_open=True,
                detach=True,
            )
            self._start_with_nonce(container, job.nonce)
            try:
                status = container.wait(timeout=lim.timeout_s)
                raw.exit_code = int(status.get("StatusCode", -1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                raw.timed_out = True
                try:
                    container.kill()
                except (APIError, NotFound):
                    pass
                container.wait(timeout=30)
            container.reload()
            state = container.attrs.get("State", {})
            raw.oom_killed = bool(state.get("OOMKilled"))
            if raw.exit_code is None:
                raw.exit_code = state.get("ExitCode")
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            raw.result, raw.forged_lines = parse_result(stdout, job.nonce)
            raw.stderr_tail = tail_text(container.logs(stdout=False, stderr=True, tail=400), lim.log_bytes)
        except (DockerException, requests.RequestException, OSError) as exc:
            raw.infra_error = f"docker: {str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__}"
        finally:
            raw.wall_seconds = time.perf_counter() - t0
            if container is not None:
                try:
                    container.remove(force=True)
                except (DockerException, requests.RequestException):
                    pass
            shutil.rmtree(workdir, ignore_errors=True)
        return raw

    def _start_with_nonce(self, container, nonce: str) -> None:
        """Attach stdin, start, send the nonce, close stdin: the nonce never touches disk or env."""
        sock = container.attach_socket(params={"stdin": 1, "stream": 1})
        raw_sock = getattr(sock, "_sock", sock)
        try:
            container.start()
            raw_sock.sendall((nonce + "\n").encode())
        finally:
            try:
                raw_sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()


def leftover_containers(client: docker.DockerClient | None = None) -> list:
    """Sandbox containers that outlived their owner process, or belong to this one (should be none)."""
    client = client or docker_client()
    left = []
    for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
        owner = (c.labels or {}).get(CONTAINER_LABEL, "")
        if not owner.isdigit() or int(owner) == os.getpid() or not _alive(int(owner)):
            left.append(c)
    return left


def remove_orphans(client: docker.DockerClient) -> int:
    """Remove sandbox containers whose owner process died (e.g. a search killed with kill -9)."""
    removed = 0
    for c in leftover_containers(client):
        owner = (c.labels or {}).get(CONTAINER_LABEL, "")
        if owner.isdigit() and int(owner) != os.getpid():
            try:
                c.remove(force=True)
                removed += 1
            except (DockerException, requests.RequestException):
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
