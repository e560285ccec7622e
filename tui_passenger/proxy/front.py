"""The public side: accept connections, route requests to apps, keep the counters.

The per-connection protocol is :class:`~tui_passenger.proxy.client.ClientConnection` and
the per-request logic :class:`~tui_passenger.proxy.exchange.Exchange`; both are plain
callback code on the event loop (uvloop when installed), with httptools parsing both the
client's requests and the workers' responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable

from tui_passenger.config import Config
from tui_passenger.pool import Group, Pool
from tui_passenger.proxy.client import ClientConnection, Request
from tui_passenger.proxy.headers import (
    FORWARDED,
    HOP_BY_HOP,
    INTERNAL_PREFIX,
    REFRAMED,
    TrustedProxies,
    connection_tokens,
)
from tui_passenger.proxy.routing import Router

RequestObserver = Callable[[str, int, float], None]


class Stats:
    """Counters the dashboard and /metrics read."""

    __slots__ = ("requests", "by_class", "retries", "errors_502", "errors_503")

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0] * 6  # index = status // 100
        self.retries = 0
        self.errors_502 = 0
        self.errors_503 = 0

    def count(self, status: int) -> None:
        """One response with ``status`` was sent."""
        self.requests += 1
        self.by_class[min(status // 100, 5)] += 1


class FrontServer:
    """Listens on the public address and hands each request to an Exchange."""

    def __init__(self, config: Config, pool: Pool,
                 on_request: RequestObserver | None = None) -> None:
        self.config = config
        self.pool = pool
        self.on_request = on_request
        self.access_log = config.server.access_log
        self.router: Router[Group] = Router(
            (app.hosts, app.base_uri, app.default, pool.groups[app.name])
            for app in config.apps)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self.stats = Stats()
        self.connections: set[ClientConnection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-".encode()

    async def start(self, sock: socket.socket) -> None:
        """Serve connections arriving on the listening socket ``sock``."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientConnection(self), sock=sock,
                                                backlog=1024)
        self._sweeper = asyncio.ensure_future(self._sweep_idle())

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections go on."""
        if self._server is not None:
            self._server.close()

    def begin_closing(self) -> None:
        """Answer what is in flight with ``Connection: close``; let idle clients go now."""
        self.closing = True
        for connection in list(self.connections):
            if connection.idle:
                connection.close()

    async def close(self, grace: float) -> None:
        """Close idle connections now, busy ones when their response is done."""
        self.closing = True
        self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            for connection in list(self.connections):
                if connection.idle:
                    connection.close()
            if self.connections:
                await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _sweep_idle(self) -> None:
        server = self.config.server
        shortest = min(server.client_header_timeout, server.client_body_timeout,
                       server.keepalive_timeout)
        interval = min(5.0, max(0.05, shortest / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now)

    # -- per request ---------------------------------------------------------------------

    def request_id(self, client: ClientConnection, request: Request) -> bytes:
        """The request's id: a trusted proxy's X-Request-Id, else a new one."""
        if client.trusted and not request.plain:
            for name, value in request.headers:
                if name.lower() == b"x-request-id":
                    return value
        return b"%b%d" % (self._id_prefix, next(self._ids))

    def upstream_head(self, client: ClientConnection, request: Request, script_name: str,
                      request_id: bytes) -> bytes:
        """The request line and headers sent to the worker."""
        if request.plain and not script_name and request.body is None:
            # The common case: nothing to drop or rewrite.
            return b"%b %b HTTP/1.1\r\n%b%bX-Forwarded-Host: %b\r\nX-Request-Id: %b\r\n\r\n" % (
                request.method.encode(), request.url,
                b"".join([b"%b: %b\r\n" % header for header in request.headers]),
                client.forwarding, request.host.encode("latin-1"), request_id)
        raw = request.headers
        dropped = HOP_BY_HOP | REFRAMED | connection_tokens(raw)
        trusted = client.trusted
        parts = [request.method.encode(), b" ", request.url, b" HTTP/1.1\r\n"]
        forwarded: dict[bytes, bytes] = {}
        for name, value in raw:
            lower = name.lower()
            if lower in dropped or lower.startswith(INTERNAL_PREFIX) or lower == b"x-request-id":
                continue
            if lower in FORWARDED:
                # Believed only from trusted proxies; otherwise replaced by ours.
                if trusted:
                    previous = forwarded.get(lower)
                    forwarded[lower] = previous + b", " + value if previous else value
                continue
            parts += (name, b": ", value, b"\r\n")
        ip = client.ip.encode()
        chain = forwarded.get(b"x-forwarded-for")
        scheme = forwarded.get(b"x-forwarded-proto") or b"http"
        parts += (b"X-Forwarded-For: ", chain + b", " + ip if chain else ip,
                  b"\r\nX-Forwarded-Proto: ", scheme,
                  b"\r\nX-Forwarded-Host: ",
                  forwarded.get(b"x-forwarded-host") or request.host.encode("latin-1"),
                  b"\r\nX-Request-Id: ", request_id,
                  b"\r\nX-Passenger-Remote-Addr: ", client.address, b"\r\n")
        if scheme != b"http":  # a worker takes no X-Passenger-Scheme for http
            parts += (b"X-Passenger-Scheme: ", scheme, b"\r\n")
        if script_name:
            parts += (b"X-Passenger-Script-Name: ", script_name.encode("latin-1"), b"\r\n")
        body = request.body
        if body is not None:
            parts += (b"Content-Length: ", str(body.length).encode(), b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
