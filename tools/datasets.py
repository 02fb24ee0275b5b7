"""Data sets, decoded once into a uint8 array cache that the sandbox mounts read-only.

Names: `digits` (scikit-learn's bundled 8x8 digits, offline, resized — the zero-download default),
`cifar10`, `cifar100`, `imagenette` (torchvision's own classes: downloaded into the cache when online),
and `folder:PATH` (ImageFolder layout: PATH/train/<class>/* and PATH/val/ or PATH/test/).

A prepared data set is a directory with meta.json, test_y.npy (the test labels: mode 0600, read only by
the host, which scores predictions) and sandbox/ (train_x.npy (N,H,W,C uint8), train_y.npy, test_x.npy:
all the sandbox mounts). Its name is a key of everything that changes its content, so the same request is
decoded once and is deterministic given the seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nasloop.errors import DatasetError

DEFAULT_SIZES = {"digits": 32, "cifar10": 32, "cifar100": 32, "imagenette": 64, "folder": 32}
NAMES = "digits, cifar10, cifar100, imagenette or folder:PATH"



def cache_root() -> Path:
    """Where decoded arrays and downloads live: $NASLOOP_CACHE, else ~/.cache/nasloop."""
    return Path(os.environ.get("NASLOOP_CACHE") or Path.home() / ".cache" / "nasloop")


@dataclass(frozen=True)
class PreparedData:
    """A decoded data set on disk plus what the harness and the prompts need to know about it."""

    name: str
    path: Path
    num_classes: int
    in_channels: int
    image_size: int
    train_images: int
    test_images: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()

    @property
    def sandbox_dir(self) -> Path:
        """What a sandbox may see: training images and labels, test images. Never the test labels."""
        return self.path / "sandbox"

    def test_labels(self):
        """The test labels, for the host to score a candidate's predictions."""
        return np.load(self.path / "test_y.npy", allow_pickle=False)

    def describe(self) -> str:
        """One line for prompts: the exact input the net receives."""
        return (f"{self.name}: {self.num_classes} classes, input tensors of shape "
                f"(B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"{self.train_images} training images")


def prepare(name: str, *, data_root: str | Path | None = None, image_size: int | None = None,
            train_subset: int | None = None, test_subset: int | None = None, seed: int = 0,
            download: bool = True) -> PreparedData:
    """Decode `name` into the array cache (once) and return its description."""
    kind, _, arg = name.partition(":")
    if kind not in DEFAULT_SIZES or (kind == "folder") != bool(arg):
        raise DatasetError(f"unknown dataset '{name}': choose {NAMES}")
    size = int(image_size or DEFAULT_SIZES[kind])
    if size < 8 or size > 512:
        raise DatasetError(f"--image-size {size} is out of range (8..512)")
    for flag, v in (("--train-subset", train_subset), ("--test-subset", test_subset)):
        if v is not None and v < 1:
            raise DatasetError(f"{flag} must be at least 1 (got {v})")
    root = Path(data_root) if data_root else cache_root() / "downloads" / kind
    if not data_root:  # archives hold the test labels: the host's alone, like test_y.npy
        (cache_root() / "downloads").mkdir(parents=True, exist_ok=True)
        os.chmod(cache_root() / "downloads", 0o700)
    source_id = str(Path(arg).resolve()) if kind == "folder" else str(root.resolve())
    key_text = json.dumps([kind, source_id, size, train_subset, test_subset, seed, 3])
    key = f"{kind}-{size}px-{hashlib.sha256(key_text.encode()).hexdigest()[:12]}"
    out = cache_root() / "data" / key
    if not (out / "meta.json").exists():
        loaders: dict[str, Callable[..., tuple]] = {"digits": _digits, "cifar10": _cifar, "cifar100": _cifar,
                                                    "imagenette": _imagenette, "folder": _folder}
        loader = loaders[kind]
        splits, classes = loader(kind=kind, arg=arg, root=root, size=size, seed=seed, download=download,
                                 subsets=(train_subset, test_subset))
        _write_cache(out, kind if kind != "folder" else f"folder:{arg}", splits, classes, size, seed,
                     flip=kind != "digits")
    meta = json.loads((out / "meta.json").read_text())
    return PreparedData(
        name=meta["name"], path=out, num_classes=meta["num_classes"], in_channels=meta["in_channels"],
        image_size=meta["image_size"], train_images=meta["train_images"], test_images=meta["test_images"],
        flip=meta["flip"], mean=tuple(meta["mean"]), std=tuple(meta["std"]), classes=tuple(meta["classes"]),
    )


# --- writing the cache ---------------------------------------------------------------------------
def _subset(n: int, k: int | None, seed: int, salt: int) -> np.ndarray:
    idx = np.arange(n)
    if k is not None and k < n:
        idx = np.sort(np.random.default_rng(seed * 1000 + salt).permutation(n)[:k])
    return idx


def _write_cache(out: Path, name: str, splits: dict, classes: list[str], size: int, seed: int, flip: bool) -> None:
    xtr, xte = splits["train"][0], splits["test"][0]
    if len(xtr) == 0 or len(xte) == 0:
        raise DatasetError(f"dataset '{name}' has an empty train or test split")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        view = tmp / "sandbox"
        view.mkdir()
        for split, (x, y) in splits.items():
            np.save(view / f"{split}_x.npy", np.ascontiguousarray(x, dtype=np.uint8))
            np.save((view if split == "train" else tmp) / f"{split}_y.npy", np.asarray(y, dtype=np.int64))
        xf = xtr.reshape(-1, xtr.shape[-1]).astype(np.float64) / 255.0
        meta = {
            "name": name, "num_classes": len(classes), "in_channels": int(xtr.shape[-1]), "image_size": size,
            "train_images": int(len(xtr)), "test_images": int(len(xte)), "flip": flip, "seed": seed,
            "mean": [round(float(v), 4) for v in xf.mean(0)],
            "std": [round(max(float(v), 1e-3), 4) for v in xf.std(0)], "classes": classes,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in view.iterdir():
            os.chmod(f, 0o644)  # the sandbox reads them as an unprivileged user
        os.chmod(view, 0o755)
        os.chmod(tmp / "meta.json", 0o644)
        os.chmod(tmp / "test_y.npy", 0o600)  # the host's alone (the process sandbox drops to nobody as root)
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- loaders: each returns ({"train": (x, y), "test": (x, y)}, classes) ----------------------------
def _digits(*, size: int, seed: int, subsets, **_) -> tuple[dict, list[str]]:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    t = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    x = t.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    y = d.target.astype(np.int64)
    order = np.random.default_rng(1234).permutation(len(y))  # a fixed split: 360 test images
    test, train = order[:360], order[360:]
    tr = train[_subset(len(train), subsets[0], seed, 1)]
    te = test[_subset(len(test), subsets[1], seed, 2)]
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}, [str(i) for i in range(10)]


def _cifar(*, kind: str, root: Path, seed: int, download: bool, subsets, **_) -> tuple[dict, list[str]]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    splits = {}
    try:
        for split, train, k, salt in (("train", True, subsets[0], 1), ("test", False, subsets[1], 2)):
            ds = cls(str(root), train=train, download=download)
            idx = _subset(len(ds.targets), k, seed, salt)
            splits[split] = (ds.data[idx], np.asarray(ds.targets)[idx])
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/URLError/OSError
        raise DatasetError(f"{kind} is not available in {root} ({_first_line(exc)}): connect to the internet, "
                           f"or place the extracted '{cls.base_folder}' folder there") from exc
    return splits, list(ds.classes)


def _imagenette(*, root: Path, size: int, seed: int, download: bool, subsets, **_) -> tuple[dict, list[str]]:
    from torchvision import datasets

    splits = {}
    try:
        for split, tv_split, k, salt in (("train", "train", subsets[0], 1), ("test", "val", subsets[1], 2)):
            ds = datasets.Imagenette(str(root), split=tv_split, size="160px", download=download)
            splits[split] = _decode(ds._samples, k, seed, salt, size)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"imagenette is not available in {root} ({_first_line(exc)}): connect to the "
                           f"internet, or extract imagenette2-160.tgz there") from exc
    return splits, [c[0] if isinstance(c, tuple) else str(c) for c in ds.classes]


