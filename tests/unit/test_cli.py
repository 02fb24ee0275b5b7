"""Bad input: one line on stderr, a non-zero exit, and no run directory created or clobbered."""
from __future__ import annotations

import json

import pytest

from nasloop.agent.app.cli import main


@pytest.fixture
def fake_gguf(tmp_path):
    """A file that passes the magic check (the CLI must fail on the data set before loading it)."""
    p = tmp_path / "tiny.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 60)
    return p


def run_cli(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(list(argv)))
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def assert_one_line(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["search", "--iterations", "0"], "must be at least 1 (got 0)"),
    (["search", "--k", "x"], "'x' is not a whole number"),
    (["evaluate", "x.py", "--memory", "lots"], "cannot read memory size 'lots'"),
    (["evaluate", "x.py", "--sandbox", "vm"], "invalid choice: 'vm'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["search", "--strategy", "annealing"], "invalid choice: 'annealing'"),
    (["search", "--proxy", "vibes"], "invalid choice: 'vibes'"),
    (["search", "--fidelity", "half"], "invalid choice: 'half'"),
])
def test_argument_errors(capsys, argv, needle):
    assert_one_line(*run_cli(capsys, *argv), needle)


def test_unknown_dataset(capsys, tmp_path, fake_gguf):
    code, err = run_cli(capsys, "search", "--dataset", "mnist", "--llm", f"llamacpp:{fake_gguf}",
                        "--runs-dir", str(tmp_path / "runs"), "--sandbox", "process")
    assert_one_line(code, err, "unknown dataset 'mnist'")
    assert not (tmp_path / "runs").exists()


def test_unknown_model_alias(capsys, tmp_path):
    code, err = run_cli(capsys, "search", "--llm", "llamacpp:qwen9-coder", "--runs-dir", str(tmp_path / "r"))
    assert_one_line(code, err, "neither a bundled alias (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b) nor a GGUF file")
    assert not (tmp_path / "r").exists()


def test_unreadable_gguf(capsys, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    code, err = run_cli(capsys, "search", "--llm", f"llamacpp:{bad}", "--runs-dir", str(tmp_path / "r"))
    assert_one_line(code, err, "is not a GGUF model file")


def test_spec_without_provider(capsys, tmp_path):
    assert_one_line(*run_cli(capsys, "search", "--llm", "gpt4", "--runs-dir", str(tmp_path)),
                    "must look like provider:model")


def test_resume_of_something_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "search", "--resume", str(tmp_path / "notarun"))
    assert_one_line(code, err, "is not a nasloop run (no run.json)")
    assert (tmp_path / "notarun" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "notarun").iterdir()) == ["keep.txt"]


def test_missing_candidate_file(capsys):
    assert_one_line(*run_cli(capsys, "evaluate", "/nonexistent/net.py"), "candidate file '/nonexistent/net.py' not found")


def test_no_docker_engine(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    net = tmp_path / "net.py"
    net.write_text("class Net: pass\n")
    code, err = run_cli(capsys, "evaluate", str(net), "--train-subset", "50")
    assert_one_line(code, err, "Docker engine not reachable")
    assert "--sandbox process" in err


def test_help_is_there(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--iterations" in out and "--resume" in out and "--llm" in out


def test_unknown_proxy_name(capsys, tmp_path):
    net = tmp_path / "net.py"
    net.write_text("class Net: pass\n")
    assert_one_line(*run_cli(capsys, "evaluate", str(net), "--proxy", "naswot,magic"),
                    "unknown proxy magic: choose from naswot, synflow")


def test_evaluate_exits_non_zero_for_a_failed_candidate_and_names_the_users_file(capsys, tmp_path):
    net = tmp_path / "mynet.py"
    net.write_text("import torch\nclass Net(torch.nn.Module:\n    pass\n")
    code = main(["evaluate", str(net), "--sandbox", "process", "--train-subset", "50"])
    out = capsys.readouterr().out
    assert code == 1 and "outcome: syntax_error" in out
    assert f"{net}:2" in out and "candidate.py" not in out and "None" not in out
    code = main(["evaluate", str(net), "--sandbox", "process", "--train-subset", "50", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["outcome"] == "syntax_error" and record["candidate"] == str(net)
    assert f"{net}:2" in record["diagnosis"] and "candidate.py" not in json.dumps(record)


def test_version_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("nasloop ")
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("--temperature TEMPERATURE (default: 0.7)", "--epochs EPOCHS (default: 1)",
                  "--memory MEMORY memory limit, e.g. 6g (default: 6g)", "--repairs R repair attempts",
                  "(default: 0)", "--seed SEED seeds training, data subsets and the LLM's sampling (default: 0)",
                  "--train-subset TRAIN_SUBSET use N training images (CPU-sized runs; default: all)"):
        assert shown in out, shown  # a default of 0 is shown too (0 == False once hid it)
    assert out.count("(default: 0)") >= 2  # --seed, --max-flops
    assert "(0: off; at most 15) (default: 15)" in out  # --lookup: on, the output is the same
    assert "examples: nasloop search --iterations 10" in out


def test_every_option_says_its_default(capsys):
    """Each option of search, evaluate and fork either shows a default or is a switch (off unless given)."""
    import re

    for command in ("search", "evaluate", "fork"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out.split("options:", 1)[1].split("examples:")[0]
        entries = re.split(r"\n  (?=-)", "\n" + text)
        for entry in entries:
            flat = " ".join(entry.split())
            if not flat.startswith("--") or flat.startswith(("--help", "--no-", "--plain", "--json", "--resume",
                                                              "--full-data", "--proxy", "--at", "--ray-address")):
                continue
            switch = re.match(r"--[\w-]+ (?:\{|[A-Z_]+)", flat) is None
            assert switch or "default" in flat, f"{command}: {flat[:90]}"


def test_replay_refuses_an_unknown_outcome_class(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["replay", "tests/fixtures/run-digits", "--plain", "--outcome", "nope"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'nope'" in err and "shape_error" in err


def test_lookup_takes_a_count(capsys):
    from nasloop.agent.app.cli import make_parser

    assert make_parser().parse_args(["search", "--lookup", "0"]).lookup == 0
    assert make_parser().parse_args(["search", "--lookup", "3"]).lookup == 3
    with pytest.raises(SystemExit) as exc:
        main(["search", "--lookup", "-1"])
    assert exc.value.code == 2 and "must be 0 or more (got -1)" in capsys.readouterr().err
