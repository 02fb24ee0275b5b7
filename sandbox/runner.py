"""nasloop evaluation harness: trains one untrusted candidate `Net` and reports one JSON result.

This file runs INSIDE the sandbox (container or process sandbox) and imports nothing of the project:
only the standard library, numpy and torch. It owns the whole training recipe; the candidate only
supplies `class Net(nn.Module)`.

Result channel (why the candidate cannot forge it):
  * before the candidate is imported, the harness (main -> secure_channel) reads a secret nonce from stdin, keeps a private
    duplicate of the original stdout and then points file descriptor 1 at stderr, so everything the
    candidate prints lands in the log stream, never in the result stream;
  * the functions used to write the result (`os.write`, `json.dumps`) are bound before the import;
  * the result line carries the nonce, which the caller checks.

Usage:  python -I runner.py CONFIG_JSON CANDIDATE_PY DATA_DIR      (nonce on stdin)
"""
from __future__ import annotations

import json
import linecache
import math
import os
import resource
import sys
import time
import traceback

# --- the result channel: bound before any untrusted code exists --------------------------------
_write = os.write
_dumps = json.dumps
_CHANNEL = {"fd": 1, "nonce": ""}


def secure_channel() -> None:
    """Keep a private duplicate of stdout for the result, send fd 1 to stderr, read the nonce, close stdin.

    Called first thing in main(), before the candidate exists; importing this module does nothing of it
    (so tests can import the helpers)."""
    _CHANNEL["fd"] = os.dup(1)
    os.dup2(2, 1)  # the candidate's prints (and ours) go to stderr from here on
    try:
        _CHANNEL["nonce"] = sys.stdin.buffer.readline().decode("ascii", "replace").strip()
    except Exception:  # no stdin (run by hand): results are unsigned and the caller will reject them
        _CHANNEL["nonce"] = ""
    try:
        os.close(0)
    except OSError:
        pass


RESULT_PREFIX = "NASLOOP_RESULT "
TAIL = 1500  # characters of traceback kept in the result


def _emit(result: dict, fd: int, nonce: str) -> None:
    """Write the signed result line to the private stdout duplicate (once)."""
    result["nonce"] = nonce
    data = (RESULT_PREFIX + _dumps(result, default=str) + "\n").encode()
    while data:
        n = _write(fd, data)
        data = data[n:]


def _error(phase: str, exc: BaseException) -> dict:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "candidate.py"]
    where = f"candidate.py:{frames[-1].lineno} in {frames[-1].name}: {(frames[-1].line or '').strip()}" if frames else ""
    return {
        "status": "error",
        "phase": phase,
        "exc_type": type(exc).__name__,
        "message": str(exc)[:TAIL],
        "traceback": tb[-TAIL:],
        "where": where[:200],
    }


import numpy as np  # noqa: E402  (after the channel is secured, before the candidate)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# --- device and precision -----------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX512-BF16 or AMX-BF16 (read, never assumed)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: torch.device, precision: str) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


# --- data: uint8 arrays resident on the device, augmentation on the device ----------------------
class DeviceData:
    """The whole split as uint8 NCHW on the device; batches are normalised floats."""

    def __init__(self, data_dir: str, split: str, device: torch.device, mean, std, channels_last: bool):
        x = np.load(os.path.join(data_dir, f"{split}_x.npy"))  # (N, H, W, C) uint8
        y = np.load(os.path.join(data_dir, f"{split}_y.npy"))
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        self.y = torch.from_numpy(y.astype(np.int64)).to(device)
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.channels_last = channels_last

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, idx: torch.Tensor, pad: int = 0, flip: bool = False, gen=None):
        x = self.x[idx].float()
        if pad:
            x = random_crop(x, pad, gen)
        if flip:
            mask = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]


