"""Streaming on Lambda's managed Python runtime: a wrapper script that starts votive's runtime loop instead.

The managed runtime's client (awslambdaric) posts a handler's answer in one piece, so a function URL in
RESPONSE_STREAM mode would still get a generation's tokens all at once. votive's own loop
(`votive.handlers.stream_runtime`) speaks the Runtime API's streaming mode. Container images make it their
entry point (`votive build image --stream`); a zip function cannot choose its entry point, but it can name a
wrapper script in AWS_LAMBDA_EXEC_WRAPPER. Lambda then starts the runtime by running that script with the
interpreter's path as its first argument and the runtime's own bootstrap arguments after it (AWS Lambda developer
guide, "Modifying the runtime environment": wrapper scripts). The script shipped at the function zip's root
ignores the bootstrap and runs `<interpreter> -m votive.handlers.stream_runtime $_HANDLER` in its place.

Without Lambda's bootstrap nobody puts the function and the layers on the import path, so the script does, in
the bootstrap's order: LAMBDA_TASK_ROOT, /opt/python/lib/pythonX.Y/site-packages, /opt/python, then whatever
PYTHONPATH the runtime set. /opt is found from LAMBDA_TASK_ROOT as `votive.handlers.entry` finds it (the folder
holding var/task; "/" on Lambda), so the same zip runs unchanged in a Lambda-like tree under a temporary folder.

Lambda runs the script itself, so it must be stored executable (0755) in the zip.
"""

from __future__ import annotations

STREAM_RUNTIME = "votive.handlers.stream_runtime"  # votive's runtime loop: posts answers in streaming mode
WRAPPER_NAME = "votive-stream-runtime"  # at the function zip's root
WRAPPER_PATH = f"/var/task/{WRAPPER_NAME}"  # where Lambda finds it: the value of AWS_LAMBDA_EXEC_WRAPPER
WRAPPER_ENV = "AWS_LAMBDA_EXEC_WRAPPER"
# Handlers whose answers stream (Server-Sent Events); the others answer whole and gain nothing from the loop.
STREAMING_HANDLERS = ("votive.handlers.generation.handler",)

_SCRIPT = """#!/bin/sh
# Written by `votive build lambda --stream`. Lambda runs this (AWS_LAMBDA_EXEC_WRAPPER) with the interpreter as
# $1 and its Python runtime's bootstrap arguments after it; votive's runtime loop, which streams answers to a
# RESPONSE_STREAM function URL, runs on that interpreter instead of the bootstrap.
task="${{LAMBDA_TASK_ROOT:-/var/task}}"
root="${{task%/var/task}}"  # "" on Lambda; a Lambda-like tree's root elsewhere
layers="$root/opt/python"
PYTHONPATH="$task:$layers/lib/python{python}/site-packages:$layers${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONPATH
exec "${{1:-python{python}}}" -m {runtime} "${{_HANDLER:-votive_function.handler}}"
"""


def wrapper_script(python: str) -> str:
    """The wrapper script for a function on Lambda's Python `python` ("3.12") runtime.

    Example:
        >>> "-m votive.handlers.stream_runtime" in wrapper_script("3.12")
        True
    """
    return _SCRIPT.format(python=python, runtime=STREAM_RUNTIME)


def wrapper_environment() -> dict[str, str]:
    """The function variables that make Lambda start the runtime through the wrapper."""
    return {WRAPPER_ENV: WRAPPER_PATH}
