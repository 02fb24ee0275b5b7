"""The run directory: everything a run produces, append-only, safe against `kill -9` at any moment.

    runs/<id>/run.json            how the run was started (for --resume)
    runs/<id>/checkpoints.sqlite  LangGraph checkpoints (small: the graph state is bounded)
    runs/<id>/candidates/NNNN.py  every candidate's code
    runs/<id>/results.jsonl       one line per iteration: outcome, metrics, LLM costs
    runs/<id>/trace.jsonl         every LLM step: node, prompt, response, seconds, tokens
    runs/<id>/best.py, summary.json
    runs/<id>/running             which process is searching now (removed when it stops; stale after a kill)

Exactly-once: a node that is re-run after a crash (LangGraph redoes the step whose checkpoint was not
written) finds its earlier record through `once()` and reuses it, so nothing is duplicated or lost and
no LLM call or training run is repeated for something already recorded.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from nasloop.errors import RunError

_APPEND = threading.Lock()

RUN_FILE = "run.json"
RUNNING = "running"


def _read_jsonl(path: Path, dropped: list[str] | None = None, repair: bool = True) -> list[dict]:
    """Records of a JSONL file; a line cut short by a crash is dropped (named in `dropped` so the user is
    told) and, when the run will be written to (`repair`), truncated away so the next record starts clean."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if dropped is not None:
            dropped.append(f"{path.name}: {'dropped' if repair else 'ignored'} a last line cut short "
                           f"({len(data) - cut} bytes, written when the run was stopped)")
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
        data = data[:cut]
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class RunStore:
    """Files of one run; see the module docstring."""

    def __init__(self, path: Path, writable: bool = True):
        self.path = Path(path)
        self._memo: dict[tuple[str, int, str], dict] = {}
        self._codes: dict[str, dict] = {}  # code_key -> first result with that code (repeat detection)
        self._structures: dict[str, int] = {}  # pre-flight structure hash -> first iteration (duplicates)
        self.dropped: list[str] = []  # what opening the run had to repair (the CLI warns about it)
        for kind in ("trace", "results"):
            for rec in _read_jsonl(self.path / f"{kind}.jsonl", self.dropped, repair=writable):
                self._remember(kind, rec)

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir: str | Path, label: str, config: dict) -> "RunStore":
        runs_dir = Path(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create runs directory '{runs_dir}': {exc.strerror}") from exc
        stem = time.strftime("%Y%m%d-%H%M%S") + "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[-40:]
        for n in range(1000):
            path = runs_dir / (stem if n == 0 else f"{stem}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise RunError(f"cannot find a free run name in '{runs_dir}'")
        (path / "candidates").mkdir()
        store = cls(path)
        store._write_atomic(RUN_FILE, json.dumps({"version": 1, **config}, indent=1))
        return store

    @classmethod
    def open(cls, path: str | Path, writable: bool = True) -> "RunStore":
        """An existing run; `writable=False` for readers (replay, report, a fork's source): nothing in the
        directory is changed, not even a line cut short."""
        path = Path(path)
        if not (path / RUN_FILE).is_file():
            raise RunError(f"'{path}' is not a nasloop run (no {RUN_FILE})")
        return cls(path, writable)

    @property
    def config(self) -> dict:
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read {self.path / RUN_FILE}: {exc}") from exc

    def update_config(self, change: Callable[[dict], None]) -> None:
        """Apply `change` to run.json in place (atomically)."""
        cfg = self.config
        change(cfg)
        self._write_atomic(RUN_FILE, json.dumps(cfg, indent=1))

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints.sqlite"

    # -- records ------------------------------------------------------------------------------------
    def once(self, kind: str, iteration: int, node: str, make: Callable[[], dict]) -> dict:
        """The record for (iteration, node) in `kind`.jsonl, created by `make()` only if absent."""
        key = (kind, iteration, node)
        if key in self._memo:
            return self._memo[key]
        rec = {"iteration": iteration, "node": node, **make(), "time": time.time()}
        self._append(f"{kind}.jsonl", rec)
        self._remember(kind, rec)
        return rec

    def copy_record(self, kind: str, rec: dict) -> None:
        """Append a record taken from another run (fork) unless this run already has one for its step."""
        if (kind, rec.get("iteration", -1), rec.get("node", "")) not in self._memo:
            self._append(f"{kind}.jsonl", rec)
            self._remember(kind, rec)

    def _remember(self, kind: str, rec: dict) -> None:
        self._memo[(kind, rec.get("iteration", -1), rec.get("node", ""))] = rec
        if kind == "results" and rec.get("code_key"):
            self._codes.setdefault(rec["code_key"], rec)
        if kind == "results" and rec.get("structure"):  # the earliest iteration with each structure
            it = rec.get("iteration", -1)
            self._structures[rec["structure"]] = min(it, self._structures.get(rec["structure"], it))

    def structures(self) -> dict[str, int]:
        """Each pre-flight structure hash seen, with the first iteration that had it."""
        return dict(self._structures)

    def first_with_code(self, key: str) -> dict | None:
        """The first result whose candidate had this code key."""
        return self._codes.get(key)

    def get(self, kind: str, iteration: int, node: str) -> dict | None:
        """The record for (iteration, node) in `kind`.jsonl, if there is one."""
        return self._memo.get((kind, iteration, node))

    def results(self) -> list[dict]:
        """In candidate order: fanned-out candidates append theirs in the order they finish."""
        # never repairs: a line cut short here may be another thread's append in progress (opening repaired)
        return sorted(_read_jsonl(self.path / "results.jsonl", repair=False), key=lambda r: r.get("iteration", 0))

    def trace(self) -> list[dict]:
        return _read_jsonl(self.path / "trace.jsonl", repair=False)

    def save_candidate(self, iteration: int, code: str) -> Path:
        path = self.path / "candidates" / f"{iteration:04d}.py"
        if not path.exists():
            self._write_atomic(path.relative_to(self.path), code)
        return path

    def candidate_code(self, iteration: int) -> str | None:
        """The code recorded for an iteration (evolution reads its parents from here)."""
        path = self.path / "candidates" / f"{iteration:04d}.py"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def save_best(self, code: str) -> None:
        self._write_atomic("best.py", code)

    def summary(self) -> dict | None:
        """summary.json, written when a search ends (None while it runs or after a kill)."""
        path = self.path / "summary.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save_summary(self, summary: dict) -> None:
        self._write_atomic("summary.json", json.dumps(summary, indent=1, default=str))

    # -- who is searching -----------------------------------------------------------------------------
    def mark_running(self) -> None:
        """This process is searching in the run now (the report says "running", not "stopped early")."""
        from nasloop.sandbox.host import owner_label

        self._write_atomic(RUNNING, owner_label())

    def clear_running(self) -> None:
        try:
            (self.path / RUNNING).unlink()
        except FileNotFoundError:
            pass

    def running(self) -> bool:
        """Whether a live process marked the run (a killed search's mark is stale, and not believed)."""
        from nasloop.sandbox.host import owner_state

        try:
            label = (self.path / RUNNING).read_text()[:200]
        except OSError:
            return False
        return owner_state(label.strip()) in ("self", "alive")

    # -- low level ----------------------------------------------------------------------------------
    def _append(self, name: str, record: dict[str, Any]) -> None:
        """One line, whole: fanned-out candidates append from several threads at once."""
        line = json.dumps(record, default=str) + "\n"
        with _APPEND, open(self.path / name, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _write_atomic(self, name: str | Path, text: str) -> None:
        target = self.path / name
        tmp = target.with_name(f"{target.name}.{threading.get_ident()}.tmp")  # writers in several threads
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
