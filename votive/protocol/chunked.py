"""HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1), read and written, for the local emulators and the
streaming runtime.

Each chunk is its size in hex, CRLF, the bytes, CRLF; a chunk of size 0 ends the body and may be followed by
trailer fields, then a blank line. Lambda's Runtime API takes a streamed response this way, and a runtime
reports an error that happens mid-stream in the trailers `Lambda-Runtime-Function-Error-Type` and
`Lambda-Runtime-Function-Error-Body`.

Example:
    >>> import io
    >>> body = io.BytesIO(chunk(b"hello ") + chunk(b"world") + last_chunk({"X-Done": "yes"}))
    >>> reader = ChunkReader(body)
    >>> b"".join(reader), reader.trailers
    (b'hello world', {'x-done': 'yes'})
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator

MAX_LINE_BYTES = 8192  # a chunk-size line or a trailer field longer than this is refused
READ_BYTES = 64 * 1024  # a large chunk is handed on in pieces of at most this, never read whole into memory
MAX_TRAILERS = 64

_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ChunkedError(ValueError):
    """The body is not valid chunked coding, or it ended before its last chunk."""


class ChunkReader:
    """The data of a chunked body, piece by piece as it arrives; afterwards `trailers` (lower-case names).

    Args:
        rfile: a binary file reading the connection, positioned at the start of the body.
    """

    def __init__(self, rfile: BinaryIO):
        self.rfile = rfile
        self.trailers: dict[str, str] = {}
        self.complete = False  # the last chunk and the trailers were read

    def __iter__(self) -> Iterator[bytes]:
        while True:
            size = self._size()
            if size == 0:
                self._read_trailers()
                self.complete = True
                return
            while size > 0:
                data = self.rfile.read(min(size, READ_BYTES))
                if not data:
                    raise ChunkedError(f"the body ended inside a chunk, {size} bytes short")
                size -= len(data)
                yield data
            end = self._line()
            if not end:
                raise ChunkedError("the body ended before its last chunk")
            if end not in (b"\r\n", b"\n"):
                raise ChunkedError("a chunk is longer than its declared size (no CRLF after it)")

    def _size(self) -> int:
        line = self._line()
        if not line:
            raise ChunkedError("the body ended before its last chunk")
        text = line.split(b";", 1)[0].strip()  # chunk extensions follow a ';' and are ignored
        if not _SIZE.fullmatch(text):
            raise ChunkedError(f"bad chunk size {text[:20]!r}; expected hex digits")
        return int(text, 16)

    def _read_trailers(self) -> None:
        for _ in range(MAX_TRAILERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise ChunkedError(f"bad trailer field {line[:40]!r}")
            self.trailers[name.strip().lower()] = value.strip()
        raise ChunkedError(f"more than {MAX_TRAILERS} trailer fields")

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise ChunkedError(f"a chunk-size or trailer line is longer than {MAX_LINE_BYTES} bytes")
        return line


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never pass b"": an empty chunk is the last one)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: dict[str, str] | None = None) -> bytes:
    """The chunk that ends a chunked body, with trailer fields if any."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items())
    return b"0\r\n" + fields.encode("latin-1") + b"\r\n"
