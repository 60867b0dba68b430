"""A handler whose init fails once the file named by FAKE_BREAK_INIT exists: a runtime that restarts broken."""

import os

if os.path.exists(os.environ.get("FAKE_BREAK_INIT", "/nonexistent")):
    raise RuntimeError("init broke on restart")


def handler(event, context):
    if "exit" in event:
        os._exit(event["exit"])
    return {"pid": os.getpid()}