def _folder(*, arg: str, size: int, seed: int, subsets, **_) -> tuple[dict, list[str]]:
    from torchvision.datasets import ImageFolder

    base = Path(arg)
    if not (base / "train").is_dir():
        raise DatasetError(f"folder dataset '{base}' has no train/ directory (expected train/<class>/*.jpg "
                           f"and val/ or test/)")
    test_dir = next((base / d for d in ("val", "test") if (base / d).is_dir()), None)
    if test_dir is None:
        raise DatasetError(f"folder dataset '{base}' has no val/ or test/ directory")
    try:
        train, test = ImageFolder(str(base / "train")), ImageFolder(str(test_dir))
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"folder dataset '{base}': {_first_line(exc)}") from exc
    if train.classes != test.classes:
        raise DatasetError(f"folder dataset '{base}': train/ and {test_dir.name}/ have different classes")
    return {"train": _decode(train.samples, subsets[0], seed, 1, size),
            "test": _decode(test.samples, subsets[1], seed, 2, size)}, list(train.classes)


def _decode(samples: list, k: int | None, seed: int, salt: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode (path, label) samples to (N, size, size, 3) uint8: shorter side resized, centre crop."""
    from PIL import Image

    idx = _subset(len(samples), k, seed, salt)
    chosen = [samples[i] for i in idx]

    def load(item) -> np.ndarray:
        try:
            return _load(item)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"cannot decode image '{item[0]}': {_first_line(exc)}") from exc

    def _load(item) -> np.ndarray:
        with Image.open(item[0]) as opened:
            im = opened.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            if (w, h) != (size, size):
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        x = np.stack(list(pool.map(load, chosen))) if chosen else np.zeros((0, size, size, 3), np.uint8)
    y = np.asarray([lbl for _, lbl in chosen], dtype=np.int64)
    return x, y


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
