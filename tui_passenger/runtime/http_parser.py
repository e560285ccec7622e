"""A pure-Python HTTP/1.1 request parser with the part of ``httptools``' API the servers use.

The worker servers parse with ``httptools`` (llhttp) when the app's interpreter has it; an
app in its own virtualenv with nothing installed gets this instead (see
``http_common.PARSER``). Same callbacks (``on_message_begin``, ``on_url``, ``on_header``,
``on_headers_complete``, ``on_body``, ``on_message_complete``), same methods and exceptions,
as strict as llhttp where it matters for request smuggling: CRLF line ends only, no
whitespace before a header's colon, no obsolete line folding, Content-Length and
Transfer-Encoding never together, one Content-Length, ``chunked`` last. Unlike llhttp,
chunk extensions may have whitespace around ``;`` and ``=`` (RFC 9112 7.1.1), and trailer
fields are never reported as headers: they are dropped, or refused when they are fields that
must come before the content.

A whole request head is matched by two regular expressions once it is in (the peer is the
reverse proxy, which sends a head in one piece), so the per-request cost is a few C-level
scans plus one Python call per header. Standard library only: it runs in the app's
interpreter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["HttpParserCallbackError", "HttpParserError", "HttpParserInvalidMethodError",
           "HttpParserUpgrade", "HttpRequestParser", "URL", "check_trailer", "chunk_size",
           "parse_url"]

#: A head still incomplete beyond this many bytes is refused (431); the servers' own
#: HeadCollector limit (64 KiB of URL or header bytes) comes first for complete heads.
MAX_PENDING_HEAD = 80 * 1024
#: Longest chunk-size line (size, extensions) accepted.
MAX_CHUNK_LINE = 4096

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([!-~]+) HTTP/(1\.[01])")
_NAME = re.compile(_TOKEN)
#: The methods llhttp knows (its request mode); it refuses others, and so does this parser.
_METHODS = frozenset(b"""DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE
    PROPFIND PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE
    M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE
    QUERY""".split())
#: What a head's field lines may hold: visible characters, spaces, tabs and obs-text (CR and
#: LF only as the CRLF that ends a line, checked by counting). ``translate`` deleting these
#: leaves the offending bytes: one C-level pass, several times cheaper than a regex search.
_FIELD_BYTES = bytes(b for b in range(256) if b in (9, 10, 13) or 32 <= b != 127)
# A chunk size and its extensions: ;name or ;name=token or ;name="quoted", with optional
# whitespace around ";" and "=" (RFC 9112 7.1.1 BWS), but none after a bare size.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:"
                         + _TOKEN + rb'|"(?:[^"\\\r\n]|\\[\t !-~])*"))?)*')
#: Fields a chunked request's trailer section may not hold (400): what must be known before
#: the content (RFC 9110 6.5.1): framing, routing, authentication, request modifiers and the
#: content's format. Other trailer fields are dropped, never merged into the header section.
FORBIDDEN_TRAILERS = frozenset({
    b"host", b"content-length", b"transfer-encoding", b"trailer", b"te", b"connection",
    b"keep-alive", b"upgrade", b"proxy-connection", b"expect", b"authorization",
    b"proxy-authorization", b"cookie", b"content-type", b"content-encoding",
    b"content-range", b"content-location", b"range", b"if-range", b"if-match",
    b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"max-forwards",
    b"cache-control", b"pragma"})

_HEAD, _BODY, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _CLOSED = range(7)


class HttpParserError(Exception):
    """The bytes are not a valid HTTP/1.x request."""


class HttpParserCallbackError(HttpParserError):
    """A callback raised; the callback's exception is this one's ``__context__``."""


class HttpParserInvalidMethodError(HttpParserError):
    """The request line does not start with a method token."""


class HttpParserUpgrade(Exception):
    """The request asked to switch protocols (Upgrade, CONNECT); ``args[0]`` is the offset
    in the fed data where the other protocol starts."""


class URL(NamedTuple):
    """The parts of a request target ``parse_url`` gives (as httptools' ``URL``)."""

    schema: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None
    fragment: bytes | None
    userinfo: bytes | None


_ABSOLUTE = re.compile(rb"([A-Za-z]+)://(?:([^@/?#]*)@)?(?:\[([^\]]*)\]|([^/?#:]*))"
                       rb"(?::([0-9]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.DOTALL)


def parse_url(url: bytes) -> URL:
    """Split an absolute-form or origin-form request target; HttpParserError if neither."""
    match = _ABSOLUTE.fullmatch(url)
    if match is not None:
        schema, userinfo, v6_host, host, port, path, query, fragment = match.groups()
        return URL(schema, v6_host or host, int(port) if port else None, path or None, query,
                   fragment, userinfo)
    if url[:1] != b"/":
        raise HttpParserError("invalid URL")
    rest, _, fragment = url.partition(b"#")
    path, sep, query = rest.partition(b"?")
    return URL(None, None, None, path, query if sep else None, fragment or None, None)


def _noop(*_args: Any) -> None:
    return None


#: Header names (lower-cased) that decide the framing and the connection's fate.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"upgrade"})
#: Header names seen before -> lower-cased; a proxy sends the same few again and again.
_NAMES: dict[bytes, bytes] = {}


def _field_lines(block: bytes) -> list[bytes]:
    """The field lines of a head (without its final CRLF); HttpParserError if a bare CR or
    LF, or another control character than tab, is in it."""
    lines = block.split(b"\r\n")
    breaks = len(lines) - 1
    if block.count(b"\r") != breaks or block.count(b"\n") != breaks or block.translate(
            None, _FIELD_BYTES):
        raise HttpParserError("invalid character in header")
    return lines


def _new_name(name: bytes, colon: bytes) -> bytes:
    """The lower-cased ``name`` of a field line not seen before; HttpParserError if the line
    has no colon or the name is not a token (whitespace before the colon, say)."""
    if not colon or _NAME.fullmatch(name) is None:
        raise HttpParserError("invalid header line")
    lname = name.lower()
    if len(_NAMES) < 1024:
        _NAMES[name] = lname
    return lname


def chunk_size(buf: bytes, pos: int, end: int) -> int:
    """The size on the chunk-size line ``buf[pos:end]`` (its extensions are ignored);
    HttpParserError if it is not one."""
    size_line = _CHUNK_SIZE.fullmatch(buf, pos, end)
    if size_line is None:
        raise HttpParserError("invalid chunk size")
    return int(size_line.group(1), 16)


def check_trailer(line: bytes) -> bytes:
    """The lower-cased name of a trailer field line; HttpParserError if the line is not a
    field line or names a field that may not be a trailer (:data:`FORBIDDEN_TRAILERS`)."""
    name, colon, _ = _field_lines(line)[0].partition(b":")
    lname = _new_name(name, colon)
    if lname in FORBIDDEN_TRAILERS:
        raise HttpParserError(f"{name.decode('latin-1')} is not allowed as a trailer field")
    return lname


class HttpRequestParser:
    """Parses the requests of one connection, calling the ``protocol``'s callbacks."""

    __slots__ = ("_begin", "_url", "_header", "_headers_done", "_body", "_complete", "_buf",
                 "_state", "_method", "_version", "_keep_alive", "_upgrade", "_remaining")

    def __init__(self, protocol: Any) -> None:
        def callback(name: str) -> Callable[..., Any]:
            return getattr(protocol, name, None) or _noop

        self._begin = callback("on_message_begin")
        self._url = callback("on_url")
        self._header = callback("on_header")
        self._headers_done = callback("on_headers_complete")
        self._body = callback("on_body")
        self._complete = callback("on_message_complete")
        self._buf = b""
        self._state = _HEAD
        self._method = b""
        self._version = "1.1"
        self._keep_alive = True
        self._upgrade = False
        self._remaining = 0

    def get_method(self) -> bytes:
        """The current request's method."""
        return self._method

    def get_http_version(self) -> str:
        """The current request's HTTP version: ``"1.1"`` or ``"1.0"``."""
        return self._version

    def should_keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one."""
        return self._keep_alive

    def should_upgrade(self) -> bool:
        """Whether the request asked to switch protocols (Upgrade, or CONNECT)."""
        return self._upgrade

    def feed_data(self, data: bytes) -> None:
        """Parse ``data``, calling the callbacks for what it completes."""
        buf = self._buf + data if self._buf else bytes(data)
        pos = 0
        try:
            while pos < len(buf):
                state = self._state
                if state == _HEAD:
                    pos = self._parse_head(buf, pos)
                elif state == _BODY:
                    pos = self._identity_body(buf, pos)
                elif state == _CHUNK_DATA:
                    pos = self._chunk_data(buf, pos)
                elif state == _CLOSED:
                    pos = len(buf)  # after a request that closes the connection: ignored
                    break
                else:
                    pos = self._chunk_framing(buf, pos)
                if pos < 0:  # more bytes needed
                    pos = -pos - 1
                    break
        except (HttpParserError, HttpParserUpgrade):
            self._state = _CLOSED
            raise
        except Exception as exc:
            self._state = _CLOSED
            raise HttpParserCallbackError(f"callback failed: {exc!r}") from exc
        finally:
            self._buf = buf[pos:] if self._state != _CLOSED else b""

    # --- the head ---------------------------------------------------------------------------

    def _parse_head(self, buf: bytes, pos: int) -> int:
        while buf.startswith(b"\r\n", pos):  # empty lines before a request line are allowed
            pos += 2
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            if buf.find(b"\n\n", pos) >= 0 or buf.find(b"\n\r\n", pos) >= 0:
                raise HttpParserError("line ends must be CRLF")
            if len(buf) - pos > MAX_PENDING_HEAD:
                from tui_passenger.runtime.http_common import HeadTooLarge

                try:
                    raise HeadTooLarge
                except HeadTooLarge:  # the context tells the server to answer 431
                    raise HttpParserError("header overflow") from None
            return -pos - 1
        line_end = buf.find(b"\r\n", pos)
        request_line = _REQUEST_LINE.fullmatch(buf, pos, line_end)
        if request_line is None:
            if buf[pos:line_end].partition(b" ")[0] not in _METHODS:
                raise HttpParserInvalidMethodError("invalid method")
            raise HttpParserError("invalid request line")
        lines = _field_lines(buf[line_end + 2:end]) if end > line_end else ()
        method, target, version = request_line.groups()
        if method not in _METHODS:
            raise HttpParserInvalidMethodError("invalid method")
        if target[:1] != b"/" and target != b"*" and method != b"CONNECT" and (
                _ABSOLUTE.fullmatch(target) is None):
            raise HttpParserError("invalid request target")
        self._method = method
        self._version = "1.1" if version == b"1.1" else "1.0"
        self._begin()
        self._url(target)
        header = self._header
        length: int | None = None
        chunked = False
        connection = b""
        upgrade = False
        names = _NAMES
        for line in lines:
            name, colon, value = line.partition(b":")
            lname = names.get(name)
            if lname is None or not colon:
                lname = _new_name(name, colon)
            # As llhttp: leading whitespace is not part of the value, trailing whitespace is.
            value = value.lstrip(b" \t")
            header(name, value)
            if lname not in _FRAMING:
                continue
            if lname == b"content-length":
                if length is not None or not value.isdigit():
                    raise HttpParserError("invalid or repeated Content-Length")
                length = int(value)
            elif lname == b"transfer-encoding":
                # Only the last coding may be, and must be, chunked (RFC 9112 6.1).
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
                if not chunked:
                    raise HttpParserError("invalid Transfer-Encoding")
            elif lname == b"connection":
                connection += b"," + value.lower()
            elif lname == b"upgrade":
                upgrade = True
        if chunked and length is not None:
            raise HttpParserError("both Content-Length and Transfer-Encoding")
        tokens = {token.strip() for token in connection.split(b",")} if connection else ()
        if self._version == "1.1":
            self._keep_alive = b"close" not in tokens
        else:
            self._keep_alive = b"keep-alive" in tokens
        self._upgrade = (upgrade and b"upgrade" in tokens) or method == b"CONNECT"
        self._headers_done()
        pos = end + 4
        if chunked:
            self._state = _CHUNK_SIZE_LINE
        elif length:
            self._remaining = length
            self._state = _BODY
        else:
            return self._message_done(pos)
        return pos

    # --- bodies -----------------------------------------------------------------------------

    def _message_done(self, pos: int) -> int:
        self._state = _HEAD if self._keep_alive else _CLOSED
        self._complete()
        if self._upgrade:
            raise HttpParserUpgrade(pos)
        return pos

    def _identity_body(self, buf: bytes, pos: int) -> int:
        take = min(len(buf) - pos, self._remaining)
        self._remaining -= take
        self._body(buf[pos:pos + take])
        pos += take
        if self._remaining == 0:
            return self._message_done(pos)
        return pos

    def _chunk_data(self, buf: bytes, pos: int) -> int:
        take = min(len(buf) - pos, self._remaining)
        self._remaining -= take
        self._body(buf[pos:pos + take])
        if self._remaining == 0:
            self._state = _CHUNK_END
        return pos + take

    def _chunk_framing(self, buf: bytes, pos: int) -> int:
        """A chunk-size line, the CRLF after a chunk's data, or the trailer section."""
        state = self._state
        if state == _CHUNK_END:
            if not b"\r\n".startswith(buf[pos:pos + 2]):
                raise HttpParserError("missing CRLF after chunk data")
            if len(buf) - pos < 2:
                return -pos - 1
            self._state = _CHUNK_SIZE_LINE
            return pos + 2
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if len(buf) - pos > MAX_CHUNK_LINE or buf.find(b"\n", pos) >= 0:
                raise HttpParserError("invalid chunk size line")
            return -pos - 1
        if state == _TRAILERS:  # trailer fields are checked, then dropped (RFC 9110 6.5.1)
            if line_end == pos:
                return self._message_done(pos + 2)
            check_trailer(buf[pos:line_end])
            return line_end + 2
        size = chunk_size(buf, pos, line_end)
        if size:
            self._remaining = size
            self._state = _CHUNK_DATA
        else:
            self._state = _TRAILERS
        return line_end + 2
