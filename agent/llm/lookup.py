"""Prompt-lookup decoding for llama.cpp in process: the Generator's reply is mostly a copy of the net in its
prompt, so the next tokens can be drafted from the context itself and verified in one batch.

llama-cpp-python's own drafter (`LlamaPromptLookupDecoding`) takes the *first* place in the context where the
last one or two tokens occur and always drafts its fixed count: on code, where `self` or `x =` occur
everywhere, most drafts are wrong and each costs a bigger batch. `CopyDraft` takes the *longest* suffix of
the context seen before (the most recent such place) and drafts by how long that match is: nothing on a
match of one token, a few tokens on a short one, many once the reply is plainly copying. Every drafted token
is verified by the model before it is used, so what the model says is unchanged (tests/integration/
test_llm.py); only the number of model evaluations falls.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import numpy.typing as npt
from llama_cpp.llama_speculative import LlamaDraftModel

VERIFY_MAX = 16  # a batch this short is a drafted continuation to verify (1 + drafted tokens), or a short suffix
SHORT, LONG = 2, 6  # a match this long drafts a few tokens; this long, the most
FEW = 3  # a batch of 1 + 3 tokens costs about 1.6x one token on a 2-core CPU; 1 + 15 about 3.7x (bench/llm.py)
LOOK_BACK = 32  # a match is not extended past this many tokens: by then it is plainly a copy


def longest_match(ids: npt.NDArray[np.intc], look_back: int = LOOK_BACK) -> tuple[int, int]:
    """(length, where its continuation starts) of the longest suffix of `ids` that occurs earlier in `ids`,
    the most recent occurrence among the longest; (0, -1) where even the last token is new."""
    if len(ids) < 2:
        return 0, -1
    found = np.nonzero(ids[:-1] == ids[-1])[0]
    length = 1
    while len(found) and length < look_back:
        room = found[found >= length]
        longer = room[ids[room - length] == ids[-1 - length]]
        if not len(longer):
            break
        found, length = longer, length + 1
    return (length, int(found[-1]) + 1) if len(found) else (0, -1)


class CopyDraft(LlamaDraftModel):
    """Draft the continuation of the longest earlier match of the context's suffix, as many tokens as the
    match makes likely: 0 below SHORT matched tokens, FEW below LONG, then up to `most`.

    It also counts what it drafted and how much of it the model kept (`drafted`, `accepted`; the trace
    records both per call): the context it is next called with holds the kept part of its last draft."""

    def __init__(self, most: int = VERIFY_MAX - 1):
        self.most = max(1, min(most, VERIFY_MAX - 1))
        self.drafted = self.accepted = 0
        self._last: tuple[int, npt.NDArray[np.intc]] | None = None  # where the last draft went, and what

    def count(self, length: int) -> int:
        return 0 if length < SHORT else min(FEW, self.most) if length < LONG else self.most

    def forget(self) -> None:
        """A new completion starts: its context is not the continuation of the last draft."""
        self._last = None

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        if self._last is not None:  # the kept drafted tokens, then the one the model sampled itself
            at, draft = self._last
            kept = input_ids[at: len(input_ids) - 1][: len(draft)]
            self.accepted += int(np.argmin(np.append(kept == draft[: len(kept)], False)))
        length, start = longest_match(input_ids)
        n = self.count(length)
        draft = input_ids[start: start + n].copy() if n else input_ids[:0]
        self.drafted += len(draft)
        self._last = (len(input_ids), draft) if len(draft) else None
        return draft


def lookup_eval(llm: Any) -> Callable[[Any], None]:
    """llama-cpp-python's `eval` for a model with a draft: it asks llama.cpp for the logits of every position
    of every batch, so the ~1,500-token prompt pays the vocabulary projection (151,936 columns) per token —
    prompt reading got 40 % slower and ate the gain. Every position's logits are needed only where drafted
    tokens are verified; a long batch (the prompt) needs its last. The sampler reads llama.cpp's outputs by
    negative index, so that is all that changes; the greedy reply is the same (tests/integration/test_llm.py).
    Written against llama-cpp-python 0.3.x (`_ctx`, `_batch`, `input_ids`, `n_tokens`), pinned in pyproject."""
    def eval_tokens(tokens: Any) -> None:
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        every = len(tokens) <= VERIFY_MAX
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i: i + llm.n_batch]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=every)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past: n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            llm._requires_eval = False
    return eval_tokens
