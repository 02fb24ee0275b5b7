"""What a candidate leaves in out/ that a host not running as root cannot remove: the host is played here by
uid 1000 in the docker group (a user's usual setup), the candidate's leftovers by uid 65534 (the sandbox user).
A directory the candidate made is its own (mode 0700 if it likes), so the host can neither empty nor list it:
it stayed on the host's disk, up to 640 MiB a job, and in a warm worker's /jobs a later candidate could read
it by name."""
from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from nasloop.sandbox import Limits, docker_sandbox, make_sandbox
from nasloop.sandbox.base import SANDBOX_UID, Job, JobDir

pytestmark = pytest.mark.integration

HOST_UID = 1000


def leave_tree(out: Path) -> None:
    """What a candidate can leave: a 1 MiB file in a directory of its own, 300 levels under it, a directory
    made unreadable, all the sandbox user's and mode 0700."""
    stash = out / "stash"
    deep = stash / "/".join(["d"] * 300)
    deep.mkdir(parents=True)
    (deep / "kept").write_bytes(b"\0" * 2**20)
    (stash / "locked").mkdir()
    for root, dirs, files in os.walk(stash):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), SANDBOX_UID, SANDBOX_UID)
    os.chown(stash, SANDBOX_UID, SANDBOX_UID)
    for root, dirs, _ in os.walk(stash):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    os.chmod(stash / "locked", 0)
    os.chmod(stash, 0o700)


def as_host_user(jd: JobDir) -> None:
    """The job directory as JobDir makes it for a host running as HOST_UID: its own, out/ 0733."""
    for p in (jd.path, jd.inp, *jd.inp.iterdir(), jd.out):
        os.chown(p, HOST_UID, HOST_UID)
    os.chmod(jd.out, 0o733)


def test_a_host_that_is_not_root_locks_then_clears_what_a_candidate_left(docker_engine, digits, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("plays two users: needs root")
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        pytest.skip("no docker group to put the host user in")
    sandbox = make_sandbox("docker", limits=Limits(timeout_s=60))
    # the host user's interpreter is readable by that user; here it is root's, so its mounts are computed now
    mounts, masks = docker_sandbox.host_mounts(), docker_sandbox.masking_mounts()
    monkeypatch.setattr(docker_sandbox, "host_mounts", lambda: mounts)
    monkeypatch.setattr(docker_sandbox, "masking_mounts", lambda: masks)
    jd = JobDir(Job(source="", config={}, data_dir=digits.path), {})
    as_host_user(jd)
    leave_tree(jd.out)
    pid = os.fork()
    if pid == 0:  # the host, not root
        code = 1
        try:
            import docker

            os.setgroups([docker_gid])
            os.setgid(HOST_UID)
            os.setuid(HOST_UID)
            if jd.remove():
                code = 2  # it could not have: the test is wrong
            elif stat.S_IMODE(os.stat(jd.path).st_mode) != 0o700:
                code = 3  # not locked: a later candidate could read it
            else:
                sandbox.client = docker.from_env()
                sandbox.remove_job_dir(jd)
                code = 4 if os.path.lexists(jd.path) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not jd.path.exists()