def random_crop(x: torch.Tensor, pad: int, gen=None) -> torch.Tensor:
    """Random translation by up to `pad` pixels (reflect padding), one gather for the whole batch."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w)).view(b, 1, 1, w)
    padded = padded.gather(2, rows.expand(b, c, h, padded.shape[3]))
    return padded.gather(3, cols.expand(b, c, h, w))


# --- measurements --------------------------------------------------------------------------------
def count_flops(model: nn.Module, sample: torch.Tensor) -> int | None:
    """Forward FLOPs of one image (torch.utils.flop_counter), or None if the counter fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample)
        return int(counter.get_total_flops())
    except Exception:
        return None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --- pre-flight on the meta device: shapes, interface and size before any real allocation ------------
class ShapeTrace:
    """Forward hooks recording each leaf module's output shape, and which module was running at a failure."""

    def __init__(self, model: nn.Module):
        self.names = {m: (n or "net") for n, m in model.named_modules()}
        self.done: list[str] = []
        self.stack: list[tuple[nn.Module, str]] = []
        self.handles = []
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    @staticmethod
    def _shape(x) -> str:
        if isinstance(x, torch.Tensor):
            return "x".join(str(d) for d in x.shape[1:]) or "scalar"
        if isinstance(x, (tuple, list)) and x:
            return ShapeTrace._shape(x[0])
        return type(x).__name__

    def _pre(self, mod, args) -> None:
        self.stack.append((mod, self._shape(args)))

    def _post(self, mod, args, out) -> None:
        if self.stack:
            self.stack.pop()
        if not any(True for _ in mod.children()):
            self.done.append(f"{self.names.get(mod, '?')} {type(mod).__name__}→{self._shape(out)}")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def text(self, limit: int = 160) -> str:
        """'conv1 Conv2d→32x32x32 | pool MaxPool2d→32x16x16 | ✗ fc Linear(in_features=8192, ...) got 2048'."""
        parts = list(self.done)
        if self.stack:
            mod, shape_in = self.stack[-1]
            leaf = not any(True for _ in mod.children())
            desc = repr(mod).splitlines()[0][:70] if leaf else type(mod).__name__
            parts.append(f"✗ {self.names.get(mod, '?')} {desc} got {shape_in}")
        out = " | ".join(parts)
        while len(out) > limit and len(parts) > 1:
            parts.pop(0)
            out = "… | " + " | ".join(parts)
        return out[-limit:]


def over_budget(params: int, max_params: int, model: nn.Module | None = None) -> dict | None:
    """A BudgetError naming the largest layers, so a repair knows which ones to shrink."""
    if max_params and params > max_params:
        largest = ""
        if model is not None:
            own = [(sum(p.numel() for p in m.parameters(recurse=False)), name, type(m).__name__)
                   for name, m in model.named_modules() if name]
            top = sorted((t for t in own if t[0]), reverse=True)[:3]
            largest = "; largest layers: " + ", ".join(f"{name} {kind} {n:,}" for n, name, kind in top)
        return {"status": "error", "phase": "interface", "exc_type": "BudgetError",
                "message": f"Net has {params:,} parameters; the budget is {max_params:,}{largest}. Use fewer or "
                           f"narrower layers"}
    return None


def wrong_output(out, num_classes: int, in_channels: int, size: int) -> dict | None:
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, num_classes):
        return None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    return {"status": "error", "phase": "interface", "exc_type": "InterfaceError",
            "message": f"Net returned {got} for input (2, {in_channels}, {size}, {size}); expected (2, {num_classes})"}


