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
        """Parse received bytes, calling the parser's callbacks for what they complete."""
        feed_data = self.parser.feed_data
        while data:
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
                    return
                self.pending = b""
                self.head = pending[start:end]
                used = end + 4 - (len(pending) - len(data))
                self.body_left = 0  # on_headers_complete tells if a body follows
                self.tail = b""
                if used == len(data):
                    feed_data(data)
                    self.head = None
                    return
                feed_data(data[:used])
                self.head = None
                data = data[used:]
            elif self.body_left > 0:  # identity: the body's length is known
                left = self.body_left
                if len(data) <= left:
                    self.body_left = left - len(data)
                    feed_data(data)
                    return
                self.body_left = 0
                feed_data(data[:left])
                data = data[left:]
            else:  # chunked: up to the next CRLF CRLF, where the body may end
                buf = self.tail + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.tail = buf[-3:]
                    feed_data(data)
                    return
                end += 4
                used = end - len(self.tail)
                self.tail = buf[end - 3:end]
                if used == len(data):
                    feed_data(data)
                    return
                feed_data(data[:used])
                data = data[used:]
