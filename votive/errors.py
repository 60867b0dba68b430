"""Every error votive raises on purpose, in one place.

Library code raises one of these; only the CLI turns them into a one-line message and an exit code, and only
the handlers turn them into HTTP answers. Messages say what and where, what was expected and what was found.
"""

from __future__ import annotations


class VotiveError(Exception):
    """Base class: anything votive raises deliberately."""


class WeightFileError(VotiveError):
    """A weight file (safetensors, GGUF) is malformed, truncated or not what its header claims."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelSourceError(VotiveError):
    """A model source (path, file or Hub id) cannot be found or resolved."""


class ModelConfigError(VotiveError):
    """A model folder's configuration is missing a key or names something votive does not support."""


class BackendError(VotiveError):
    """An array backend cannot be selected or used (cupy missing, no GPU, unknown name)."""


class InputError(VotiveError):
    """Input given to a model is unusable (empty list, non-string text, too many items)."""


class EmulatorError(VotiveError):
    """A local Lambda emulator cannot start or keep running (port taken, runtime process died, init failed).

    `lambda_error` holds Lambda's error object ({errorType, errorMessage, stackTrace}) when the function itself
    reported one, for instance from the Runtime API's /init/error.
    """

    def __init__(self, message: str, lambda_error: dict | None = None):
        self.lambda_error = lambda_error
        super().__init__(message)


class EndpointError(VotiveError):
    """An HTTP endpoint (a function URL, local or deployed) cannot be reached or answers unusably."""
