"""Scripted stand-ins for unit tests of logic only (routing, memory, parsing, resume bookkeeping).
Integration tests never use these: they run the real sandbox and the real GGUF model."""
from __future__ import annotations

import itertools
import re
from typing import Callable

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from nasloop import prompts
from nasloop.agent.llm.client import ChatClient
from nasloop.tools.outcome import Outcome

SEED = prompts.seed_source("digits")  # the seed a digits task starts from


def scripted(*responses: str, spec: str = "scripted") -> ChatClient:
    """A ChatClient over langchain's GenericFakeChatModel: replies cycle through `responses` and stream
    word by word, as a real model's tokens do."""
    return ChatClient(GenericFakeChatModel(messages=itertools.cycle(responses)), spec)


class Keyed(GenericFakeChatModel):
    """Replies chosen by the prompt, not by call order: the first reply whose key occurs in the last message
    (`default` when none does). Calls from fanned-out candidates race; their replies must not."""

    replies: dict[str, str] = {}
    default: str = ""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        text = str(messages[-1].content)
        reply = next((r for key, r in self.replies.items() if key in text), self.default)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


class Recorder(GenericFakeChatModel):
    """GenericFakeChatModel that keeps the messages of every call, as (type, text) pairs."""

    seen: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.seen.append([(m.type, str(m.content)) for m in messages])
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def recording(*responses: str, spec: str = "recording") -> tuple[ChatClient, list]:
    """A scripted client, and the list the messages of its calls go to."""
    model = Recorder(messages=itertools.cycle(responses))
    return ChatClient(model, spec), model.seen


def keyed(replies: dict[str, str], default: str = "", spec: str = "keyed") -> ChatClient:
    return ChatClient(Keyed(messages=iter(()), replies=replies, default=default), spec)


class Untried(Keyed):
    """An Improver that proposes the first of `replies`' keys its conversation does not mention yet (as tried,
    or as pending in this round): the same proposal for the same memory, in any process and any order."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        text = "\n".join(str(m.content) for m in messages[1:])
        change = next((key for key in self.replies if key not in text), self.default)
        reply = f'{{"problem": "p", "suggestion": "{change}"}}'
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def untried(changes, spec: str = "untried") -> ChatClient:
    return ChatClient(Untried(messages=iter(()), replies={c: "" for c in changes}), spec)


def code_reply(code: str = SEED, tag: str = "") -> str:
    """A Generator reply; `tag` (e.g. acc=0.6 or fail=shape_error) becomes code, so tagged replies differ."""
    return f"Here you go:\n```python\nTAG = \"{tag}\"\n{code}```\n"


class ScriptedEvaluator:
    """In-process stand-in: the candidate's tag `acc=0.42` or `fail=shape_error` decides the outcome."""

    def __init__(self):
        self.calls = 0  # trainings
        self.scored = 0  # proxy scorings

    def evaluate(self, source: str, known_structures: dict | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> Outcome:
        self.calls += 1
        if on_progress is not None:  # as the harness notes it: half-way, then done
            on_progress(5, 10)
            on_progress(10, 10)
        s = re.search(r"struct=(\w+)", source)  # struct=NAME: the pre-flight's structure hash
        structure = f"{abs(hash(s.group(1))):016x}"[:16] if s else None
        if structure and structure in (known_structures or {}):
            return Outcome("invalid_code", "DuplicateError: the same network", seconds=0.0, stage="preflight",
                           failure={"phase": "duplicate", "of": known_structures[structure]}, structure=structure)
        m = re.search(r"acc=([\d.]+)", source)
        if m:
            return Outcome("ok", accuracy=float(m.group(1)), params=1000, flops=2000, seconds=0.0, structure=structure,
                           layers="conv1 Conv2d -> 8x32x32 (80)\nfc Linear -> 10 (920)")
        m = re.search(r"(p?)fail=(\w+)", source)
        if m:  # pfail=...: a failure found by the pre-flight (repairable), fail=...: during training
            stage = "preflight" if m.group(1) else None
            return Outcome(m.group(2), f"{m.group(2)} diagnosis", seconds=0.0, stage=stage)  # type: ignore[arg-type]
        return Outcome("ok", accuracy=0.5, params=1000, seconds=0.0, layers="conv1 Conv2d -> 8x32x32 (80)")

    def score(self, source: str, proxies: tuple[str, ...], known_structures: dict | None = None) -> Outcome:
        """Proxy scoring: tag `score=12` sets the score (default 10 x the acc= tag); failures as above."""
        self.scored += 1
        m = re.search(r"score=([-\d.]+)", source)
        trained = self.evaluate(source, known_structures)
        self.calls -= 1
        if not trained.ok and not m:
            return trained
        value = float(m.group(1)) if m else 10 * (trained.accuracy or 0.0)
        return Outcome("ok", "scored", scores={name: value for name in proxies}, params=1000, seconds=0.0)


def task(iterations: int = 3, **kw) -> dict:
    return {"dataset": "digits", "description": "digits: 10 classes, input tensors of shape (B, 1, 32, 32)",
            "num_classes": 10, "in_channels": 1, "image_size": 32, "iterations": iterations,
            "max_params": 2_000_000, "target_accuracy": None, **kw}


def accuracies() -> itertools.count:
    return itertools.count()
