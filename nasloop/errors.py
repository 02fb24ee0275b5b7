"""The one hierarchy of errors a user is shown as one line (exit 2); anything else is a bug and keeps
its traceback. It lives at the top of the package so that the sandbox and the tools can raise these
without importing the agent (and LangGraph)."""


class NasloopError(Exception):
    """Base for user-facing errors."""


class UsageError(NasloopError):
    """A bad argument the parser could not catch (e.g. a file that is not there)."""


class DatasetError(NasloopError, ValueError):
    """A data set cannot be found, downloaded or read."""


class SandboxUnavailable(NasloopError, RuntimeError):
    """The sandbox cannot run at all (no Docker engine, no image): nothing was evaluated."""


class SandboxFault(NasloopError):
    """The sandbox broke during a search (engine gone, image missing): stop, never blame the candidate."""


class ModelError(NasloopError):
    """A model spec cannot be resolved or loaded."""


class LLMError(NasloopError):
    """The LLM endpoint failed after retries."""


class RunError(NasloopError):
    """A run directory is missing, not a run, or would be clobbered."""
