"""The GPU path, printed (never asserted): the harness on CUDA through the process sandbox (a GPU machine
may have PyTorch and CUDA but no Docker and no network), with baselines from the same run.

P2  harness training images/s vs the loop most users write (ImageFolder + DataLoader(num_workers=2)),
    same seed net, batch and device.
E   one epoch of the seed on the training images: seconds (training alone, and the whole evaluation).
Z   the zero-cost proxies of one candidate: seconds each, in the same sandbox.

    python bench/gpu.py [--images DIR] [--train-subset 10000] [--steps 100] [--batch 256] [--loader-workers 8]

Runs from a plain checkout too (only torch, numpy, pillow and torchvision are needed): the repository's
folders are mapped onto the `nasloop` package when it is not installed. Without CUDA it runs on the CPU
and says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
try:
    import nasloop.tools  # noqa: F401 - installed (or editable)
except ModuleNotFoundError:  # a plain checkout: map the repository's folders onto the package
    import nasloop

    nasloop.__path__.append(str(ROOT))

import torch  # noqa: E402

from nasloop import prompts  # noqa: E402
from nasloop.sandbox import Limits, make_sandbox  # noqa: E402
from nasloop.sandbox.base import PROXY_NAMES  # noqa: E402
from nasloop.tools.datasets import prepare  # noqa: E402
from nasloop.tools.evaluator import Evaluator, TrainSettings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="ImageFolder tree with train/ and test/ (default: the CIFAR-10 JPEGs)")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--loader-workers", type=int, default=2, help="also time the DataLoader loop with this many")
    args = ap.parse_args()
    from bench.evaluator import cifar_images, naive_loop_images_per_s

    images = args.images or cifar_images()
    if images is None:
        raise SystemExit("no images: pass --images DIR (an ImageFolder tree with train/ and test/)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (no CUDA here)"
    print(f"device: {name}; torch {torch.__version__}; process sandbox; {images}")
    data = prepare(f"folder:{images}", train_subset=args.train_subset, test_subset=2000)
    sandbox = make_sandbox("process", limits=Limits(timeout_s=600, gpus="all" if device == "cuda" else "none"))
    seed = prompts.seed_source(data.name)

    harness = Evaluator(data, sandbox, TrainSettings(min_steps=args.steps, batch_size=args.batch, device=device))
    out = harness.evaluate(seed)
    assert out.ok, out.summary()
    naive = naive_loop_images_per_s(images, args.steps, args.batch, device=device)
    print(f"P2  training images/s, seed net, batch {args.batch}, {args.steps} steps, {out.precision}")
    print(f"    harness               {out.images_per_s:9.0f} img/s   {out.images_per_s / naive:5.2f}x the DataLoader loop")
    print(f"    naive DataLoader loop {naive:9.0f} img/s   1.00x")
    if args.loader_workers != 2:
        more = naive_loop_images_per_s(images, args.steps, args.batch, device=device, workers=args.loader_workers)
        print(f"    ... num_workers={args.loader_workers:<5d} {more:9.0f} img/s   {more / naive:5.2f}x "
              f"(the harness is {out.images_per_s / more:.2f}x this one)")

    epoch = Evaluator(data, sandbox, TrainSettings(epochs=1, min_steps=1, batch_size=args.batch, device=device))
    out = epoch.evaluate(seed)
    assert out.ok, out.summary()
    print(f"E   one epoch of the seed, {data.train_images} images: training {out.train_seconds:.1f} s, "
          f"whole evaluation {out.seconds:.1f} s, accuracy {out.accuracy:.3f}")

    scored = harness.score(seed, PROXY_NAMES)
    assert scored.ok, scored.summary()
    print("Z   proxies, seconds each: " + ", ".join(f"{k} {v:.3f}" for k, v in scored.proxy_seconds.items())
          + f"; whole scoring run {scored.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
