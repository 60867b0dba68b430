"""A handler module whose init fails: importing it raises, as a model that cannot load would."""

raise RuntimeError("model weights not found at /nowhere")


def handler(event, context):  # never reached
    return {}
