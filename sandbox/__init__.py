"""Where untrusted candidate code runs: the in-container harness and the backends that start it.

`sandbox.runner` is standalone (it runs inside the container). The backends return raw facts
(`RawResult`); turning those into an outcome is the job of `tools.outcome`.
"""
from nasloop.sandbox.base import Job, Limits, RawResult, Sandbox, SandboxUnavailable

__all__ = ["Job", "Limits", "RawResult", "Sandbox", "SandboxUnavailable", "make_sandbox"]


def make_sandbox(kind: str = "docker", **kwargs) -> Sandbox:
    """Build the backend named by `kind`: 'warm' (Docker, one long-lived worker container), 'docker' (a
    fresh container per candidate) or 'process' (no Docker: weaker)."""
    if kind == "warm":
        from nasloop.sandbox.warm import WarmSandbox

        return WarmSandbox(**kwargs)
    if kind == "docker":
        from nasloop.sandbox.docker_sandbox import DockerSandbox

        return DockerSandbox(**kwargs)
    if kind == "process":
        from nasloop.sandbox.process_sandbox import ProcessSandbox

        return ProcessSandbox(**kwargs)
    raise SandboxUnavailable(f"unknown sandbox '{kind}' (choose warm, docker or process)")
