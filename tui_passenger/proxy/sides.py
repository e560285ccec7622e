"""What an :class:`~tui_passenger.proxy.exchange.Exchange` (and its response relay and
WebSocket tunnel) needs of the two sides it joins: the client connection and the front
server. Protocols only, in a module of their own so that none of those imports another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tui_passenger.proxy.headers import Peer

if TYPE_CHECKING:
    from tui_passenger.pool import Group, Pool
    from tui_passenger.proxy.accesslog import AccessLog
    from tui_passenger.proxy.request import Request, RequestObserver, Stats
    from tui_passenger.proxy.routing import Router


class ClientSide(Peer, Protocol):
    """What an exchange needs of its client connection (besides who the peer is)."""

    #: The connection is closed or closing: what is written is dropped.
    closed: bool
    #: The client is not keeping up: the worker's response is read no faster.
    paused_writing: bool

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""

    def abort(self) -> None:
        """Close at once: the response cannot be completed."""

    def finished(self, keep_alive: bool) -> None:
        """The exchange is over (answered or given up); the connection may go on."""


class Front(Protocol):
    """What an exchange needs of the front server."""

    router: Router[Group]
    pool: Pool
    stats: Stats
    #: Where an access log line per request goes (None: off).
    access_log: AccessLog | None
    #: Shutting down: responses go out with ``Connection: close``.
    closing: bool
    on_request: RequestObserver | None

    def request_id(self, peer: Peer, request: Request) -> bytes:
        """The request's X-Request-Id."""
