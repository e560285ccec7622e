"""HTTP/1.1 responses for the worker servers: status lines, Date, body framing, canned replies."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

_status_lines: dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n`` for an integer status, cached."""
    line = _status_lines.get(code)
    if line is None:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1")
        if len(_status_lines) < 1000:
            _status_lines[code] = line
    return line


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_second = -1
_date_line = b""


def date_header() -> bytes:
    """``Date: ...\\r\\n`` (RFC 9110 IMF-fixdate), formatted at most once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        t = time.gmtime(now)
        _date_line = (f"Date: {_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} "
                      f"{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n"
                      ).encode("ascii")
        _date_second = now
    return _date_line


class Framing:
    """Response framing shared by both servers' per-request objects.

    Subclasses hold ``keep_alive``, ``head`` (a HEAD request) and ``http11``; :meth:`end_head`
    sets ``no_body``, ``chunked`` and ``remaining`` (bytes owed to the app's Content-Length).
    """

    if not TYPE_CHECKING:
        # Empty at run time, so the subclasses' own slots are the only storage; hidden from
        # the type checker, which would otherwise refuse the attributes set here.
        __slots__ = ()
    keep_alive: bool
    head: bool
    http11: bool
    no_body: bool
    chunked: bool
    remaining: int | None

    def end_head(self, code: int, length: int | None, known_length: int | None,
                 has_date: bool, keep_alive: bool) -> bytes:
        """Decide framing and keep-alive; returns the head after the app's own headers.

        ``length`` is the app's Content-Length; ``known_length`` the body size when the
        server holds the whole body already (it then adds the Content-Length).
        """
        extra = []
        no_body = code < 200 or code == 204 or code == 304
        chunked = False
        if no_body or length is not None:
            pass  # never a body (nor framing headers), or the app framed it already
        elif known_length is not None:
            extra.append(b"Content-Length: %d\r\n" % known_length)
        elif self.head:
            pass  # nothing follows a HEAD response; its would-be length is unknown
        elif self.http11:
            extra.append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
        else:
            keep_alive = False  # HTTP/1.0 and no length: the body ends at EOF
        if not keep_alive:
            extra.append(b"Connection: close\r\n")
        elif not self.http11:
            extra.append(b"Connection: keep-alive\r\n")
        if not has_date:
            extra.append(date_header())
        extra.append(b"\r\n")
        self.no_body = no_body or self.head
        self.chunked = chunked and not self.head
        self.remaining = length
        self.keep_alive = keep_alive
        return b"".join(extra)

    def frame(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: cut to the Content-Length, chunked, or nothing."""
        if self.no_body or not data:
            return b""
        remaining = self.remaining
        if remaining is not None:
            if len(data) > remaining:
                data = data[:remaining]  # never more than the app's Content-Length
            self.remaining = remaining - len(data)
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def last_chunk(self) -> bytes:
        """What ends the body; one short of its Content-Length can only end at EOF."""
        if self.remaining and not self.no_body:
            self.keep_alive = False
        return b"0\r\n\r\n" if self.chunked else b""


def simple_response(code: int, text: str, *, head: bool = False) -> bytes:
    """A complete plain-text response that closes the connection, for the server's own errors."""
    body = text.encode("utf-8", "replace")
    return b"".join((status_line(code), date_header(), b"Content-Type: text/plain; charset=utf-8"
                     b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body),
                     b"" if head else body))

