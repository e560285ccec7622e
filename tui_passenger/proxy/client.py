"""One client connection on the public port: parse requests, run them one after another.

Parsing is httptools (llhttp). Requests on a keep-alive connection are answered in order;
pipelined ones wait in a short queue. A request's body is received completely (and
bounded) before its :class:`~tui_passenger.proxy.exchange.Exchange` asks for a worker.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

import httptools

import tui_passenger.proxy.pages as pages
from tui_passenger.listeners import format_address
from tui_passenger.proxy.body import RequestBody
from tui_passenger.proxy.chunked import (
    CLEAN,
    FIRST,
    LATER,
    MID_BODY,
    MID_HEAD,
    ChunkedDecoder,
    body_offset,
)
from tui_passenger.proxy.exchange import Exchange
from tui_passenger.proxy.headers import (
    CHECKED,
    FORBIDDEN_TRAILERS,
    INTERNAL_PREFIX,
    REWRITTEN,
    SINGLETONS,
    UNIX_PEER_FORWARDING,
    forwarding_headers,
)
from tui_passenger.proxy.refusals import MAX_HEAD_SIZE, FrontForClients, Refusals, Stop
from tui_passenger.proxy.request import Request
from tui_passenger.proxy.validation import codings_problem, head_problem, parse_problem
from tui_passenger.proxy.websocket import WebSocketExchange, is_websocket_upgrade
from tui_passenger.runtime.http_parser import HttpParserError

#: Pipelined requests held per connection before reading pauses.
MAX_PIPELINED = 16
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The last byte of a field value that llhttp left optional whitespace in.
_OWS = frozenset({b" ", b"\t"})
#: Method names as str, each decoded once (llhttp knows a fixed set of methods: bounded).
_METHODS: dict[bytes, str] = {}


class _TakeOver(Exception):
    """Raised from on_headers_complete to stop llhttp at a chunked request's body, which
    the connection then decodes itself; ``args[0]`` is where the body starts in the data."""


class ClientConnection(Refusals, asyncio.Protocol):
    """The protocol of one public connection (how it refuses requests itself: its base
    class :class:`~tui_passenger.proxy.refusals.Refusals`)."""

    __slots__ = ("front", "transport", "parser", "ip", "address", "trusted", "forwarding",
                 "queue", "current", "request", "closed", "paused_writing", "last_active",
                 "_reading_paused", "head_started", "body_started", "max_line", "max_field",
                 "max_fields", "chunked", "feeding", "feed_mode", "head_tail")

    def __init__(self, front: FrontForClients) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.ip = ""
        self.address = b""
        #: The peer is one of trusted_proxies (its X-Forwarded-* and X-Request-Id are kept).
        self.trusted = False
        #: The forwarding headers that are the same for every request of this connection.
        self.forwarding = b""
        self.queue: deque[Request] = deque()
        self.current: Exchange | None = None
        self.request: Request | None = None
        self.closed = False
        self.paused_writing = False
        self.last_active = time.monotonic()
        self._reading_paused = False
        #: When the request being received began, and when its body began (monotonic).
        self.head_started = 0.0
        self.body_started = 0.0
        # The head limits, read once per connection (a reload applies to new connections).
        server = front.config.server
        self.max_line = server.limit_request_line
        self.max_field = server.limit_request_field_size
        self.max_fields = server.limit_request_fields
        #: The decoder of the chunked body being received (llhttp is stopped meanwhile).
        self.chunked: ChunkedDecoder | None = None
        #: The bytes being fed to llhttp, and what they began with (see body_offset).
        self.feeding = b""
        self.feed_mode = CLEAN
        #: The last bytes of a request head cut by the end of a read (see body_offset).
        self.head_tail = b""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip = peer[0]  # (first: the refusal below is logged with it)
        cap = self.front.config.server.max_connections
        if cap and len(self.front.connections) >= cap:
            self.front.stats.errors_503 += 1
            self.reject(pages.error(503, f"too many connections (max_connections = {cap})",
                                    close=True))
            return
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.address = format_address(peer[0], peer[1]).encode()
            self.trusted = self.ip in self.front.trusted
            self.forwarding = forwarding_headers(self.ip, self.address)
        elif getattr(transport.get_extra_info("socket"), "family", None) == socket.AF_UNIX:
            # A Unix-socket peer is the local reverse proxy (nginx): who may connect was
            # chosen by the socket's mode and group. It is trusted, and it has no address:
            # ip and address stay empty, nothing is added to X-Forwarded-For.
            self.trusted = True
            self.forwarding = UNIX_PEER_FORWARDING
        else:
            self.forwarding = forwarding_headers(self.ip, self.address)
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.chunked is not None:
            data = self._chunked_body(data)
            if not data:
                return
        self.feed_mode = CLEAN if self.request is None else (
            MID_BODY if self.body_started else MID_HEAD)
        self.feeding = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Nothing after an upgrade request is HTTP: a WebSocket's tunnel reads on once
            # the worker has answered 101 (a client sends no frame before that); any other
            # upgrade is answered as a plain request, and the connection then closes.
            if self.request is not None:
                self.request.keep_alive = False
                self._complete()
            self.pause_reading()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TakeOver):
                self._take_over(data, exc.__context__.args[0])
            elif not isinstance(exc.__context__, Stop):
                raise
        except httptools.HttpParserError as exc:
            # The request's first bytes are known when it began at the start of this read.
            start = data if self.feed_mode == FIRST else None
            self.reject_in_turn(pages.error(*parse_problem(exc, start), close=True))
        self.feeding = b""  # not kept: the connection may idle for long
        if self.request is not None and not self.body_started:
            # A head cut by the end of this read: its end may be cut in two too.
            tail = data[-3:]
            self.head_tail = tail if len(tail) == 3 else (self.head_tail + tail)[-3:]

    def _take_over(self, data: bytes, offset: int) -> None:
        """Decode the chunked body that starts at ``offset`` of ``data`` here (llhttp
        stopped at its head); a new llhttp parser takes the requests that follow it."""
        self.parser = httptools.HttpRequestParser(self)
        self.chunked = ChunkedDecoder(self.on_body, FORBIDDEN_TRAILERS)
        if offset < len(data):
            self.data_received(data[offset:])

    def _chunked_body(self, data: bytes) -> bytes:
        """Feed the chunked body; returns what follows it (the next requests), if it ended."""
        decoder = self.chunked
        assert decoder is not None
        try:
            used = decoder.feed(data)
        except HttpParserError as exc:
            self.chunked = None
            self.reject_in_turn(pages.error(400, f"malformed chunked body: {exc}", close=True))
            return b""
        except Stop:  # refused from on_body (413)
            self.chunked = None
            return b""
        if used < 0:
            return b""
        self.chunked = None
        keep_alive = self.request is not None and self.request.keep_alive
        self._complete()
        return data[used:] if keep_alive else b""  # nothing is read after a last request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.connections.discard(self)
        if self.current is not None:
            self.current.client_gone()
        half = [self.request] if self.request is not None else []
        for request in [*self.queue, *half]:
            if request.body is not None:
                request.body.close()  # a spooled upload goes at once, not at the next GC
        self.queue.clear()
        self.request = None

    def pause_writing(self) -> None:
        self.paused_writing = True
        if self.current is not None:
            self.current.client_paused()

    def resume_writing(self) -> None:
        self.paused_writing = False
        if self.current is not None:
            self.current.client_resumed()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.feed_mode = FIRST if self.feed_mode == CLEAN else LATER
        self.request = Request()
        self.head_started = self.last_active
        self.body_started = 0.0

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.url += url
        # The request line is the method, the target and " HTTP/1.x": 12 bytes at least
        # besides the target (the method is looked at only when the line may be too long).
        if len(request.url) + 12 > self.max_line:
            line = len(self.parser.get_method()) + len(request.url) + 10
            if line > self.max_line:
                self._refuse(414, f"request line of {line} bytes or more exceeds "
                                  f"limit_request_line ({self.max_line})")
        request.head_size += len(url)
        if request.head_size > MAX_HEAD_SIZE:
            self._count(request, 0)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.body_started:  # after the body of a chunked request: a trailer field
            self._trailer(name)
            return
        request = self.request
        headers = request.headers  # type: ignore[union-attr]
        if value[-1:] in _OWS:  # llhttp keeps trailing whitespace; RFC 9110 5.5 drops it
            value = value.rstrip(b" \t")
        headers.append((name, value))
        size = len(name) + len(value) + 4  # the field line: name, ": ", value and CRLF
        if size > self.max_field:
            self._refuse(431, f"header field {name.decode('latin-1')[:64]!r} of {size} bytes "
                              f"exceeds limit_request_field_size ({self.max_field})")
        request.head_size += size  # type: ignore[union-attr]
        if request.head_size > MAX_HEAD_SIZE:  # type: ignore[union-attr]
            self._count(request, 0)
        if len(headers) > self.max_fields:
            self._refuse(431, f"more than {self.max_fields} header fields "
                              f"(limit_request_fields)")

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        request.line_known = True
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("ascii", "replace"))
        request.method = method
        request.version = parser.get_http_version()
        # Nothing after an upgrade request is HTTP/1.1: a WebSocket becomes a tunnel after the
        # worker's 101, any other upgrade (h2c) is answered as a plain request, then closed.
        upgrade = parser.should_upgrade()
        request.keep_alive = parser.should_keep_alive() and not upgrade
        if upgrade:
            request.websocket = is_websocket_upgrade(request.headers)
        server = self.front.config.server
        declared = -1
        expect = chunked = False
        codings = b""  # the Transfer-Encoding field values, joined
        hosts = 0
        seen = 0  # the singleton fields met, as bits (no set built per request)
        for name, value in request.headers:
            lower = name.lower()
            if lower not in CHECKED:
                if lower == b"user-agent":
                    request.agent = value
                elif lower == b"referer":
                    request.referer = value
                elif lower.startswith(INTERNAL_PREFIX):
                    request.plain = False
                continue
            if lower == b"host":
                request.host = value.decode("latin-1")
                hosts += 1
                continue
            bit = SINGLETONS.get(lower, 0)
            if bit:  # a second one could not be merged into one value: ambiguous
                if seen & bit:
                    self._refuse(400, f"repeated {name.decode('latin-1')} header field")
                seen |= bit
            if lower in REWRITTEN:
                request.plain = False
            if lower == b"content-length":
                declared = int(value) if value.strip().isdigit() else -1
            elif lower == b"expect":
                expect = value.strip().lower() == b"100-continue"
            elif lower == b"transfer-encoding":
                declared = max(declared, 0)
                codings = codings + b"," + value if codings else value
        if codings:
            chunked = True
            if codings.lower() != b"chunked" and (problem := codings_problem(codings)):
                self._refuse(*problem)
        if request.version == "1.0":
            request.plain = False  # the worker is told the client's version (see headers)
        if (hosts != 1 or request.version != "1.1" or request.url[:1] != b"/"
                or method == "CONNECT") and (problem := head_problem(request, hosts, chunked)):
            self._refuse(*problem)  # (an HTTP/1.1 origin-form request with one Host has none)
        self.body_started = self.last_active  # (the read that ended the head)
        if declared > server.client_max_body_size:
            self._refuse(413, f"request body of {declared} bytes exceeds "
                              f"{server.client_max_body_size}")
        if declared >= 0:
            request.body = RequestBody(server.client_body_buffer_size)
            if expect and request.version == "1.1" and self.current is None and not self.queue:
                self.write(CONTINUE)
        if chunked:  # decoded here rather than by llhttp (see proxy/chunked.py)
            offset = body_offset(self.feeding, self.feed_mode, self.head_tail)
            if offset >= 0:
                raise _TakeOver(offset)

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        assert request is not None
        if request.error is not None or request.body is None:
            return
        request.body.append(chunk)
        limit = self.front.config.server.client_max_body_size
        if request.body.length > limit:
            request.body.close()
            self._refuse(413, f"request body exceeds {limit} bytes")

    # -- running requests ----------------------------------------------------------------

    def _complete(self) -> None:
        request, self.request = self.request, None
        if request is None:
            return
        request.received = time.perf_counter()
        if self.current is None and not self.queue and request.error is None \
                and not self.closed:
            # Nothing before it on this connection: no queue (self._start(), without the call)
            self.current = current = (WebSocketExchange if request.websocket else Exchange)(
                self.front, self, request)
            current.start()
            return
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self.pause_reading()
        self.next()

    #: llhttp's callback at the end of a request (no extra call on the way to _complete).
    on_message_complete = _complete

    def next(self) -> None:
        """Start the next queued request unless one is running."""
        if self.current is not None or self.closed or not self.queue:
            return
        request = self.queue.popleft()
        if self._reading_paused and len(self.queue) < MAX_PIPELINED // 2:
            self.resume_reading()
        if request.error is not None:
            self.reject(request.error, request)
            return
        self._start(request)

    def _start(self, request: Request) -> None:
        exchange = WebSocketExchange if request.websocket else Exchange
        self.current = exchange(self.front, self, request)
        self.current.start()

    def finished(self, keep_alive: bool) -> None:
        """The current exchange has written its whole response."""
        self.current = None
        self.last_active = time.monotonic()
        if not keep_alive or self.front.closing:
            self.close()
        elif self.queue:
            self.next()

    def write(self, data: bytes) -> None:
        """Send bytes to the client (dropped once the connection is gone)."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close at once (a response cannot be completed)."""
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()
