"""The ASGI ``websocket`` scope on a worker: handshake, messages, pings, closing.

Framing is wsproto's (sans-I/O, as in uvicorn and hypercorn): its frame-level
``Connection`` after a handshake done here (the request head is parsed already by the
HTTP server). wsproto is optional like httptools, since the runtime runs inside the app's
own interpreter: without it an upgrade gets a 501 that names the fix, and
:data:`MISSING` says so at startup. permessage-deflate is not offered (a compressed
message could inflate far beyond ``websocket_max_message_size`` before it is counted).

One :class:`WebSocket` per upgraded connection: it becomes the transport's protocol once
the request head is parsed, runs the app in a task of its own (not counted against the
server's ``concurrency``, which is for HTTP requests: open WebSockets never hold up plain
requests), pauses reading while the app is behind, answers pings, sends its own (a peer
silent past ``ping_timeout`` is cut off), refuses messages over ``max_message_size`` with
close code 1009, and closes with a close frame when the server stops
(:meth:`WebSocket.farewell`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from tui_passenger.runtime import http_common as hc
from tui_passenger.runtime.http_framing import date_header, simple_response, status_line

try:
    from wsproto.connection import Connection, ConnectionState, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
    from wsproto.utilities import generate_accept_token
except ImportError:  # the app's interpreter lacks it: upgrades get a 501 (see MISSING)
    MISSING = ("WebSocket upgrades are refused (501): the app's Python has no wsproto; "
               "install it into the app's virtualenv (pip install wsproto)")
else:
    MISSING = ""

if TYPE_CHECKING:
    from tui_passenger.runtime.asgi_cycle import Cycle
    from tui_passenger.runtime.asgi_server import ASGIServer

#: Messages the app has not taken yet, in bytes, before reading from the socket pauses.
HIGH_WATER = 1024 * 1024
#: Seconds the peer has to answer our close frame before the connection is just closed.
CLOSE_TIMEOUT = 2.0
GOING_AWAY, SERVICE_RESTART = 1001, 1012
_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(4)
#: Headers of a denial response (websocket.http.response) that the server sets itself.
_DENIAL_SPECIAL = frozenset({b"content-length", b"connection", b"transfer-encoding"})


def refusal(cycle: Cycle) -> bytes | None:
    """The response refusing ``cycle``'s upgrade before the app sees it, or None to go on."""
    if MISSING:
        return simple_response(501, f"Not Implemented: {MISSING}.\n")
    headers = dict(cycle.scope["headers"])
    if headers.get(b"sec-websocket-version", b"").strip() != b"13":
        return (b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    if not headers.get(b"sec-websocket-key", b"").strip():
        return simple_response(400, "Bad Request: no Sec-WebSocket-Key\n")
    return None


def websocket_scope(http_scope: dict[str, Any]) -> dict[str, Any]:
    """The ASGI ``websocket`` scope for an upgrade request's ``http`` scope."""
    scope = dict(http_scope)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if http_scope["scheme"] == "https" else "ws"
    protocols: list[str] = []
    for name, value in http_scope["headers"]:
        if name == b"sec-websocket-protocol":
            protocols += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    scope["subprotocols"] = protocols
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


class WebSocket(hc.WriteFlow, asyncio.Protocol):
    """One upgraded connection: the app's ``receive``/``send`` over wsproto."""

    __slots__ = ("server", "loop", "transport", "scope", "key", "state", "ws", "incoming",
                 "queued_bytes", "waiter", "parts", "part_size", "text", "read_paused",
                 "write_paused", "drain_waiter", "ping_timer", "pong_timer", "close_timer",
                 "idle_timer", "active",
                 "task", "denial", "denial_body", "disconnect", "closed")

    def __init__(self, server: ASGIServer, cycle: Cycle) -> None:
        self.server = server
        self.loop = cycle.proto.loop
        self.transport: Any = cycle.proto.transport
        self.scope = websocket_scope(cycle.scope)
        self.key = dict(cycle.scope["headers"])[b"sec-websocket-key"].strip()
        self.state = _HANDSHAKE
        self.ws: Any = None  # wsproto's Connection, once accepted
        #: ASGI messages for receive(), and the bytes they hold.
        self.incoming: deque[dict[str, Any]] = deque([{"type": "websocket.connect"}])
        self.queued_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        #: The fragments of the message being received.
        self.parts: list[Any] = []
        self.part_size = 0
        self.text = False
        self.read_paused = self.write_paused = self.closed = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        #: When a message last went either way (the loop's clock), for the idle timeout.
        self.active = 0.0
        self.task: asyncio.Task[None] | None = None
        #: The websocket.http.response being sent instead of accepting: (status, headers).
        self.denial: tuple[int, Any] | None = None
        self.denial_body = bytearray()
        #: The websocket.disconnect message once the connection is closed.
        self.disconnect: dict[str, Any] | None = None

    def start(self, tail: bytes) -> None:
        """Take over the connection (``tail``: what followed the request head) and run the app."""
        self.transport.set_protocol(self)
        self.transport.resume_reading()  # paused by the HTTP side when the upgrade was parsed
        self.server._websockets.add(self)
        if tail:  # frames sent before our 101: kept for when the app accepts
            self.parts.append(tail)
        self.task = self.loop.create_task(self.run())

    # -- the app -------------------------------------------------------------------------

    async def run(self) -> None:
        """Call the app; turn what it leaves undone into a 500, a 403 or a close frame."""
        try:
            await self.server.app(self.scope, self.receive, self.send)
        except hc.ClientDisconnected:
            pass
        except Exception as exc:  # noqa: BLE001 - the app's errors end the connection only
            hc.log(self.server.error_log, f"Error in WebSocket {self.scope['path']}:", exc)
            self._abandoned(1011, 500, hc.error_text(exc, self.server.development))
        else:
            self._abandoned(1000, 500, "Internal Server Error: the ASGI app returned without "
                                       "accepting or closing the WebSocket\n")

    def _abandoned(self, code: int, status: int, text: str) -> None:
        if self.state == _HANDSHAKE:
            self._respond(simple_response(status, text))
        elif self.state == _OPEN:
            self._close(code, "")

    async def receive(self) -> dict[str, Any]:
        """ASGI ``receive``: connect, then text or bytes messages, then disconnect."""
        while not self.incoming:
            if self.disconnect is not None:
                return self.disconnect
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = self.incoming.popleft()
        if message["type"] == "websocket.receive":
            self.queued_bytes -= len(message["bytes"] or message["text"] or "")
            self._maybe_resume()
        return message

    def _maybe_resume(self) -> None:
        """Read again once the app has taken most of what waits for it."""
        if self.read_paused and self.queued_bytes <= HIGH_WATER // 2 and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI ``send``: accept, send, close, or the denial response."""
        kind = message["type"]
        state = self.state
        if kind == "websocket.send":
            if state != _OPEN:
                raise hc.ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            data = message.get("bytes")
            self.active = self.loop.time()
            if data is not None:
                self._write(self.ws.send(BytesMessage(data=data)))
            elif text is not None:
                self._write(self.ws.send(TextMessage(data=text)))
            if self.write_paused:
                await self.drain()
        elif kind == "websocket.accept" and state == _HANDSHAKE:
            self._accept(message)
        elif kind == "websocket.close":
            if state == _HANDSHAKE:
                self._respond(simple_response(403, "Forbidden\n"))
            elif state == _OPEN:
                self._close(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.http.response.start" and state == _HANDSHAKE \
                and self.denial is None:
            self.denial = (int(message["status"]), message.get("headers", ()))
        elif kind == "websocket.http.response.body" and self.denial is not None \
                and state == _HANDSHAKE:
            self.denial_body += message.get("body", b"")
            if not message.get("more_body", False):
                self._respond(self._denial_response())
        elif state in (_CLOSED, _CLOSING):
            raise hc.ClientDisconnected("the WebSocket is closed")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a WebSocket in this state")

    def _accept(self, message: dict[str, Any]) -> None:
        parts = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: ",
                 generate_accept_token(self.key), b"\r\n"]
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if subprotocol not in self.scope["subprotocols"]:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client")
            parts += (b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n")
        for name, value in message.get("headers", ()):
            if b"\n" in name + value or b"\r" in name + value:
                raise ValueError("line break in a response header")
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self._write(b"".join(parts))
        self.state = _OPEN
        self.ws = Connection(ConnectionType.SERVER)
        early, self.parts = b"".join(self.parts), []
        self.queued_bytes = 0
        if early:
            self.data_received(early)
        self._maybe_resume()
        self._schedule_ping()
        self._watch_idle()

    def _denial_response(self) -> bytes:
        assert self.denial is not None
        status, headers = self.denial
        parts = [status_line(status)]
        for name, value in headers:
            if name.lower() not in _DENIAL_SPECIAL:
                parts += (name, b": ", value, b"\r\n")
        parts += (b"Content-Length: %d\r\nConnection: close\r\n" % len(self.denial_body),
                  date_header(), b"\r\n", bytes(self.denial_body))
        return b"".join(parts)

    def _respond(self, response: bytes) -> None:
        """Answer the handshake with an HTTP response (denied) and close."""
        self.state = _CLOSED
        self._write(response)
        self.transport.close()
        self._disconnected(1006, "")

    # -- the connection ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:  # not accepted yet (the peer should have waited for our 101)
            self.parts.append(data)
            self.queued_bytes += len(data)
        else:
            self._events(ws, data)
        if self.queued_bytes > HIGH_WATER and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _events(self, ws: Any, data: bytes) -> None:
        if ws.state is ConnectionState.CLOSED:
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._fragment(event)
            elif isinstance(event, Ping):
                if ws.state is ConnectionState.OPEN:  # not once our close frame is out
                    self._write(ws.send(event.response()))
            elif isinstance(event, Pong):
                if self.pong_timer is not None:
                    self.pong_timer.cancel()
                    self.pong_timer = None
            elif isinstance(event, CloseConnection):
                self._peer_closed(event)

    def _fragment(self, event: Any) -> None:
        """One piece of a message: assemble, bound the size, hand complete ones to the app."""
        if self.state != _OPEN:
            return
        if not self.parts:
            self.text = isinstance(event, TextMessage)
        self.parts.append(event.data)
        self.part_size += len(event.data)
        limit = self.server.websocket_max_message_size
        if limit and self.part_size > limit:
            self.parts, self.part_size = [], 0
            self._close(1009, f"message larger than {limit} bytes")
            self._disconnected(1009, "")
            return
        if not event.message_finished:
            return
        message: dict[str, Any] = {"type": "websocket.receive", "bytes": None, "text": None}
        if self.text:
            message["text"] = "".join(self.parts)
        else:
            message["bytes"] = b"".join(self.parts)
        self.queued_bytes += self.part_size
        self.parts, self.part_size = [], 0
        self.incoming.append(message)
        self.active = self.loop.time()
        self._wake()

    def _peer_closed(self, event: Any) -> None:
        ws = self.ws
        if ws.state is ConnectionState.REMOTE_CLOSING:
            self._write(ws.send(event.response()))  # our answering close frame
        elif ws.state is ConnectionState.OPEN:  # what the peer sent broke the protocol
            self._write(ws.send(CloseConnection(code=event.code, reason=event.reason)))
        self.state = _CLOSED
        self.transport.close()
        self._disconnected(event.code, event.reason or "")

    def _close(self, code: int, reason: str) -> None:
        """Send our close frame; the peer's answer (or CLOSE_TIMEOUT) ends the connection."""
        if self.state != _OPEN:
            return
        self.state = _CLOSING
        self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)
        self._disconnected(code, reason)

    def farewell(self, code: int) -> None:
        """The server is stopping: close with ``code`` (1001 going away, 1012 restart)."""
        if self.state == _OPEN:
            self._close(code, "server restart" if code == SERVICE_RESTART else "going away")
        elif self.state == _HANDSHAKE:
            self._respond(simple_response(503, "Service Unavailable: shutting down\n"))

    def _disconnected(self, code: int, reason: str) -> None:
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._stop_pinging()
            self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.state = _CLOSED
        self.closed = True
        self.server._websockets.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
        self._disconnected(1006, "")
        self.resume_writing()

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keepalive pings -----------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.server.websocket_ping_interval
        if interval > 0:
            self.ping_timer = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self.ping_timer = None
        if self.state != _OPEN:
            return
        self._write(self.ws.send(Ping(payload=b"tui-passenger")))
        timeout = self.server.websocket_ping_timeout
        if timeout > 0 and self.pong_timer is None:
            self.pong_timer = self.loop.call_later(timeout, self._no_pong)
        self._schedule_ping()

    def _no_pong(self) -> None:
        """The peer did not answer a ping in time: it is gone, or too slow to keep."""
        self.pong_timer = None
        self._close(1011, "keepalive ping timeout")
        self.transport.close()

    def _stop_pinging(self) -> None:
        for timer in (self.ping_timer, self.pong_timer, self.idle_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = self.idle_timer = None

    # -- idle timeout --------------------------------------------------------------------

    def _watch_idle(self) -> None:
        """Close the WebSocket once no message has gone either way for ``idle_timeout``
        seconds (pings do not count: they only show that the peer is still there)."""
        timeout = self.server.websocket_idle_timeout
        if timeout > 0:
            self.active = self.loop.time()
            self.idle_timer = self.loop.call_later(timeout, self._idle)

    def _idle(self) -> None:
        self.idle_timer = None
        if self.state != _OPEN:
            return
        left = self.active + self.server.websocket_idle_timeout - self.loop.time()
        if left > 0:  # a message went by meanwhile: look again when it would be idle
            self.idle_timer = self.loop.call_later(left, self._idle)
        else:
            self._close(1001, "idle timeout")
