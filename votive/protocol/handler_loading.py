"""A handler named "module.function", imported the way awslambdaric imports it, with Lambda's error types."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from votive.protocol.faults import (
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    MALFORMED_HANDLER_NAME,
    USER_CODE_SYNTAX_ERROR,
    error_from_exception,
    lambda_error,
)

HandlerFunction = Callable[[Any, Any], Any]



class HandlerInitError(Exception):
    """The handler could not be loaded; `error` is the object Lambda would report through /init/error."""

    def __init__(self, error: dict):
        self.error = error
        super().__init__(f"{error['errorType']}: {error['errorMessage']}")


def load_handler(handler: str | HandlerFunction) -> HandlerFunction:
    """Import "package.module.function" the way awslambdaric does, or accept a callable as is.

    Raises:
        HandlerInitError: with Lambda's error type (Runtime.ImportModuleError, Runtime.HandlerNotFound, ...);
            an exception raised while the module initializes keeps its own type name, as in Lambda.
    """
    if callable(handler):
        return handler
    module_name, _, function_name = str(handler).rpartition(".")
    if not module_name or not function_name:
        raise HandlerInitError(
            lambda_error(f"Bad handler '{handler}': expected 'module.function'", MALFORMED_HANDLER_NAME)
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise HandlerInitError(
            lambda_error(f"Unable to import module '{module_name}': {exc}", IMPORT_MODULE_ERROR)
        ) from exc
    except SyntaxError as exc:
        raise HandlerInitError(
            lambda_error(f"Syntax error in module '{module_name}': {exc}", USER_CODE_SYNTAX_ERROR)
        ) from exc
    except Exception as exc:
        raise HandlerInitError(error_from_exception(exc)) from exc
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise HandlerInitError(
            lambda_error(f"Handler '{function_name}' missing on module '{module_name}'", HANDLER_NOT_FOUND)
        ) from None
    except Exception as exc:  # a module __getattr__ that builds the handler (and loads the model) on access
        raise HandlerInitError(error_from_exception(exc)) from exc
    if not callable(function):
        raise HandlerInitError(
            lambda_error(f"Handler '{function_name}' on module '{module_name}' is not callable", HANDLER_NOT_FOUND)
        )
    return function
