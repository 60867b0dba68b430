"""The threaded HTTP server both local emulators stand on (the function URL front and the Runtime API)."""

from __future__ import annotations

import logging
import sys
import threading
from http.server import ThreadingHTTPServer

log = logging.getLogger("votive.serve")


class LocalHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer for local emulation: a thread per connection, an owner the handlers can reach.

    Args:
        address: (host, port); port 0 picks a free one.
        handler_class: the BaseHTTPRequestHandler subclass; it reaches `self.server.owner`.
        owner: the object the handlers serve (the front, or one Runtime API environment).
    """

    daemon_threads = True  # a connection left open by a client must not keep the process alive
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default of 5 drops connections under a burst of clients

    def __init__(self, address, handler_class, *, owner):
        self.owner = owner
        super().__init__(address, handler_class)

    def serve_in_thread(self, name: str) -> threading.Thread:
        """serve_forever in a daemon thread; a short poll keeps shutdown() quick (ten idle wake-ups a second)."""
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True)
        thread.start()
        return thread

    def handle_error(self, request, client_address) -> None:
        # A peer that hangs up mid-request (a killed runtime, an impatient client) is routine, not a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("connection from %s dropped: %s", client_address, sys.exc_info()[1])
        else:
            log.exception("error while serving %s", client_address)
