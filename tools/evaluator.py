"""The Evaluator: static check, then one sandboxed training run, then a typed Outcome.

`Evaluator.evaluate(source)` is what both `nasloop evaluate` and the agent's evaluate node call;
`as_tool()` wraps the same call as a LangChain tool for agents that pick tools themselves.
`score(source, proxies)` runs the zero-cost proxies instead of training (the harness's proxy mode), in
the same sandbox and with the same outcome taxonomy: the code is just as untrusted when it is only scored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from nasloop.sandbox import Job, Limits, Sandbox, SandboxUnavailable, make_sandbox
from nasloop.sandbox.base import LIVE
from nasloop.tools.datasets import PreparedData
from nasloop.tools.outcome import Outcome, classify
from nasloop.tools.static_check import check_source


@dataclass(frozen=True)
class TrainSettings:
    """The fixed training recipe's knobs. Budget: `epochs` epochs or `min_steps` steps, whichever is larger."""

    epochs: int = 1
    min_steps: int = 200
    batch_size: int = 256
    lr: float = 0.05
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where native) | bf16 | fp32
    layout: str = "auto"  # auto (channels_last where the net runs in it, else NCHW) | contiguous (NCHW always)
    max_params: int = 2_000_000  # bigger nets are rejected (interface_error) before any training
    max_flops: int = 0  # FLOPs per image, checked at the pre-flight like max_params (0: no cap; see calibrate)
    mode: str = "train"  # train | preflight (meta-device shapes and size only) | proxy (zero-cost scores)
    proxies: tuple[str, ...] = ()  # with mode="proxy": naswot, synflow, snip, grad_norm, zen, zico, params, flops
    preflight: bool = True  # run the meta-device pre-flight before allocating anything
    proxy_batch: int = 64  # minibatch the zero-cost proxies see


CALIBRATION_SHARE = 0.5  # of the timeout that the FLOP budget derived from the seed's speed may use
# No derived budget is lower: a small seed's training time is mostly fixed costs (data, steps, threads),
# not FLOPs, so scaling it by FLOPs would reject nets that train in seconds (measured: the 435-parameter
# digits seed gave 17M, below the standard 20M-FLOP seed, which trains in 16 s).
MIN_FLOP_BUDGET = 200_000_000


class Evaluator:
    """Scores candidate sources on one prepared data set inside one sandbox."""

    def __init__(self, data: PreparedData, sandbox: Sandbox | None = None, settings: TrainSettings | None = None):
        self.data = data
        self.sandbox = sandbox if sandbox is not None else make_sandbox("docker")
        self.settings = settings or TrainSettings()

    @cached_property
    def labels(self) -> np.ndarray:
        """The test labels: they stay in this process; the sandbox only ever sees the test images."""
        return self.data.test_labels()

    @property
    def limits(self) -> Limits:
        return self.sandbox.limits

    def harness_config(self) -> dict:
        d, s = self.data, self.settings
        return {
            **asdict(s),
            "num_classes": d.num_classes, "in_channels": d.in_channels, "image_size": d.image_size,
            "mean": list(d.mean), "std": list(d.std), "flip": d.flip,
            "threads": max(1, int(self.limits.cpus)),
        }

    def task_facts(self) -> dict:
        """What the prompts must know about the task: exact input shape, classes, budget."""
        d, s = self.data, self.settings
        return {
            "dataset": d.name, "description": d.describe(), "num_classes": d.num_classes,
            "in_channels": d.in_channels, "image_size": d.image_size, "max_params": s.max_params,
            "steps_text": f"{s.epochs} epoch(s) or at least {s.min_steps} steps of batch {s.batch_size}",
        }

    def evaluate(self, source: str, *, static_check: bool = True, output_dir: Path | None = None,
                 known_structures: dict[str, int] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> Outcome:
        """Evaluate one candidate. `output_dir` receives the trained weights (weights.safetensors) when given.
        `known_structures` (structure hash -> iteration): the pre-flight rejects a net equal to one of them.
        `on_progress(step, steps)` is called as training goes (a display; the harness's word, not a fact).
        `static_check=False` exists only to test the sandbox layer itself."""
        if static_check:
            violation = check_source(source)
            if violation is not None:
                return Outcome(violation.kind, violation.reason, seconds=0.0, stage="static")  # type: ignore[arg-type]
        config = {**self.harness_config(), **({"known_structures": known_structures} if known_structures else {})}
        raw = self.sandbox.run(Job(source=source, config=config, data_dir=self.data.sandbox_dir, output_dir=output_dir,
                                   on_progress=on_progress))
        if LIVE.closing:  # stopped under it (Ctrl-C, SIGTERM): the sandbox was ended, not the candidate's doing
            raise SandboxUnavailable("nasloop is stopping: this candidate was stopped and has no outcome")
        return classify(raw, self.limits, self.labels, self.settings.mode, self.settings.max_params)

    def calibrate(self, seed: Outcome, share: float = CALIBRATION_SHARE) -> int:
        """Once the seed has trained: a FLOP budget from the timeout, so that a net whose training would be
        killed by it is rejected at the pre-flight in milliseconds instead. Every candidate trains the same
        number of steps, so its training time scales with its FLOPs per image: the budget is the seed's
        FLOPs times how many of its training times fit in `share` of the timeout (the rest is margin for
        start-up, the test predictions and nets slower per FLOP than the seed), never below the seed's own
        FLOPs nor MIN_FLOP_BUDGET. --max-flops caps it."""
        secs = seed.train_seconds or seed.seconds
        if not seed.ok or not seed.flops or not secs:
            return self.settings.max_flops
        by_time = max(seed.flops, MIN_FLOP_BUDGET, int(seed.flops * self.limits.timeout_s * share / secs))
        cap = min(by_time, self.settings.max_flops) if self.settings.max_flops else by_time
        self.settings = replace(self.settings, max_flops=cap)
        return cap

    def score(self, source: str, proxies: tuple[str, ...], known_structures: dict[str, int] | None = None) -> Outcome:
        """Score one candidate with zero-cost proxies in the same sandbox (no training): outcome `ok`
        with `scores`, or the same failure classes as training (pre-flight runs first)."""
        scorer = Evaluator(self.data, self.sandbox, replace(self.settings, mode="proxy", proxies=tuple(proxies)))
        return scorer.evaluate(source, known_structures=known_structures)

    def as_tool(self):
        """The same evaluation as a LangChain StructuredTool returning the outcome as a dict."""
        from langchain_core.tools import StructuredTool

        def evaluate_network(source: str) -> dict:
            """Train a PyTorch module defining `class Net(nn.Module)` for one epoch in a sandbox and return
            its outcome: accuracy and cost, or the failure class and a diagnosis."""
            return self.evaluate(source).to_dict()

        return StructuredTool.from_function(evaluate_network)
