"""P3: how well each zero-cost proxy ranks real nets, and what it costs.

On the fixture nets in bench/fixtures/proxy_nets/ (≥ 30 diverse CNNs: depth, width, kernel, activation,
normalisation, residuals and downsampling all vary), each net is
  1. trained for one epoch on a CIFAR-10 JPEG subset by the Evaluator (the sandbox, as in a search), and
  2. scored by every proxy in the sandbox on one minibatch of the same data (batch 64 by default).
Printed: Spearman ρ of each proxy against the trained accuracy, and the seconds each proxy took per
candidate inside the sandbox (median), next to the wall time of a whole sandboxed proxy run. Nothing is
asserted. Results are cached in bench/out/proxies.json, so a rerun only evaluates what is missing.

    python bench/proxies.py [--images DIR] [--train-subset 10000] [--batch 64] [--sandbox docker]
    python bench/proxies.py --regenerate     # rewrite the fixture nets (seeded, deterministic)
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluator import cifar_images  # noqa: E402

FIXTURES = ROOT / "bench" / "fixtures" / "proxy_nets"
OUT = ROOT / "bench" / "out" / "proxies.json"
PROXIES = ("naswot", "synflow", "snip", "grad_norm", "zen", "zico", "params", "flops")

# One body for every fixture; the constants above it make each net different.
BODY = '''

def act() -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "relu6": nn.ReLU6}[ACT]()


def norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if NORM else nn.Identity()


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        pad = KERNEL // 2
        self.conv1 = nn.Conv2d(cin, cout, KERNEL, stride=stride, padding=pad, bias=not NORM)
        self.bn1 = norm(cout)
        self.act1 = act()
        self.double = DOUBLE
        if DOUBLE:
            self.conv2 = nn.Conv2d(cout, cout, KERNEL, padding=pad, bias=not NORM)
            self.bn2 = norm(cout)
        self.residual = RESIDUAL
        if RESIDUAL:
            same = cin == cout and stride == 1
            self.skip = nn.Identity() if same else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.act1(out)
        if self.double:
            out = self.conv2(out)
            out = self.bn2(out)
        if self.residual:
            out = out + self.skip(x)
        return self.act2(out)


class Net(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, WIDTHS[0], 3, padding=1, bias=not NORM), norm(WIDTHS[0]), act()]
        cin = WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for block in range(BLOCKS):
                down = stage > 0 and block == 0
                stride = 2 if down and DOWN == "stride" else 1
                if down and DOWN == "max":
                    layers.append(nn.MaxPool2d(2))
                if down and DOWN == "avg":
                    layers.append(nn.AvgPool2d(2))
                layers.append(Block(cin, width, stride))
                cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.fc(x)
'''


def regenerate(count: int = 32, seed: int = 5) -> list[Path]:
    """Write `count` fixture nets sampled from a seeded design space (deterministic)."""
    rng = random.Random(seed)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for old in FIXTURES.glob("net_*.py"):
        old.unlink()
    paths = []
    while len(paths) < count:
        stages = rng.choice([1, 2, 3, 3, 4])
        base = rng.choice([4, 8, 16, 24, 32, 48])
        growth = rng.choice([1.0, 1.5, 2.0])
        widths = tuple(int(round(base * growth**i)) for i in range(stages))
        cfg = {
            "WIDTHS": widths, "BLOCKS": rng.choice([1, 1, 2]), "KERNEL": rng.choice([3, 3, 5]),
            "ACT": rng.choice(["relu", "relu", "gelu", "silu", "relu6"]), "NORM": rng.random() < 0.75,
            "DOUBLE": rng.random() < 0.5, "RESIDUAL": rng.random() < 0.4,
            "DOWN": rng.choice(["stride", "max", "avg"]), "DROPOUT": rng.choice([0.0, 0.0, 0.2]),
        }
        if _params(cfg) > 1_500_000:  # keep one-epoch CPU training affordable
            continue
        head = "\n".join(f"{k} = {v!r}" for k, v in cfg.items())
        path = FIXTURES / f"net_{len(paths):02d}.py"
        path.write_text(f'"""Proxy-benchmark fixture {len(paths):02d} (generated by bench/proxies.py --regenerate)."""\n'
                        f"import torch\nimport torch.nn as nn\n\n{head}\n{BODY}", encoding="utf-8")
        paths.append(path)
    return paths


def _params(cfg: dict) -> int:
    """A rough parameter count (convolutions only) used to skip nets too big to train on a CPU."""
    total, cin, k = 0, cfg["WIDTHS"][0], cfg["KERNEL"]
    for w in cfg["WIDTHS"]:
        for _ in range(cfg["BLOCKS"]):
            total += cin * w * k * k + (w * w * k * k if cfg["DOUBLE"] else 0)
            cin = w
    return total


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(a, b).statistic
    return float(rho)


def evaluate_all(args: argparse.Namespace) -> dict:
    from nasloop.sandbox import Limits, make_sandbox
    from nasloop.tools.datasets import prepare
    from nasloop.tools.evaluator import Evaluator, TrainSettings

    cache = json.loads(OUT.read_text()) if OUT.is_file() else {}
    key = f"{args.images}|{args.train_subset}|{args.batch}|{args.train_batch}|{args.sandbox}"
    results = cache.get(key, {})
    data = prepare(f"folder:{args.images}", train_subset=args.train_subset, test_subset=args.test_subset)
    sandbox = make_sandbox(args.sandbox, limits=Limits(timeout_s=900))
    train = Evaluator(data, sandbox, TrainSettings(epochs=1, min_steps=0, batch_size=args.train_batch))
    proxy = Evaluator(data, sandbox, TrainSettings(mode="proxy", proxies=PROXIES, proxy_batch=args.batch))
    nets = sorted(FIXTURES.glob("net_*.py"))
    for i, path in enumerate(nets):
        if path.name in results:
            continue
        code = path.read_text()
        trained, scored = train.evaluate(code), proxy.evaluate(code)
        results[path.name] = {"accuracy": trained.accuracy, "train": trained.kind, "train_seconds": trained.seconds,
                              "params": trained.params, "scores": scored.scores, "proxy_kind": scored.kind,
                              "proxy_seconds": scored.proxy_seconds, "proxy_wall": scored.seconds}
        print(f"[{i + 1}/{len(nets)}] {path.name}: {trained.summary()} | proxies {scored.kind} "
              f"in {scored.seconds or 0:.1f} s", flush=True)
        cache[key] = results
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(cache, indent=1))
    return results


def table(results: dict) -> None:
    rows = [r for r in results.values() if r["train"] == "ok" and r["proxy_kind"] == "ok"]
    accs = [r["accuracy"] for r in rows]
    print(f"\nP3  zero-cost proxies vs one-epoch accuracy on {len(rows)} fixture nets "
          f"(accuracy {min(accs):.3f} … {max(accs):.3f})")
    print(f"    {'proxy':<10} {'Spearman ρ':>11} {'s/candidate (median)':>21}")
    for name in PROXIES:
        scores = [float(r["scores"][name]) for r in rows]
        secs = [r["proxy_seconds"].get(name, 0.0) for r in rows]
        print(f"    {name:<10} {spearman(scores, accs):>11.3f} {statistics.median(secs):>21.3f}")
    walls = [r["proxy_wall"] for r in rows]
    trains = [r["train_seconds"] for r in rows]
    print(f"    whole sandboxed proxy run (all {len(PROXIES)} proxies, sandbox start included): median "
          f"{statistics.median(walls):.1f} s vs one-epoch training {statistics.median(trains):.1f} s "
          f"({statistics.median(trains) / statistics.median(walls):.1f}x)")
    print("    (target: ≤ 1 s per proxy per candidate at batch 64)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="ImageFolder tree (default: the CIFAR-10 JPEGs)")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64, help="proxy minibatch")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--sandbox", default="docker", choices=["docker", "process"])
    ap.add_argument("--regenerate", action="store_true", help="rewrite the fixture nets, then stop")
    args = ap.parse_args()
    if args.regenerate:
        print(f"wrote {len(regenerate())} nets to {FIXTURES.relative_to(ROOT)}")
        return 0
    args.images = args.images or cifar_images()
    if args.images is None:
        print("P3 skipped: no --images DIR and no CIFAR-10 JPEG archive next to the project")
        return 0
    table(evaluate_all(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
