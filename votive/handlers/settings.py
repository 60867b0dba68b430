"""What every handler reads from its environment and does at init, in one place.

Lambda configures a function through environment variables and loads it once per execution environment, during
init. Each handler module builds its `handler` attribute on first access (`handler_on_access`), which Lambda's
runtime does right after importing it: the model loads inside init, and a plain import stays light.
"""

from __future__ import annotations

from typing import Callable, Mapping

from votive.errors import VotiveError, VotiveFault


def required_model(environ: Mapping[str, str], example: str, source=None):
    """The model to serve: `source` when the caller resolved it already (a `votive.sources.ResolvedSource`), else
    VOTIVE_MODEL, else VotiveFault (Votive.ConfigError) saying how to set it."""
    if source is not None:
        return source
    model = environ.get("VOTIVE_MODEL", "").strip()
    if not model:
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_MODEL is not set: set it to the model to serve, {example}")
    return model


def positive_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """A positive integer setting, `default` when unset; VotiveFault (Votive.ConfigError) when malformed."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        hint = f" (default {default})" if default is not None else ""
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"{name}={raw!r} is not a positive integer{hint}")
    return int(raw)


def model_name(source) -> str:
    """How a message names the model: the VOTIVE_MODEL setting, or a resolved source's id and path."""
    return f"VOTIVE_MODEL={source!r}" if isinstance(source, str) else f"{source.model_id!r} ({source.path})"


def load_model(source, load: Callable | None = None, **options):
    """`load(source, **options)` (default votive.load), a failure turned into Votive.ModelLoadError."""
    if load is None:
        import votive

        load = votive.load
    try:
        return load(source, **options)
    except Exception as e:
        fault = VotiveFault.from_exception(VotiveFault.MODEL_LOAD_ERROR, e, f"cannot load {model_name(source)}: {e}")
        # votive's own errors say all there is to say; anything else is a bug whose trace we keep
        raise fault from (None if isinstance(e, VotiveError) else e)


def handler_on_access(module_globals: dict, load_handler: Callable[[], Callable]):
    """A module `__getattr__` that builds `handler` with `load_handler()` on first access, then keeps it."""

    def __getattr__(name: str):
        if name != "handler":
            raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
        handler = load_handler()
        module_globals["handler"] = handler
        return handler

    return __getattr__