def _meta_specific(exc: BaseException) -> bool:
    """Errors that only the meta device causes (data-dependent ops, .item(), mixed devices)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "device" in text


def preflight(net_cls, num_classes: int, in_channels: int, size: int, max_params: int) -> tuple[dict | None, dict]:
    """Build and run the net on the meta device (no memory): (failure or None, facts to report)."""
    t0 = time.perf_counter()
    try:
        with torch.device("meta"):
            model = net_cls(num_classes=num_classes, in_channels=in_channels)
    except BaseException as exc:
        if _meta_specific(exc) and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return None, {"preflight": "inconclusive"}
        return _error("build", exc), {"preflight": "failed"}
    params = sum(p.numel() for p in model.parameters())
    info = {"params": int(params), "preflight": "failed"}
    budget = over_budget(params, max_params, model)
    if budget:
        return budget, {**info, "preflight_seconds": time.perf_counter() - t0}
    trace = ShapeTrace(model)
    try:
        with torch.device("meta"):
            out = model(torch.empty(2, in_channels, size, size, device="meta"))
    except BaseException as exc:
        if _meta_specific(exc) and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return None, {"params": int(params), "preflight": "inconclusive"}
        return {**_error("forward", exc), "shape_trace": trace.text()}, info
    finally:
        trace.remove()
    wrong = wrong_output(out, num_classes, in_channels, size)
    if wrong:
        return {**wrong, "shape_trace": trace.text()}, info
    return None, {"params": int(params), "preflight": "passed", "preflight_seconds": time.perf_counter() - t0}


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
    try:
        train = DeviceData(data_dir, "train", device, mean, std, channels_last=False)
    except Exception as exc:
        return _error("data", exc)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    idx = torch.randperm(len(train), device=device, generator=gen)[: int(cfg.get("proxy_batch", 64))]
    x, y = train.batch(idx)
    try:
        scores, seconds = zero_cost.score_timed(
            lambda: net_cls(num_classes=int(cfg["num_classes"]), in_channels=in_channels).to(device), names, x, y, seed)
    except BaseException as exc:
        return _error("proxy", exc)
    return {"status": "ok", "scores": {k: (v if math.isfinite(v) else str(v)) for k, v in scores.items()},
            "proxy_seconds": seconds}


def lr_at(step: int, total: int, peak: float, warmup: float = 0.2) -> float:
    """One-cycle: linear warm-up to `peak`, then linear decay to zero."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (step + 1) / w
    return peak * max(0.0, (total - step) / max(1, total - w))


