"""Build the registry-free sandbox image: an empty root file system labelled `host-mounts`.

The Docker sandbox bind-mounts the host's interpreter and virtualenv into it read-only, so no base
image has to be pulled. Users with a registry and an NVIDIA GPU build sandbox/Dockerfile instead.

    python -m nasloop.sandbox.image [--tag nasloop-sandbox:local]
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile

from nasloop.sandbox.base import SandboxUnavailable
from nasloop.sandbox.docker_sandbox import DEFAULT_IMAGE, HOST_MOUNTS, MODE_LABEL, docker_client


def empty_rootfs() -> bytes:
    """A tar archive holding only the directories the container needs to exist."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("tmp", "job", "data", "out", "jobs", "ctl", "nasloop", "proc", "dev", "sys", "etc"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
    return buf.getvalue()


def build(tag: str = DEFAULT_IMAGE) -> str:
    client = docker_client()
    try:
        existing = client.images.get(tag)
        if (existing.labels or {}).get(MODE_LABEL) == HOST_MOUNTS:
            return f"sandbox image {tag} is present"
    except Exception:  # noqa: BLE001 - absent or unreadable: (re)build it
        pass
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(empty_rootfs(), repository=repo, tag=version or "latest",
                                      changes=[f"LABEL {MODE_LABEL}={HOST_MOUNTS}"])
    return f"built sandbox image {tag}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=DEFAULT_IMAGE)
    args = parser.parse_args(argv)
    try:
        print(build(args.tag))
    except SandboxUnavailable as exc:
        print(f"nasloop: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
