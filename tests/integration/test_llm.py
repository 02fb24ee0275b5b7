"""The real bundled 0.5B GGUF model through the adapter: lookup decoding changes nothing it says, a
constrained Improver reply always parses, and token counts are recorded — in process and through an
OpenAI-compatible server (llama-cpp-python's own, started here on 127.0.0.1)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from nasloop import prompts
from nasloop.agent.llm.client import LLMSettings, make_chat_model, make_clients, ChatClient
from nasloop.agent.llm.grammar import change_schema, reply_schema
from nasloop.agent.llm.parsing import CHANGE_OPS, extract_code, parse_improver
from nasloop.agent.llm.prompting import repair_turn
from nasloop.agent.llm.stream import code_complete, json_complete
from tests.conftest import free_port, wait_for_server

SPEC = "llamacpp:qwen2.5-coder-0.5b"
GREEDY = LLMSettings(temperature=0.0, max_tokens=300, n_ctx=2048)
PROSE = ("The network is three 3x3 convolutions and a linear layer; it reached 0.61 accuracy. Explain in two "
         "paragraphs of plain prose, no JSON and no lists, what limits it and what you would change.")


@pytest.fixture(scope="module")
def model_path():
    from nasloop.agent.llm.models import resolve_model

    return resolve_model("qwen2.5-coder-0.5b")


def test_lookup_decoding_gives_the_same_greedy_output(model_path):
    system = prompts.load("generator_system").template
    user = ("Rename the layer conv1 to stem in this module and change nothing else:\n```python\n"
            f"{prompts.seed_source('default')}```")
    replies = []
    for lookup in (0, 2, 15):
        _, gen = make_clients(SPEC, SPEC, replace(GREEDY, lookup=lookup, max_tokens=400))
        replies.append(gen.ask(system, user, stop=code_complete))
    assert replies[0].text == replies[1].text == replies[2].text and extract_code(replies[0].text)[0] is not None
    # the trace says what was drafted and kept: a rename is mostly a copy, so most of the reply was drafted
    assert replies[0].drafted_tokens is None and replies[0].costs()["accepted_tokens"] is None
    assert 0 < replies[2].accepted_tokens <= replies[2].drafted_tokens
    assert replies[2].accepted_tokens > replies[2].completion_tokens / 2, replies[2].costs()


def test_checking_the_sampled_token_gives_the_grammar_first_reply(model_path):
    """At temperature 0 the reply is the grammar-first one, token for token; the check sampled again where
    the grammar refused the free token (the prose prompt asks for anything but JSON)."""
    system = prompts.load("improver_system").template
    schema = change_schema({op: ["conv1", "conv2", "fc"] for op in CHANGE_OPS})
    texts, samplers = [], []
    for check in (False, True):
        improver, _ = make_clients(SPEC, SPEC, replace(GREEDY, grammar_check=check))
        llm = improver.model.client
        init = llm._init_sampler
        llm._init_sampler = lambda *a, init=init, **k: samplers.append(init(*a, **k)) or samplers[-1]
        texts.append(improver.ask(system, PROSE, schema=schema, stop=json_complete).text)
    assert texts[0] == texts[1] and parse_improver(texts[1])[0] is not None, texts
    checked = [s for s in samplers if type(s).__name__ == "CheckedSampler"]
    assert len(checked) == 1 and checked[0].rechecked > 0  # the grammar refused at least the free first token


def test_a_constrained_improver_reply_parses_even_when_asked_for_prose(model_path):
    improver, _ = make_clients(SPEC, SPEC, GREEDY)
    system = prompts.load("improver_system").template
    free = ChatClient(improver.model, SPEC, settings=replace(GREEDY, constrained=False))
    assert parse_improver(free.ask(system, PROSE, stop=json_complete).text)[0] is None  # what it does unconstrained
    for first in ("problem", "lesson"):
        reply = improver.ask(system, PROSE, schema=reply_schema(first), stop=json_complete)
        assert parse_improver(reply.text)[0] is not None, reply.text
    typed = improver.ask(system, PROSE, schema=change_schema(), stop=json_complete)  # the loop's typed change
    parsed = parse_improver(typed.text)[0]
    assert parsed is not None and parsed["change"]["operator"] in CHANGE_OPS, typed.text
    # with the best net's layers, the target is one of them and a tried change cannot come back: with every
    # pair tried but one, the reply is that one
    names = ["conv1", "bn1", "conv2", "fc"]
    targets = {op: names for op in CHANGE_OPS}
    left = ("add_residual", "conv2")
    tried = {(op, t) for op in CHANGE_OPS for t in [*names, "all"]} - {left}
    held = improver.ask(system, PROSE, schema=change_schema(targets, tried), stop=json_complete)
    change = parse_improver(held.text)[0]["change"]
    assert (change.get("operator_given", change["operator"]), change["target"]) == left, held.text
    assert "." not in change.get("arguments_given", change["arguments"]), held.text
    free = improver.ask(system, PROSE, schema=change_schema(targets, {("widen", "conv1")}), stop=json_complete)
    change = parse_improver(free.text)[0]["change"]
    given = change.get("operator_given", change["operator"])
    assert change["target"] in [*names, "all"] and (given, change["target"]) != ("widen", "conv1"), free.text


def test_token_counts_and_prefix_reuse_in_process(model_path):
    improver, generator = make_clients(SPEC, SPEC, GREEDY)
    assert improver.model.client is not generator.model.client  # one context per role
    system = prompts.load("improver_system").template
    first = improver.ask(system, PROSE, schema=reply_schema("problem"), stop=json_complete)
    generator.ask("You write PyTorch.", "Say hi.")  # the other role's call does not evict this role's prefix
    second = improver.ask(system, PROSE + " Be brief.", schema=reply_schema("problem"), stop=json_complete)
    assert first.prompt_tokens and first.prompt_tokens > 50 and first.completion_tokens
    assert second.prompt_tokens > first.prompt_tokens and second.prefix_tokens >= first.prompt_tokens - 10


def test_a_repair_does_not_evict_the_generators_prefix(model_path):
    """Repairs run on a context of their own: the next generation re-reads only what changed."""
    _, generator = make_clients(SPEC, SPEC, GREEDY)
    assert generator.repairs is generator.repairs and generator.repairs.model.client is not generator.model.client
    system = prompts.load("generator_system").template
    net = f"```python\n{prompts.seed_source('default')}```"
    first = generator.ask(system, f"Base network:\n{net}\nChange: widen conv1.", stop=code_complete)
    generator.repairs.ask(system, "Your code failed: NameError: name 'nn' is not defined. Fix it.", stop=code_complete)
    second = generator.ask(system, f"Base network:\n{net}\nChange: add dropout.", stop=code_complete)
    assert second.prefix_tokens >= first.prompt_tokens - 20  # all but the change's few tokens
    _, shared = make_clients(SPEC, SPEC, replace(GREEDY, repair_context=False))
    assert shared.repairs is shared


def test_a_repair_turn_finds_the_generation_and_its_reply_in_the_generators_context(model_path):
    """A repair sent as the next turn of the Generator's conversation reads only that turn anew."""
    _, generator = make_clients(SPEC, SPEC, GREEDY)
    system = prompts.load("generator_system").template
    asked = f"Base network:\n```python\n{prompts.seed_source('default')}```\nChange: widen conv1."
    first = generator.ask(system, asked, stop=code_complete)
    turn = repair_turn({"kind": "runtime_error", "diagnosis": "NameError: name 'nn' is not defined"})
    second = generator.ask(system, turn, stop=code_complete, history=[(asked, first.text)])
    assert first.prompt_tokens and first.completion_tokens and second.prompt_tokens and second.prefix_tokens
    assert second.prefix_tokens >= first.prompt_tokens + first.completion_tokens * 9 // 10
    assert second.prompt_tokens - second.prefix_tokens < 80, second.costs()


