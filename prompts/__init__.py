"""Prompt templates and seed architectures, kept as text files so they can be read and edited as such.

Templates use `$name` placeholders (string.Template) because the code they embed is full of braces.
"""
from __future__ import annotations

from pathlib import Path
from string import Template

HERE = Path(__file__).parent


def load(name: str) -> Template:
    """The template `prompts/<name>.txt`."""
    return Template((HERE / f"{name}.txt").read_text(encoding="utf-8"))


def render(name: str, **values: object) -> str:
    """Fill `prompts/<name>.txt`; a missing value is a bug, so it raises KeyError."""
    return load(name).substitute(**{k: str(v) for k, v in values.items()})


def seed_source(dataset: str) -> str:
    """Seed architecture for a data set: prompts/seeds/<kind>.py, else prompts/seeds/default.py."""
    kind = dataset.split(":", 1)[0]
    path = HERE / "seeds" / f"{kind}.py"
    if not path.is_file():
        path = HERE / "seeds" / "default.py"
    return path.read_text(encoding="utf-8")
