"""Types shared by the sandbox backends: what a job is, which limits apply, what comes back."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

RUNNER_PATH = Path(__file__).with_name("runner.py")
RESULT_PREFIX = "NASLOOP_RESULT "
# The zero-cost proxies the harness knows (sandbox/zero_cost.py, which cannot import this package inside
# the sandbox, has the same tuple; a unit test keeps them equal). Here so the CLI need not import torch.
PROXY_NAMES = ("naswot", "synflow", "snip", "grad_norm", "zen", "zico", "params", "flops")


class SandboxUnavailable(RuntimeError):
    """The sandbox itself cannot run (no engine, no image): an infrastructure fault, never the candidate's."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one evaluation. `gpus` is 'none', 'all' or a comma list of device ids."""

    memory_bytes: int = 6 * 1024**3
    cpus: float = 2.0
    pids: int = 256
    timeout_s: float = 600.0
    gpus: str = "none"
    log_bytes: int = 64 * 1024  # how much of stderr is kept for the diagnosis
    tmpfs_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class Job:
    """One candidate to run: its source, the harness config and the decoded data directory."""

    source: str
    config: dict
    data_dir: Path
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    output_dir: Path | None = None  # where the harness may write (trained weights); None: nowhere


@dataclass
class RawResult:
    """Raw facts about one run; `tools.outcome` classifies them."""

    exit_code: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    result: dict | None = None  # the harness's result, only when its nonce matched
    forged_lines: int = 0  # result-looking lines whose nonce did not match
    stderr_tail: str = ""
    wall_seconds: float = 0.0
    infra_error: str | None = None  # the sandbox failed (engine gone...), not the candidate


class Sandbox(Protocol):
    """A backend that runs the harness on a job under limits."""

    limits: Limits

    def run(self, job: Job) -> RawResult: ...


def parse_result(stdout: str, nonce: str) -> tuple[dict | None, int]:
    """Return the last result line signed with `nonce`, and how many unsigned ones were seen."""
    result, forged = None, 0
    for line in stdout.splitlines():
        if not line.startswith(RESULT_PREFIX):
            continue
        try:
            data = json.loads(line[len(RESULT_PREFIX):])
        except ValueError:
            forged += 1
            continue
        if isinstance(data, dict) and data.get("nonce") == nonce and nonce:
            data.pop("nonce")
            result = data
        else:
            forged += 1
    return result, forged


def tail_text(data: bytes, limit: int) -> str:
    """Decode the last `limit` bytes of a log."""
    return data[-limit:].decode("utf-8", "replace")
