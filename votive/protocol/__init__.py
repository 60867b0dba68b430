"""The Lambda wire protocol, shared by the handlers (serving) and the emulators (local runs).

    payload_v2      function URL events (payload format 2.0) from HTTP requests, HTTP responses from payloads
    streaming       streamed responses: the JSON prelude, the eight NUL bytes, Server-Sent Events
    chunked         HTTP/1.1 chunked transfer coding (the Runtime API's streamed responses)
    context         the function's configuration, the context object and the environment Lambda gives it
    handler_loading "module.function" handler names resolved as Lambda's Python runtime does
    faults          the error objects Lambda reports, and marshalling a handler's result

Imports neither the handlers nor the emulators.
"""
