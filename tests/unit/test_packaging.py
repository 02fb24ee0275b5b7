"""One installed import name: an app with its own top-level `agent` and `tools` packages (LangGraph's
project template has `src/agent/`) embeds nasloop without a clash."""
import subprocess
import sys
import textwrap


def test_an_app_with_its_own_agent_and_tools_packages_embeds_nasloop(tmp_path):
    for pkg in ("agent", "tools"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"WHO = 'the app\\'s own {pkg}'\n")
    script = textwrap.dedent("""
        import importlib.util
        import agent, tools
        from nasloop import Deps, build_graph, recursion_limit_for
        import nasloop.agent, nasloop.tools.evaluator, nasloop.sandbox, nasloop.prompts
        assert agent.WHO == "the app's own agent" and tools.WHO == "the app's own tools"
        assert nasloop.agent.build_graph is build_graph and callable(recursion_limit_for)
        assert importlib.util.find_spec("sandbox") is None and importlib.util.find_spec("prompts") is None
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
