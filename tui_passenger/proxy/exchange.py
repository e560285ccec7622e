"""One request's way through the proxy: route, queue for a worker, relay, answer.

An :class:`Exchange` is a small state machine (:class:`~.states.State`), driven by
callbacks from the client connection, the pool and the upstream connection: on the hot path
(a free worker with an idle keep-alive connection) no task or future is created. It sees the
client connection as a :class:`ClientSide` and the front server as a :class:`Front`, and
reports nothing back but ``client.finished()``. How the worker's response is framed for
the client is its base class :class:`~.relay.ResponseRelay`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import tui_passenger.proxy.pages as pages
from tui_passenger.engine import SpawnError
from tui_passenger.pool import PoolClosed, PoolProcess, QueueFull
from tui_passenger.proxy.headers import build_upstream_request
from tui_passenger.proxy.relay import ResponseRelay
from tui_passenger.proxy.routing import request_path
from tui_passenger.proxy.sides import ClientSide, Front
from tui_passenger.proxy.states import DONE, ON_WORKER, QUEUED, RELAYING, ROUTING
from tui_passenger.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from tui_passenger.pool import Group
    from tui_passenger.pool.pool import Waiter
    from tui_passenger.proxy.request import Request

log = logging.getLogger("tui_passenger.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Exchange(ResponseRelay):
    """The life of one proxied request.

    ROUTING -> [QUEUED ->] ON_WORKER -> RELAYING -> DONE; to DONE also from ROUTING or
    QUEUED when the proxy answers itself (404, 502, 503, 504) or the client is gone. Every
    way off a worker goes through :meth:`_detach` (back to ROUTING), after which the caller
    says what becomes of the worker and its connection, and whether the request is retried,
    answered or dropped.
    """

    __slots__ = ("front", "client", "request", "group", "head", "process", "upstream",
                 "waiter", "attempt", "status", "chunked", "keep_alive", "head_only",
                 "request_id", "state", "timer", "complete_response", "sent")

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
        #: Body bytes sent to the client (the access log's bytes).
        self.sent = 0
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
        bodyless = self.request.body is None
        while connections:
            upstream = connections.pop()
            try:
                if bodyless:  # self._write_request(upstream), without the call
                    upstream.send(self, self.head, self.head_only)
                    self.upstream = upstream
                else:
                    self._write_request(upstream)
            except ConnectionError:  # closed meanwhile (by the worker, idle): the next one
                continue
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
        if self.process is not process:  # it has left the worker meanwhile
            upstream.close()
            return
        try:
            self._write_request(upstream)
        except ConnectionError as exc:
            self._upstream_lost(str(exc), sent=False)

    def _write_request(self, upstream: UpstreamConnection) -> None:
        """Send the request on ``upstream`` (ConnectionError: it can carry none)."""
        body = self.request.body
        if body is None:
            upstream.send(self, self.head, self.head_only)
        elif body.file is None:
            upstream.send(self, self.head + body.data, self.head_only)
        else:
            upstream.send_head(self, self.head, head_only=self.head_only)
            asyncio.ensure_future(upstream.send_body(body.chunks()))
        self.upstream = upstream

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
        self.sent = 0 if self.head_only else len(page.body)
        keep_alive = self.keep_alive and not page.close
        self.client.write(pages.render(page, self.request_id, keep_alive=keep_alive,
                                       head_only=self.head_only))
        self._finish(keep_alive)

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
        stats.by_class[status // 100 if status < 600 else 5] += 1
        elapsed = time.perf_counter() - request.received
        group = self.group
        group_name = "-"
        if group is not None:
            group_name = group.name
            group.requests += 1
        client = self.client
        access_log = front.access_log
        if access_log is not None:
            access_log.record(client.ip, request, status, self.sent, group_name, elapsed,
                              self.request_id)
        on_request = front.on_request
        if on_request is not None:
            on_request(group_name, status, elapsed)
        client.finished(keep_alive and not client.closed)