def run(cfg: dict, candidate_path: str, data_dir: str) -> dict:
    t_start = time.perf_counter()
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    np.random.seed(seed)
    threads = int(cfg.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    device = pick_device(cfg.get("device", "auto"))
    bf16 = use_bf16(device, cfg.get("precision", "auto"))
    channels_last = bf16 or device.type == "cuda"
    num_classes = int(cfg["num_classes"])
    in_channels = int(cfg["in_channels"])
    size = int(cfg["image_size"])

    base = {"seed": seed, "device": device.type, "precision": "bf16" if bf16 else "fp32"}

    try:
        ns = load_candidate(candidate_path)
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit from the candidate ...
        return {**base, **_error("import", exc)}
    net_cls = ns.get("Net")
    if not (isinstance(net_cls, type) and issubclass(net_cls, nn.Module)):
        return {**base, "status": "error", "phase": "interface", "exc_type": "InterfaceError",
                "message": "the module defines no class Net(nn.Module)"}
    if cfg.get("preflight", True):
        failure, info = preflight(net_cls, num_classes, in_channels, size, int(cfg.get("max_params") or 0))
        base.update(info)
        if failure is not None or cfg.get("mode") == "preflight":
            return {**base, **(failure or {"status": "ok"})}

    try:
        torch.manual_seed(seed)
        model = net_cls(num_classes=num_classes, in_channels=in_channels)
    except BaseException as exc:
        return {**base, **_error("build", exc)}
    params = sum(p.numel() for p in model.parameters())
    base["params"] = int(params)
    budget = over_budget(params, int(cfg.get("max_params") or 0), model)
    if budget:
        return {**base, **budget}

    if cfg.get("mode") == "proxy":
        return {**base, **proxy_scores(cfg, net_cls, data_dir, device, seed)}

    trace = ShapeTrace(model)
    try:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        probe = torch.randn(2, in_channels, size, size, device=device)
        model.train()
        out = model(probe)
    except BaseException as exc:
        return {**base, **_error("forward", exc), "shape_trace": trace.text()}
    finally:
        trace.remove()
    wrong = wrong_output(out, num_classes, in_channels, size)
    if wrong:
        return {**base, **wrong, "shape_trace": trace.text()}
    model.eval()
    base["flops"] = count_flops(model, probe[:1])

    mean, std = cfg.get("mean", [0.5] * in_channels), cfg.get("std", [0.25] * in_channels)
    try:
        train = DeviceData(data_dir, "train", device, mean, std, channels_last)
        test = DeviceData(data_dir, "test", device, mean, std, channels_last)
    except Exception as exc:  # the harness's own fault, not the candidate's
        return {**base, **_error("data", exc)}

    batch = min(int(cfg.get("batch_size", 256)), len(train))
    steps_per_epoch = max(1, len(train) // batch)
    steps = max(int(cfg.get("epochs", 1)) * steps_per_epoch, int(cfg.get("min_steps", 0)))
    peak_lr = float(cfg.get("lr", 0.05))
    pad = int(cfg.get("crop_pad", size // 8))
    flip = bool(cfg.get("flip", True))
    opt = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, nesterov=True,
                          weight_decay=float(cfg.get("weight_decay", 5e-4)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(cfg.get("label_smoothing", 0.1)))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    model.train()
    t0 = time.perf_counter()
    step, loss_val, recent = 0, float("nan"), []
    try:
        while step < steps:
            order = torch.randperm(len(train), device=device, generator=gen)
            for i in range(steps_per_epoch):
                if step >= steps:
                    break
                idx = order[i * batch:(i + 1) * batch]
                x, y = train.batch(idx, pad=pad, flip=flip, gen=gen)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, steps, peak_lr)
                with autocast:
                    loss = loss_fn(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                step += 1
                if step % 10 == 0 or step == steps:
                    loss_val = float(loss.detach())
                    recent.append(loss_val)
                    if not math.isfinite(loss_val):
                        return {**base, "status": "diverged", "phase": "train", "steps": step,
                                "message": f"training loss became {loss_val} at step {step}/{steps}"}
    except BaseException as exc:
        return {**base, **_error("train", exc), "steps": step}
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0

    model.eval()
    correct = 0
    t1 = time.perf_counter()
    try:
        with torch.no_grad(), autocast:
            for i in range(0, len(test), 1024):
                idx = torch.arange(i, min(i + 1024, len(test)), device=device)
                x, y = test.batch(idx)
                logits = model(x).float()
                if not torch.isfinite(logits).all():
                    return {**base, "status": "diverged", "phase": "eval", "steps": step,
                            "message": "the trained net outputs NaN/inf on the test set"}
                correct += int((logits.argmax(1) == y).sum())
    except BaseException as exc:
        return {**base, **_error("eval", exc), "steps": step}
    saved = None
    if cfg.get("output_dir"):  # train-best: export the trained weights
        try:
            saved = os.path.join(cfg["output_dir"], "weights.pt")
            torch.save({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, saved)
        except Exception as exc:  # noqa: BLE001 - report, do not lose the accuracy
            saved = f"not saved: {exc}"
    return {
        "weights": saved,
        **base,
        "status": "ok",
        "accuracy": correct / max(1, len(test)),
        "train_loss": float(np.mean(recent[-3:])) if recent else loss_val,
        "steps": step,
        "epochs": step / steps_per_epoch,
        "batch_size": batch,
        "train_images": len(train),
        "test_images": len(test),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t1,
        "images_per_s": step * batch / max(train_seconds, 1e-9),
        "peak_memory_bytes": peak_memory_bytes(device),
        "total_seconds": time.perf_counter() - t_start,
    }


def main(argv: list[str]) -> int:
    secure_channel()
    fd, nonce = _CHANNEL.pop("fd"), _CHANNEL.pop("nonce")  # only main's frame holds them now
    if len(argv) != 4:
        print("usage: runner.py CONFIG_JSON CANDIDATE_PY DATA_DIR (nonce on stdin)", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        cfg = json.load(f)
    try:
        result = run(cfg, argv[2], argv[3])
    except BaseException as exc:  # anything that escaped the phase handlers
        result = _error("harness", exc)
    _emit(result, fd, nonce)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
