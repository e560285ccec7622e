"""A chunked request body decoded by the proxy itself (RFC 9112 7.1).

llhttp refuses whitespace around ``;`` and ``=`` in chunk extensions, which RFC 9112 7.1.1
allows (``BWS``), and reports trailer fields as headers. So once a chunked request's head is
in, the client connection stops llhttp and decodes the body here, with the grammar of the
workers' parser (:mod:`tui_passenger.runtime.http_parser`): chunk extensions are accepted and
ignored, trailer fields are checked (400 for those that must come before the content) and
dropped, never merged into the header section (RFC 9110 6.5.1).
"""

from __future__ import annotations

from collections.abc import Callable

from tui_passenger.runtime.http_parser import (
    MAX_CHUNK_LINE,
    HttpParserError,
    check_trailer,
    chunk_size,
)

_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)
#: What the bytes being fed to llhttp began with: no request in progress, a request's head,
#: or its body; once a request begins in them: the first one begun there, or a later one.
CLEAN, MID_HEAD, MID_BODY, FIRST, LATER = range(5)


def body_offset(data: bytes, mode: int, tail: bytes = b"") -> int:
    """Where the body of the request whose head llhttp just parsed starts in ``data`` (the
    bytes being fed, which began as ``mode`` says), or -1 when that cannot be known for sure
    (llhttp then decodes the body, more strictly). ``tail``: for MID_HEAD, the last bytes
    of the head's part in the previous read, where its closing CRLF CRLF may have begun."""
    if mode == FIRST:  # the first request begun in these bytes, none before it
        start = 0
        while data.startswith(b"\r\n", start):  # empty lines before a request line
            start += 2
    elif mode == MID_HEAD:  # its head began in earlier bytes: the first blank line ends it
        if data[:1] == b"\n" or data[:2] == b"\r\n":  # maybe cut in two by the read
            tail = tail[-3:]
            if not tail:
                return -1
            end = (tail + data[:4]).find(b"\r\n\r\n")
            if end >= 0:
                return end + 4 - len(tail)
        start = 0
    else:
        return -1
    end = data.find(b"\r\n\r\n", start)
    return end + 4 if end >= 0 else -1


class ChunkedDecoder:
    """Decodes one chunked body fed in pieces; each piece of data goes to ``on_body``."""

    __slots__ = ("on_body", "forbidden", "_pending", "_state", "_remaining")

    def __init__(self, on_body: Callable[[bytes], None], forbidden: frozenset[bytes]) -> None:
        self.on_body = on_body
        #: Trailer field names refused (lower-cased), beyond the parser's own list.
        self.forbidden = forbidden
        self._pending = b""  # an incomplete line, kept for the next piece
        self._state = _SIZE
        self._remaining = 0

    def feed(self, data: bytes) -> int:
        """Decode ``data``: -1 when the body goes on, else how many bytes of ``data`` it
        took (what follows is the next request). HttpParserError if it is malformed."""
        kept = len(self._pending)
        buf = self._pending + data if kept else data
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(end - pos, self._remaining)
                self.on_body(buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                self._state = _DATA_END
            elif state == _DATA_END:
                if not b"\r\n".startswith(buf[pos:pos + 2]):
                    raise HttpParserError("missing CRLF after chunk data")
                if end - pos < 2:
                    break
                pos += 2
                self._state = _SIZE
            else:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    if end - pos > MAX_CHUNK_LINE or buf.find(b"\n", pos) >= 0:
                        raise HttpParserError("invalid chunk size line")
                    break
                if state == _SIZE:
                    self._remaining = chunk_size(buf, pos, line_end)
                    self._state = _DATA if self._remaining else _TRAILERS
                elif line_end == pos:  # the empty line that ends the trailer section
                    return line_end + 2 - kept
                elif check_trailer(buf[pos:line_end]) in self.forbidden:
                    name = buf[pos:line_end].partition(b":")[0].decode("latin-1")
                    raise HttpParserError(f"{name} is not allowed as a trailer field")
                pos = line_end + 2
        self._pending = buf[pos:]
        return -1
