"""The Outcome of one evaluation and the rules that turn a sandbox's raw facts into one.

The outcome's `diagnosis` (at most ~300 characters) is what the agent's memory shows the LLM, so it
names the exception, the message and where in the candidate it happened, or the limit that was hit.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from sandbox.base import Limits, RawResult

OutcomeKind = Literal[
    "ok", "syntax_error", "invalid_code", "interface_error", "shape_error", "runtime_error",
    "host_oom", "gpu_oom", "timeout", "diverged", "sandbox_error",
]
KINDS: tuple[str, ...] = OutcomeKind.__args__  # type: ignore[attr-defined]
DIAGNOSIS_CHARS = 300

# Messages PyTorch raises when tensor shapes do not fit together.
_SHAPE_PATTERNS = re.compile(
    r"shapes cannot be multiplied|must have same reduction dim|size mismatch|Calculated (padded )?(input|output) size|"
    r"Expected input batch_size|must match the size|Sizes of tensors must match|"
    r"is invalid for input of size|Expected \d+D .*input|Expected \d+-dimensional input|"
    r"expected input\[.*\] to have \d+ channels|to have \d+ channels, but got|"
    r"Invalid channel dimensions|running_mean should contain \d+ elements|Kernel size can't be greater|output size is too small|non-singleton dimension|"
    r"The size of tensor a|doesn't match the broadcast shape|Padding size should be less|"
    r"input and weight|Given groups|expected .* shape|dimension out of range|"
    r"size of dimension|Input size .* must be|Expected size|not enough values to unpack|"
    r"too many indices for tensor|Dimension out of range|shape '\[",
    re.IGNORECASE,
)
_GPU_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
_HOST_OOM = re.compile(r"DefaultCPUAllocator: (can't|not enough memory)|Cannot allocate memory|MemoryError")


@dataclass
class Outcome:
    """What one candidate achieved, or exactly how it failed."""

    kind: OutcomeKind
    diagnosis: str = ""
    accuracy: float | None = None
    train_loss: float | None = None
    params: int | None = None
    flops: int | None = None
    peak_memory_bytes: int | None = None
    train_seconds: float | None = None
    images_per_s: float | None = None
    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None  # wall-clock of the whole evaluation, sandbox start to removal
    device: str | None = None
    precision: str | None = None
    seed: int | None = None
    scores: dict[str, float] = field(default_factory=dict)  # zero-cost proxy scores, when asked for
    proxy_seconds: dict[str, float] = field(default_factory=dict)  # seconds each proxy took in the sandbox
    stage: str | None = None  # where it failed: static (AST policy) | preflight (meta device) | None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_dict(cls, data: dict) -> "Outcome":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def summary(self) -> str:
        """One human line, e.g. `outcome: ok  accuracy: 0.553  params: 95k  flops: 12.1M  seconds: 27.9`."""
        parts = [f"outcome: {self.kind}"]
        if self.accuracy is not None:
            parts.append(f"accuracy: {self.accuracy:.3f}")
        if self.params is not None:
            parts.append(f"params: {human(self.params)}")
        if self.flops is not None:
            parts.append(f"flops: {human(self.flops)}")
        if self.seconds is not None:
            parts.append(f"seconds: {self.seconds:.1f}")
        parts += [f"{name}: {value:.4g}" for name, value in self.scores.items()]
        if self.diagnosis and not self.ok:
            parts.append(f"diagnosis: {self.diagnosis}")
        return "  ".join(parts)


def human(n: float) -> str:
    """95000 -> '95k', 12100000 -> '12.1M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 or unit == "k" else f"{v:.1f}{unit}"
    return str(int(n))


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def clip(text: str, limit: int = DIAGNOSIS_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def candidate_location(traceback_text: str) -> str:
    """'candidate.py:23 in forward: x = self.fc(x)' for the deepest frame inside the candidate."""
    frames = re.findall(r'File "candidate\.py", line (\d+), in (\S+)\n\s*(.*)', traceback_text or "")
    if not frames:
        return ""
    line, func, code = frames[-1]
    return f"candidate.py:{line} in {func}: {code.strip()}"


def last_error_line(log: str) -> str:
    """The last line of a log that looks like an exception, else its last non-empty line."""
    lines = [ln.strip() for ln in (log or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln):
            return ln
    return lines[-1] if lines else ""


def classify(raw: RawResult, limits: Limits) -> Outcome:
    """Map a sandbox run onto the outcome taxonomy of DESIGN.md."""
    seconds = raw.wall_seconds
    if raw.infra_error:
        return Outcome("sandbox_error", clip(raw.infra_error), seconds=seconds)
    if raw.timed_out:
        return Outcome("timeout", f"killed after the {limits.timeout_s:g} s wall-clock limit "
                                  f"(endless loop or far too slow a net)", seconds=seconds)
    if raw.oom_killed:
        return Outcome("host_oom", f"killed by the {mib(limits.memory_bytes)} memory limit "
                                   f"(the net or its activations are too large)", seconds=seconds)
    res = raw.result
    if res is None:
        return _without_result(raw, limits, seconds)
    out = _from_result(res, seconds)
    if out.kind != "ok" and res.get("preflight") == "failed":
        out.stage = "preflight"
    return out


def _from_result(res: dict, seconds: float) -> Outcome:
    common = {k: res.get(k) for k in ("params", "flops", "device", "precision", "seed", "steps")}
    status = res.get("status")
    if status == "ok" and "scores" in res:
        scores = {k: float(v) for k, v in res["scores"].items()}
        return Outcome("ok", "scored by zero-cost proxies (not trained)", scores=scores, seconds=seconds,
                       proxy_seconds=dict(res.get("proxy_seconds") or {}), **common)
    if status == "ok" and res.get("accuracy") is None and res.get("preflight") == "passed":
        return Outcome("ok", "passed pre-flight (not trained)", seconds=seconds, **common)
    if status == "ok":
        acc = res.get("accuracy")
        if acc is None or not math.isfinite(acc):
            return Outcome("diverged", "the harness reported no finite accuracy", seconds=seconds, **common)
        return Outcome(
            "ok", "", accuracy=float(acc), train_loss=res.get("train_loss"),
            peak_memory_bytes=res.get("peak_memory_bytes"), train_seconds=res.get("train_seconds"),
            images_per_s=res.get("images_per_s"), epochs=res.get("epochs"), seconds=seconds, **common,
        )
    if status == "diverged":
        return Outcome("diverged", clip(res.get("message", "loss became NaN/inf")), seconds=seconds, **common)
    return _from_error(res, seconds, common)


def _from_error(res: dict, seconds: float, common: dict) -> Outcome:
    phase, exc, msg = res.get("phase", ""), res.get("exc_type", "Error"), res.get("message", "")
    where = res.get("where") or candidate_location(res.get("traceback", ""))
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    text = f"{exc}: {first}" + (f" ({where})" if where else "")
    if res.get("shape_trace"):  # where the shapes went wrong, module by module (bounded)
        text = clip(text, 130) + " | trace: " + res["shape_trace"]
    if phase in ("data", "harness"):
        return Outcome("sandbox_error", clip(f"harness fault in {phase}: {text}"), seconds=seconds, **common)
    if _GPU_OOM.search(msg) or exc == "OutOfMemoryError":
        return Outcome("gpu_oom", clip(f"GPU out of memory during {phase}: {first}"), seconds=seconds, **common)
    if exc == "MemoryError" or _HOST_OOM.search(msg):
        return Outcome("host_oom", clip(f"host out of memory during {phase}: {text}"), seconds=seconds, **common)
    if phase == "import" and exc in ("SyntaxError", "IndentationError", "TabError"):
        return Outcome("syntax_error", clip(text), seconds=seconds, **common)
    if exc in ("SystemExit", "KeyboardInterrupt"):
        return Outcome("runtime_error", clip(f"the candidate tried to end the process ({exc} {first}) during "
                                             f"{phase}"), seconds=seconds, **common)
    if phase == "interface" or (phase == "build" and exc == "TypeError" and "argument" in msg):
        hint = "" if phase == "interface" else " — Net.__init__ must accept (num_classes=10, in_channels=3)"
        return Outcome("interface_error", clip(text + hint), seconds=seconds, **common)
    if phase in ("forward", "train", "eval", "proxy") and _SHAPE_PATTERNS.search(msg):
        return Outcome("shape_error", clip(text), seconds=seconds, **common)
    return Outcome("runtime_error", clip(f"{text} [during {phase}]"), seconds=seconds, **common)


def _without_result(raw: RawResult, limits: Limits, seconds: float) -> Outcome:
    log = raw.stderr_tail
    last = last_error_line(log)
    if _GPU_OOM.search(log):
        return Outcome("gpu_oom", clip(f"GPU out of memory: {last}"), seconds=seconds)
    if raw.exit_code in (137, -9):
        return Outcome("host_oom", clip(f"killed by SIGKILL, most likely the {mib(limits.memory_bytes)} "
                                        f"memory limit. {last}"), seconds=seconds)
    forged = f"; it printed {raw.forged_lines} forged result line(s)" if raw.forged_lines else ""
    return Outcome("runtime_error", clip(f"the process ended (exit code {raw.exit_code}) before the harness "
                                         f"reported a result{forged}. {last}"), seconds=seconds)
