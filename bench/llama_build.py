"""Two builds of llama-cpp-python on the same recorded prompts: prompt reading and decoding speed, as ratios
against the first build.

    python bench/llama_build.py WHEEL_A WHEEL_B [--run tests/fixtures/run-digits] [--rounds 2]
    make bench-llama-build   # the portable AVX2 build against the one `make setup` picked for this CPU

A WHEEL is a built llama_cpp_python wheel (or a folder holding one, as in $NASLOOP_CACHE/wheels/). One
process cannot load two builds, so each measurement is a child process of this one with that build first
on its path, and the builds take turns (A B A B ...) so that a noisy neighbour hurts both alike. Each
child loads the bundled 1.5B model and, for every recorded call, reads the prompt from an empty cache
(prompt tokens/s), then decodes up to 200 tokens greedily after it (decoding tokens/s). "same" says whether
the greedy replies are identical to the first build's (a build with other SIMD kernels may round
differently; it is the same model either way). Nothing is asserted: the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DECODE = 200  # tokens decoded per call


def child(run: Path, model: str) -> None:
    """Measure the build this process imported; print one JSON line."""
    import llama_cpp

    from nasloop.agent.llm.models import resolve_model
    from nasloop.agent.runs.store import RunStore

    recs = [r for r in RunStore.open(run, writable=False).trace() if r.get("prompt") and r.get("system")]
    llm: Any = llama_cpp.Llama(model_path=str(resolve_model(model)), n_ctx=4096, n_threads=os.cpu_count() or 2,
                          n_batch=512, verbose=False, seed=0)
    llm.create_completion("warm up", max_tokens=2)
    read = read_s = decoded = decode_s = 0.0
    replies = []
    for r in recs:
        messages = [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]}]
        llm.reset()
        t = time.perf_counter()
        out = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
        read_s += time.perf_counter() - t
        read += out["usage"]["prompt_tokens"]
        t = time.perf_counter()  # the prompt is in the cache now: this is decoding
        out = llm.create_chat_completion(messages=messages, max_tokens=DECODE, temperature=0)
        decode_s += time.perf_counter() - t
        decoded += out["usage"]["completion_tokens"]
        replies.append(out["choices"][0]["message"]["content"])
    print(json.dumps({"build": llama_cpp.__file__, "prompt_tok_s": read / read_s, "decode_tok_s": decoded / decode_s,
                      "calls": len(recs), "replies": hashlib.sha256("\x00".join(replies).encode()).hexdigest()}))


def unpack(wheel: Path, into: Path) -> Path:
    if wheel.is_dir():
        found = sorted(wheel.glob("llama_cpp_python-*.whl"))
        if not found:
            raise SystemExit(f"bench/llama_build.py: no llama_cpp_python wheel in {wheel}")
        wheel = found[0]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into)
    return into


def measure(site: Path, run: Path, model: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, __file__, "--child", "--run", str(run), "--llm", model], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench/llama_build.py: the child for {site} failed: {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheels", nargs="*", type=Path)
    ap.add_argument("--run", type=Path, default=ROOT / "tests" / "fixtures" / "run-digits")
    ap.add_argument("--llm", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.run, args.llm)
        return 0
    if len(args.wheels) != 2:
        raise SystemExit("bench/llama_build.py: give two wheels (or folders holding one): the baseline first")
    with tempfile.TemporaryDirectory() as tmp:
        sites = [unpack(w, Path(tmp) / f"build{i}") for i, w in enumerate(args.wheels)]
        results: list[list[dict]] = [[], []]
        for n in range(args.rounds):
            for i, site in enumerate(sites):
                results[i].append(got := measure(site, args.run, args.llm))
                print(f"  round {n + 1}, {args.wheels[i]}: prompt {got['prompt_tok_s']:.1f} tok/s, "
                      f"decode {got['decode_tok_s']:.1f} tok/s", flush=True)
    mean = [{k: sum(r[k] for r in rs) / len(rs) for k in ("prompt_tok_s", "decode_tok_s")} for rs in results]
    print(f"\n{results[0][0]['calls']} recorded calls from {args.run}, model {args.llm}, {args.rounds} rounds\n")
    print("| build | prompt tok/s | vs first | decode tok/s | vs first | greedy replies same as first |")
    print("|---|---|---|---|---|---|")
    for i, w in enumerate(args.wheels):
        same = "yes" if results[i][0]["replies"] == results[0][0]["replies"] else "no"
        print(f"| {w} | {mean[i]['prompt_tok_s']:.1f} | {mean[i]['prompt_tok_s'] / mean[0]['prompt_tok_s']:.2f}x | "
              f"{mean[i]['decode_tok_s']:.1f} | {mean[i]['decode_tok_s'] / mean[0]['decode_tok_s']:.2f}x | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
