"""nasloop evaluation harness: trains one untrusted candidate `Net` and writes what it produced.

This file runs INSIDE the sandbox (container, warm worker or process sandbox) and imports nothing of
the project but its neighbours (preflight.py, steps.py, device_data.py, zero_cost.py): only the standard library, numpy, torch and
safetensors. It owns the whole training
recipe (the RECIPE block below); the candidate only supplies `class Net(nn.Module)`.

Trust: everything in this process can be patched by the candidate, so nothing written here decides
the search on its own. The test LABELS never enter the sandbox: the harness writes the predicted class
of every test image and the host computes the accuracy. The trained tensors are written as
safetensors (no pickle) so the host can count parameters and buffers itself. Every other field of
result.json (train loss, FLOPs, shape trace, the failing phase) is reported from inside and labelled
so by the host.

Outputs, in OUT_DIR (the only writable place the host reads back):
  result.json               {"status": "ok"|"error"|"diverged", "phase", "exc_type", ...}
  predictions.safetensors   {"predictions": int64 (N_test,)}    (train mode)
  weights.safetensors       the trained state_dict, float32         (train mode)
  training                  an empty marker: the pre-flight is over, training starts
  progress                  "<step> <steps>", replaced twice a second while training (a display)

The pre-flight on the meta device and the failure records live in preflight.py beside this file.

Usage:  python -I runner.py CONFIG_JSON CANDIDATE_PY DATA_DIR OUT_DIR
"""
from __future__ import annotations

import contextlib
import json
import linecache
import math
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn

if __package__:  # imported as part of nasloop (tests, host tools): no top-level names added to sys.path
    from nasloop.sandbox.device_data import DeviceData, peak_memory_bytes, pick_device, use_bf16
    from nasloop.sandbox.steps import StepWatch, plain
    from nasloop.sandbox.preflight import (
        EvalCount, ShapeTrace, StepCount, error, failure, over_budget, own_tensors, preflight, safe_str,
        set_training, step_over_budget, tensor_count, type_name, wrong_output,
    )
else:  # the harness, run as a script (or imported by worker.py): its neighbours sit beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from device_data import DeviceData, peak_memory_bytes, pick_device, use_bf16  # type: ignore[no-redef]
    from steps import StepWatch, plain  # type: ignore[no-redef]
    from preflight import (  # type: ignore[no-redef]
        EvalCount, ShapeTrace, StepCount, error, failure, over_budget, own_tensors, preflight, safe_str,
        set_training, step_over_budget, tensor_count, type_name, wrong_output,
    )

# --- RECIPE: the fixed training recipe; config keys of the same name override these ---------------
RECIPE = {
    "epochs": 1, "min_steps": 0, "batch_size": 256, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "label_smoothing": 0.1, "grad_clip": 5.0, "warmup": 0.2, "flip": True, "eval_batch": 1024,
}
RESULT, PREDICTIONS, WEIGHTS, TRAINING_MARK = "result.json", "predictions.safetensors", "weights.safetensors", "training"
PROGRESS, PROGRESS_EVERY_S = "progress", 0.5  # "<step> <steps>": what a display shows during training


