"""The Outcome of one evaluation and the rules that turn a sandbox's raw facts into one.

The outcome's `diagnosis` (at most ~300 characters) is what the agent's memory shows the LLM, so it
names the exception, the message and where in the candidate it happened, or the limit that was hit.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from nasloop.sandbox.base import Limits, RawResult
from nasloop.sandbox.outputs import OUT_BYTES, OUT_ENTRIES
from nasloop.tools.budget_fit import budget_record, fit_text, flop_fit, param_fit
from nasloop.tools.text import human, layer_lines, location, num, pool_hint, trace_text, txt

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
# Which fields the host established itself (everything else in an Outcome is reported from inside the
# sandbox, where the candidate's code runs and could have changed it).
VERIFIABLE = ("accuracy", "params", "peak_memory_bytes", "seconds")


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
    layout: str | None = None  # reported: the memory layout the harness trained in (channels_last | contiguous)
    seed: int | None = None
    scores: dict[str, float] = field(default_factory=dict)  # zero-cost proxy scores, when asked for
    proxy_seconds: dict[str, float] = field(default_factory=dict)  # seconds each proxy took in the sandbox
    stage: str | None = None  # where it failed: static (AST policy) | preflight (meta device) | None
    failure: dict = field(default_factory=dict)  # phase, exc_type, line, layer {name, type, repr, in}: as data
    structure: str | None = None  # the pre-flight's hash of the net's operations and shapes (structural duplicates)
    layers: str | None = None  # reported: one line per leaf layer (name, type, output shape, parameters)
    verified: list[str] = field(default_factory=list)  # fields the host established (VERIFIABLE); others reported

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {} and v != []}

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


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def clip(text: str, limit: int = DIAGNOSIS_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


DUPLICATE_PHASE = "duplicate"  # failure phase of a structural duplicate of an earlier candidate (pre-flight)
WORKER_LOST = "worker"  # failure phase of a sandbox_error that concerns one candidate's worker only


def last_error_line(log: str) -> str:
    """The last line of a log that looks like an exception, else its last non-empty line."""
    lines = [ln.strip() for ln in (log or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln):
            return ln
    return lines[-1] if lines else ""


def classify(raw: RawResult, limits: Limits, labels: np.ndarray | None = None, mode: str = "train",
             max_params: int = 0) -> Outcome:
    """Map a sandbox run onto the outcome taxonomy (OutcomeKind above). `labels` are the test labels, which only
    the host holds: the accuracy is computed here from the predictions the sandbox returned. `mode` is what
    was asked (train, preflight, proxy): a result of another kind is not believed. `max_params`: a trained
    net whose returned tensors the host counts over it is refused (the harness's own check ran in the
    candidate's process)."""
    seconds = raw.wall_seconds
    if raw.infra_error:  # phase "worker": one candidate's worker was lost, the others go on (not a stop)
        return Outcome("sandbox_error", clip(raw.infra_error), seconds=seconds,
                       failure={"phase": WORKER_LOST} if raw.worker_lost else {})
    if raw.out_overflow:
        return Outcome("runtime_error", f"stopped for writing more than {mib(OUT_BYTES)} or {OUT_ENTRIES} files into "
                                        f"its output directory (files it unlinked included)", seconds=seconds)
    if raw.worker_died:
        return Outcome("runtime_error", "the sandbox worker died while it ran this candidate (killed by it, or "
                                        "by a limit); it was replaced", seconds=seconds)
    if raw.preflight_timed_out:
        return Outcome("timeout", f"the pre-flight (import, build, meta-device forward) did not finish within "
                                  f"{limits.preflight_s:g} s: an endless loop in __init__ or forward?",
                       seconds=seconds, stage="preflight")
    if raw.timed_out:
        return Outcome("timeout", f"killed after the {limits.timeout_s:g} s wall-clock limit "
                                  f"(endless loop or far too slow a net)", seconds=seconds)
    if raw.oom_killed:
        return Outcome("host_oom", f"killed by the {mib(limits.memory_bytes)} memory limit "
                                   f"(the net or its activations are too large)", seconds=seconds,
                       peak_memory_bytes=raw.peak_memory_bytes)
    res = raw.result
    if res is None:
        return _without_result(raw, seconds)
    try:
        out = _from_result(raw, res, seconds, labels, mode)
        if out.ok and max_params and raw.tensors is not None and raw.tensors > max_params:
            return Outcome("interface_error", f"BudgetError: the trained net returned {raw.tensors:,} parameters and "
                                              f"buffers (counted by the host); the budget is {max_params:,}. Use "
                                              f"fewer or narrower layers", seconds=seconds,
                           failure={"phase": "train", "exc_type": "BudgetError"}, **_common(raw, res))
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:  # a field of the wrong shape
        return Outcome("runtime_error", clip(f"the run's result.json is malformed ({type(exc).__name__}: {exc})"),
                       seconds=seconds)
    if out.kind != "ok" and res.get("preflight") == "failed":
        out.stage = "preflight"
    return out


def _common(raw: RawResult, res: dict) -> dict:
    """Cost fields: the host's own count and measurement where it has them, else what was reported."""
    c = {k: num(res.get(k)) for k in ("params", "flops", "steps")}
    c.update(device=txt(res.get("device")), precision=txt(res.get("precision")),
             layout=txt(res.get("layout")), seed=num(res.get("seed")))
    key = res.get("structure")
    c["structure"] = key if isinstance(key, str) and re.fullmatch(r"[0-9a-f]{16}", key) else None
    c["layers"] = layer_lines(res.get("layers"))
    verified = []
    if raw.tensors is not None:
        c["params"] = raw.tensors
        verified.append("params")
    if raw.peak_memory_bytes is not None:
        c["peak_memory_bytes"] = raw.peak_memory_bytes
        verified.append("peak_memory_bytes")
    c["verified"] = verified
    return c


def _from_result(raw: RawResult, res: dict, seconds: float, labels: np.ndarray | None, mode: str) -> Outcome:
    common = _common(raw, res)
    status = res.get("status")
    if status == "ok" and mode == "proxy":
        if not isinstance(res.get("scores"), dict):
            return Outcome("runtime_error", "a proxy run returned no scores", seconds=seconds, **common)
        scores = {str(k): float(v) if isinstance(v, (int, float)) else float("nan") for k, v in res["scores"].items()}
        timing = {str(k): float(v) for k, v in (res.get("proxy_seconds") or {}).items() if isinstance(v, (int, float))}
        return Outcome("ok", "scored by zero-cost proxies (not trained)", scores=scores, seconds=seconds,
                       proxy_seconds=timing, **common)
    if status == "ok" and mode == "preflight":
        return Outcome("ok", "passed pre-flight (not trained)", seconds=seconds, **common)
    if status == "ok":
        return _scored(raw, res, seconds, labels, common)
    if status == "diverged":
        return Outcome("diverged", clip(txt(res.get("message")) or "loss became NaN/inf"), seconds=seconds, **common)
    return _from_error(res, seconds, common)


def _scored(raw: RawResult, res: dict, seconds: float, labels: np.ndarray | None, common: dict) -> Outcome:
    """Accuracy = the share of test images whose returned prediction equals the host's label."""
    preds = raw.predictions
    if raw.output_problem or preds is None:
        return Outcome("runtime_error", clip(f"the run reported success but its outputs were refused: "
                                             f"{raw.output_problem or 'no predictions'}"), seconds=seconds, **common)
    if labels is None:
        return Outcome("sandbox_error", "no test labels on the host to score the predictions", seconds=seconds)
    if preds.shape != labels.shape:
        return Outcome("runtime_error", clip(f"the run returned {preds.shape[0]} predictions for {labels.shape[0]} "
                                             f"test images"), seconds=seconds, **common)
    common["verified"] = ["accuracy", *common["verified"], "seconds"]
    return Outcome("ok", "", accuracy=float(np.mean(preds == labels)) if len(labels) else 0.0,
                   train_loss=num(res.get("train_loss")), train_seconds=num(res.get("train_seconds")),
                   images_per_s=num(res.get("images_per_s")), epochs=num(res.get("epochs")), seconds=seconds,
                   **{"peak_memory_bytes": num(res.get("peak_memory_bytes")), **common})


def _from_error(res: dict, seconds: float, common: dict) -> Outcome:
    """A failure the harness recorded as data: phase, exception type, candidate line, failing layer."""
    phase, exc, msg = txt(res.get("phase")) or "?", txt(res.get("exc_type")) or "Error", txt(res.get("message"))
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    where = location(res.get("where"))
    found = res.get("trace")
    trace: dict = found if isinstance(found, dict) else {}
    text = f"{exc}: {first}" + (f" ({where})" if where else "")
    if trace:  # where the shapes went wrong, module by module (bounded), and what a pooling step had left
        hint = pool_hint(trace.get("failed"), msg)
        if hint:  # the hint and the trace say what the sizes were: the error's last sentence is enough
            text = f"{exc}: {first.rsplit('. ', 1)[-1]}" + (f" ({where})" if where else "")
        head = clip(text, 100 if hint else 130) + hint
        text = head + " | trace: " + trace_text(trace, limit=min(160, DIAGNOSIS_CHARS - 10 - len(head)))
    where_rec = res.get("where")
    frame: dict = where_rec if isinstance(where_rec, dict) else {}
    failed = trace.get("failed")
    common["failure"] = {"phase": phase, "exc_type": exc, "line": frame.get("line") if frame else None,
                         "function": frame.get("function") if frame else None,
                         "layer": failed if isinstance(failed, dict) else None}
    budget = budget_record(res)
    if budget:
        fit = param_fit(budget, common.get("params")) or flop_fit(budget, res.get("layers"))
        common["failure"]["budget"] = {**budget, **({"fit": fit} if fit else {})}
        hint = fit_text(fit)
        text = clip(text, DIAGNOSIS_CHARS - len(hint)) + hint if hint else text
    if phase == DUPLICATE_PHASE and type(res.get("of")) is int:  # costs no training; the repair is told
        common["failure"]["of"] = res["of"]
        return Outcome("invalid_code", clip(f"{first}: apply the suggested change instead of repeating that net"),
                       seconds=seconds, **common)
    oom = res.get("oom")
    if oom == "gpu":
        return Outcome("gpu_oom", clip(f"GPU out of memory during {phase}: {first}"), seconds=seconds, **common)
    if oom == "host":
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


def _without_result(raw: RawResult, seconds: float) -> Outcome:
    """No result.json: the process ended early (os._exit, a signal) or its outputs were refused."""
    last = last_error_line(raw.stderr_tail)
    if raw.output_problem:
        return Outcome("runtime_error", clip(f"the run's outputs were refused: {raw.output_problem}"), seconds=seconds)
    if raw.exit_code in (137, -9):
        return Outcome("runtime_error", clip(f"the process was killed by SIGKILL (not by the memory limit) before "
                                             f"the harness reported a result. {last}"), seconds=seconds)
    return Outcome("runtime_error", clip(f"the process ended (exit code {raw.exit_code}) before the harness "
                                         f"reported a result. {last}"), seconds=seconds)
