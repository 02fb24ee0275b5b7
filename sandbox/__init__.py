"""Where untrusted candidate code runs: the in-container harness and the backends that start it.

`sandbox.runner` is standalone (it runs inside the container). The backends return raw facts
(`RawResult`); turning those into an outcome is the job of `tools.outcome`.
"""
from sandbox.base import Job, Limits, RawResult, Sandbox, SandboxUnavailable

__all__ = ["Job", "Limits", "RawResult", "Sandbox", "SandboxUnavailable", "make_sandbox"]


def make_sandbox(kind: str = "docker", **kwargs) -> Sandbox:
    """Build the backend named by `kind` ('docker' or 'process')."""
    if kind == "docker":
        from sandbox.docker_sandbox import DockerSandbox

        return DockerSandbox(**kwargs)
    if kind == "process":
        from sandbox.process_sandbox import ProcessSandbox

        return ProcessSandbox(**kwargs)
    raise SandboxUnavailable(f"unknown sandbox '{kind}' (choose docker or process)")
