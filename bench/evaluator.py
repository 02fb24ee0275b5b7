"""Evaluator benchmarks, printed as ratios against baselines measured in the same process run.

P1  overhead per evaluation beyond the net's own work (sandbox start, interpreter + torch import, data
    load, result), on a trivial net and tiny data: Docker sandbox vs process sandbox vs the work itself.
P2  harness images/s vs the loop most users write (torchvision ImageFolder + RandomCrop/Flip/ToTensor
    + DataLoader(num_workers=2)) on the same net, data and batch size.
P2b a net a search grew (bench/fixtures/grown_cifar_net.py) under each memory setting of the harness:
    NCHW or channels_last, 4 KiB or huge pages (the first of each pair is the harness before they came).

    python bench/evaluator.py [--images DIR] [--steps 40] [--repeats 3]

DIR is an ImageFolder tree with train/ and test/ (default: the CIFAR-10 JPEGs next to the project,
extracted into the cache). Nothing here is asserted: machines are noisy, ratios are what to compare.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasloop import prompts  # noqa: E402
from nasloop.sandbox import Limits, make_sandbox  # noqa: E402
from nasloop.tools.datasets import cache_root, prepare  # noqa: E402
from nasloop.tools.evaluator import Evaluator, TrainSettings  # noqa: E402

TRIVIAL = (ROOT / "tests" / "candidates" / "ok_tiny.py").read_text()


def cifar_images() -> Path | None:
    tar = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar"
    dest = cache_root() / "cifar10-jpeg"
    if not (dest / "cifar10-jpeg" / "train").is_dir():
        if not tar.is_file():
            return None
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
    return dest / "cifar10-jpeg"


def p1_overhead(repeats: int) -> None:
    """Per-candidate overhead (wall minus the net's own training seconds) of each backend, same process."""
    data = prepare("digits", train_subset=64, test_subset=64)
    settings = TrainSettings(min_steps=1, batch_size=64)
    rows = {}
    for kind in ("process", "docker", "warm"):
        try:
            sandbox = make_sandbox(kind, limits=Limits(timeout_s=120))
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"P1 {kind}: unavailable ({exc})")
            continue
        ev = Evaluator(data, sandbox, settings)
        ev.evaluate(TRIVIAL)  # warm the page cache (and start the warm worker)
        walls, works = [], []
        for _ in range(repeats):
            out = ev.evaluate(TRIVIAL)
            assert out.ok, out.summary()
            walls.append(out.seconds)
            works.append(out.train_seconds or 0.0)
        getattr(sandbox, "close", lambda: None)()
        rows[kind] = (statistics.median(walls), statistics.median(works))
    print("P1  evaluation overhead on a trivial net (median of %d)" % repeats)
    for kind, (wall, work) in rows.items():
        name = {"docker": "cold", "warm": "warm"}.get(kind, kind)
        print(f"    {name:<8} wall {wall:6.2f} s   net's own work {work:5.2f} s   overhead {wall - work:5.2f} s")
    if "docker" in rows and "warm" in rows:
        c, w = rows["docker"], rows["warm"]
        print(f"    ratio warm overhead / cold overhead: {(w[0] - w[1]) / max(c[0] - c[1], 1e-9):.3f}x "
              f"(target: warm overhead <= 0.5 s; it is {w[0] - w[1]:.2f} s)")


def naive_loop_images_per_s(images: Path, steps: int, batch: int, warmup: int = 3, device: str = "cpu",
                            workers: int = 2) -> float:
    """The loop most users write: ImageFolder + transforms + DataLoader(num_workers=2), fp32, on `device`."""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    ns: dict = {}
    exec(compile(prompts.seed_source("cifar10"), "seed.py", "exec"), ns)  # noqa: S102 - our own seed
    model = ns["Net"](num_classes=10, in_channels=3).to(device)
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    loader = DataLoader(datasets.ImageFolder(str(images / "train"), transform=tf), batch_size=batch,
                        shuffle=True, num_workers=workers, drop_last=True, persistent_workers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    it = (xy for _ in range(warmup + steps) for xy in loader)  # epochs until the steps are done, as users do
    t0 = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


GROWN = ROOT / "bench" / "fixtures" / "grown_cifar_net.py"  # a search's 7th candidate (widened, a residual)


def harness_run(data, source: str, steps: int, batch: int, sandbox: str = "process", huge_pages: bool = True,
                **settings):
    ev = Evaluator(data, make_sandbox(sandbox, limits=Limits(timeout_s=600, huge_pages=huge_pages)),
                   TrainSettings(min_steps=steps, batch_size=batch, **settings))
    out = ev.evaluate(source)
    assert out.ok, out.summary()
    return out


def p2_throughput(images: Path, steps: int, batch: int) -> None:
    data = prepare(f"folder:{images}", train_subset=steps * batch, test_subset=512)
    seed = prompts.seed_source(data.name)
    results = {}
    for precision, layout in (("fp32", "contiguous"), ("fp32", "auto"), ("auto", "auto")):
        out = harness_run(data, seed, steps, batch, precision=precision, layout=layout)
        results[f"harness {out.precision} {out.layout}"] = out.images_per_s
    results["naive DataLoader loop"] = naive_loop_images_per_s(images, steps, batch)
    base = results["naive DataLoader loop"]
    print(f"P2  training images/s, seed net, batch {batch}, {steps} steps, {data.name}")
    for name, ips in results.items():
        print(f"    {name:<34} {ips:8.0f} img/s   {ips / base:5.2f}x the DataLoader loop")
    print("    (target: harness >= 3x)")
    p2_memory(data, steps // 2, batch)


def p2_memory(data, steps: int, batch: int, repeats: int = 2) -> None:
    """A net a search grew, trained in the Docker sandbox (the process sandbox without Docker) under each
    memory setting of the harness: tensor layout (NCHW or channels_last) and page size (4 KiB or huge)."""
    kind = "docker"
    try:
        make_sandbox(kind, limits=Limits(timeout_s=600))
    except Exception:  # noqa: BLE001 - no engine here: the process sandbox runs the same harness
        kind = "process"
    grown, rows = GROWN.read_text(), {}
    settings = [("contiguous", False), ("contiguous", True), ("auto", False), ("auto", True)]
    for _ in range(repeats):  # interleaved: drift on a shared machine hits every setting alike
        for layout, huge in settings:
            out = harness_run(data, grown, steps, batch, kind, huge, precision="fp32", layout=layout)
            rows.setdefault((out.layout, huge), []).append(out.train_seconds or 0.0)
    base = statistics.median(rows[("contiguous", False)])
    print(f"P2b training seconds, {GROWN.name}, {steps} steps of batch {batch}, fp32, {kind} sandbox "
          f"(median of {repeats})")
    for (layout, huge), secs in rows.items():
        s = statistics.median(secs)
        print(f"    {layout:<14} {'huge pages' if huge else '4 KiB pages':<12} {s:7.1f} s   {s / base:5.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description="evaluator benchmarks (P1 overhead, P2 throughput)")
    ap.add_argument("--images", type=Path, help="ImageFolder tree with train/ and test/ (default: CIFAR-10 JPEGs)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["p1", "p2"])
    args = ap.parse_args()
    if args.only in (None, "p1"):
        p1_overhead(args.repeats)
    if args.only in (None, "p2"):
        images = args.images or cifar_images()
        if images is None:
            print("P2  skipped: no --images DIR and no CIFAR-10 JPEG archive next to the project")
        else:
            p2_throughput(images, args.steps, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
