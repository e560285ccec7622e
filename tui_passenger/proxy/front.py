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
from collections.abc import Iterable

from tui_passenger.config import Config
from tui_passenger.pool import Group, Pool
from tui_passenger.proxy.accesslog import AccessLog
from tui_passenger.proxy.client import ClientConnection
from tui_passenger.proxy.headers import Peer, TrustedProxies
from tui_passenger.proxy.request import Request, RequestObserver, Stats
from tui_passenger.proxy.routing import Router


class FrontServer:
    """Listens on the public addresses and hands each request to an Exchange."""

    def __init__(self, config: Config, pool: Pool,
                 on_request: RequestObserver | None = None) -> None:
        self.config = config
        self.pool = pool
        self.on_request = on_request
        self.access_log = AccessLog.open(config.server)
        self.router = self._router(config)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self.stats = Stats()
        self.connections: set[ClientConnection] = set()
        self.closing = False
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-".encode()

    def _router(self, config: Config) -> Router[Group]:
        return Router((app.hosts, app.base_uri, app.default, self.pool.groups[app.name])
                      for app in config.apps)

    def reconfigure(self, config: Config) -> None:
        """Route by ``config``'s apps (whose groups the pool has by now) and apply its
        ``[server]`` settings. Each is one assignment on the event loop: a request is
        routed by the old routes or the new ones, never by a mix (a configuration reload)."""
        self.router = self._router(config)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self._reopen_access_log(config)
        self.config = config

    def _reopen_access_log(self, config: Config) -> None:
        """Keep the access log if its settings are the same, else flush it and open the new."""
        old = self.access_log
        if old is not None and old.same(config.server):
            return
        self._switch_access_log(AccessLog.open(config.server))

    def reopen_access_log(self) -> str | None:
        """Open the access log again by its name (after logrotate moved it); where it goes
        now, None if it is off."""
        self._switch_access_log(AccessLog.open(self.config.server))
        return self.access_log.where if self.access_log is not None else None

    def _switch_access_log(self, new: AccessLog | None) -> None:
        """Requests from now on go to ``new``; the old log writes what it has and closes."""
        old, self.access_log = self.access_log, new
        if old is not None:
            old.close()

    async def start(self, sockets: Iterable[socket.socket]) -> None:
        """Serve connections arriving on each of the listening ``sockets`` (TCP or Unix)."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            # create_server for Unix sockets too: create_unix_server would remove the
            # socket file on close, and a file systemd made (socket activation) is not ours.
            self._servers.append(await loop.create_server(
                lambda: ClientConnection(self), sock=sock, backlog=1024))
        self._sweeper = asyncio.ensure_future(self._sweep_idle())

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections go on."""
        for server in self._servers:
            server.close()

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
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self.access_log is not None:
            self.access_log.close()  # every line of a graceful stop is written

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

    def request_id(self, peer: Peer, request: Request) -> bytes:
        """The request's id: a trusted proxy's X-Request-Id, else a new one."""
        if peer.trusted and not request.plain:
            for name, value in request.headers:
                if name.lower() == b"x-request-id":
                    return value
        return b"%b%d" % (self._id_prefix, next(self._ids))
