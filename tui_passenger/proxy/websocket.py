"""WebSockets through the proxy: the upgrade request's exchange, then a byte tunnel.

A request with ``Upgrade: websocket`` gets a :class:`WebSocketExchange` (the client
connection picks the class; nothing else changes for other requests). It is routed and
queued like any request, but:

- a WSGI app (known from the configuration, or from the worker's kind once one is picked)
  gets **501 Not Implemented**: the request is valid, but this server cannot carry it
  to such an app (a WSGI app has no way to take over a connection). Never a 200.
- beyond the app's ``max_websockets`` open (or being opened) ones: **503** with
  Retry-After, before anything reaches a worker.
- the worker is the one with the fewest requests plus WebSockets among those with a free
  request slot (WebSockets spread evenly); it is never pipelined behind a busy worker, nor
  retried elsewhere.
- the head goes with ``Connection: Upgrade`` and ``Upgrade: websocket`` (the proxy drops
  hop-by-hop fields from other requests), on a connection that never goes back to the
  worker's keep-alive pool.

If the worker answers 101, the 101 goes to the client and a :class:`Tunnel` relays bytes
both ways, with flow control (a side whose write buffer is full stops reading the other);
the proxy parses no frame. The worker's request slot is given back at once (an open
WebSocket holds none, see :class:`~tui_passenger.pool.process.PoolProcess`), and
``Pool.websocket_closed`` is told when the tunnel ends. Any other answer is relayed as a
response and the connection closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol, cast

import tui_passenger.proxy.pages as pages
from tui_passenger.pool.group import READY
from tui_passenger.proxy.exchange import Exchange

if TYPE_CHECKING:
    from tui_passenger.pool import Group, Pool, PoolProcess
    from tui_passenger.proxy.request import Request
    from tui_passenger.proxy.sides import ClientSide, Front
    from tui_passenger.proxy.upstream import UpstreamConnection

#: Added to the request head for the worker (the proxy drops hop-by-hop fields).
UPGRADE_FIELDS = b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
#: Retry-After (seconds) when the app has max_websockets open: a slot frees only when
#: a WebSocket closes, and clients reconnect with backoff anyway.
CAP_RETRY_AFTER = 5


class UpgradableClient(Protocol):
    """What a tunnel needs of the client connection, besides the exchange's ClientSide."""

    transport: asyncio.Transport | None

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (it has closed)."""


def is_websocket_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an upgrade request asks for a WebSocket (not, say, h2c)."""
    for name, value in headers:
        if name.lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def open_websockets(group: Group) -> int:
    """The app's open WebSockets (and upgrades on their way to a worker)."""
    return sum(p.websockets for p in group.processes)


def least_loaded(group: Group) -> PoolProcess | None:
    """The ready process with a free request slot and the fewest requests + WebSockets."""
    best: PoolProcess | None = None
    best_load = -1
    for process in group.processes:
        if process.state is not READY or process.sessions >= process.worker.concurrency:
            continue
        load = process.sessions + process.websockets
        if best is None or load < best_load:
            best, best_load = process, load
    return best


class WebSocketExchange(Exchange):
    """The exchange of an ``Upgrade: websocket`` request (see the module docstring)."""

    __slots__ = ("tunnel",)

    def __init__(self, front: Front, client: ClientSide, request: Request) -> None:
        super().__init__(front, client, request)
        self.tunnel: Tunnel | None = None
        self.attempt = 2  # never pipelined behind a busy worker, nor retried elsewhere

    def _acquire(self) -> None:
        group = self.group
        assert group is not None
        app = group.app
        if app.interface == "wsgi":
            self._not_asgi(group.name)
            return
        cap = app.max_websockets
        if cap and open_websockets(group) >= cap:
            self.front.stats.errors_503 += 1
            self.answer(pages.error(503, f"{group.name} has {cap} WebSockets open "
                                         f"(max_websockets)", retry_after=CAP_RETRY_AFTER))
            return
        if not self.head.endswith(UPGRADE_FIELDS):
            self.head = self.head[:-2] + UPGRADE_FIELDS
        pool = self.front.pool
        if not pool.closing and not group.always_restart:
            process = least_loaded(group)
            if process is not None:
                process.checkout()
                self._send(process)
                return
        super()._acquire()  # queue for a worker as any request does

    def _not_asgi(self, app: str) -> None:
        self.answer(pages.error(501, f"{app} is a WSGI app, which cannot take a WebSocket "
                                     "(WebSockets need an ASGI app)"))

    def _send(self, process: PoolProcess) -> None:
        if process.worker.interface != "asgi":  # interface = "auto" found a WSGI app
            self._release(process)
            self._not_asgi(process.group.name)
            return
        process.websockets += 1  # counted from now on for max_websockets
        super()._send(process)

    def _detach(self) -> None:
        process = self.process
        if process is not None and self.tunnel is None:  # the upgrade did not happen
            process.websockets -= 1
        super()._detach()

    def on_response(self, upstream: UpstreamConnection) -> bool:
        """Never relayed whole: an upgrade's answer is looked at first (on_response_head)."""
        return False

    def on_response_head(self, upstream: UpstreamConnection) -> None:
        """101: relay it and start the tunnel; anything else is relayed as a response."""
        upstream.keep_alive = False  # whatever happens, not reused for other requests
        if upstream.status != 101:
            super().on_response_head(upstream)
            return
        process = self.process
        client = self.client
        assert process is not None
        upstream.sink = None  # the tunnel has the connection from now on
        self.status = 101
        client.write(b"%bX-Request-Id: %b\r\n\r\n" % (upstream.head, self.request_id))
        self.tunnel = tunnel = Tunnel(self.front.pool, process, client,
                                      cast(UpgradableClient, client), upstream)
        self._detach()
        self._release(process)  # the request slot: an open WebSocket holds none
        self.client = tunnel  # _finish() counts and logs the request, and tells the tunnel
        self._finish(False)
        tunnel.start()


