"""Chat models for the two roles, behind one adapter.

Specs (one per role, `--improver-llm` / `--generator-llm`; the same spec shares one instance, except that a
llama.cpp model gets one context per role, see make_clients):
  llamacpp:qwen2.5-coder-1.5b | llamacpp:qwen2.5-coder-0.5b   bundled GGUF aliases (agent/llm/models.py)
  llamacpp:/path/to/model.gguf                                  any local GGUF file
  provider:model                                                anything langchain's init_chat_model knows,
                                                                e.g. openai:gpt-4o-mini (OPENAI_BASE_URL for a
                                                                llama.cpp server, vLLM or Ollama endpoint)

langchain-community is being sunset upstream: `ChatLlamaCpp` is imported here and nowhere else, so it
can be replaced by a thin chat model over llama-cpp-python without touching the graph.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from nasloop.agent.llm.grammar import flat_schema
from nasloop.agent.llm.grammar_check import checked_init_sampler
from nasloop.agent.llm.lookup import CopyDraft, lookup_eval
from nasloop.agent.llm.stream import StopRule
from nasloop.errors import LLMError, ModelError

DEFAULT_LLM = "llamacpp:qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class LLMSettings:
    """How the LLMs are run. The last six change how fast a reply comes, not what it says (bench/llm.py
    measures each against its absence; `grammar_check` keeps greedy replies, agent/llm/grammar_check.py)."""

    temperature: float = 0.7
    max_tokens: int = 1536
    n_ctx: int = 6144
    seed: int = 0
    threads: int = 0  # 0: all cores
    context_per_role: bool = True  # llama.cpp: each role keeps its own KV cache (weights are mapped once)
    repair_context: bool = True  # llama.cpp: and repairs get theirs, so the Generator's prefix outlives them
    lookup: int = 15  # llama.cpp: prompt-lookup decoding for the Generator, drafting up to this many tokens (0: off)
    early_stop: bool = True  # stop a streamed reply once its code block or JSON is complete, or it degenerates
    constrained: bool = True  # the Improver's JSON is grammar-constrained where the backend can
    grammar_check: bool = True  # llama.cpp: a constrained token is checked, the vocabulary only where it fails


@dataclass
class Reply:
    """One completion and what it cost. Token counts are None where the backend does not say."""

    text: str
    seconds: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prefix_tokens: int | None = None  # prompt tokens whose KV cache the backend reused (llama.cpp)
    drafted_tokens: int | None = None  # tokens drafted by prompt lookup (llama.cpp with `lookup`) ...
    accepted_tokens: int | None = None  # ... and of them, those the model kept
    first_token_seconds: float | None = None  # mostly reading the prompt
    stop: str = ""  # why it ended: end (the model stopped), or an early-stop rule (agent/llm/stream.py)

    def costs(self) -> dict:
        """What the trace records about the call besides the text."""
        rate = self.completion_tokens / self.seconds if self.completion_tokens and self.seconds else None
        return {"seconds": round(self.seconds, 3), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "prefix_tokens": self.prefix_tokens,
                "drafted_tokens": self.drafted_tokens, "accepted_tokens": self.accepted_tokens,
                "first_token_seconds": None if self.first_token_seconds is None else round(self.first_token_seconds, 3),
                "tokens_per_s": None if rate is None else round(rate, 2), "stop": self.stop}


def _llamacpp(path: str, s: LLMSettings, lookup: int = 0) -> BaseChatModel:
    from nasloop.agent.llm.models import resolve_model

    model_path = resolve_model(path, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp
    # Prompt-lookup decoding drafts the next tokens from the context (the Generator mostly copies the net it
    # was given) and verifies them in one batch (agent/llm/lookup.py).
    draft: dict[str, Any] = {}
    if lookup:
        draft = {"model_kwargs": {"draft_model": CopyDraft(most=lookup)}}
    try:
        model = ChatLlamaCpp(
            model_path=str(model_path), n_ctx=s.n_ctx, max_tokens=s.max_tokens, temperature=s.temperature,
            seed=s.seed, n_threads=s.threads or os.cpu_count() or 2, n_batch=512, verbose=False,
            n_gpu_layers=-1, **draft,
        )
    except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on unreadable files
        raise ModelError(f"cannot load GGUF '{model_path}': {str(exc).splitlines()[0][:200]}") from exc
    if lookup:
        model.client.eval = lookup_eval(model.client)
    if s.grammar_check:
        model.client._init_sampler = checked_init_sampler(model.client)
    return model


def validate_spec(spec: str) -> None:
    """Fail fast, before any sandbox or model load: the spec's shape, and a llamacpp model's file."""
    provider, sep, name = spec.partition(":")
    if not sep or not name or not provider:
        raise ModelError(f"LLM spec '{spec}' must look like provider:model (e.g. {DEFAULT_LLM})")
    if provider == "llamacpp":
        from nasloop.agent.llm.models import resolve_model

        resolve_model(name, progress=True)


def make_chat_model(spec: str, settings: LLMSettings | None = None, role: str = "improver") -> BaseChatModel:
    """Build the chat model named by `spec` (see the module docstring)."""
    s = settings or LLMSettings()
    validate_spec(spec)
    provider, _, name = spec.partition(":")
    if provider == "llamacpp":
        return _llamacpp(name, s, lookup=s.lookup if role == "generator" else 0)
    try:
        from langchain.chat_models import init_chat_model

        if provider == "openai":  # token counts while streaming
            return init_chat_model(spec, temperature=s.temperature, max_tokens=s.max_tokens, stream_usage=True)
        return init_chat_model(spec, temperature=s.temperature, max_tokens=s.max_tokens)
    except Exception as exc:  # unknown provider, missing integration package, missing API key...
        raise ModelError(f"cannot create LLM '{spec}': {str(exc).splitlines()[0][:200]}") from exc


def _transient(exc: BaseException) -> bool:
    """Retry network hiccups and server overload, not programming or model-file errors."""
    name = type(exc).__name__
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        k in name for k in ("Timeout", "Connection", "RateLimit", "APIError", "InternalServer", "ServiceUnavailable"))


# One in-process llama.cpp model at a time: concurrent calls (fanned-out candidates) wait their turn instead
# of oversubscribing the cores (two llama.cpp calls on 2 cores run ~10x slower than one).
IN_PROCESS = threading.Lock()


class ChatClient:
    """What the nodes use: `ask(system, user) -> Reply`, streamed, with retries and token/time accounting."""

    def __init__(self, model: BaseChatModel, spec: str, attempts: int = 3, settings: LLMSettings | None = None,
                 repairs: Callable[[], "ChatClient"] | None = None):
        self.model, self.spec, self.attempts = model, spec, attempts
        self.settings = settings or LLMSettings()
        self._llama = LlamaCounter.attach(model)
        self.streams_usage = True  # False once a server's stream came without token counts
        self._repairs = repairs
        self._repair_client: ChatClient | None = None

    @property
    def repairs(self) -> "ChatClient":
        """The client for repair calls: this one, or (llama.cpp, `repair_context`) the same model on its own
        context, made at the first repair. A repair's prompt shares only the fixed instructions with a
        generation; on one context, the next generation would re-read the ~400 tokens of the net it was given
        (about 6 s on 2 cores) after every repair."""
        if self._repairs is None:
            return self
        if self._repair_client is None:
            self._repair_client = self._repairs()
        return self._repair_client

    @property
    def concurrent(self) -> bool:
        """Whether calls from several threads run at once (a server or an API) or are queued (in-process)."""
        return self._llama is None

    def ask(self, system: str, user: str, temperature: float | None = None, *, schema: dict | None = None,
            stop: StopRule | None = None, progress: Callable[[int, float], None] | None = None,
            history: Sequence[tuple[str, str]] = ()) -> Reply:
        """One completion, streamed. `temperature` overrides the model's for this call only; `schema` (a JSON
        schema) constrains the reply where the backend can (llama.cpp grammars, OpenAI-style structured
        output); `stop` ends the stream early (agent/llm/stream.py); `progress(tokens, seconds)` is called
        as tokens arrive. `history`: earlier (user, assistant) turns of the same conversation, sent before
        `user` (a repair continues the Generator's conversation, whose tokens its context still holds)."""
        kwargs: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        if schema is not None and self.settings.constrained:
            kwargs.update(structured_output(self.model, schema))
        stop = stop if self.settings.early_stop else None

        @retry(stop=stop_after_attempt(self.attempts), wait=wait_exponential(min=1, max=20),
               retry=retry_if_exception(_transient), reraise=True)
        def call() -> Reply:
            messages: list[BaseMessage] = [SystemMessage(system)]
            for asked, answered in history:
                messages += [HumanMessage(asked), AIMessage(answered)]
            messages.append(HumanMessage(user))
            if not self.streams_usage:  # exact token counts matter more than streaming
                return self._invoke(messages, kwargs, progress)
            return self._stream(messages, kwargs, stop, progress)

        try:
            if self._llama is None:  # a server (or a remote API) takes concurrent requests
                return call()
            with IN_PROCESS:
                return call()
        except Exception as exc:
            raise LLMError(f"LLM '{self.spec}' failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc

    def _stream(self, messages: list, kwargs: dict, stop: StopRule | None,
                progress: Callable[[int, float], None] | None) -> Reply:
        t0 = time.perf_counter()
        before = self._llama.before() if self._llama else None
        parts: list[str] = []
        chunks, unchecked, first, reason = 0, 0, None, "end"
        usage: dict = {}
        for chunk in self.model.stream(messages, **kwargs):
            usage = getattr(chunk, "usage_metadata", None) or usage
            piece = chunk.content if isinstance(chunk.content, str) else str(chunk.content)
            if not piece:
                continue
            chunks += 1
            first = first if first is not None else time.perf_counter() - t0
            parts.append(piece)
            if progress is not None:
                progress(chunks, time.perf_counter() - t0)
            # a rule can only newly fire at a line end, a fence or a brace, or on a line grown long
            unchecked += len(piece)
            if stop is not None and (any(c in piece for c in "\n`}") or unchecked >= 256):
                unchecked = 0
                why = stop("".join(parts))
                if why:
                    reason = why
                    break
        reply = Reply(text="".join(parts), seconds=time.perf_counter() - t0, first_token_seconds=first, stop=reason,
                      prompt_tokens=usage.get("input_tokens"), completion_tokens=usage.get("output_tokens") or chunks)
        if self._llama and before is not None:
            reply.prompt_tokens, reply.prefix_tokens = self._llama.after(before)
            reply.drafted_tokens, reply.accepted_tokens = self._llama.drafts()
        elif not usage:  # some OpenAI-compatible servers (llama-cpp-python's) report usage only unstreamed
            self.streams_usage = False
        return reply

    def _invoke(self, messages: list, kwargs: dict, progress: Callable[[int, float], None] | None) -> Reply:
        t0 = time.perf_counter()
        msg = self.model.invoke(messages, **kwargs)
        usage = getattr(msg, "usage_metadata", None) or {}
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        reply = Reply(text=text, seconds=time.perf_counter() - t0, prompt_tokens=usage.get("input_tokens"),
                      completion_tokens=usage.get("output_tokens"), stop="end")
        if progress is not None and reply.completion_tokens:
            progress(reply.completion_tokens, reply.seconds)
        return reply


def structured_output(model: BaseChatModel, schema: dict) -> dict:
    """The per-call arguments that constrain a reply to `schema`, for backends that can; {} for others."""
    if type(model).__name__ == "ChatLlamaCpp":  # llama-cpp-python compiles the schema into a grammar
        return {"response_format": {"type": "json_object", "schema": schema}}
    if type(model).__name__ == "ChatOpenAI":
        base = str(getattr(getattr(model, "root_client", None), "base_url", "") or "")
        if base and "api.openai.com" not in base:  # an OpenAI-compatible server: llama.cpp's own, vLLM...
            return {"response_format": {"type": "json_object", "schema": schema}}  # their schema extension
        # OpenAI's structured output wants an object at the root: the alternatives folded into one
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "reply",
                                                                            "schema": flat_schema(schema)}}}
    return {}


