"""Facts the host reads about itself and its containers, never from inside a sandbox.

* Owner identity: a container is labelled with boot id, PID namespace, PID and process start time of the
  nasloop process that made it. A PID alone is wrong across PID namespaces and after PID reuse; this
  tuple names one live process on one kernel, so orphan cleanup never touches another live run.
* Memory high-water mark of a container, from its cgroup (v1 memory.max_usage_in_bytes, v2 memory.peak),
  sampled while it runs: the cgroup disappears with the container.
"""
from __future__ import annotations

import glob
import os
import threading
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").split("[")[-1].rstrip("]")
    except OSError:
        return "unknown"


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_label(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{boot_id()}/{pid_namespace()}/{pid}/{start_time(pid)}"


def owner_state(label: str) -> str:
    """'self', 'alive', 'dead' — or 'foreign' when the label is not ours to judge (another kernel or PID
    namespace, or an unreadable label): foreign containers are never removed."""
    parts = label.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return "foreign"
    boot, ns, pid, started = parts
    if boot != boot_id() or ns != pid_namespace():
        return "foreign"
    if int(pid) == os.getpid() and started == start_time(os.getpid()):
        return "self"
    return "alive" if start_time(int(pid)) == started else "dead"


def memory_files(container_id: str) -> list[str]:
    """The cgroup files that hold a container's memory high-water mark (v1 or v2 layouts)."""
    pats = [f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes",
            f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.max_usage_in_bytes",
            f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak",
            f"/sys/fs/cgroup/docker/{container_id}/memory.peak"]
    return [p for pat in pats for p in glob.glob(pat)]


def oom_kills(container_id: str) -> int | None:
    """The kernel's count of OOM kills in a container's cgroup (v1 memory.oom_control, v2 memory.events)."""
    for path, key in ((f"/sys/fs/cgroup/memory/docker/{container_id}/memory.oom_control", "oom_kill"),
                      (f"/sys/fs/cgroup/docker/{container_id}/memory.events", "oom_kill")):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except OSError:
            continue
    return None


class PeakSampler(threading.Thread):
    """Samples a container's cgroup high-water mark until stopped; `peak` is the last value read."""

    def __init__(self, container_id: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.container_id, self.interval = container_id, interval
        self.peak: int | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        files: list[str] = []
        while not self._stop_event.is_set():
            files = files or memory_files(self.container_id)
            for f in files:
                try:
                    self.peak = max(self.peak or 0, int(Path(f).read_text().strip()))
                except (OSError, ValueError):
                    pass
            self._stop_event.wait(self.interval)

    def stop(self) -> int | None:
        self._stop_event.set()
        self.join(2)
        return self.peak
