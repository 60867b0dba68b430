"""What every handler reads from its environment and does at init, in one place.

Lambda configures a function through environment variables and loads it once per execution environment, during
init. Each handler module builds its `handler` attribute on first access (`handler_on_access`), which Lambda's
runtime does right after importing it: the model loads inside init, and a plain import stays light.
"""

from __future__ import annotations

from typing import Callable, Mapping

from votive.errors import VotiveError, VotiveFault

MAX_SETTING = 2**31 - 1  # no count votive takes from the environment means more (a C int)
MAX_KERNEL_THREADS = 1024  # MAX_THREADS in votive/quant/csrc/threadpool.c
MAX_SPIN_US = 100_000  # votive.quant.kernel_settings.MAX_SPIN_US, the cap in csrc/threadpool.c


def required_model(environ: Mapping[str, str], example: str, source=None):
    """The model to serve: `source` when the caller resolved it already (a `votive.sources.ResolvedSource`), else
    VOTIVE_MODEL, else VotiveFault (Votive.ConfigError) saying how to set it. Every handler's settings start
    here, so the settings all handlers share are checked here too (`check_kernel_settings`)."""
    check_kernel_settings(environ)
    if source is not None:
        return source
    model = environ.get("VOTIVE_MODEL", "").strip()
    if not model:
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_MODEL is not set: set it to the model to serve, {example}")
    return model


def positive_int(environ: Mapping[str, str], name: str, default: int | None = None, *,
                 maximum: int = MAX_SETTING) -> int | None:
    """A positive integer setting up to `maximum`, `default` when unset; VotiveFault (Votive.ConfigError) when
    malformed or too large."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    hint = f" (default {default})" if default is not None else ""
    # ASCII digits only ('²' is a digit to isdigit, not to int), and few enough for int() (4300 at most)
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit()) or not digits:
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"{name}={raw[:40]!r} is not a positive integer{hint}")
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"{name}={raw[:40]!r} is more than {maximum}, the most it "
                                                    f"may be{hint}")
    return int(digits)


def flag(environ: Mapping[str, str], name: str) -> bool:
    """A 0/1 setting (absent: off); anything else is a Votive.ConfigError naming it."""
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise VotiveFault(VotiveFault.CONFIG_ERROR, f"{name}={environ.get(name)!r}: expected 1 or 0")


def check_kernel_settings(environ: Mapping[str, str]) -> None:
    """VOTIVE_NUM_THREADS, VOTIVE_SPIN_US and VOTIVE_DECODE_STEP, which the C kernels and the decoders read when
    they first load (often in the first request): checked at init instead, so that a typo is an init error, not a 500 on every request.

    The rules are votive.quant.kernel_settings' (handlers may not import quant; tests/hostile/
    test_hostile_settings.py holds the two to each other), with the thread pool's own cap."""
    positive_int(environ, "VOTIVE_NUM_THREADS", maximum=MAX_KERNEL_THREADS)
    raw = environ.get("VOTIVE_SPIN_US", "").strip()
    digits = raw.lstrip("0") or "0"
    if raw and not (raw.isascii() and raw.isdigit() and len(digits) <= 6 and int(digits) <= MAX_SPIN_US):
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_SPIN_US={raw[:40]!r} is not an integer from 0 to "
                                                    f"{MAX_SPIN_US} (microseconds an idle kernel thread spins)")
    step = environ.get("VOTIVE_DECODE_STEP", "").strip()  # votive.models.decode_step's rule
    if step not in ("", "0", "1"):
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_DECODE_STEP={step[:40]!r}: expected 1 or 0")


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
