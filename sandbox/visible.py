"""What of the host's Python environment a host-mounts sandbox may see: the harness's dependency closure.

The registry-free image bind-mounts the host's interpreter and virtualenv. A virtualenv holds far more than
torch: scikit-learn, for one, ships the digits data set with its labels — the default data set's test
labels, readable by any candidate. So every top-level entry of site-packages outside the closure of
torch, numpy and safetensors (their requirements, recursively, without extras) is covered by an empty
read-only tmpfs: in the virtualenv, and in the base interpreter's and the system's package directories,
which are mounted with the interpreter.
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

NEEDED = ("torch", "numpy", "safetensors")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: tuple[str, ...] = NEEDED) -> dict[str, object]:
    """Distributions needed to run the harness, by normalised name."""
    found: dict[str, object] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if _key(name) in found:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        found[_key(name)] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            m = re.match(r"[A-Za-z0-9_.\-]+", req)
            if m:
                todo.append(m.group(0))
    return found


@lru_cache(maxsize=1)
def hidden_paths() -> tuple[str, ...]:
    """Top-level entries (directories) of the environment's site-packages that the sandbox must not see."""
    keep: set[str] = set()
    for dist in closure().values():
        for f in getattr(dist, "files", None) or []:
            keep.add(Path(str(f)).parts[0])
    hidden = []
    on_path = {Path(p) for p in sys.path}
    for site in package_dirs():
        if site not in on_path:  # nothing the harness imports comes from there: covered whole
            hidden.append(str(site))
            continue
        for entry in site.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.name not in keep and entry.name != "__pycache__":
                hidden.append(str(entry))
    return tuple(sorted(hidden))


def package_dirs() -> set[Path]:
    """The package directories a host-mounts sandbox sees: those on this interpreter's path, and those of the
    base interpreter and the system's Python under the mounted /usr (not on a virtualenv's path, but mounted
    with it, and readable: a scikit-learn installed there holds the digits labels as well)."""
    roots = (sys.prefix, sys.base_prefix, "/usr")
    found = {Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    for root in {sys.base_prefix, "/usr", "/usr/local"}:
        found |= set(Path(root).glob("lib/python3*/site-packages")) | set(Path(root).glob("lib/python3*/dist-packages"))
    found |= set(Path("/usr/lib/python3").glob("dist-packages"))
    return {p for p in found if p.is_dir() and str(p).startswith(roots)}


def masking_mounts() -> list:
    """Docker mounts covering every hidden path with an empty read-only tmpfs (nothing on the host to clean)."""
    from docker.types import Mount

    return [Mount(target=path, source=None, type="tmpfs", read_only=True, tmpfs_size=4096)
            for path in hidden_paths()]