# --- the candidate -----------------------------------------------------------------------------
def load_candidate(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    namespace: dict = {"__name__": "candidate", "__file__": "candidate.py"}
    # Tracebacks show the failing source line whatever the working directory is.
    linecache.cache["candidate.py"] = (len(source), None, source.splitlines(True), "candidate.py")
    code = compile(source, "candidate.py", "exec")
    exec(code, namespace)  # noqa: S102 - this is the sandboxed part
    return namespace


def proxy_scores(cfg: dict, net_cls, data_dir: str, device: torch.device, seed: int) -> dict:
    """Zero-cost proxies (sandbox/zero_cost.py, next to this file) on one seeded minibatch of real data."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import zero_cost

    names = [n for n in cfg.get("proxies") or [] if n in zero_cost.FUNCS]
    in_channels = int(cfg["in_channels"])
    mean, std = cfg.get("mean", [0.5] * in_channels), cfg.get("std", [0.25] * in_channels)
    train = DeviceData(data_dir, "train", device, mean, std, channels_last=False)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    idx = torch.randperm(len(train), device=device, generator=gen)[: int(cfg.get("proxy_batch", 64))]
    x, y = train.batch(idx)
    try:
        scores, seconds = zero_cost.score_timed(
            lambda: net_cls(num_classes=int(cfg["num_classes"]), in_channels=in_channels).to(device), names, x, y, seed)
    except BaseException as exc:  # noqa: BLE001
        return error("proxy", exc, device.type)
    return {"status": "ok", "scores": {k: (v if math.isfinite(v) else str(v)) for k, v in scores.items()},
            "proxy_seconds": seconds}


def lr_at(step: int, total: int, peak: float, warmup: float = RECIPE["warmup"]) -> float:
    """One-cycle: linear warm-up to `peak`, then linear decay to zero."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (step + 1) / w
    return peak * max(0.0, (total - step) / max(1, total - w))


# --- the phases of one evaluation ------------------------------------------------------------------
class Run:
    """One evaluation, phase by phase; each phase returns a failure record or None."""

    def __init__(self, cfg: dict, candidate_path: str, data_dir: str, out_dir: str):
        self.cfg = {**RECIPE, **cfg}
        self.candidate_path, self.data_dir, self.out_dir = candidate_path, data_dir, out_dir
        self.seed = int(cfg.get("seed", 0))
        self.device = pick_device(cfg.get("device", "auto"))
        self.bf16 = use_bf16(self.device, cfg.get("precision", "auto"))
        # channels_last: oneDNN's and cuDNN's fast convolution layout (measured 0.5-0.8x the step time of
        # NCHW on CIFAR-10 nets here, fp32 on CPU). It is an optimisation, never a failure: see probe().
        self.channels_last = cfg.get("layout", "auto") != "contiguous"
        self.num_classes, self.in_channels = int(cfg["num_classes"]), int(cfg["in_channels"])
        self.size = int(cfg["image_size"])
        self.facts: dict = {"seed": self.seed, "device": self.device.type, "precision": "bf16" if self.bf16 else "fp32",
                            "layout": "channels_last" if self.channels_last else "contiguous"}
        self.net_cls: Any = None  # the candidate's class and its instance: untyped, like everything it brings
        self.model: Any = None
        self.test: Any = None
        self.predictions = torch.zeros(0, dtype=torch.int64)

    def _err(self, phase: str, exc: BaseException) -> dict:
        return error(phase, exc, self.device.type)

    def load(self) -> dict | None:
        try:
            ns = load_candidate(self.candidate_path)
        except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit ...
            return self._err("import", exc)
        net_cls = ns.get("Net")
        try:
            ok = isinstance(net_cls, type) and issubclass(net_cls, nn.Module)
        except BaseException:  # noqa: BLE001 - a metaclass may raise from __subclasscheck__
            ok = False
        if not ok:
            return failure("interface", "InterfaceError", "the module defines no class Net(nn.Module)")
        self.net_cls = net_cls
        return None

    def check(self) -> dict | None:
        if not self.cfg.get("preflight", True):
            return None
        known = self.cfg.get("known_structures")
        fail, info = preflight(self.net_cls, self.num_classes, self.in_channels, self.size,
                               int(self.cfg.get("max_params") or 0), int(self.cfg.get("max_flops") or 0),
                               known if isinstance(known, dict) else None)
        self.facts.update(info)
        return fail

    def build(self) -> dict | None:
        try:
            torch.manual_seed(self.seed)
            self.model = self.net_cls(num_classes=self.num_classes, in_channels=self.in_channels)
            params = tensor_count(self.model)
        except BaseException as exc:  # noqa: BLE001
            return self._err("build", exc)
        self.facts["params"] = params
        return over_budget(params, int(self.cfg.get("max_params") or 0), self.model)

    def probe(self) -> dict | None:
        """One real forward of two random images: the interface on the real device. A net that runs only in
        NCHW (`x.view(B, -1)` on a channels_last map raises) is probed again and trained in NCHW: the layout
        is the harness's choice, so a failure under it alone is not the candidate's."""
        fail = self._probe_once()
        if fail is not None and self.channels_last:
            self.channels_last = False
            self.facts["layout"] = "contiguous"
            fail = self._probe_once()
        return fail

    def _probe_once(self) -> dict | None:
        model, trace = self.model, None
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            trace = ShapeTrace(model)
            model.to(self.device)
            model.to(memory_format=layout)
            set_training(model, True)
            x = torch.randn(2, self.in_channels, self.size, self.size, device=self.device)
            out = model(x.contiguous(memory_format=layout))
            wrong = wrong_output(out, self.num_classes, self.in_channels, self.size)
        except BaseException as exc:  # noqa: BLE001
            return {**self._err("forward", exc), **({"trace": trace.record()} if trace else {})}
        finally:
            if trace is not None:
                trace.remove()
        return {**wrong, "trace": trace.record()} if wrong else None

    def train(self) -> dict | None:
        cfg, model, dev = self.cfg, self.model, self.device
        mean, std = cfg.get("mean", [0.5] * self.in_channels), cfg.get("std", [0.25] * self.in_channels)
        train = DeviceData(self.data_dir, "train", dev, mean, std, self.channels_last)
        self.test = DeviceData(self.data_dir, "test", dev, mean, std, self.channels_last)
        batch = min(int(cfg["batch_size"]), len(train))
        per_epoch = max(1, len(train) // batch)
        steps = max(int(cfg["epochs"]) * per_epoch, int(cfg["min_steps"] or 0))
        peak_lr, pad, flip = float(cfg["lr"]), int(cfg.get("crop_pad", self.size // 8)), bool(cfg["flip"])
        try:  # the optimizer trains the harness's copy of what the budget counted (steps.py)
            self.watch = watch = StepWatch(steps, model, list(own_tensors(model, buffers=False).values()))
        except BaseException as exc:  # noqa: BLE001 - a registry the net replaced since it was built
            return {**self._err("train", exc), "steps": 0}
        opt = torch.optim.SGD(watch.shadow, lr=peak_lr, momentum=cfg["momentum"], nesterov=True,
                              weight_decay=float(cfg["weight_decay"]))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=float(cfg["label_smoothing"]))
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        self.autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.facts.update(batch_size=batch, train_images=len(train), test_images=len(self.test))
        set_training(model, True)  # not the net's own train()
        t0 = time.perf_counter()
        step, recent, noted = 0, [], t0
        try:
            while step < steps:
                order = torch.randperm(len(train), device=dev, generator=gen)
                for i in range(min(per_epoch, steps - step)):
                    x, y = train.batch(order[i * batch:(i + 1) * batch], pad=pad, flip=flip, gen=gen)
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, steps, peak_lr)
                    opt.zero_grad(set_to_none=True)  # the shadow's; the net's own are cleared by watch.changed
                    loss, costly = self._step(x, y, loss_fn, watch.counts(step), step == 0)
                    costly = costly or watch.changed(step)
                    if costly:
                        return {**costly, "steps": step}
                    nn.utils.clip_grad_norm_(watch.shadow, float(cfg["grad_clip"]))
                    opt.step()
                    watch.keep()
                    step += 1
                    if time.perf_counter() - noted >= PROGRESS_EVERY_S or step == steps:
                        noted = time.perf_counter()
                        note_progress(self.out_dir, step, steps)
                    if step % 10 == 0 or step == steps:
                        recent.append(float(loss.detach()))
                        if not math.isfinite(recent[-1]):
                            return {"status": "diverged", "phase": "train", "steps": step,
                                    "message": f"training loss became {recent[-1]} at step {step}/{steps}"}
        except BaseException as exc:  # noqa: BLE001
            return {**self._err("train", exc), "steps": step}
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        self.facts.update(steps=step, epochs=step / per_epoch, train_seconds=seconds, counted_steps=watch.counted_steps,
                          images_per_s=step * batch / max(seconds, 1e-9),
                          train_loss=float(np.mean(recent[-3:])) if recent else None)
        return None

    def _step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, counted: bool,
              first: bool) -> tuple[torch.Tensor, dict | None]:
        """Forward and backward of one batch: (the loss, a budget failure). A counted step runs under
        StepCount and meets the budgets again, on real data (a pre-flight on the meta device can be dodged)."""
        count = StepCount([*own_tensors(self.model).values(), x, y], self.model) if counted else None
        with count if count is not None else contextlib.nullcontext():
            with self.autocast:
                loss = loss_fn(plain(self.model(x)).float(), y)
            if count is not None:
                count.backward = True
            loss.backward()
        if count is not None:
            count.held = tensor_count(self.model)
        return loss, step_over_budget(count, int(x.shape[0]), first, self.facts, self.cfg) if count is not None else None

    def predict(self) -> dict | None:
        """The predicted class of every test image (the host, which holds the labels, scores them), each
        forward counted (EvalCount: no training at evaluation)."""
        model, test = self.model, self.test
        preds: list = []
        t1 = time.perf_counter()
        try:
            count = EvalCount(set_training(model, False))  # not the net's eval(); its registries may be broken
            with torch.no_grad(), self.autocast:
                for i in range(0, len(test), int(self.cfg["eval_batch"])):
                    idx = torch.arange(i, min(i + int(self.cfg["eval_batch"]), len(test)), device=self.device)
                    logits = plain(count.forward(test.images(idx))).float()
                    if not torch.isfinite(logits).all():
                        return {"status": "diverged", "phase": "eval", "steps": self.facts.get("steps"),
                                "message": "the trained net outputs NaN/inf on the test set"}
                    preds.append(logits.argmax(1).to(torch.int64).cpu())
            costly = count.over_budget(self.facts, self.cfg) or self.watch.unchanged("while predicting")
        except BaseException as exc:  # noqa: BLE001
            return self._err("eval", exc)
        if costly:
            return costly
        self.facts["eval_seconds"] = time.perf_counter() - t1
        self.facts["peak_memory_bytes"] = peak_memory_bytes(self.device)
        self.predictions = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)
        return None

    def save(self) -> dict | None:
        """Predictions and trained tensors as safetensors: data the host can read without executing it."""
        from safetensors.torch import save_file

        try:
            tensors = {k: v.detach().float().cpu().contiguous().clone()
                       for k, v in own_tensors(self.model).items()}
            save_file(tensors, os.path.join(self.out_dir, WEIGHTS))
            save_file({"predictions": self.predictions.contiguous()}, os.path.join(self.out_dir, PREDICTIONS))
        except BaseException as exc:  # noqa: BLE001
            return self._err("save", exc)
        return None


