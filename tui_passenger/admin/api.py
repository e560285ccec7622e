"""The admin API: HTTP on a Unix socket, mode 0600, for this user only (``SO_PEERCRED``).

GET ``/status`` (the :mod:`tui_passenger.status` snapshot; ``?fds=PID,…``: the fds of these
processes only, the others' ``fds`` empty; ``?fresh=1``: sampled now), GET ``/metrics`` (Prometheus
text), GET ``/events?since=N`` (log entries); POST ``/sampling`` {"paused": bool},
``/apps/{app}/scale`` {"count": N}, ``/apps/{app}/restart``, ``/apps/{app}/spawn-method``
{"method": "smart"|"direct"}, ``/apps/{app}/refork``, ``/processes/{pid}/kill``
{"force": false}, ``/processes/{pid}/stack`` (the Python stacks of a live worker or
preloader), ``/reload`` (read passenger.toml again), ``/stop`` (shut down gracefully). The
operations are :mod:`tui_passenger.operations`; these handlers only translate HTTP to them
and their results back. Errors are JSON ``{"error": reason}`` with a 4xx status. The
answers of GET ``/status`` and ``/events`` carry ``X-Served-Ms``: how long building them
held the event loop (a dashboard counts it in what watching costs).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tui_passenger.admin.client import SERVED_HEADER
from tui_passenger.admin.instance import running_instance
from tui_passenger.admin.metrics import Metrics
from tui_passenger.admin.paths import private_directory
from tui_passenger.listeners import Listener, StartError, claim_unix_path
from tui_passenger.operations import Done, Operations, RefusalKind, Refused
from tui_passenger.status import snapshot

if TYPE_CHECKING:
    from tui_passenger.server import Server

log = logging.getLogger("tui_passenger.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process on the other end of the Unix socket."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse other users' processes; turn a refusal into a JSON error with its status."""
    uid = peer_uid(request)
    try:
        if uid is not None and uid != os.getuid() and uid != 0:
            raise Refused(RefusalKind.FORBIDDEN, f"uid {uid} may not use this socket")
        return await handler(request)
    except Refused as exc:
        return web.json_response({"error": exc.reason}, status=exc.kind.value)


class AdminServer:
    """Serves the admin API for one :class:`~tui_passenger.server.Server`."""

    def __init__(self, server: Server, path: Path) -> None:
        self.server = server
        self.path = path
        self.metrics: Metrics = server.metrics  # the server's: the probe listener shares it
        self.operations = Operations(server)
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None

    def check(self) -> None:
        """Refuse to start (StartError, naming it) when an instance answers on our admin
        socket; called before anything of this start exists, and again by start()."""
        try:
            private_directory(self.path)
        except OSError as exc:
            raise StartError(str(exc)) from None
        running = running_instance(self.path)
        if running is not None:
            raise running.refusal()

    async def start(self) -> None:
        """Bind the socket (0600), refusing to take over a live instance's socket; a stale
        one (from an instance that did not exit cleanly) is removed. Server.start() has
        already asked check() for the sentence that names a running instance."""
        claim_unix_path(self.path, "the admin socket")
        app = web.Application(middlewares=[guard])
        app.add_routes([
            web.get("/status", self.status),
            web.get("/metrics", self.get_metrics),
            web.post("/apps/{app}/scale", self.scale),
            web.post("/apps/{app}/restart", self.restart),
            web.post("/apps/{app}/spawn-method", self.spawn_method),
            web.post("/apps/{app}/refork", self.refork),
            web.post("/processes/{pid}/kill", self.kill),
            web.post("/processes/{pid}/stack", self.stack),
            web.get("/events", self.get_events),
            web.post("/sampling", self.sampling),
            web.post("/reload", self.reload),
            web.post("/reopen-logs", self.reopen_logs),
            web.post("/stop", self.stop_instance),
        ])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600, no window where it is not
        try:
            # bind() itself refuses a path that exists: nothing is ever taken over.
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            hint = (" (another tui-passenger is starting with this config)"
                    if exc.errno == errno.EADDRINUSE else "")
            raise StartError(f"cannot create the admin socket {self.path}: "
                             f"{exc.strerror}{hint}") from None
        finally:
            os.umask(old_umask)
        self._listener = Listener(sock, str(self.path), created=self.path)
        os.chmod(self.path, 0o600)
        sock.listen(128)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        log.info("admin API on %s", self.path)

    async def stop(self) -> None:
        """Stop serving and remove the socket, if this instance created it."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- handlers: HTTP in, an operation, JSON out -----------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise Refused(RefusalKind.INVALID, f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Refused(RefusalKind.INVALID, "request body must be a JSON object")
        return data

    async def status(self, request: web.Request) -> web.Response:
        fds_of: frozenset[int] | None = None
        if "fds" in request.query:
            try:
                fds_of = frozenset(int(pid) for pid in request.query["fds"].split(",") if pid)
            except ValueError:
                raise Refused(RefusalKind.INVALID, "fds must be pids: fds=PID,PID") from None
        if request.query.get("fresh") == "1" and self.server.sampler is not None:
            await self.server.sample_now()
        start = time.perf_counter()
        return _served(web.json_response(snapshot(self.server, fds_of).to_json()), start)

    async def get_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise Refused(RefusalKind.INVALID, "since must be a number") from None
        start = time.perf_counter()
        last, entries = self.server.events.since(since)
        return _served(web.json_response({"seq": last, "events": entries}), start)

    async def sampling(self, request: web.Request) -> web.Response:
        paused = (await self._body(request)).get("paused")
        return _reply(await self.operations.pause_sampling(paused))

    async def reload(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.reload())

    async def reopen_logs(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.reopen_logs())

    async def stop_instance(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.stop())

    async def scale(self, request: web.Request) -> web.Response:
        count = (await self._body(request)).get("count")
        return _reply(await self.operations.scale(request.match_info["app"], count))

    async def restart(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.restart(request.match_info["app"]))

    async def spawn_method(self, request: web.Request) -> web.Response:
        method = (await self._body(request)).get("method")
        return _reply(await self.operations.set_spawn_method(request.match_info["app"], method))

    async def refork(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.refork(request.match_info["app"]))

    async def kill(self, request: web.Request) -> web.Response:
        force = bool((await self._body(request)).get("force", False))
        return _reply(await self.operations.kill(_pid(request), force=force))

    async def stack(self, request: web.Request) -> web.Response:
        return _reply(await self.operations.stack(_pid(request)))


def _pid(request: web.Request) -> int:
    try:
        return int(request.match_info["pid"])
    except ValueError:
        raise Refused(RefusalKind.INVALID, "pid must be a number") from None


def _served(response: web.Response, start: float) -> web.Response:
    """``response`` with the time since ``start`` (the loop held) in :data:`SERVED_HEADER`."""
    response.headers[SERVED_HEADER] = f"{(time.perf_counter() - start) * 1000:.3f}"
    return response


def _reply(done: Done) -> web.Response:
    return web.json_response(dict(done.reply))
