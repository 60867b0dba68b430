"""A handler module that builds `handler` on first access (as votive.handlers.embeddings does), and fails."""


def __getattr__(name):
    if name != "handler":
        raise AttributeError(name)
    raise RuntimeError("lazy model load failed")
