"""The core as one object: pool + front proxy, with a start → stop lifecycle.

The headless runner, the dashboard and the tests all drive this; it imports no UI code.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from tui_passenger.config import Config
from tui_passenger.engine import OutputSink, RuntimeDir, become_subreaper
from tui_passenger.engine.output import log_line
from tui_passenger.pool import Pool
from tui_passenger.pool.pool import EventSink
from tui_passenger.proxy import ProxyHandler

log = logging.getLogger("tui_passenger")


class Server:
    """Serves every app of a config on one public address."""

    def __init__(self, config: Config, *, on_output: OutputSink | None = None,
                 on_event: EventSink | None = None) -> None:
        self.config = config
        self.runtime = RuntimeDir()
        self.pool = Pool(config, self.runtime.path, on_output=on_output or log_line,
                         on_event=on_event)
        self.proxy = ProxyHandler(config, self.pool)
        self._runner: web.ServerRunner | None = None
        self._site: web.SockSite | None = None
        self.address: tuple[str, int] | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind the public address, start each app's minimum of workers."""
        if self._runner is not None:
            raise RuntimeError("Server.start() called twice")
        become_subreaper()
        server = web.Server(self.proxy, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False,
                                        shutdown_timeout=self.config.server.shutdown_timeout)
        await self._runner.setup()
        sock = self._bind()
        self.address = sock.getsockname()[:2]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self.pool.start()
        log.info("listening on http://%s:%d/", *self.address)

    def _bind(self) -> socket.socket:
        host, port = self.config.server.address, self.config.server.port
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = info[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    @property
    def url(self) -> str:
        """The public base URL."""
        assert self.address is not None
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_timeout), stop all."""
        grace = self.config.server.shutdown_timeout
        if self._site is not None:
            await self._site.stop()  # closes the listening socket only
        await self.pool.close(grace)
        if self._runner is not None:
            await self._runner.cleanup()
        self.runtime.close()
        self.stopped.set()
        log.info("stopped")
