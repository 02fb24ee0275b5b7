"""Reading what a sandbox wrote, as hostile bytes: total, bounded, and never following a path it made.

Every file is opened relative to the job's out/ directory with O_NOFOLLOW and must be a regular file
under a size limit; result.json is parsed with a depth and size bound and reduced to plain, printable
values; tensors are read as safetensors (a header and raw numbers: nothing is executed).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nasloop.sandbox.base import Limits, RawResult, printable

RESULT, PREDICTIONS, WEIGHTS, TRAINING_MARK = "result.json", "predictions.safetensors", "weights.safetensors", "training"
PROGRESS = "progress"  # the harness's "<step> <steps>" (sandbox/runner.py)
RESULT_BYTES = 256 * 1024
PREDICTION_BYTES = 64 * 1024**2
WEIGHT_BYTES = 512 * 1024**2
MAX_DEPTH, MAX_ITEMS, MAX_TEXT = 6, 200, 1500


class Refused(Exception):
    """An output file the host will not read (a link, not a regular file, too large, malformed)."""


def read_regular(out_dir: Path, name: str, limit: int) -> bytes | None:
    """The bytes of out_dir/name if it is a regular file of at most `limit` bytes; None if absent."""
    try:
        dfd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(f"cannot open the output directory ({exc.strerror})") from exc
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink
            raise Refused(f"{name} is not a regular file ({exc.strerror})") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{name} is not a regular file")
            if st.st_size > limit:
                raise Refused(f"{name} has {st.st_size:,} bytes (limit {limit:,})")
            chunks, total = [], 0
            while total <= limit:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > limit:
                raise Refused(f"{name} grew past {limit:,} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def read_tail(out_dir: Path, name: str, limit: int) -> bytes:
    """The last `limit` bytes of out_dir/name (a log the sandbox wrote), if it is a regular file."""
    try:
        dfd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return b""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return b""
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b""
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def exists(out_dir: Path, name: str) -> bool:
    """Whether out_dir/name exists (any type; used only for the pre-flight marker)."""
    try:
        dfd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(dfd)


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON value reduced to bounded, printable plain data (depth, item count, text length)."""
    if depth > MAX_DEPTH:
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return printable(value[:MAX_TEXT])
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {printable(str(k)[:64]): clean(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return None


def parse_result(data: bytes) -> dict:
    """result.json → a sanitised dict. Raises Refused for anything that is not a bounded JSON object."""
    try:
        text = data.decode("utf-8", "replace")
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"result.json is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise Refused("result.json is not a JSON object")
    return clean(value)


def load_tensors(data: bytes, what: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - the parser's own errors: a malformed file
        raise Refused(f"{what} is not a valid safetensors file ({type(exc).__name__})") from exc


def read_predictions(data: bytes) -> np.ndarray:
    arr = load_tensors(data, PREDICTIONS).get("predictions")
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise Refused("predictions.safetensors holds no 1-D integer tensor 'predictions'")
    return arr.astype(np.int64)


def count_values(data: bytes) -> int:
    """Parameters and buffers in the trained state_dict, counted from the tensors themselves."""
    return int(sum(int(a.size) for a in load_tensors(data, WEIGHTS).values()))


def collect(out_dir: Path, raw: RawResult, export_to: Path | None = None) -> None:
    """Fill raw.result / predictions / tensors from out_dir; copy the weights to `export_to` (a host
    directory the sandbox never saw) when asked. Problems are recorded, never raised."""
    try:
        data = read_regular(out_dir, RESULT, RESULT_BYTES)
        raw.result = parse_result(data) if data is not None else None
        if raw.result is None or raw.result.get("status") != "ok" or raw.result.get("scores") is not None:
            return
        if raw.result.get("preflight") == "passed" and not _trained(raw.result):
            return  # pre-flight mode: no tensors expected
        preds = read_predictions(_need(read_regular(out_dir, PREDICTIONS, PREDICTION_BYTES), PREDICTIONS))
        weights = _need(read_regular(out_dir, WEIGHTS, WEIGHT_BYTES), WEIGHTS)
        raw.predictions, raw.tensors = preds, count_values(weights)
        if export_to is not None:
            write_new(export_to / WEIGHTS, weights)
    except Refused as exc:
        raw.output_problem = printable(str(exc))


def _trained(result: dict) -> bool:
    return result.get("steps") is not None


def _need(data: bytes | None, name: str) -> bytes:
    if data is None:
        raise Refused(f"{name} is missing")
    return data


def write_new(path: Path, data: bytes) -> None:
    """Write a host file without following a link someone may have left at its name."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def wait_in_phases(wait: Callable[[float], int], limits: Limits, out_dir: Path, raw: RawResult) -> None:
    """Wait for a cold candidate under the short pre-flight deadline, then, once the harness has marked
    out/ that training started, under the rest of the full limit. `wait(seconds)` returns the exit code
    or raises TimeoutError. Sets `raw.exit_code`, or `raw.timed_out` (and `preflight_timed_out`); the
    caller kills what is still running."""
    first = min(limits.preflight_s, limits.timeout_s)
    for phase, budget in enumerate((first, limits.timeout_s - first)):
        try:
            raw.exit_code = wait(max(budget, 0.1))
            return
        except TimeoutError:
            in_preflight = phase == 0 and first < limits.timeout_s
            if in_preflight and exists(out_dir, TRAINING_MARK):
                continue
            raw.timed_out, raw.preflight_timed_out = True, in_preflight
            return


def read_progress(out_dir: Path) -> tuple[int, int] | None:
    """The harness's training progress as (step, steps), or None: hostile bytes (the candidate shares the
    harness's process), so only a short, well-formed, consistent pair is believed — and only displayed."""
    try:
        data = read_regular(out_dir, PROGRESS, 64)
    except Refused:
        return None
    m = re.fullmatch(rb"(\d{1,9}) (\d{1,9})", data or b"")
    if not m:
        return None
    step, steps = int(m.group(1)), int(m.group(2))
    return (step, steps) if 0 <= step <= steps else None


# What a job's out/ may hold, all files together: the weights, the predictions and 64 MiB for the rest (the
# result, the log, the progress note). The file-size limit caps each file; this caps their sum and number.
OUT_BYTES = WEIGHT_BYTES + PREDICTION_BYTES + 64 * 1024**2
OUT_ENTRIES = 64
# A file the candidate opens in out/ and then unlinks holds disk space no walk of out/ sees (each up to the
# file-size limit, as many as it may open files): the host also watches the free space of out/'s file system,
# and stops the job once more than OUT_BYTES + DISK_SLACK of it is gone. The slack is for what others write
# meanwhile (other workers' jobs, the run's own records), so an honest job is not stopped for them.
DISK_SLACK = 1024**3


def free_bytes(path: Path) -> int | None:
    """The bytes an unprivileged writer may still use on `path`'s file system (None: cannot tell)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def out_usage(out_dir: Path, limit: int = OUT_ENTRIES + 1) -> tuple[int, int]:
    """(bytes, entries) under out/, links not followed, counting stopped past `limit` entries. A file counts
    its allocated blocks where they exceed its size (fallocate keeps the size at 0), and a subdirectory the
    host cannot read counts as over the quota (the harness makes none; a mode-0700 one would hide files)."""
    size, entries, todo = 0, 0, [str(out_dir)]
    while todo and entries <= limit:
        path = todo.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    entries += 1
                    if entries > limit:  # a directory of a million entries is not walked every poll
                        break
                    st = entry.stat(follow_symlinks=False)
                    size += max(st.st_size, st.st_blocks * 512)
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(entry.path)
        except OSError:
            if path != str(out_dir):
                return OUT_BYTES + 1, entries
    return size, entries


class ProgressWatcher:
    """While a job runs, polls the job's out/ directory (which every backend shares with the host): calls
    `report(step, steps)` whenever the harness notes new training progress, and `overflow()` once out/ holds
    more than OUT_BYTES or OUT_ENTRIES, or its file system has lost more than OUT_BYTES + DISK_SLACK since the
    job started (the backend then stops the job: a candidate writing file after file of the size the file-size
    limit allows, or into files it unlinked, would fill the host's disk). A failing `report` only stops the
    reporting."""

    def __init__(self, out_dir: Path, report: Callable[[int, int], None] | None,
                 overflow: Callable[[], None] | None = None, every: float = 0.25):
        self.out_dir, self.report, self.overflow, self.every = out_dir, report, overflow, every
        self.stop = threading.Event()
        self.last: tuple[int, int] | None = None
        self.overflowed = False
        self.thread = threading.Thread(target=self._poll, daemon=True, name="nasloop-progress")

    def __enter__(self) -> "ProgressWatcher":
        if self.report is not None or self.overflow is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(5)

    def _poll(self) -> None:
        free0 = free_bytes(self.out_dir)
        while True:
            stopping = self.stop.wait(self.every)
            if self.overflow is not None and not self.overflowed and self._over(free0):
                self.overflowed = True
                self.overflow()
            now = read_progress(self.out_dir) if self.report is not None else None
            if now is not None and now != self.last and self.report is not None:
                self.last = now
                try:
                    self.report(*now)
                except Exception:  # noqa: BLE001 - a display must not fail an evaluation
                    self.report = None
            if stopping:
                return

    def _over(self, free0: int | None) -> bool:
        size, entries = out_usage(self.out_dir)
        free = free_bytes(self.out_dir) if free0 is not None else None
        lost = free0 - free if free0 is not None and free is not None else 0
        return size > OUT_BYTES or entries > OUT_ENTRIES or lost > OUT_BYTES + DISK_SLACK