@pytest.fixture(scope="module")
def openai_server(model_path, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"  # a file, not a pipe: the server logs a lot
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "local"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_server(f"{url}/models", proc, log, 180, "llama_cpp.server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_token_counts_and_a_constrained_reply_through_an_openai_compatible_server(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server)
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("OPENAI_API_KEY", "unused-by-a-local-server"))
    client = ChatClient(make_chat_model("openai:local", GREEDY), "openai:local", settings=GREEDY)
    system = prompts.load("improver_system").template
    streamed = client.ask(system, PROSE, schema=reply_schema("problem"), stop=json_complete)
    assert parse_improver(streamed.text)[0] is not None, streamed.text
    assert streamed.completion_tokens and streamed.stop == "json_closed"
    # llama-cpp-python's server sends no usage while streaming: the client notices and asks unstreamed
    assert streamed.prompt_tokens is None and not client.streams_usage
    reply = client.ask(system, PROSE, schema=reply_schema("problem"), stop=json_complete)
    assert parse_improver(reply.text)[0] is not None, reply.text
    assert reply.prompt_tokens and reply.prompt_tokens > 50 and reply.completion_tokens


def test_model_info_says_what_the_bundled_file_is(model_path, capsys):
    from nasloop.agent.app.cli import main

    assert main(["model", "info", SPEC]) == 0
    out = capsys.readouterr().out
    assert "Qwen2.5 Coder 0.5B" in out and "Q4_K_M" in out and "qwen2" in out and "(matches)" in out