class LlamaCounter:
    """Token accounting for the in-process llama.cpp model, which reports none when streaming: the prompt's
    tokens (seen on their way into `create_completion`) and how many of them were already in the KV cache
    from the previous call on the same context (llama.cpp reuses the longest common prefix)."""

    def __init__(self, llama: Any):
        self.llama = llama
        self.prompt: list[int] = []
        self._drafts = (0, 0)
        inner = llama.create_completion

        def create_completion(prompt: Any, *args: Any, **kwargs: Any) -> Any:
            self.prompt = list(prompt) if isinstance(prompt, list) else self.prompt
            return inner(prompt, *args, **kwargs)

        llama.create_completion = create_completion

    @classmethod
    def attach(cls, model: BaseChatModel) -> "LlamaCounter | None":
        llama = getattr(model, "client", None)
        return cls(llama) if type(model).__name__ == "ChatLlamaCpp" and llama is not None else None

    def before(self) -> list[int]:
        self.prompt = []
        draft = self.draft
        if draft is not None:
            draft.forget()
            self._drafts = (draft.drafted, draft.accepted)
        return [int(t) for t in self.llama.input_ids]

    @property
    def draft(self) -> CopyDraft | None:
        draft = getattr(self.llama, "draft_model", None)
        return draft if isinstance(draft, CopyDraft) else None

    def drafts(self) -> tuple[int | None, int | None]:
        """(tokens drafted, of which the model kept) since `before`; (None, None) without a draft."""
        draft = self.draft
        if draft is None:
            return None, None
        return draft.drafted - self._drafts[0], draft.accepted - self._drafts[1]

    def after(self, before: list[int]) -> tuple[int | None, int | None]:
        """(prompt tokens, of which reused); llama.cpp never reuses the prompt's last token."""
        if not self.prompt:
            return None, None
        reused = 0
        for a, b in zip(before, self.prompt[:-1], strict=False):
            if a != b:
                break
            reused += 1
        return len(self.prompt), reused


def make_clients(improver_spec: str, generator_spec: str, settings: LLMSettings | None = None) -> tuple[ChatClient, ChatClient]:
    """Clients for both roles. One model instance when both specs are equal, except that a llama.cpp model
    gets one context per role (`context_per_role`): the two roles' prompts share little, so on one context
    each call would re-read its whole prompt; on two, each re-reads only what changed since its last call.
    The Generator's repairs get a third (`ChatClient.repairs`)."""
    s = settings or LLMSettings()
    improver = ChatClient(make_chat_model(improver_spec, s), improver_spec, settings=s)
    own_context = improver_spec.startswith("llamacpp:") and s.context_per_role
    if generator_spec == improver_spec and not own_context and not s.lookup:
        return improver, improver

    def generator_client(repairs: Callable[[], ChatClient] | None = None) -> ChatClient:
        return ChatClient(make_chat_model(generator_spec, s, role="generator"), generator_spec, settings=s,
                          repairs=repairs)

    lane = generator_spec.startswith("llamacpp:") and s.context_per_role and s.repair_context
    return improver, generator_client(generator_client if lane else None)
