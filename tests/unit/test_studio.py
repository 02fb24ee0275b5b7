"""LangGraph Studio's side of the graph: a typed task whose fields are the CLI's options, and a run
directory per Studio thread (no Docker, no model: the process sandbox, and an LLM that is never called)."""
from __future__ import annotations

import json

import pytest

from nasloop.agent.app.search import loop_options
from nasloop.agent.app.studio import STUDIO_FIELDS, deps_for_task, evolution_graph, graph, search_args
from nasloop.agent.deps import LoopOptions, complete_task
from nasloop.agent.runs.store import RunStore


def test_the_studio_form_is_typed_with_the_cli_defaults():
    schema = graph.get_input_jsonschema()
    task = schema["$defs"]["SearchTask"]["properties"]
    assert set(task) == set(STUDIO_FIELDS)
    assert task["dataset"]["default"] == "digits" and task["dataset"]["type"] == "string"
    assert task["iterations"] == {**task["iterations"], "default": 6, "type": "integer"}
    assert task["sandbox"]["enum"] == ["docker", "process"]
    assert task["max_params"]["default"] == 2_000_000
    assert task["plain"]["type"] == "boolean" and task["plain"]["default"] is False
    assert "%" not in json.dumps(task["max_flops"]["description"]).replace("%)", "")  # argparse escapes undone
    assert evolution_graph.get_input_jsonschema()["$defs"]["SearchTask"]["properties"].keys() == task.keys()
    assert graph.name != evolution_graph.name  # two assistants Studio can tell apart


def test_a_task_maps_onto_the_cli_options():
    args = search_args({"dataset": "digits", "iterations": 3, "strategy": "evolution", "min_steps": 50,
                        "repairs": None, "description": "a fact, not an option", "resume": "runs/x"})
    default = LoopOptions().repairs
    assert (args.iterations, args.min_steps, args.repairs, args.fidelity) == (3, 50, default, "proxy")
    assert args.resume is None  # a Studio task never resumes a CLI run
    opts = loop_options(args)
    assert (opts.strategy, opts.fidelity, opts.repairs) == ("evolution", "proxy", default)
    assert search_args({"plain": True}).plain is True and loop_options(search_args({"plain": True})).repairs == 0


def test_each_studio_task_gets_one_run_directory(tmp_path, capsys):
    task = {"dataset": "digits", "iterations": 2, "sandbox": "process", "llm": "openai:never-called",
            "train_subset": 64, "runs_dir": str(tmp_path)}
    deps = deps_for_task(task)
    completed = complete_task(task, deps.evaluator)  # what the seed step hands the later steps
    assert completed != task and deps_for_task(completed) is deps
    other = deps_for_task({**task, "min_steps": 20})
    assert other is not deps and other.evaluator.settings.min_steps == 20
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2
    config = RunStore.open(runs[0]).config
    assert config["args"]["dataset"] == "digits" and config["args"]["iterations"] == 2
    assert "studio_thread" in config
    err = capsys.readouterr().err
    assert all(str(run) in err for run in runs)  # where each run is written is said


def test_a_sandbox_fault_stops_a_studio_run_instead_of_blaming_the_candidate(tmp_path):
    from nasloop.errors import SandboxFault
    from nasloop.tools.outcome import Outcome

    deps = deps_for_task({"dataset": "digits", "sandbox": "process", "llm": "openai:never-called",
                          "train_subset": 64, "runs_dir": str(tmp_path), "min_steps": 7})
    with pytest.raises(SandboxFault):
        deps.evaluator._checked(Outcome(kind="sandbox_error", diagnosis="no torch in the runtime"))
