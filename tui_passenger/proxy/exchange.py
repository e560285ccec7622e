"""One request's way through the proxy: route, queue for a worker, relay, answer.

An :class:`Exchange` is a small state machine (:class:`State`), driven by callbacks from
the client connection, the pool and the upstream connection: on the hot path (a free
worker with an idle keep-alive connection) no task or future is created. It sees the client
connection as a :class:`ClientSide` and the front server as a :class:`Front`, and reports
nothing back but ``client.finished()``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING, Protocol

import tui_passenger.proxy.pages as pages
from tui_passenger.engine import SpawnError
from tui_passenger.pool import PoolClosed, PoolProcess, QueueFull
from tui_passenger.pool.group import READY
from tui_passenger.proxy.headers import HOP_BY_HOP, Peer, build_upstream_request, connection_tokens
from tui_passenger.proxy.routing import request_path
from tui_passenger.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from tui_passenger.pool import Group, Pool
    from tui_passenger.pool.pool import Waiter
    from tui_passenger.proxy.accesslog import AccessLog
    from tui_passenger.proxy.request import Request, RequestObserver, Stats
    from tui_passenger.proxy.routing import Router

log = logging.getLogger("tui_passenger.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
NO_BODY_STATUS = frozenset({204, 304})


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


class State(enum.Enum):
    """Where an exchange is (``Exchange.state``)."""

    #: Being routed, or between workers: it holds no worker and waits in no queue.
    ROUTING = "routing"
    #: Waiting in its app's queue for a worker (``Exchange.waiter``).
    QUEUED = "queued"
    #: On a worker (``Exchange.process``): the request is sent, or is once connected.
    ON_WORKER = "on worker"
    #: The worker's response head has come: the response is being relayed.
    RELAYING = "relaying"
    #: Answered or given up; the client connection has been told (``finished``).
    DONE = "done"


ROUTING = State.ROUTING
QUEUED = State.QUEUED
ON_WORKER = State.ON_WORKER
RELAYING = State.RELAYING
DONE = State.DONE


class Exchange:
    """The life of one proxied request.

    ROUTING -> [QUEUED ->] ON_WORKER -> RELAYING -> DONE; to DONE also from ROUTING or
    QUEUED when the proxy answers itself (404, 502, 503, 504) or the client is gone. Every
    way off a worker goes through :meth:`_detach` (back to ROUTING), after which the caller
    says what becomes of the worker and its connection, and whether the request is retried,
    answered or dropped.
    """

    __slots__ = ("front", "client", "request", "group", "head", "process", "upstream",
                 "waiter", "attempt", "status", "chunked", "keep_alive", "head_only",
                 "request_id", "state", "timer", "complete_response")

    def __init__(self, front: Front, client: ClientSide, request: Request) -> None:
        self.front = front
        self.client = client
        self.request = request
        self.state = ROUTING
        self.group: Group | None = None
        #: The request head for the worker (built once: a retry sends it again).
        self.head = b""
        self.process: PoolProcess | None = None
        self.upstream: UpstreamConnection | None = None
        self.waiter: Waiter | None = None
        self.attempt = 1
        self.status = 0
        self.chunked = False
        #: A response that arrived whole, written to the client once the worker is free.
        self.complete_response: bytes | None = None
        self.keep_alive = request.keep_alive
        self.head_only = request.method == "HEAD"
        self.request_id = front.request_id(client, request)
        self.timer: asyncio.TimerHandle | None = None

    # -- getting a worker ----------------------------------------------------------------

    def start(self) -> None:
        """Route the request and ask the pool for a worker."""
        request = self.request
        routed = self.front.router.route(request.host, request.url, request_path)
        if routed is None:
            self.answer(pages.not_found(request.host, request.url.decode("latin-1")))
            return
        self.group, script_name = routed
        self.head = build_upstream_request(self.client, request, script_name, self.request_id)
        self._acquire()

    def _acquire(self) -> None:
        pool = self.front.pool
        group = self.group
        assert group is not None
        try:
            process = pool.try_checkout(group)
            if process is None:
                # Sent to a busy worker only if a retry elsewhere stays possible.
                request = self.request
                pipelinable = (request.body is None and request.method in IDEMPOTENT
                               and self.attempt == 1)
                if pipelinable:
                    process = pool.try_pipeline(group)
                if process is None:
                    self.state = QUEUED  # first: an answer may come from within enqueue()
                    waiter = pool.enqueue(group, self._on_process, pipelinable)
                    self.waiter = waiter if self.state is QUEUED else None  # not answered
                    return
        except QueueFull as exc:
            self._overloaded(exc)
            return
        except PoolClosed:
            self.front.stats.errors_503 += 1
            self.answer(pages.error(503, "server is shutting down"))
            return
        except SpawnError as exc:
            self.answer(pages.spawn_error(exc, group.app.environment))
            return
        self._send(process)

    def _on_process(self, process: PoolProcess | None, error: BaseException | None) -> None:
        """The pool's answer to the queued request: a worker, or why there is none."""
        self.waiter = None
        self.state = ROUTING
        if process is None:
            if isinstance(error, SpawnError):
                assert self.group is not None
                self.answer(pages.spawn_error(error, self.group.app.environment))
            elif isinstance(error, QueueFull):  # waited past max_request_queue_time
                self._overloaded(error)
            else:
                self.front.stats.errors_503 += 1
                self.answer(pages.error(503, str(error) or "no worker available"))
            return
        if self.client.closed:
            self._release(process)
            self._finish(False)
            return
        self._send(process)

    def _overloaded(self, refusal: QueueFull) -> None:
        """503 with Retry-After: the app's queue is full, or the request waited too long."""
        self.front.stats.errors_503 += 1
        self.answer(pages.error(503, str(refusal), retry_after=refusal.retry_after))

    def _send(self, process: PoolProcess) -> None:
        self.process = process
        self.state = ON_WORKER
        if process.sessions > process.worker.concurrency:  # pipelined behind a busy one
            self.front.pool.pipelined(process, self)
        limit = process.group.app.max_request_time
        if limit:
            self.timer = asyncio.get_running_loop().call_later(limit, self._too_long)
        connections = process.connections
        while connections:
            upstream = connections.pop()
            if upstream.usable:
                self._send_on(upstream)
                return
        asyncio.ensure_future(self._connect_and_send(process))

    async def _connect_and_send(self, process: PoolProcess) -> None:
        path = process.worker.socket_path
        try:
            upstream = await UpstreamConnection.open(path or "")
        except OSError as exc:
            if self.process is process:  # else it has left the worker meanwhile
                self._upstream_lost(f"cannot connect to {path}: {exc}", sent=False)
            return
        if self.process is process:
            self._send_on(upstream)
        else:
            upstream.close()

    def _send_on(self, upstream: UpstreamConnection) -> None:
        try:
            self._write_request(upstream)
        except ConnectionError as exc:
            self._upstream_lost(str(exc), sent=False)

    def _write_request(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        body = self.request.body
        if body is None:
            upstream.send(self, self.head, self.head_only)
        elif body.file is None:
            upstream.send(self, self.head + body.data, self.head_only)
        else:
            upstream.send_head(self, self.head, head_only=self.head_only)
            asyncio.ensure_future(upstream.send_body(body.chunks()))

    # -- leaving the worker --------------------------------------------------------------

    def _detach(self) -> None:
        """Leave the worker (ON_WORKER or RELAYING -> ROUTING), whatever the reason.

        Stops the max_request_time clock and forgets the worker and the connection to it.
        What becomes of them (connection kept or closed, slot released, worker drained or
        killed) and of the request (retried, answered, dropped) is for the caller to say.
        """
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        self.process = self.upstream = None
        self.state = ROUTING

    def _release(self, process: PoolProcess) -> None:
        """Give the worker's slot back (leaving its pipelined queue if still in it)."""
        pool = self.front.pool
        pool.unqueue(process, self)
        pool.release(process)

    # -- the worker's response (the ResponseSink of UpstreamConnection) ------------------

    def on_response_head(self, upstream: UpstreamConnection) -> None:
        """The worker's response head has come (with the body so far, often all of it)."""
        self.status = upstream.status
        self.state = RELAYING
        process = self.process
        if process is not None:
            # It has started: no longer waiting behind another request to be reclaimed.
            self.front.pool.unqueue(process, self)
        head = self._response_head(upstream)
        if upstream.complete:
            # Held until on_response_end() has handed the worker its next request: the
            # worker starts on it while we write this response out.
            self.complete_response = (head + b"".join(upstream.body) if not self.head_only
                                      else head)
            return
        if upstream.body:
            data = b"".join(upstream.body)
            self.client.write(head + (self._frame(data) if data else b""))
        else:
            self.client.write(head)
        if self.client.paused_writing:
            upstream.pause()

    def on_response_body(self, chunk: bytes) -> None:
        """More of a streamed response body."""
        if chunk and not self.head_only:
            self.client.write(self._frame(chunk))

    def on_response_end(self, upstream: UpstreamConnection) -> None:
        """The response is complete: keep the connection, free the worker, finish."""
        if self.chunked:
            self.client.write(b"0\r\n\r\n")
        process = self.process
        self._detach()
        if process is not None:
            # Not reused while a streamed body is still being written (the app answered
            # before reading it): the worker would take the next request for body bytes.
            if upstream.keep_alive and upstream.usable and process.state is READY:
                process.connections.append(upstream)
            else:
                upstream.close()
            self.front.pool.release(process)
        if self.complete_response is not None:
            self.client.write(self.complete_response)
            self.complete_response = None
        self._finish(self.keep_alive)

    def on_upstream_failed(self, upstream: UpstreamConnection, reason: str) -> None:
        """The connection to the worker failed (closed, or a bad response)."""
        self._upstream_lost(reason, sent=True)

    def _upstream_lost(self, reason: str, *, sent: bool) -> None:
        """The request could not be sent, or its response not received whole: retry it,
        answer 502, or (its response begun) cut the client off."""
        process = self.process
        relaying = self.state is RELAYING
        self._detach()  # the connection has failed, or was never made: nothing to close
        group = self.group
        assert group is not None
        pid = process.pid if process is not None else 0
        if process is not None:
            if not relaying:
                # A worker that dropped a request before answering gets no other one (it
                # has usually died and its exit may not have been seen yet). One that cut
                # a response short (the app failed mid-body) is healthy: not recycled.
                self.front.pool.drain(process, f"dropped a request: {reason}")
            self._release(process)
        if relaying:
            log.warning("%s: worker %d failed mid-response (%s); closing the client "
                        "connection", group.name, pid, reason)
            self.client.abort()
            self._finish(False)
            return
        if self.attempt == 1 and (not sent or self.request.method in IDEMPOTENT) \
                and not self.client.closed:
            self.attempt = 2
            self.front.stats.retries += 1
            log.warning("%s: worker %d failed before responding (%s); retrying", group.name,
                        pid, reason)
            self._acquire()
            return
        self.front.stats.errors_502 += 1
        self.answer(pages.error(502, f"worker {pid} of {group.name} failed before "
                                     f"responding: {reason}"))

    def _too_long(self) -> None:
        """``max_request_time`` is up: 504 (or cut the response), kill and replace the worker."""
        self.timer = None
        process, upstream = self.process, self.upstream
        if process is None:
            return
        relaying = self.state is RELAYING
        self._detach()
        if upstream is not None:
            upstream.detach()
        limit = process.group.app.max_request_time
        log.warning("%s: request %s ran longer than max_request_time (%g s); killing worker %d",
                    process.group.name, self.request.url.decode("latin-1"), limit, process.pid)
        self._release(process)
        self.front.pool.kill(process, force=True,
                             reason=f"max_request_time ({limit:g} s) exceeded")
        if relaying:  # the head has gone out: the response can only be cut short
            self.client.abort()
            self._finish(False)
        else:
            self.answer(pages.error(504, f"the application did not answer within "
                                         f"max_request_time ({limit:g} s)"))

    def reclaim(self) -> None:
        """Taken back (by the pool) from a worker still busy with a slow request before this
        one started: closing the connection tells the worker to skip it; ask again.

        The pool has already taken it out of the worker's queue and given the slot back.
        """
        upstream = self.upstream
        self._detach()
        if upstream is not None:
            upstream.detach()
        self._acquire()

    # -- the client side -----------------------------------------------------------------

    def client_gone(self) -> None:
        """The client disconnected: leave the queue, or stop relaying the response.

        Closing the upstream connection tells the worker too (a WSGI app's write fails, an
        ASGI app gets http.disconnect) instead of letting it stream into nowhere.
        """
        waiter, process, upstream = self.waiter, self.process, self.upstream
        if waiter is not None:
            assert self.group is not None
            self.front.pool.withdraw(self.group, waiter)
            self.waiter = None
            self._finish(False)
        elif upstream is not None and process is not None:
            self._detach()
            upstream.detach()
            self._release(process)
            self._finish(False)

    def client_paused(self) -> None:
        """The client cannot take more for now: stop reading the worker's response."""
        if self.upstream is not None:
            self.upstream.pause()

    def client_resumed(self) -> None:
        """The client can take more again."""
        if self.upstream is not None:
            self.upstream.resume()

    def answer(self, page: pages.Page) -> None:
        """Answer with one of the proxy's own pages."""
        self.status = page.status
        keep_alive = self.keep_alive and not page.close
        self.client.write(pages.render(page, self.request_id, keep_alive=keep_alive,
                                       head_only=self.head_only))
        self._finish(keep_alive)

    # -- framing -------------------------------------------------------------------------

    def _response_head(self, upstream: UpstreamConnection) -> bytes:
        status = upstream.status
        if upstream.plain and upstream.has_length and self.keep_alive and status >= 200 \
                and self.request.version == "1.1" and not self.front.closing \
                and upstream.head.startswith(b"HTTP/1.1 "):
            # The common case: the worker's head goes out as it came, plus the request id.
            return b"%bX-Request-Id: %b\r\n\r\n" % (upstream.head, self.request_id)
        raw = upstream.headers
        dropped = HOP_BY_HOP | connection_tokens(raw) if len(raw) else HOP_BY_HOP
        parts = [b"HTTP/1.1 ", str(status).encode(), b" ", upstream.reason, b"\r\n"]
        has_length = False
        for name, value in raw:
            lower = name.lower()
            if lower in dropped:
                continue
            if lower == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        no_body = status < 200 or status in NO_BODY_STATUS
        if not has_length and not no_body:
            if upstream.complete:
                if not self.head_only:
                    parts += (b"Content-Length: ",
                              str(sum(map(len, upstream.body))).encode(), b"\r\n")
            elif self.request.version == "1.1":
                self.chunked = not self.head_only
                if self.chunked:
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 client: the end of the body is the close
        parts += (b"X-Request-Id: ", self.request_id, b"\r\n")
        if not self.keep_alive or self.front.closing:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n\r\n")
        elif self.request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    def _frame(self, data: bytes) -> bytes:
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data

    def _finish(self, keep_alive: bool) -> None:
        """Count, log and observe the request, then hand the connection back (-> DONE)."""
        if self.state is DONE:
            return
        self.state = DONE
        request = self.request
        if request.body is not None:
            request.body.close()
        front = self.front
        status = self.status
        stats = front.stats
        stats.requests += 1
        stats.by_class[min(status // 100, 5)] += 1
        elapsed = time.perf_counter() - request.received
        group = self.group
        group_name = "-"
        if group is not None:
            group_name = group.name
            group.requests += 1
        client = self.client
        access_log = front.access_log
        if access_log is not None:
            access_log.record(client.ip, request, status, group_name, elapsed, self.request_id)
        on_request = front.on_request
        if on_request is not None:
            on_request(group_name, status, elapsed)
        client.finished(keep_alive and not client.closed)