class _End(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to the other side."""

    __slots__ = ("tunnel", "transport", "other")

    def __init__(self, tunnel: Tunnel, transport: Any) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport = transport
        self.other: _End | None = None

    def data_received(self, data: bytes) -> None:
        assert self.other is not None
        self.other.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the other

    def pause_writing(self) -> None:
        assert self.other is not None
        self.other.transport.pause_reading()  # this side's reader is slow: stop feeding it

    def resume_writing(self) -> None:
        assert self.other is not None
        if not self.other.transport.is_closing():
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # What was written to the other side still goes out, then it closes: a worker that
        # died closes its clients' connections at once, and the reverse.
        assert self.other is not None
        self.other.transport.close()
        self.tunnel.ended()


class Tunnel:
    """The bytes of one WebSocket, both ways, between a client and a worker.

    Until :meth:`start` it stands in for the client connection as the exchange's
    :class:`~tui_passenger.proxy.exchange.ClientSide` (so that finishing the exchange counts
    and logs the 101 without closing the connection).
    """

    __slots__ = ("pool", "process", "client", "connection", "upstream", "ip", "address",
                 "trusted", "forwarding", "closed", "paused_writing", "done")

    def __init__(self, pool: Pool, process: PoolProcess, client: ClientSide,
                 connection: UpgradableClient, upstream: UpstreamConnection) -> None:
        self.pool = pool
        self.process = process
        self.client = client
        #: The same client connection, as the tunnel takes it over.
        self.connection = connection
        self.upstream = upstream
        self.ip, self.address = client.ip, client.address
        self.trusted, self.forwarding = client.trusted, client.forwarding
        self.closed = False
        self.paused_writing = client.paused_writing
        self.done = False

    def start(self) -> None:
        """Take over both transports and relay what the worker sent after its 101."""
        client_transport = self.connection.transport
        upstream_transport = self.upstream.transport
        if client_transport is None or upstream_transport is None \
                or client_transport.is_closing() or upstream_transport.is_closing():
            self.abort()
            return
        near, far = _End(self, client_transport), _End(self, upstream_transport)
        near.other, far.other = far, near
        client_transport.set_protocol(near)
        upstream_transport.set_protocol(far)
        tail = self.upstream.tail
        if tail:
            client_transport.write(tail)
        if self.upstream.paused:
            upstream_transport.resume_reading()
        if self.paused_writing:  # the client is behind already: the worker waits
            upstream_transport.pause_reading()
        client_transport.resume_reading()  # paused when the upgrade request was parsed

    def ended(self) -> None:
        """Either side has closed: count the WebSocket out, forget the client connection."""
        if self.done:
            return
        self.done = True
        self.pool.websocket_closed(self.process)
        # The client connection's own bookkeeping (the front server's set of them).
        self.connection.connection_lost(None)

    # -- ClientSide, for the exchange's last steps ---------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""
        self.client.write(data)

    def abort(self) -> None:
        """Close both sides at once."""
        self.client.abort()
        self.upstream.close()
        self.ended()

    def finished(self, keep_alive: bool) -> None:
        """The exchange is over; the tunnel goes on (see :meth:`start`)."""
