"""Every error votive raises on purpose, in one place.

Library code raises one of these; only the CLI turns them into a one-line message and an exit code, and only
the handlers turn them into HTTP answers. Messages say what and where, what was expected and what was found.
"""

from __future__ import annotations

import contextvars


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


class NumericalError(VotiveError):
    """A model computed NaN or infinite outputs (logits, pooled vectors): its weights or settings are broken, and
    the answer is refused (HTTP 500) rather than returned poisoned."""


class BackendError(VotiveError):
    """An array backend cannot be selected or used (cupy missing, no GPU, unknown name)."""


class InputError(VotiveError):
    """Input given to a model is unusable (empty list, non-string text, too many items)."""


class KernelError(VotiveError):
    """A compute kernel got arrays it cannot take (dtype, layout, shape), or its settings are invalid."""


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


class PackagingError(VotiveError):
    """A deployable artifact cannot be built: a target limit exceeded, an unsafe archive member, a tool that failed,
    or an output that exists and may not be overwritten. The message names the limit or file and what to do."""


class QuantError(VotiveError, ValueError):
    """Data cannot be (de)quantized: unknown or unsupported GGML type, sizes that are not whole blocks, bad values.

    Also a ValueError, so code that validates arguments generically catches it too.
    """


class ChatTemplateError(InputError):
    """A model's chat template cannot render these messages: it refused them (its `raise_exception`, e.g. roles
    that do not alternate) or failed on them. `template_message` is the template's own words."""

    def __init__(self, message: str, template_message: str = ""):
        self.template_message = template_message or message
        super().__init__(message)


class ChatTemplateLimitError(ChatTemplateError):
    """Rendering a chat template crossed a bound (time, size, recursion; `votive.text.template_bounds`): the
    template's fault, not the messages' (HTTP 500), refused at load when a trial render crosses one."""


class VotiveFault(VotiveError):
    """A Lambda handler cannot serve, with a stable `code` callers can match on (like Lambda's Runtime.* codes).

    Raised out of a handler, so Lambda reports it: at init (`Votive.ConfigError`, `Votive.ModelLoadError`) as the
    function's init error, per invocation (the rest) as a function error with `errorType` "VotiveFault" and
    `errorMessage` "<code>: <message>". `trace` holds the cause's formatted traceback with votive's own leading
    handler frames removed, so it starts where the cause was raised (user or model code), not in our plumbing.
    """

    CONFIG_ERROR = "Votive.ConfigError"  # a VOTIVE_* setting is missing or malformed
    MODEL_LOAD_ERROR = "Votive.ModelLoadError"  # the model VOTIVE_MODEL names cannot be loaded
    UNSUPPORTED_EVENT = "Votive.UnsupportedEvent"  # neither a function URL (payload 2.0) nor a direct-invoke event
    BAD_REQUEST = "Votive.BadRequest"  # a direct invoke the handler refuses (HTTP 4xx for a URL event)
    MODEL_ERROR = "Votive.ModelError"  # the model raised while answering (HTTP 500 for a URL event)

    def __init__(self, code: str, message: str, trace: list[str] | None = None):
        self.code = code
        self.message = message
        self.trace = trace or []
        super().__init__(f"{code}: {message}")

    @classmethod
    def from_exception(cls, code: str, exc: BaseException, message: str | None = None) -> "VotiveFault":
        """A fault caused by `exc`; message defaults to "ExcType: text", trace is exc's minus handler frames."""
        import traceback
        from pathlib import Path

        handlers_dir = Path(__file__).resolve().parent / "handlers"
        frames = traceback.extract_tb(exc.__traceback__)
        # As awslambdaric drops its bootstrap frames: skip the leading frames that are our handler plumbing,
        # but keep them all when the fault happened inside the plumbing itself.
        first_outside = next(
            (i for i, f in enumerate(frames) if not Path(f.filename).resolve().is_relative_to(handlers_dir)), 0
        )
        trace = traceback.format_list(frames[first_outside:])
        return cls(code, message or f"{type(exc).__name__}: {exc}", trace)


class DeployError(VotiveError):
    """A deployment (AWS Lambda, Modal) cannot go ahead, or failed part-way and was undone.

    `step` names the step that failed ("create the execution role"), or is None when the request was refused
    before anything was created.
    """

    def __init__(self, message: str, step: str | None = None):
        self.step = step
        super().__init__(message)


class DeadlineExceeded(VotiveError):
    """The invocation's time ran out while the model worked. The encode and generate loops call `check_deadline()`
    between batches and tokens, so a timed-out invocation stops computing instead of holding its execution
    environment; Lambda answers it as any timeout (a function URL's 502)."""


# The running invocation's remaining time, `context.get_remaining_time_in_millis` (None outside an invocation).
# A context variable: each environment thread (and each asyncio task) sees only its own invocation's.
_remaining_ms = contextvars.ContextVar("votive_remaining_ms", default=None)


def set_deadline(remaining_ms):
    """Make `remaining_ms()` (milliseconds left) the deadline `check_deadline` enforces; returns the token
    `reset_deadline` takes. None (no Lambda context) sets no deadline."""
    return _remaining_ms.set(remaining_ms)


def reset_deadline(token) -> None:
    _remaining_ms.reset(token)


def check_deadline() -> None:
    """Raise DeadlineExceeded once the running invocation's time is up; nothing outside an invocation."""
    remaining_ms = _remaining_ms.get()
    if remaining_ms is not None and remaining_ms() <= 0:
        raise DeadlineExceeded("the invocation's time ran out (the function timeout); the work was stopped")
