"""Errors the CLI reports as one line (everything else is a bug and keeps its traceback)."""


class NasloopError(Exception):
    """Base for user-facing errors: bad model spec, unreadable run directory, LLM endpoint down..."""


class ModelError(NasloopError):
    """A model spec cannot be resolved or loaded."""


class LLMError(NasloopError):
    """The LLM endpoint failed after retries."""


class RunError(NasloopError):
    """A run directory is missing, not a run, or would be clobbered."""
