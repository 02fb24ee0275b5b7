"""The Generator's draft (agent/llm/lookup.py): the continuation of the longest earlier match of the context's
end, as many tokens as that match makes likely. Whether the model's reply stays the same is checked with the
real model (tests/integration/test_llm.py); here, what is drafted."""
from __future__ import annotations

import numpy as np

from nasloop.agent.llm.lookup import FEW, CopyDraft, longest_match


def ids(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.intc)


def test_the_longest_match_wins_over_an_earlier_short_one():
    # "7 8" ends the context; "8" alone occurs first at 1, "7 8" at 4
    context = ids(1, 8, 9, 2, 7, 8, 5, 6, 3, 7, 8)
    assert longest_match(context) == (2, 6)


def test_among_equal_matches_the_most_recent_is_continued():
    context = ids(4, 5, 1, 4, 5, 2, 4, 5)
    assert longest_match(context) == (2, 5)


def test_a_new_token_has_no_match():
    assert longest_match(ids(1, 2, 3)) == (0, -1)
    assert longest_match(ids(1)) == (0, -1)


def test_a_one_token_match_drafts_nothing():
    """`self` or `x =` occur everywhere in code: a draft on one matched token is mostly wrong and costs a
    bigger batch (llama-cpp-python's own drafter drafts there)."""
    assert len(CopyDraft()(ids(1, 2, 3, 4, 2))) == 0


def test_a_short_match_drafts_a_few_and_a_copy_drafts_the_most():
    net = list(range(100, 140))  # the net in the prompt
    short = CopyDraft()(ids(*net, 1, 2, 100, 101))
    assert list(short) == net[2:2 + FEW]
    copying = CopyDraft()(ids(*net, 1, 2, *net[:8]))
    assert list(copying) == net[8:8 + 15]
    assert list(CopyDraft(most=4)(ids(*net, 1, 2, *net[:8]))) == net[8:12]


def test_a_draft_never_runs_past_the_context():
    net = list(range(100, 110))
    assert list(CopyDraft()(ids(*net, *net[:8]))) == net[8:] + net[:8]


def test_what_the_model_kept_of_a_draft_is_counted():
    net = list(range(100, 140))
    draft = CopyDraft(most=4)
    assert list(draft(ids(*net, 1, *net[:6]))) == net[6:10]
    # the model kept two drafted tokens, then sampled its own (7) instead of the third
    draft(ids(*net, 1, *net[:8], 7))
    assert (draft.drafted, draft.accepted) == (4, 2)
    draft.forget()  # a new completion: its context is not the continuation of the last draft
    draft(ids(*net, 1, *net[:30]))
    assert draft.accepted == 2
