"""Constrained sampling that checks the sampled token instead of the whole vocabulary (llama.cpp in process).

llama-cpp-python puts the grammar first in its sampler chain, so every token of a constrained reply runs the
grammar over all 151,936 tokens of the vocabulary before top-k: the 1.5B Improver decoded its JSON at about
10-14 tokens/s where the Generator, unconstrained, decoded at 21 (CIFAR-10 searches). llama.cpp's own
sampler (common/sampling.cpp, `common_sampler_sample`) samples with the chain alone, checks that one token
against the grammar, and runs the grammar over the vocabulary only where the token fails. Here the same,
around `Llama._init_sampler`: at temperature 0 the reply is the grammar-first one token for token (the best
token the grammar allows is the best token where the grammar allows it); at a temperature, a token the
unconstrained chain picks and the grammar allows is kept, as llama.cpp's own tools sample.
Written against llama-cpp-python 0.3.x (`_init_sampler`, `LlamaSampler`, `_model.vocab`), pinned in pyproject.
"""
from __future__ import annotations

import ctypes
import math
from typing import Any, Callable

import numpy as np


class CheckedSampler:
    """What `Llama.generate` samples with: `sample(ctx, idx)`. `free`: the chain without the grammar; `full`:
    the chain with it first (llama-cpp-python's); `check`: the grammar alone. Each chain is applied to a fresh
    candidate array and fed only the chosen token, so the repeat penalties' history is the same in both."""

    def __init__(self, llm: Any, free: Any, full: Any, grammar: Any):
        import llama_cpp

        self._lib, self.free, self.full = llama_cpp, free, full
        self.check = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        self.n = int(llm._n_vocab)
        self._buf = (llama_cpp.llama_token_data * self.n)()
        self._view = np.ctypeslib.as_array(self._buf)
        self._ids = np.arange(self.n, dtype=np.int32)
        self.rechecked = 0  # tokens the grammar refused, sampled again over the vocabulary

    def _candidates(self, ctx: Any, idx: int) -> Any:
        """Every token with its logit, as `llama_sampler_sample` builds them (the chains sort and cut in place)."""
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n,))
        self._view["id"], self._view["logit"], self._view["p"] = self._ids, logits, 0.0
        return self._lib.llama_token_data_array(self._buf, self.n, -1, False)

    def _pick(self, chain: Any, ctx: Any, idx: int) -> int:
        cur = self._candidates(ctx, idx)
        self._lib.llama_sampler_apply(chain, ctypes.byref(cur))
        return int(cur.data[cur.selected].id)

    def _allowed(self, token: int) -> bool:
        lib = self._lib
        one = (lib.llama_token_data * 1)(lib.llama_token_data(token, 1.0, 0.0))
        arr = lib.llama_token_data_array(one, 1, -1, False)
        lib.llama_sampler_apply(self.check, ctypes.byref(arr))
        return not math.isinf(arr.data[0].logit)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        if not self.check:  # a grammar llama.cpp could not read: sampled as llama-cpp-python does
            return int(self.full.sample(ctx, idx))
        token = self._pick(self.free.sampler, ctx, idx)
        if not self._allowed(token):  # refused: the grammar-first chain over the whole vocabulary
            self.rechecked += 1
            token = self._pick(self.full.sampler, ctx, idx)
        for chain in (self.free.sampler, self.full.sampler, self.check):
            self._lib.llama_sampler_accept(chain, token)
        return token

    def close(self) -> None:
        if self.check is not None:
            self._lib.llama_sampler_free(self.check)
            self.check = None

    def __del__(self) -> None:
        self.close()


def checked_init_sampler(llm: Any) -> Callable[..., Any]:
    """`llm._init_sampler` that, given a grammar, returns a `CheckedSampler` (without one, the plain chain)."""
    init = llm._init_sampler

    def init_sampler(*args: Any, grammar: Any = None, **kwargs: Any) -> Any:
        free = init(*args, grammar=None, **kwargs)
        if grammar is None:
            return free
        return CheckedSampler(llm, free, init(*args, grammar=grammar, **kwargs), grammar)

    return init_sampler
