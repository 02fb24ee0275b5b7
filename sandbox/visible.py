"""What of the host's Python environment a host-mounts sandbox may see: the harness's dependency closure.

The registry-free image bind-mounts the host's interpreter and virtualenv. A virtualenv holds far more than
torch: scikit-learn, for one, ships the digits data set with its labels — the default data set's test
labels, readable by any candidate. So every top-level entry of site-packages outside the closure of
torch, numpy and safetensors (their requirements, recursively, without extras) is covered by an empty
read-only tmpfs.
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
    for site in {Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()}:
        if not str(site).startswith((sys.prefix, sys.base_prefix)):
            continue
        for entry in site.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.name not in keep and entry.name != "__pycache__":
                hidden.append(str(entry))
    return tuple(sorted(hidden))


def masking_mounts() -> list:
    """Docker mounts covering every hidden path with an empty read-only tmpfs (nothing on the host to clean)."""
    from docker.types import Mount

    return [Mount(target=path, source=None, type="tmpfs", read_only=True, tmpfs_size=4096)
            for path in hidden_paths()]
