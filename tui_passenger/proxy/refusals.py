"""How a client connection refuses requests itself: in turn after the responses it owes,
with an access log line, and when a client is too slow (the connection's
:class:`Refusals` side).

:class:`Refusals` is a base class of :class:`~tui_passenger.proxy.client.ClientConnection`
(a mixin without state of its own), as :class:`~tui_passenger.proxy.relay.ResponseRelay`
is of the exchange.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import tui_passenger.proxy.pages as pages
from tui_passenger.proxy.headers import FORBIDDEN_TRAILERS
from tui_passenger.proxy.request import Request
from tui_passenger.proxy.sides import Front

if TYPE_CHECKING:
    from tui_passenger.config import Config
    from tui_passenger.proxy.exchange import Exchange
    from tui_passenger.proxy.headers import TrustedProxies

#: Request line plus headers beyond this size are refused with 431, whatever the per-line
#: limits ([server] limit_request_line, limit_request_field_size) allow.
MAX_HEAD_SIZE = 64 * 1024


class FrontForClients(Front, Protocol):
    """What a client connection needs of the front server (besides what its exchanges do)."""

    config: Config
    #: The open client connections.
    connections: set[Any]
    trusted: TrustedProxies


class Stop(Exception):
    """Raised from a parser callback to stop parsing (the connection is being closed)."""


class Refusals:
    """The refusing half of a client connection."""

    if not TYPE_CHECKING:
        # Empty at run time (the connection's own slots hold everything); hidden from the
        # type checker, which would otherwise refuse the attributes used here.
        __slots__ = ()
    else:  # the connection's slots
        front: FrontForClients
        ip: str
        queue: deque[Request]
        current: Exchange | None
        request: Request | None
        closed: bool
        head_started: float
        body_started: float
        last_active: float

        def write(self, data: bytes) -> None: ...
        def close(self) -> None: ...
        def pause_reading(self) -> None: ...

    def reject_in_turn(self, page: pages.Page) -> None:
        """Answer with ``page`` and close, after the responses already owed (pipelining)."""
        if self.current is None and not self.queue:
            self.reject(page)
            return
        failed = Request()
        partial = self.request
        if partial is not None and partial.line_known:  # logged with its request line
            failed.method, failed.url, failed.version = (partial.method, partial.url,
                                                         partial.version)
            failed.headers, failed.line_known = partial.headers, True
        failed.error = page
        failed.keep_alive = False
        self.request = None
        self.queue.append(failed)
        self.pause_reading()  # nothing after a broken request can be parsed

    def reject(self, page: pages.Page, request: Request | None = None) -> None:
        """Answer with one of the proxy's own pages and close the connection; the refused
        ``request`` (else the one being read, if any) gets its access log line."""
        self.front.stats.count(page.status)
        access_log = self.front.access_log
        if access_log is not None:
            request = request or self.request
            elapsed = time.monotonic() - self.head_started if request is not None else 0.0
            access_log.record_refusal(self.ip, request, page.status, len(page.body), elapsed)
        self.write(pages.render(page, b"", keep_alive=False))
        self.close()

    def _refuse(self, status: int, why: str) -> None:
        """Refuse the request being parsed (after the responses owed) and stop parsing."""
        self.reject_in_turn(pages.error(status, why, close=True))
        raise Stop

    def _count(self, request: Request | None, size: int) -> None:
        assert request is not None
        request.head_size += size
        if request.head_size > MAX_HEAD_SIZE:
            self._refuse(431, f"request head larger than {MAX_HEAD_SIZE} bytes")

    def _trailer(self, name: bytes) -> None:
        """A trailer field: never merged into the header section (RFC 9110 6.5.1), so dropped
        (WSGI has no trailers); one that only makes sense before the content is refused."""
        if name.lower() in FORBIDDEN_TRAILERS:
            self._refuse(400, f"{name.decode('latin-1')} is not allowed as a trailer field")

    def eof_received(self) -> bool | None:
        """The client closed its sending side: as before, taken for gone (its queued
        requests are withdrawn); a request it cut short, with nothing owed before it, gets
        a 400 first rather than silence."""
        if self.request is not None and self.current is None and not self.queue \
                and not self.closed:
            self.reject(pages.error(
                400, "the client closed the connection in the middle of a request", close=True))
        return None

    @property
    def idle(self) -> bool:
        """No request running, queued or half received."""
        return self.current is None and not self.queue and self.request is None

    def sweep(self, now: float) -> None:
        """Apply the client timeouts: 408 for a head or body too slow, close when idle."""
        server = self.front.config.server
        if self.request is not None:
            if self.body_started:
                if now - self.body_started > server.client_body_timeout:
                    self._timed_out(f"request body not received within client_body_timeout "
                                    f"({server.client_body_timeout:g} s)")
            elif now - self.head_started > server.client_header_timeout:
                self._timed_out(f"request head not received within client_header_timeout "
                                f"({server.client_header_timeout:g} s)")
        elif self.idle and now - self.last_active > server.keepalive_timeout:
            self.close()

    def _timed_out(self, why: str) -> None:
        # (reject_in_turn answers the pipelined requests before it first, if any)
        self.reject_in_turn(pages.error(408, why, close=True))
