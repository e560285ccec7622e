"""The public side: an aiohttp low-level server that hands each request to a worker.

Per request: route to an app, receive the body completely, check out the least busy worker
(waiting in the app's queue if all are busy), send the request over a persistent keep-alive
connection to the worker's Unix socket, stream the response back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

from tui_passenger.config import Config
from tui_passenger.engine import SpawnError
from tui_passenger.pool import Group, Pool, PoolClosed, PoolProcess, QueueFull
from tui_passenger.pool.group import READY
from tui_passenger.proxy import pages
from tui_passenger.proxy.body import BodyTooLarge, RequestBody, receive_body
from tui_passenger.proxy.headers import (
    FORWARDED,
    HOP_BY_HOP,
    INTERNAL_PREFIX,
    REFRAMED,
    TrustedProxies,
    connection_tokens,
)
from tui_passenger.proxy.routing import Router
from tui_passenger.proxy.upstream import UpstreamConnection, UpstreamError

access_log = logging.getLogger("tui_passenger.access")
log = logging.getLogger("tui_passenger.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
REQUEST_ID = "X-Request-Id"


class Stats:
    """Counters the dashboard and /metrics read."""

    __slots__ = ("requests", "responses_by_class", "retries", "errors_502", "errors_503",
                 "in_flight")

    def __init__(self) -> None:
        self.requests = 0
        self.responses_by_class = [0] * 6
        self.retries = 0
        self.errors_502 = 0
        self.errors_503 = 0
        self.in_flight = 0


class ProxyHandler:
    """The request handler given to ``aiohttp.web.Server``."""

    def __init__(self, config: Config, pool: Pool,
                 on_request: Callable[[str, int, float], None] | None = None) -> None:
        self.config = config
        self.pool = pool
        self.router: Router[Group] = Router(
            (app.hosts, app.base_uri, app.default, pool.groups[app.name])
            for app in config.apps)
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self.stats = Stats()
        self.on_request = on_request
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}"
        self._access = config.server.access_log

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        request_id = request.headers.get(REQUEST_ID) if request.remote in self.trusted else None
        request_id = request_id or f"{self._id_prefix}-{next(self._ids)}"
        group_name, pid = "-", 0
        try:
            routed = self.router.route(request.host, request.path)
            if routed is None:
                response = pages.not_found(request)
            else:
                group, script_name = routed
                group_name = group.name
                response, pid = await self._proxy(request, group, script_name, request_id)
        finally:
            stats.in_flight -= 1
        response.headers[REQUEST_ID] = request_id
        stats.responses_by_class[min(response.status // 100, 5)] += 1
        elapsed = time.perf_counter() - started
        if self._access:
            access_log.info('%s "%s %s HTTP/%d.%d" %d app=%s pid=%d %.2fms id=%s',
                            request.remote, request.method, request.raw_path,
                            request.version.major, request.version.minor, response.status,
                            group_name, pid, elapsed * 1000, request_id)
        if self.on_request is not None:
            self.on_request(group_name, response.status, elapsed)
        return response

    async def _proxy(self, request: web.BaseRequest, group: Group, script_name: str,
                     request_id: str) -> tuple[web.StreamResponse, int]:
        try:
            body = await receive_body(request, self.config.server.client_max_body_size,
                                      self.config.server.client_body_buffer_size)
        except BodyTooLarge as exc:
            return pages.error(413, str(exc), close=True), 0
        except asyncio.IncompleteReadError:
            return pages.error(400, "request body ended early", close=True), 0
        try:
            head = self._upstream_head(request, script_name, request_id, body)
            return await self._exchange(request, group, head, body)
        finally:
            body.close()

    async def _exchange(self, request: web.BaseRequest, group: Group, head: bytes,
                        body: RequestBody) -> tuple[web.StreamResponse, int]:
        head_only = request.method == "HEAD"
        for attempt in (1, 2):
            try:
                process = await self.pool.checkout(group)
            except QueueFull as exc:
                self.stats.errors_503 += 1
                return pages.error(503, str(exc)), 0
            except PoolClosed:
                self.stats.errors_503 += 1
                return pages.error(503, "server is shutting down"), 0
            except SpawnError as exc:
                return pages.spawn_error(exc, group.app.environment), 0
            try:
                connection = await self._connection(process)
                if body.file is None:
                    await connection.send(head, body.data, head_only=head_only)
                else:
                    await connection.send_stream(head, body.chunks(), head_only=head_only)
            except (UpstreamError, OSError) as exc:
                # A worker that drops a request is not trusted with another one (it has
                # usually died; its exit may not have been seen yet).
                self.pool.drain(process, f"dropped a request: {exc}")
                self.pool.release(process)
                sent = getattr(exc, "sent", False)
                if attempt == 1 and (not sent or request.method in IDEMPOTENT):
                    self.stats.retries += 1
                    log.warning("%s: worker %d failed before responding (%s); retrying",
                                group.name, process.pid, exc)
                    continue
                self.stats.errors_502 += 1
                return pages.error(502, f"worker {process.pid} of {group.name} failed "
                                        f"before responding: {exc}"), process.pid
            try:
                return await self._respond(request, process, connection), process.pid
            finally:
                self.pool.release(process)
        raise AssertionError("unreachable")

    async def _connection(self, process: PoolProcess) -> UpstreamConnection:
        while process.connections:
            connection = process.connections.pop()
            if connection.usable:
                return connection
        path = process.worker.socket_path
        assert path is not None
        try:
            return await UpstreamConnection.open(path)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {path}: {exc}", sent=False) from exc

    async def _respond(self, request: web.BaseRequest, process: PoolProcess,
                       connection: UpstreamConnection) -> web.StreamResponse:
        headers = self._response_headers(connection.headers)
        reason = connection.reason.decode("latin-1") or None
        if connection.complete:
            body = connection.take_body()
            self._recycle(process, connection)
            if request.method == "HEAD":
                response = web.StreamResponse(status=connection.status, reason=reason,
                                              headers=headers)
                await response.prepare(request)
                return response
            return web.Response(status=connection.status, reason=reason, headers=headers,
                                body=body)
        response = web.StreamResponse(status=connection.status, reason=reason, headers=headers)
        await response.prepare(request)
        try:
            while (chunk := await connection.next_chunk()) is not None:
                await response.write(chunk)
        except UpstreamError as exc:
            log.warning("%s: worker %d died mid-response (%s); closing the client connection",
                        process.group.name, process.pid, exc)
            connection.close()
            if request.transport is not None:
                request.transport.close()
            return response
        self._recycle(process, connection)
        await response.write_eof()
        return response

    @staticmethod
    def _recycle(process: PoolProcess, connection: UpstreamConnection) -> None:
        if connection.keep_alive and connection.usable and process.state is READY:
            process.connections.append(connection)
        else:
            connection.close()

    @staticmethod
    def _response_headers(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
        dropped = HOP_BY_HOP | connection_tokens(raw)
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in raw:
            lower = name.lower()
            if lower in dropped:
                continue
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        return headers

    def _upstream_head(self, request: web.BaseRequest, script_name: str, request_id: str,
                       body: RequestBody) -> bytes:
        raw = request.raw_headers
        dropped = HOP_BY_HOP | REFRAMED | connection_tokens(raw)
        peer = request.remote or ""
        trusted = peer in self.trusted
        lines = [f"{request.method} {request.raw_path} HTTP/1.1".encode("latin-1")]
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
            lines.append(name + b": " + value)
        client = peer.encode("latin-1")
        chain = forwarded.get(b"x-forwarded-for")
        scheme = forwarded.get(b"x-forwarded-proto") or (b"https" if request.secure else b"http")
        lines.append(b"X-Forwarded-For: " + (chain + b", " + client if chain else client))
        lines.append(b"X-Forwarded-Proto: " + scheme)
        lines.append(b"X-Forwarded-Host: " + (forwarded.get(b"x-forwarded-host")
                                              or request.host.encode("latin-1")))
        lines.append(b"X-Request-Id: " + request_id.encode("latin-1"))
        lines.append(b"X-Passenger-Remote-Addr: " + self._peer_address(request))
        lines.append(b"X-Passenger-Scheme: " + scheme)
        if script_name:
            lines.append(b"X-Passenger-Script-Name: " + script_name.encode("latin-1"))
        if body.length or request.body_exists:
            lines.append(b"Content-Length: " + str(body.length).encode())
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    @staticmethod
    def _peer_address(request: web.BaseRequest) -> bytes:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = peer[0]
            return (f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}").encode()
        return (request.remote or "").encode("latin-1")
