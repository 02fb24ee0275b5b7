"""Embedding: the Studio graph from langgraph.json, and a parent app with nasloop as a subgraph node,
run for real (Docker sandbox, real digits) with a scripted chat model under the parent's checkpointer."""
from __future__ import annotations

import importlib
import json
import sqlite3

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from nasloop.agent import Deps, recursion_limit_for
from nasloop.sandbox import Limits, make_sandbox
from tests.conftest import ROOT
from tests.fakes import code_reply, scripted
from nasloop.tools.evaluator import Evaluator, TrainSettings

pytestmark = pytest.mark.integration

TINY = (ROOT / "tests" / "candidates" / "ok_tiny.py").read_text()


def load_langgraph_json_graph(key: str = "nasloop"):
    """As langgraph dev does: the module named in langgraph.json (installed, so any working directory will do)."""
    cfg = json.loads((ROOT / "langgraph.json").read_text())
    module, name = cfg["graphs"][key].split(":")
    return getattr(importlib.import_module(module), name)


def test_langgraph_json_graph_compiles_without_checkpointer_and_streams(docker_engine, tmp_path):
    graph = load_langgraph_json_graph()
    assert graph.checkpointer is None
    assert set(graph.get_input_jsonschema()["properties"]) == {"task"}
    assert set(graph.get_output_jsonschema()["properties"]) == {"best", "window", "counts", "iteration", "population"}
    # Budget 0: only the seed is evaluated (in the real sandbox); the LLM is never loaded.
    updates = list(graph.stream({"task": {"dataset": "digits", "iterations": 0, "train_subset": 256,
                                          "min_steps": 10, "runs_dir": str(tmp_path)}}, stream_mode="updates"))
    assert [list(u) for u in updates] == [["seed"]]
    seed = updates[0]["seed"]
    assert seed["last"]["outcome"]["kind"] == "ok" and seed["task"]["description"].startswith("digits")
    (run,) = tmp_path.iterdir()  # recorded like a search: the seed's result is in the run directory
    assert '"iteration": 0' in (run / "results.jsonl").read_text()
    importlib.import_module("nasloop.agent.app.studio").close_runs()  # its warm container


def test_langgraph_json_names_the_evolution_graph_too():
    graph = load_langgraph_json_graph("nasloop-evolution")
    assert graph.checkpointer is None and {"select", "improve", "generate", "evaluate"} <= set(graph.nodes)


def test_parent_app_runs_the_search_as_a_subgraph(docker_engine, digits, tmp_path):
    from examples.design_then_document import build_flow

    evaluator = Evaluator(digits, make_sandbox("docker", limits=Limits(timeout_s=120)),
                          TrainSettings(min_steps=10, batch_size=64))
    deps = Deps(scripted('{"problem": "p", "suggestion": "use 16 channels"}'),
                scripted(code_reply(TINY, tag="iteration-1"), code_reply(TINY, tag="iteration-2")), evaluator)
    conn = sqlite3.connect(str(tmp_path / "parent.sqlite"), check_same_thread=False)
    app = build_flow(deps, checkpointer=SqliteSaver(conn))
    config = {"configurable": {"thread_id": "flow"}, "recursion_limit": recursion_limit_for(2)}
    task = {**evaluator.task_facts(), "iterations": 2, "target_accuracy": None}
    out = app.invoke({"task": task}, config)
    assert out["iteration"] == 3 and out["counts"]["evaluated"] == 3
    assert out["model_card"].startswith("# Model card: nasloop net for digits")
    assert f"{out['best']['accuracy']:.4f}" in out["model_card"]
    # The subgraph's steps were checkpointed by the parent's saver (namespaced under "design").
    namespaces = {row[0] for row in conn.execute("select distinct checkpoint_ns from checkpoints")}
    assert any(ns.startswith("design") for ns in namespaces), namespaces
    assert app.get_state(config).values["model_card"] == out["model_card"]
