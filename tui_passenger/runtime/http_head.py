"""Feeding a connection's bytes to the request parser so that each request head is cut out whole.

The parser (llhttp through ``httptools``, or :mod:`.http_parser`) validates every byte, but a
Python callback per header field (two C callbacks, two bytes objects and a Python call each)
is most of a small request's parsing cost. A :class:`HeadCutter` registers no ``on_url`` or
``on_header``: it hands the parser each request head as one piece ending at its blank line,
and keeps that head (request line and field lines, without the final CRLF CRLF) in ``head``
for ``on_headers_complete`` to split in one go. After a head, the bytes go to the parser in
pieces that end exactly where a message can end, so the next head is found in the same way:
an identity body's length is known, and a chunked body can only end right after a CRLF CRLF
(its last chunk, or its trailer section, ends with an empty line), so it is fed in pieces
ending at each CRLF CRLF and checked for its end after each piece.

The WSGI server splits the head into the environ itself; :class:`HeadCollector` takes it
apart for the ASGI server (bytes, lower-cased names, the proxy's trusted headers consumed).

Standard library only: workers import this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from tui_passenger.runtime import http_common as hc

#: A head still without its blank line beyond this many bytes is refused (431). The complete
#: heads' own limits (:data:`.http_common.MAX_HEAD_SIZE` of target, and of field names and
#: values) come first for any head that could pass them.
MAX_PENDING_HEAD = 2 * hc.MAX_HEAD_SIZE + 16 * 1024
#: ``body_left`` of a chunked body (its end is found by the parser).
CHUNKED = -1


class HeadOutOfStep(Exception):
    """The parser reported a head that was not handed to it as one (a bug, never a client's
    doing): the connection is refused rather than parsed out of step."""


def head_too_large() -> NoReturn:
    """Raise the parser error that answers 431 (see :func:`.http_common.parser_error_reason`)."""
    try:
        raise hc.HeadTooLarge
    except hc.HeadTooLarge:  # the context tells the server to answer 431
        raise hc.PARSER.HttpParserError("header overflow") from None


def fields_too_large(url: str, lines: list[str]) -> bool:
    """Whether a head's target, or its field names and values together, exceed
    :data:`.http_common.MAX_HEAD_SIZE` (only worth asking of a head longer than that)."""
    if len(url) > hc.MAX_HEAD_SIZE:
        return True
    size = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        size += len(name) + len(value.lstrip(" \t"))
    return size > hc.MAX_HEAD_SIZE


class HeadCutter:
    """Mixin for a request parser's protocol: :meth:`feed` as described in the module.

    Subclasses provide ``parser`` (created with the subclass as its protocol) and
    ``parsing`` (the request whose body is being parsed: set by ``on_headers_complete``
    when a body follows, None again from ``on_message_complete``); ``on_headers_complete``
    takes the head with :meth:`take_head` and sets ``body_left`` (the Content-Length, or
    :data:`CHUNKED`). Initial state: :meth:`reset_feed`.
    """

    if not TYPE_CHECKING:
        # Empty at run time, so the subclasses' own slots are the only storage (as
        # http_common.HeadCollector).
        __slots__ = ()
    parser: Any
    parsing: Any
    #: What arrived of a head that is not complete yet.
    pending: bytes
    #: The head being reported to ``on_headers_complete``; None outside that call.
    head: bytes | None
    #: Bytes of the body still to come (identity), or CHUNKED.
    body_left: int
    #: The last bytes fed of a chunked body (a CRLF CRLF may straddle two reads).
    tail: bytes

    def reset_feed(self) -> None:
        """The state of a connection before its first request."""
        self.pending = self.tail = b""
        self.head = None
        self.body_left = 0

    def take_head(self) -> bytes:
        """The head ``on_headers_complete`` reports; HeadOutOfStep if there is none."""
        head = self.head
        if head is None:
            raise HeadOutOfStep
        self.head = None
        return head

    def feed(self, data: bytes) -> None:
        """Parse received bytes, calling the parser's callbacks for what they complete.

        The parser's exceptions pass through; an ``HttpParserUpgrade``'s offset is made one
        in ``data`` (the parser only saw a piece of it).
        """
        fed = 0  # bytes of data given to the parser before the current piece
        try:
            while data:
                used = self._feed_piece(data)
                if used == len(data):
                    return
                fed += used
                data = data[used:]
        except hc.PARSER.HttpParserUpgrade as exc:
            if not exc.args:
                raise
            raise type(exc)(fed + exc.args[0]) from None

    def _feed_piece(self, data: bytes) -> int:
        """Give the parser what of ``data`` it can take in one piece: how much that was."""
        feed_data = self.parser.feed_data
        if self.parsing is None:  # a head, or what there is of it
            pending = self.pending + data if self.pending else data
            # Blank lines before a request line are skipped (RFC 9112 2.2, as llhttp).
            start = 0 if pending[0] not in b"\r\n" else len(pending) - len(
                pending.lstrip(b"\r\n"))
            end = pending.find(b"\r\n\r\n", start)
            if end < 0:
                feed_data(data)  # checked as it comes: a bad request fails early
                if len(pending) > MAX_PENDING_HEAD:
                    head_too_large()
                self.pending = pending
                return len(data)
            self.pending = b""
            self.head = pending[start:end]
            self.body_left = 0  # on_headers_complete tells if a body follows
            self.tail = b""
            used = end + 4 - (len(pending) - len(data))
            try:
                feed_data(data if used == len(data) else data[:used])
            finally:
                self.head = None
            return used
        left = self.body_left
        if left > 0:  # identity: the body's length is known
            if len(data) <= left:
                self.body_left = left - len(data)
                feed_data(data)
                return len(data)
            self.body_left = 0
            feed_data(data[:left])
            return left
        # Chunked: up to the next CRLF CRLF, where the body may end.
        buf = self.tail + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.tail = buf[-3:]
            feed_data(data)
            return len(data)
        end += 4
        used = end - len(self.tail)
        self.tail = buf[end - 3:end]
        feed_data(data if used == len(data) else data[:used])
        return used


_REQUEST_SPECIAL = frozenset({b"host", b"expect", b"content-length", b"transfer-encoding",
                              *hc.PASSENGER_HEADERS})
_METHODS: dict[bytes, str] = {}
#: Header name as received -> lower-cased. Bounded: names come from clients.
_NAMES: dict[bytes, bytes] = {}


class HeadCollector(HeadCutter):
    """A cut request head taken apart the way the ASGI server needs it: bytes, and the field
    names lower-cased.

    :meth:`collect` fills ``url``, ``headers`` (``(lower-cased name, value)`` pairs), and
    ``body_left``; the trusted X-Passenger-* headers are consumed here (``prefix``,
    ``client``, ``scheme``, ``client_version``) and never reach the app. Subclasses provide
    ``peer`` (the default client address) and ``host_cache`` (initially
    :data:`.http_common.NO_HOST`) besides what :class:`HeadCutter` needs.
    """

    if not TYPE_CHECKING:
        __slots__ = ()  # the subclasses' slots hold the state (see HeadCutter)
    peer: tuple[str, int]
    host_cache: tuple[tuple[bytes | None, str], tuple[str, int]]

    def collect(self) -> None:
        """Take apart the head ``on_headers_complete`` reports (see :meth:`take_head`)."""
        lines = self.take_head().split(b"\r\n")
        # llhttp allows more than one space around the target.
        self.url = url = lines[0].partition(b" ")[2].lstrip(b" ").partition(b" ")[0]
        self.headers: list[tuple[bytes, bytes]] = []
        self.prefix = b""
        self.client = self.peer
        self.scheme = "http"
        self.host_value: bytes | None = None
        self.expect = False
        #: The client's HTTP version (``"1.0"``) from X-Passenger-Protocol, else None.
        self.client_version: str | None = None
        append = self.headers.append
        size = 0
        for line in lines[1:]:
            raw_name, _, value = line.partition(b":")
            name = _NAMES.get(raw_name)
            if name is None:
                name = raw_name.lower()
                if len(_NAMES) < 1024:
                    _NAMES[raw_name] = name
            # As llhttp: leading whitespace is not part of the value, trailing whitespace is.
            value = value.lstrip(b" \t")
            size += len(name) + len(value)
            if name in _REQUEST_SPECIAL and self._special(name, value):
                continue
            append((name, value))
        if len(url) > hc.MAX_HEAD_SIZE or size > hc.MAX_HEAD_SIZE:
            raise hc.HeadTooLarge

    def _special(self, name: bytes, value: bytes) -> bool:
        """Note a field the server looks at; whether it is consumed (hidden from the app)."""
        if name == b"host":
            self.host_value = value
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif name == b"content-length":
            self.body_left = int(value)  # digits only: the parser has checked
        elif name == b"transfer-encoding":
            self.body_left = CHUNKED  # chunked last: the parser has checked
        else:  # the proxy's trusted headers: used here, hidden from the app
            if name == hc.SCRIPT_NAME_KEY:
                self.prefix = hc.normalize_prefix(value)
            elif name == hc.REMOTE_ADDR_KEY:
                self.client = hc.parse_remote_addr(value) or self.client
            elif name == hc.SCHEME_KEY:
                self.scheme = hc.parse_scheme(value) or self.scheme
            else:
                self.client_version = hc.client_version(value)
            return True
        return False

    def parse_target(self) -> tuple[str, bytes, bytes, bytes, int]:
        """Method, raw path, query, decoded path and the mount prefix's length in it."""
        raw = self.parser.get_method()
        method = _METHODS.get(raw)
        if method is None:
            method = _METHODS.setdefault(raw, raw.decode("ascii"))
        raw_path, query = hc.split_target(self.url)
        path = hc.unquote_path(raw_path)
        return method, raw_path, query, path, hc.prefix_length(path, self.prefix)

    def server_address(self) -> tuple[str, int]:
        """The ``(name, port)`` the client addressed, from ``Host`` and the scheme."""
        key = (self.host_value, self.scheme)
        cached = self.host_cache  # the proxy sends the same Host again and again
        if cached[0] != key:
            host = (self.host_value or b"localhost").decode("latin-1")
            cached = self.host_cache = (key, hc.split_host(host, self.scheme))
        return cached[1]