def note_progress(out_dir: str, step: int, steps: int) -> None:
    """Training steps done so far, for the host's display (replaced atomically; never worth a failure)."""
    try:
        tmp = os.path.join(out_dir, PROGRESS + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{step} {steps}")
        os.replace(tmp, os.path.join(out_dir, PROGRESS))
    except OSError:
        pass


def mark_training(out_dir: str) -> None:
    """Tell the host the pre-flight is over, so its short pre-flight deadline gives way to the full one."""
    with open(os.path.join(out_dir, TRAINING_MARK), "w"):
        pass


def run(cfg: dict, candidate_path: str, data_dir: str, out_dir: str) -> dict:
    """Every phase in order; the first failure ends the run. Returns the result record."""
    t_start = time.perf_counter()
    torch.manual_seed(int(cfg.get("seed", 0)))
    np.random.seed(int(cfg.get("seed", 0)))
    if int(cfg.get("threads", 0)) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    r = Run(cfg, candidate_path, data_dir, out_dir)
    fail = r.load() or r.check()
    if fail is not None or cfg.get("mode") == "preflight":
        return {**r.facts, **(fail or {"status": "ok"})}
    fail = r.build()
    if fail is None and cfg.get("mode") == "proxy":
        return {**r.facts, **proxy_scores(r.cfg, r.net_cls, data_dir, r.device, r.seed)}
    fail = fail or r.probe()
    if fail is None:
        mark_training(out_dir)
        fail = r.train() or r.predict() or r.save()
    if fail is not None:
        return {**r.facts, **fail}
    return {**r.facts, "status": "ok", "total_seconds": time.perf_counter() - t_start}


def write_result(out_dir: str, result: dict) -> None:
    """result.json, written whole (rename) so the host never reads half a record."""
    try:
        data = json.dumps(result, default=safe_str)
    except BaseException as exc:  # noqa: BLE001 - a value the candidate smuggled in
        data = json.dumps(failure("report", type_name(exc), safe_str(exc)))
    tmp = os.path.join(out_dir, f"{RESULT}.{os.getpid()}.tmp")  # forked copies must not share one
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, os.path.join(out_dir, RESULT))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (a worker's harness, or one started without supervise.py,
    which arms the same before exec). A harness left orphaned would train on until its deadline."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the deadline inside still holds
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def main(argv: list[str]) -> int:
    os.dup2(2, 1)  # everything printed (ours and the candidate's) is log, never a result
    if len(argv) != 5:
        print("usage: runner.py CONFIG_JSON CANDIDATE_PY DATA_DIR OUT_DIR", file=sys.stderr)
        return 2
    die_with_parent()
    with open(argv[1]) as f:
        cfg = json.load(f)
    if cfg.get("deadline_s"):  # the kill-timer inside: default SIGALRM action ends the process
        signal.setitimer(signal.ITIMER_REAL, float(cfg["deadline_s"]))
    try:
        result = run(cfg, argv[2], argv[3], argv[4])
    except BaseException as exc:  # noqa: BLE001 - anything that escaped the phases is still the candidate's
        result = error("harness", exc)
    write_result(argv[4], result)
    sys.stderr.flush()
    os._exit(0)  # at once: a thread the candidate left behind must not turn a finished run into a timeout


if __name__ == "__main__":
    sys.exit(main(sys.argv))
