"""Shared fixtures. Integration tests use the real Docker engine, real data and the real GGUF model;
they skip (with the reason) only where a prerequisite is truly absent on the machine."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = Path(__file__).parent / "candidates"
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    """Until `url` answers; fail with the server's log when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def candidate(name: str) -> str:
    return (CANDIDATES / f"{name}.py").read_text()


@pytest.fixture(scope="session")
def digits():
    from nasloop.tools.datasets import prepare

    return prepare("digits", train_subset=512, test_subset=200)


@pytest.fixture(scope="session")
def docker_engine():
    """The real engine; the suite fails (not skips) when it is missing: `make test` starts it."""
    from nasloop.sandbox.docker_sandbox import docker_client

    client = docker_client()
    yield client
    from nasloop.sandbox.docker_sandbox import leftover_containers

    left = leftover_containers(client)
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory):
    """The CIFAR-10 JPEGs extracted once into the cache (skip if the archive is not there)."""
    import tarfile

    from nasloop.tools.datasets import cache_root

    tar = SHARED_DATA / "cifar10-jpeg.tar"
    if not tar.is_file():
        pytest.skip(f"{tar} is absent: the real-image tests need the CIFAR-10 JPEG archive")
    dest = cache_root() / "cifar10-jpeg"
    if not (dest / "cifar10-jpeg" / "train").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
    return dest / "cifar10-jpeg"


@pytest.fixture(scope="session")
def digits_view(digits):
    """What a sandbox sees of the small digits set (for running the harness in-process in unit tests)."""
    return digits.sandbox_dir
