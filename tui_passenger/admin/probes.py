"""The probe listener: read-only HTTP on one TCP address (``[server] metrics_bind``), for
Prometheus, load balancers, systemd and Kubernetes on other machines.

GET ``/metrics``: the Prometheus text, the same as the admin API's. GET ``/healthz``: 200
while the manager's event loop runs its periodic work (a stuck loop does not answer at all;
a failed periodic task answers 503). GET ``/readyz``: 200 when every app has at least its
minimum of ready workers and the server is not shutting down, else 503 and one line naming
what is missing. Nothing else: every other path is 404 and every other method 405, so no
operator action is ever reachable from the network (those stay on the admin socket).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from aiohttp import web

from tui_passenger.listeners import format_address
from tui_passenger.pool.process import READY

if TYPE_CHECKING:
    from tui_passenger.server import Server

log = logging.getLogger("tui_passenger.admin")

PLAIN = "text/plain"


def readiness(server: Server) -> str | None:
    """Why the server should not get traffic now (one line), or None if it should."""
    if server.stopping:
        return "shutting down"
    short = []
    for group in server.pool.groups.values():
        wanted = group.min_instances
        if group.app.max_instances:
            wanted = min(wanted, group.app.max_instances)
        ready = sum(1 for process in group.processes if process.state == READY)
        if ready < wanted:
            short.append(f"{group.name} ({ready} of {wanted})")
    return "below min_instances: " + ", ".join(short) if short else None


class ProbeServer:
    """Serves the probes of one :class:`~tui_passenger.server.Server` on a TCP address."""

    def __init__(self, server: Server, address: tuple[str, int]) -> None:
        self.server = server
        self.host, self.port = address
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port chosen when 0 was asked for), once started."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the probe listener is not started")
        host, port = self._runner.addresses[0][:2]
        return host, port

    async def start(self) -> None:
        """Listen; OSError naming metrics_bind if the address cannot be had."""
        if self._runner is not None:
            raise RuntimeError("ProbeServer.start() called twice")
        app = web.Application()
        app.add_routes([
            web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        wanted = format_address(self.host, self.port)
        try:
            await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        except OSError as exc:
            # The event loop's text repeats the address as a tuple; say it as configured.
            detail = os.strerror(exc.errno) if exc.errno else str(exc)
            error = OSError(f"metrics_bind {wanted}: {detail}")
            error.errno = exc.errno
            raise error from None
        log.info("metrics and probes on http://%s/ (/metrics, /healthz, /readyz)",
                 format_address(*self.address))

    async def stop(self) -> None:
        """Stop listening (last thing before the admin socket goes, on shutdown)."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.server.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        problem = self.server.loop_problem()
        if problem is not None:
            return web.Response(status=503, text=problem + "\n", content_type=PLAIN)
        return web.Response(text="ok\n", content_type=PLAIN)

    async def readyz(self, request: web.Request) -> web.Response:
        reason = readiness(self.server)
        if reason is not None:
            return web.Response(status=503, text=reason + "\n", content_type=PLAIN)
        return web.Response(text="ready\n", content_type=PLAIN)
