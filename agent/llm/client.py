"""Chat models for the two roles, behind one adapter.

Specs (one per role, `--improver-llm` / `--generator-llm`; the same spec shares one instance):
  llamacpp:qwen2.5-coder-1.5b | llamacpp:qwen2.5-coder-0.5b   bundled GGUF aliases (agent.models)
  llamacpp:/path/to/model.gguf                                  any local GGUF file
  provider:model                                                anything langchain's init_chat_model knows,
                                                                e.g. openai:gpt-4o-mini (OPENAI_BASE_URL for a
                                                                llama.cpp server, vLLM or Ollama endpoint)

langchain-community is being sunset upstream: `ChatLlamaCpp` is imported here and nowhere else, so it
can be replaced by a thin chat model over llama-cpp-python without touching the graph.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from nasloop.errors import LLMError, ModelError

DEFAULT_LLM = "llamacpp:qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class LLMSettings:
    temperature: float = 0.7
    max_tokens: int = 1536
    n_ctx: int = 6144
    seed: int = 0
    threads: int = 0  # 0: all cores


@dataclass
class Reply:
    """One completion and what it cost."""

    text: str
    seconds: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _llamacpp(path: str, s: LLMSettings) -> BaseChatModel:
    from nasloop.agent.llm.models import resolve_model

    model_path = resolve_model(path, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp
    try:
        return ChatLlamaCpp(
            model_path=str(model_path), n_ctx=s.n_ctx, max_tokens=s.max_tokens, temperature=s.temperature,
            seed=s.seed, n_threads=s.threads or os.cpu_count() or 2, n_batch=512, verbose=False,
            n_gpu_layers=-1,
        )
    except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on unreadable files
        raise ModelError(f"cannot load GGUF '{model_path}': {str(exc).splitlines()[0][:200]}") from exc


def validate_spec(spec: str) -> None:
    """Fail fast, before any sandbox or model load: the spec's shape, and a llamacpp model's file."""
    provider, sep, name = spec.partition(":")
    if not sep or not name or not provider:
        raise ModelError(f"LLM spec '{spec}' must look like provider:model (e.g. {DEFAULT_LLM})")
    if provider == "llamacpp":
        from nasloop.agent.llm.models import resolve_model

        resolve_model(name, progress=True)


def make_chat_model(spec: str, settings: LLMSettings | None = None) -> BaseChatModel:
    """Build the chat model named by `spec` (see the module docstring)."""
    s = settings or LLMSettings()
    validate_spec(spec)
    provider, _, name = spec.partition(":")
    if provider == "llamacpp":
        return _llamacpp(name, s)
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec, temperature=s.temperature, max_tokens=s.max_tokens)
    except Exception as exc:  # unknown provider, missing integration package, missing API key...
        raise ModelError(f"cannot create LLM '{spec}': {str(exc).splitlines()[0][:200]}") from exc


def _transient(exc: BaseException) -> bool:
    """Retry network hiccups and server overload, not programming or model-file errors."""
    name = type(exc).__name__
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        k in name for k in ("Timeout", "Connection", "RateLimit", "APIError", "InternalServer", "ServiceUnavailable"))


class ChatClient:
    """What the nodes use: `ask(system, user) -> Reply`, with retries and token/time accounting."""

    def __init__(self, model: BaseChatModel, spec: str, attempts: int = 3):
        self.model, self.spec, self.attempts = model, spec, attempts

    def ask(self, system: str, user: str, temperature: float | None = None) -> Reply:
        """One completion; `temperature` overrides the model's for this call only."""
        kwargs = {} if temperature is None else {"temperature": temperature}

        @retry(stop=stop_after_attempt(self.attempts), wait=wait_exponential(min=1, max=20),
               retry=retry_if_exception(_transient), reraise=True)
        def call():
            return self.model.invoke([SystemMessage(system), HumanMessage(user)], **kwargs)

        t0 = time.perf_counter()
        try:
            msg = call()
        except Exception as exc:
            raise LLMError(f"LLM '{self.spec}' failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        usage = getattr(msg, "usage_metadata", None) or {}
        meta = (getattr(msg, "response_metadata", None) or {}).get("token_usage") or {}
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        return Reply(
            text=text, seconds=time.perf_counter() - t0,
            prompt_tokens=usage.get("input_tokens") or meta.get("prompt_tokens"),
            completion_tokens=usage.get("output_tokens") or meta.get("completion_tokens"),
        )


def make_clients(improver_spec: str, generator_spec: str, settings: LLMSettings | None = None) -> tuple[ChatClient, ChatClient]:
    """Clients for both roles; one shared model instance when both specs are equal."""
    improver = ChatClient(make_chat_model(improver_spec, settings), improver_spec)
    if generator_spec == improver_spec:
        return improver, improver
    return improver, ChatClient(make_chat_model(generator_spec, settings), generator_spec)
