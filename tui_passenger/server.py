"""The core as one object: pool + front proxy, with a start → stop lifecycle.

The headless runner, the dashboard and the tests all drive this; it imports no UI code.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from tui_passenger.config import Config
from tui_passenger.engine import OutputSink, RuntimeDir, become_subreaper
from tui_passenger.engine.output import log_line
from tui_passenger.pool import Pool
from tui_passenger.pool.pool import EventSink
from tui_passenger.proxy import FrontServer

log = logging.getLogger("tui_passenger")


class Server:
    """Serves every app of a config on one public address."""

    def __init__(self, config: Config, *, on_output: OutputSink | None = None,
                 on_event: EventSink | None = None) -> None:
        self.config = config
        self.runtime = RuntimeDir()
        self.pool = Pool(config, self.runtime.path, on_output=on_output or log_line,
                         on_event=on_event)
        self.proxy = FrontServer(config, self.pool)
        self._started = False
        self.address: tuple[str, int] | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind the public address, start each app's minimum of workers."""
        if self._started:
            raise RuntimeError("Server.start() called twice")
        self._started = True
        become_subreaper()
        sock = self._bind()
        self.address = sock.getsockname()[:2]
        await self.proxy.start(sock)
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
        self.proxy.stop_accepting()
        await self.pool.close(grace)
        await self.proxy.close(grace=1.0)
        self.runtime.close()
        self.stopped.set()
        log.info("stopped")
