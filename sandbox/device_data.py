"""The harness's device side: which device and precision a run uses, and the data as uint8 tensors resident on
that device, normalised and augmented there (no DataLoader, no worker processes in the sandbox).

Runs INSIDE the sandbox beside runner.py, which imports it; like the harness it imports nothing of the
project: only the standard library, numpy and torch. The test split carries no labels here: the host
scores the predictions the harness writes.
"""
from __future__ import annotations

import os
import resource

import numpy as np
import torch
import torch.nn.functional as F


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
    """A split as uint8 NCHW on the device; batches are normalised floats. The test split has no labels."""

    def __init__(self, data_dir: str, split: str, device: torch.device, mean, std, channels_last: bool):
        x = np.load(os.path.join(data_dir, f"{split}_x.npy"), allow_pickle=False)  # (N, H, W, C) uint8
        # copy(), not ascontiguousarray(): with one channel the transposed view already counts as contiguous and
        # keeps channels_last strides, which torch follows (an NCHW-only net's eval then fails in `view`).
        self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
        y_path = os.path.join(data_dir, f"{split}_y.npy")
        self.y = (torch.from_numpy(np.load(y_path, allow_pickle=False).astype(np.int64)).to(device)
                  if split == "train" else None)
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.channels_last = channels_last

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def images(self, idx: torch.Tensor, pad: int = 0, flip: bool = False, gen=None) -> torch.Tensor:
        x = self.x[idx].float()
        if pad:
            x = random_crop(x, pad, gen)
        if flip:
            mask = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batch(self, idx: torch.Tensor, pad: int = 0, flip: bool = False, gen=None):
        assert self.y is not None, "only the training split has labels in the sandbox"
        return self.images(idx, pad, flip, gen), self.y[idx]


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


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
