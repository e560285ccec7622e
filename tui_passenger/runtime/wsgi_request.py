"""WSGI per-request objects: ``wsgi.input``, ``wsgi.file_wrapper``, ``start_response``/``write``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from tui_passenger.runtime import http_common as hc
from tui_passenger.runtime.http_framing import Framing

if TYPE_CHECKING:
    from tui_passenger.runtime.wsgi_server import _Connection

# Response header names the server looks at; the rest pass straight through.
_SPECIAL_RESPONSE = hc.HOP_BY_HOP | {"content-length", "date"}
#: Response header name as the app spells it -> lower-cased if special, else "". Bounded:
#: an app may make up names.
_RESPONSE_NAMES: dict[str, str] = {}


def _special_name(name: str) -> str:
    lname = name.lower()
    special = lname if lname in _SPECIAL_RESPONSE else ""
    if len(_RESPONSE_NAMES) < 1024:
        _RESPONSE_NAMES[name] = special
    return special


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"WSGI response data must be bytes, not {type(data).__name__}")


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file-like object in blocks and close it at the end."""

    def __init__(self, filelike: Any, blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        return iter(partial(self.filelike.read, self.blksize), b"")


class BodyReader:
    """File-like reads (PEP 3333 ``wsgi.input``) over ``buf``, refilled by ``_pull()``.

    Subclasses provide ``buf`` (a bytearray), ``complete`` (the whole body is in) and
    ``_pull()`` (block until more of the body is in ``buf``, or raise).
    """

    __slots__ = ()
    buf: bytearray
    complete: bool

    def _pull(self) -> None:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes of the body (all of it by default); short only at the end."""
        buf = self.buf
        if size is None or size < 0:
            while not self.complete:
                self._pull()
        else:
            while len(buf) < size and not self.complete:
                self._pull()
            if size < len(buf):
                data = bytes(buf[:size])
                del buf[:size]
                return data
        data = bytes(buf)
        buf.clear()
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (up to ``size`` bytes), newline included."""
        buf = self.buf
        limit = -1 if size is None else size
        start = 0
        while True:
            end = buf.find(b"\n", start) + 1
            if end:
                break
            if 0 <= limit <= len(buf) or self.complete:
                end = len(buf)
                break
            start = len(buf)
            self._pull()
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Read the remaining lines (stop once ``hint`` bytes are read, if given)."""
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class WSGIRequest(BodyReader, Framing):
    """One request: its environ, its streaming ``wsgi.input`` and its response state."""

    __slots__ = ("conn", "sock", "env", "keep_alive", "head", "http11", "buf", "complete",
                 "expect_continue", "continue_sent", "discarding", "drained", "status",
                 "headers", "headers_sent", "finished", "chunked", "remaining", "no_body")

    def __init__(self, conn: _Connection, env: dict[str, Any], keep_alive: bool, head: bool,
                 http11: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.sock = conn.sock
        self.env = env
        self.keep_alive = keep_alive
        self.head = head
        self.http11 = http11
        self.expect_continue = expect_continue
        self.buf = bytearray()
        self.complete = self.continue_sent = self.discarding = False
        self.drained = 0
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = self.finished = self.chunked = self.no_body = False
        self.remaining: int | None = None

    def _pull(self) -> None:
        """``wsgi.input`` wants more: block for the next piece of the body and parse it."""
        conn = self.conn
        if (error := conn.error) is not None:
            raise hc.InvalidRequestBody(hc.parser_error_reason(error)[1].strip())
        if self.expect_continue and not self.continue_sent:
            # The client waits for this before sending the body; only ask once the app reads.
            self.continue_sent = True
            self._send(hc.CONTINUE_RESPONSE)
        try:
            data = self.sock.recv(hc.RECV_SIZE)
        except OSError as exc:
            raise hc.ClientDisconnected(f"reading the request body failed: {exc}") from exc
        if not data:
            raise hc.ClientDisconnected("the client closed the connection in the request body")
        conn.feed(data)
        if conn.error is not None and not self.complete:
            raise hc.InvalidRequestBody(hc.parser_error_reason(conn.error)[1].strip())

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``; returns the ``write`` callable."""
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        if type(status) is not str or len(status) < 3 or not status[:3].isdigit():
            raise ValueError(f"invalid WSGI status {status!r}")
        self.status = status if len(status) > 3 else status + " "
        self.headers = headers
        return self.write

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.keep_alive = False
            raise hc.ClientDisconnected(f"sending the response failed: {exc}") from exc

    def _build_head(self, known_length: int | None) -> bytes:
        """Status line and headers; decides framing (length, chunked or close) and keep-alive."""
        status = self.status
        if status is None:
            raise AssertionError("the application sent a body before calling start_response()")
        lines = ["HTTP/1.1 ", status, "\r\n"]
        length: int | None = None
        has_date = False
        names = _RESPONSE_NAMES
        for name, value in self.headers:
            lname = names.get(name)
            if lname is None:
                lname = _special_name(name)
            if lname:
                if lname == "content-length":
                    length = int(value)
                    if length < 0:
                        raise ValueError(f"negative Content-Length {value!r}")
                elif lname == "date":
                    has_date = True
                else:
                    raise ValueError(f"hop-by-hop header {name!r} is not allowed in a WSGI "
                                     "response (PEP 3333); the server manages the connection")
            lines += (name, ": ", value, "\r\n")
        text = "".join(lines)
        # One CR and one LF per line: anything else is an attempt at response splitting.
        count = len(self.headers) + 1
        if text.count("\n") != count or text.count("\r") != count:
            raise ValueError("line break in a response status or header")
        keep_alive = self.keep_alive and not self.conn.server._stopping
        if self.expect_continue and not self.continue_sent and not self.complete:
            keep_alive = False  # the client may never send the body it was about to
        tail = self.end_head(int(status[:3]), length, known_length, has_date, keep_alive)
        return text.encode("latin-1") + tail

    def write(self, data: bytes) -> None:
        """The ``write`` callable, and how each chunk of the app's iterable is sent."""
        if data.__class__ is not bytes:
            data = _as_bytes(data)
        if self.headers_sent:
            if data := self.frame(data):
                self._send(data)
        elif data:  # headers wait for the first non-empty chunk (PEP 3333)
            head = self._build_head(None)
            self.headers_sent = True
            self._send(head + self.frame(data))

    def send_sequence(self, result: list[bytes] | tuple[bytes, ...]) -> None:
        """A list/tuple body has a known length: one send, with a Content-Length."""
        if self.headers_sent:  # write() was used first
            for chunk in result:
                self.write(chunk)
            return self.finish()
        if len(result) == 1:
            body = result[0]
            if body.__class__ is not bytes:
                body = _as_bytes(body)
        else:
            body = b"".join(result)
        head = self._build_head(len(body))
        self.headers_sent = True
        self._send(head + self.frame(body))
        self.last_chunk()
        self.finished = True

    def finish(self) -> None:
        """End the response: headers if nothing was sent yet, else the last chunk."""
        if not self.headers_sent:
            head = self._build_head(0)
            self.headers_sent = True
            self._send(head)
        if end := self.last_chunk():
            self._send(end)
        self.finished = True
