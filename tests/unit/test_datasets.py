"""Data set preparation on small files written in the exact on-disk layout torchvision expects."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from nasloop.tools import datasets
from nasloop.tools.datasets import DatasetError, prepare

WNIDS = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASLOOP_CACHE", str(tmp_path / "cache"))


def write_images(folder, n, size=(40, 30), ext=".jpg", value=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}{ext}")


def test_digits_is_offline_deterministic_and_cached():
    a = prepare("digits", train_subset=100, seed=3)
    b = prepare("digits", train_subset=100, seed=3)
    c = prepare("digits", train_subset=100, seed=4)
    assert a == b and a.path == b.path and a.path != c.path
    x = np.load(a.sandbox_dir / "train_x.npy")
    assert x.shape == (100, 32, 32, 1) and x.dtype == np.uint8 and x.max() > 200
    assert a.test_images == 360 and a.num_classes == 10 and a.in_channels == 1 and not a.flip
    assert np.array_equal(x, np.load(b.sandbox_dir / "train_x.npy"))
    assert not np.array_equal(x, np.load(c.sandbox_dir / "train_x.npy"))
    assert "(B, 1, 32, 32)" in a.describe()


def test_folder_layout_train_val(tmp_path):
    for i, cls in enumerate(["cat", "dog"]):
        write_images(tmp_path / "ds" / "train" / cls, 6, value=i)
        write_images(tmp_path / "ds" / "val" / cls, 2, value=10 + i)
    d = prepare(f"folder:{tmp_path / 'ds'}", image_size=16)
    assert (d.num_classes, d.in_channels, d.image_size, d.train_images, d.test_images) == (2, 3, 16, 12, 4)
    assert d.classes == ("cat", "dog") and d.flip
    assert np.load(d.sandbox_dir / "train_x.npy").shape == (12, 16, 16, 3)
    assert list(np.load(d.sandbox_dir / "train_y.npy")) == [0] * 6 + [1] * 6


def test_imagenette_layout(tmp_path):
    root = tmp_path / "imagenette"
    for i, wnid in enumerate(WNIDS):
        write_images(root / "imagenette2-160" / "train" / wnid, 4, size=(213, 160), ext=".JPEG", value=i)
        write_images(root / "imagenette2-160" / "val" / wnid, 2, size=(160, 240), ext=".JPEG", value=9 + i)
    d = prepare("imagenette", data_root=root, download=False)
    assert (d.num_classes, d.image_size, d.train_images, d.test_images) == (3, 64, 12, 6)
    assert d.classes[0] == "tench"
    assert np.load(d.sandbox_dir / "test_x.npy").shape == (6, 64, 64, 3)


def _cifar_batch(path, n, labels_key, rng):
    data = rng.integers(0, 255, (n, 3 * 32 * 32), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": data, labels_key: list(rng.integers(0, 5, n))}, f)


def test_cifar100_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    base = tmp_path / "c100" / CIFAR100.base_folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _cifar_batch(base / "train", 50, "fine_labels", rng)
    _cifar_batch(base / "test", 20, "fine_labels", rng)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    # Generated files cannot match torchvision's MD5 list; everything else is the real loader.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
    d = prepare("cifar100", data_root=tmp_path / "c100", download=False)
    assert (d.num_classes, d.train_images, d.test_images, d.image_size) == (100, 50, 20, 32)


@pytest.mark.parametrize("name,kw,msg", [
    ("mnist", {}, "unknown dataset 'mnist'"),
    ("folder:", {}, "unknown dataset"),
    ("digits", {"image_size": 4}, "out of range"),
    ("cifar10", {"download": False}, "cifar10 is not available in"),
    ("imagenette", {"download": False}, "imagenette is not available in"),
])
def test_bad_requests_are_one_line_errors(tmp_path, name, kw, msg):
    with pytest.raises(DatasetError, match=msg) as exc:
        prepare(name, data_root=tmp_path / "nothing", **kw)
    assert "\n" not in str(exc.value)


def test_folder_without_split_dirs(tmp_path):
    (tmp_path / "x" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no val/ or test/"):
        prepare(f"folder:{tmp_path / 'x'}")
    with pytest.raises(DatasetError, match="no train/"):
        prepare(f"folder:{tmp_path / 'missing'}")


def test_sandbox_view_is_world_readable_and_holds_no_test_labels():
    d = prepare("digits", train_subset=10)
    assert sorted(p.name for p in d.sandbox_dir.iterdir()) == ["test_x.npy", "train_x.npy", "train_y.npy"]
    assert all(p.stat().st_mode & 0o004 for p in d.sandbox_dir.iterdir())
    labels = d.path / "test_y.npy"
    assert labels.stat().st_mode & 0o077 == 0  # the host's alone
    assert len(d.test_labels()) == d.test_images
    assert datasets.cache_root() in d.path.parents


def test_corrupt_image_is_a_one_line_error(tmp_path):
    for split in ("train", "val"):
        write_images(tmp_path / "ds" / split / "a", 2)
    (tmp_path / "ds" / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"cannot decode image '.*broken\.jpg'") as exc:
        prepare(f"folder:{tmp_path / 'ds'}")
    assert "\n" not in str(exc.value)
