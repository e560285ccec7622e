"""The admin API: HTTP on a Unix socket, mode 0600, for this user only (``SO_PEERCRED``).

GET ``/status`` (the :mod:`tui_passenger.status` snapshot), GET ``/metrics`` (Prometheus
text), GET ``/events?since=N`` (log entries); POST ``/sampling`` {"paused": bool},
``/apps/{app}/scale`` {"count": N}, ``/apps/{app}/restart``,
``/apps/{app}/spawn-method`` {"method": "smart"|"direct"}, ``/processes/{pid}/kill``
{"force": false}. Errors are JSON ``{"error": reason}`` with a 4xx status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tui_passenger.admin.metrics import Metrics
from tui_passenger.admin.paths import private_directory
from tui_passenger.status import snapshot

if TYPE_CHECKING:
    from tui_passenger.server import Server

log = logging.getLogger("tui_passenger.admin")


class AdminError(Exception):
    """A request the admin API refuses, with its HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process on the other end of the Unix socket."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse other users' processes; turn AdminError into a JSON error."""
    uid = peer_uid(request)
    if uid is not None and uid != os.getuid() and uid != 0:
        return web.json_response({"error": f"uid {uid} may not use this socket"}, status=403)
    try:
        return await handler(request)
    except AdminError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)


class AdminServer:
    """Serves the admin API for one :class:`~tui_passenger.server.Server`."""

    def __init__(self, server: Server, path: Path) -> None:
        self.server = server
        self.path = path
        self.metrics = Metrics(server)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind the socket (0600), refusing to take over a live instance's socket."""
        private_directory(self.path)
        if self.path.exists():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # stale, from an instance that did not exit cleanly
            else:
                raise OSError(f"another tui-passenger instance is using {self.path}")
            finally:
                probe.close()
        app = web.Application(middlewares=[guard])
        app.add_routes([
            web.get("/status", self.status),
            web.get("/metrics", self.get_metrics),
            web.post("/apps/{app}/scale", self.scale),
            web.post("/apps/{app}/restart", self.restart),
            web.post("/apps/{app}/spawn-method", self.spawn_method),
            web.post("/apps/{app}/refork", self.refork),
            web.post("/processes/{pid}/kill", self.kill),
            web.get("/events", self.get_events),
            web.post("/sampling", self.sampling),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        old_umask = os.umask(0o177)  # the socket is created 0600, no window where it is not
        try:
            site = web.UnixSite(self._runner, str(self.path))
            await site.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        log.info("admin API on %s", self.path)

    async def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- handlers ------------------------------------------------------------------------

    def _group(self, request: web.Request):
        name = request.match_info["app"]
        group = self.server.pool.groups.get(name)
        if group is None:
            known = ", ".join(sorted(self.server.pool.groups))
            raise AdminError(404, f"no app named {name!r} (apps: {known})")
        return group

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise AdminError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AdminError(400, "request body must be a JSON object")
        return data

    async def status(self, request: web.Request) -> web.Response:
        if request.query.get("fresh") == "1" and self.server.sampler is not None:
            await self.server.sample_now()
        return web.json_response(snapshot(self.server).to_json())

    async def get_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise AdminError(400, "since must be a number") from None
        last, entries = self.server.events.since(since)
        return web.json_response({"seq": last, "events": entries})

    async def sampling(self, request: web.Request) -> web.Response:
        paused = (await self._body(request)).get("paused")
        if not isinstance(paused, bool):
            raise AdminError(400, "paused must be true or false")
        sampler = self.server.sampler
        if sampler is None:
            raise AdminError(409, "sampling is disabled in this instance")
        sampler.pause() if paused else sampler.resume()
        return web.json_response({"paused": paused})

    async def scale(self, request: web.Request) -> web.Response:
        group = self._group(request)
        count = (await self._body(request)).get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise AdminError(400, f"count must be a whole number ≥ 0, got {count!r}")
        limit = group.app.max_instances or self.server.pool.max_pool_size
        if count > limit:
            raise AdminError(400, f"count {count} is above the limit of {limit} "
                                  "(max_instances / max_pool_size)")
        self.server.pool.scale(group, count)
        return web.json_response({"app": group.name, "min_instances": count})

    async def restart(self, request: web.Request) -> web.Response:
        group = self._group(request)
        replaced = await self.server.pool.restart(group)
        return web.json_response({"app": group.name, "replaced": replaced})

    async def spawn_method(self, request: web.Request) -> web.Response:
        group = self._group(request)
        method = (await self._body(request)).get("method")
        if method not in ("smart", "direct"):
            raise AdminError(400, f'method must be "smart" or "direct", got {method!r}')
        replaced = await self.server.pool.set_spawn_method(group, method)
        return web.json_response({"app": group.name, "spawn_method": method,
                                  "replaced": replaced})

    async def refork(self, request: web.Request) -> web.Response:
        group = self._group(request)
        try:
            replaced = await self.server.pool.refork_now(group)
        except ValueError as exc:
            raise AdminError(409, str(exc)) from None
        spawner = group.spawner
        return web.json_response({"app": group.name, "generation": spawner.generation,
                                  "mold": spawner.preloader.pid, "replaced": replaced})

    async def kill(self, request: web.Request) -> web.Response:
        try:
            pid = int(request.match_info["pid"])
        except ValueError:
            raise AdminError(400, "pid must be a number") from None
        process = self.server.pool.find(pid)
        if process is None:
            raise AdminError(404, f"pid {pid} is not a worker of this instance")
        force = bool((await self._body(request)).get("force", False))
        self.server.pool.kill(process, force=force)
        status = await process.worker.exited
        return web.json_response({"pid": pid, "app": process.group.name,
                                  "exit": status.describe()})
