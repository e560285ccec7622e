"""An ASGI 3 server for one app worker: one event loop, many requests at once.

Each connection is an ``asyncio.Protocol`` with a request parser (``httptools``, else
:mod:`.http_parser`). Requests on one connection run in order (pipelining, keep-alive);
requests on different connections run concurrently, at most ``concurrency`` at a time
(more wait for a slot rather than fail). The request body streams: ``receive()`` hands out
what has arrived, and reading from the socket pauses while too much is buffered. A
WebSocket upgrade becomes a :class:`~.asgi_websocket.WebSocket` (the ASGI ``websocket``
scope, with wsproto when the app's interpreter has it, else refused with a 501); open
WebSockets do not count against ``concurrency``. Other upgrades (h2c) are answered as plain
requests.

The loop is uvloop's when it is installed, else asyncio's. Nothing here needs signal
handlers, so the server runs just as well in a thread (as the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from tui_passenger.runtime import asgi_websocket
from tui_passenger.runtime import http_common as hc
from tui_passenger.runtime.asgi_cycle import Cycle
from tui_passenger.runtime.asgi_lifespan import Lifespan
from tui_passenger.runtime.http_framing import simple_response

__all__ = ["ASGIServer", "LifespanError"]

#: httptools, or the pure-Python parser in an interpreter without it.
_PARSER = hc.PARSER

#: Request body buffered per request before the connection stops reading.
HIGH_WATER = 64 * 1024
#: Parsed requests allowed to wait behind the one in progress on a connection.
MAX_PIPELINE = 16


LifespanError = hc.LifespanError


class _HttpProtocol(hc.HeadCollector, hc.WriteFlow, asyncio.Protocol):
    """One client connection: parses requests, runs their cycles in order."""

    __slots__ = ("server", "loop", "transport", "parser", "cycle", "parsing", "pipeline",
                 "read_paused", "write_paused", "closed", "upgraded", "drain_waiter",
                 "parse_error", "peer", "host_cache", "url", "headers", "head_size", "prefix",
                 "client", "scheme", "host_value", "expect", "upgrade_tail",
                 "client_version")

    def __init__(self, server: ASGIServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: Any = None
        self.parser: Any = _PARSER.HttpRequestParser(self)
        self.cycle: Cycle | None = None  # the request being answered
        self.parsing: Cycle | None = None  # the request whose body is being parsed
        self.pipeline: deque[Cycle] = deque()
        self.read_paused = self.write_paused = self.closed = self.upgraded = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.parse_error: BaseException | None = None
        self.peer = (hc.DEFAULT_REMOTE_ADDR, hc.DEFAULT_REMOTE_PORT)
        self.host_cache = hc.NO_HOST
        #: What followed the head of an upgrade request (the first WebSocket frames).
        self.upgrade_tail = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):  # TCP; a Unix-socket peer has no address
            self.peer = (str(peer[0]), int(peer[1]))
        self.server._connections.add(self)
        if self.server._stopping:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        for cycle in (self.cycle, self.parsing, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        self.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except _PARSER.HttpParserUpgrade as exc:
            # The upgrade request itself was parsed; what follows its head is another
            # protocol: WebSocket frames for a WebSocket, else nothing this server reads.
            self.upgraded = True
            self._pause()
            self.upgrade_tail = data[exc.args[0]:] if exc.args else b""
            cycle = self.cycle
            if cycle is not None and cycle.websocket:
                self._upgrade(cycle)
            return
        except _PARSER.HttpParserError as exc:
            self._parse_failed(exc)
            return
        if not self.read_paused:
            parsing = self.parsing
            if ((parsing is not None and len(parsing.body) > HIGH_WATER)
                    or len(self.pipeline) > MAX_PIPELINE):
                self._pause()

    def on_headers_complete(self) -> None:
        parser = self.parser
        method, raw_path, query, path, prefix_length = self.parse_target()
        version = parser.get_http_version()
        # Per the ASGI spec "path" is the full path; root_path is the mount prefix in it.
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": self.client_version or version,  # the client's, via the proxy
            "method": method,
            "scheme": self.scheme,
            "path": path.decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.prefix.decode("utf-8", "replace") if prefix_length else "",
            "headers": self.headers,
            "client": self.client,
            # What the client addressed (from Host), as WSGI's SERVER_NAME/PORT: the path
            # of the worker's own Unix socket would tell the app nothing.
            "server": self.server_address(),
        }
        state = self.server._state
        if state is not None:
            scope["state"] = state.copy()
        http11 = version == "1.1"
        cycle = Cycle(self, scope, parser.should_keep_alive(), method == "HEAD", http11)
        cycle.expect_continue = self.expect and http11
        if parser.should_upgrade():
            cycle.keep_alive = False
            cycle.websocket = (b"upgrade", b"websocket") in (
                (n, v.lower()) for n, v in self.headers)
        self.parsing = cycle
        if self.cycle is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        assert cycle is not None  # the parser calls this between headers and message end
        if cycle.response_complete or cycle.disconnected:
            # Answered already: drop the rest of the body, unless there is too much of it.
            cycle.discarded += len(body)
            if cycle.discarded > hc.DRAIN_LIMIT:
                self.transport.close()
            return
        cycle.body += body
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        assert cycle is not None
        self.parsing = None
        cycle.body_complete = True
        cycle.wake()

    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        if cycle.websocket:
            if self.upgraded:  # its turn came after its head was parsed (pipelined)
                self._upgrade(cycle)
            return
        self.server._schedule(cycle)

    def _upgrade(self, cycle: Cycle) -> None:
        """Hand the connection to a WebSocket (or refuse the upgrade)."""
        refusal = asgi_websocket.refusal(cycle)
        if refusal is not None:
            self.transport.write(refusal)
            self.transport.close()
            return
        self.server._connections.discard(self)  # the WebSocket tracks the connection now
        self.cycle = None
        asgi_websocket.WebSocket(self.server, cycle).start(self.upgrade_tail)

    def response_complete(self, cycle: Cycle) -> None:
        """The response to the current request is out: go on with the next, or close."""
        if self.cycle is cycle:
            self.cycle = None
        if self.closed:
            return
        if not cycle.keep_alive or self.server._stopping:
            self.transport.close()
            return
        cycle.body.clear()  # any unread body is parsed from now on and thrown away
        if self.pipeline:
            self._start(self.pipeline.popleft())
        elif self.parse_error is not None:
            code, text = hc.parser_error_reason(self.parse_error)
            self.transport.write(simple_response(code, text))
            self.transport.close()
            return
        self.maybe_resume()

    def _pause(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def maybe_resume(self) -> None:
        """Read again once buffered body and pipelined requests are down to their limits."""
        if (not self.read_paused or self.closed or self.upgraded
                or self.parse_error is not None):
            return
        parsing = self.parsing
        if ((parsing is None or len(parsing.body) <= HIGH_WATER)
                and len(self.pipeline) <= MAX_PIPELINE):
            self.read_paused = False
            self.transport.resume_reading()

    def _parse_failed(self, exc: BaseException) -> None:
        self.parse_error = exc
        self._pause()
        cycle, self.parsing = self.parsing, None
        if cycle is not None and not cycle.response_complete:
            cycle.body_error = True  # a malformed body ends its request and the connection
            cycle.keep_alive = False
            cycle.wake()
        elif cycle is not None:  # the body being thrown away was malformed
            self.transport.close()
        elif self.cycle is None:
            code, text = hc.parser_error_reason(exc)
            self.transport.write(simple_response(code, text))
            self.transport.close()

    def shutdown(self) -> None:
        """Server stopping: close now if idle, else after the response in progress."""
        self.pipeline.clear()
        if self.cycle is None:
            self.transport.close()


class ASGIServer:
    """Serve one ASGI 3 app on a listening socket, on one event loop."""

    def __init__(self, app: Callable[..., Awaitable[None]], listener: socket.socket, *,
                 concurrency: int = 100, error_log: TextIO | None = None,
                 development: bool = False, lifespan: str = "auto",
                 websocket_ping_interval: float = 20.0, websocket_ping_timeout: float = 20.0,
                 websocket_max_message_size: int = 16 * 1024 * 1024,
                 websocket_idle_timeout: float = 0.0) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
        self.app = app
        self.listener = listener
        self.concurrency = max(1, int(concurrency))
        self.error_log = error_log if error_log is not None else sys.stderr
        self.development = development
        self.lifespan = lifespan
        self.requests_served = 0
        self.websocket_ping_interval = websocket_ping_interval
        self.websocket_ping_timeout = websocket_ping_timeout
        self.websocket_max_message_size = websocket_max_message_size
        self.websocket_idle_timeout = websocket_idle_timeout
        #: When stopping: seconds open WebSockets may go on, then the close code they get
        #: (1001 going away; the manager says 1012 when the worker is being replaced).
        self.websocket_grace = 0.0
        self.websocket_close_code = asgi_websocket.GOING_AWAY
        self._websockets: set[asgi_websocket.WebSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping = False
        self._stop_requested = False
        # Made with the loop: on Python 3.9 an asyncio.Event made here would bind to another.
        self._stop_waiter: asyncio.Future[None] | None = None
        self._connections: set[_HttpProtocol] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[Cycle] = deque()
        self._state: dict[str, Any] | None = None  # the lifespan state, once startup completed
        self._watched: dict[int, Callable[[], None]] = {}
        self._lifespan: Lifespan | None = None

    def start(self) -> None:
        """Create the loop, run lifespan startup, and start accepting connections."""
        try:
            import uvloop
        except ImportError:
            loop = asyncio.new_event_loop()
        else:
            loop = uvloop.new_event_loop()
        self._loop = loop
        self._stop_waiter = loop.create_future()
        loop.set_exception_handler(self._loop_exception)
        try:
            if self.lifespan != "off":
                self._lifespan = Lifespan(self.app, self.lifespan, self.error_log)
                loop.run_until_complete(self._lifespan.startup())
                self._state = self._lifespan.state
            self._server = loop.run_until_complete(self._listen(loop))
            for fd, callback in self._watched.items():
                loop.add_reader(fd, self._run_watched, fd, callback)
        except BaseException:
            self._close_loop()
            raise

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the loop whenever ``fd`` is readable."""
        self._watched[fd] = callback
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.add_reader(fd, self._run_watched, fd, callback)

    def request_stop(self) -> None:
        """Stop gracefully; safe from other threads and from Python signal handlers."""
        self._stop_requested = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop has nothing left to stop
                loop.call_soon_threadsafe(self._wake_to_stop)

    def _wake_to_stop(self) -> None:
        waiter = self._stop_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop`, then drain requests and run lifespan shutdown."""
        if self._loop is None:
            self.start()
        loop = self._loop
        assert loop is not None  # start() made it
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._close_loop()


    async def _listen(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractServer:
        # A duplicate, because closing the asyncio server closes its socket, and the worker
        # still owns (and later unlinks and closes) the listener it gave us.
        sock = self.listener.dup()
        factory = lambda: _HttpProtocol(self, loop)  # noqa: E731
        if sock.family == socket.AF_UNIX:
            return await loop.create_unix_server(factory, sock=sock, backlog=socket.SOMAXCONN)
        return await loop.create_server(factory, sock=sock, backlog=socket.SOMAXCONN)

    def _run_watched(self, fd: int, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception as exc:  # noqa: BLE001 - keep serving
            hc.log(self.error_log, f"fd {fd} callback failed:", exc)

    def _schedule(self, cycle: Cycle) -> None:
        if len(self._tasks) >= self.concurrency:
            self._waiting.append(cycle)  # runs when a slot frees (see _task_done)
            return
        task = cycle.task = cycle.proto.loop.create_task(cycle.run())
        self._tasks.add(task)

    def _task_done(self, cycle: Cycle) -> None:
        self.requests_served += 1
        self._tasks.discard(cycle.task)
        while self._waiting and len(self._tasks) < self.concurrency:
            waiting = self._waiting.popleft()
            if not waiting.disconnected:
                self._schedule(waiting)

    async def _serve(self) -> None:
        if not self._stop_requested and self._stop_waiter is not None:
            await self._stop_waiter
        self._stopping = True
        stop_began = asyncio.get_running_loop().time()
        if self._server is not None:
            self._server.close()  # stop accepting
        for proto in list(self._connections):
            proto.shutdown()
        while self._tasks:  # let the requests in flight finish (waiting ones follow them)
            await asyncio.wait(set(self._tasks))
        await self._close_websockets(stop_began)
        for proto in list(self._connections):
            proto.transport.close()
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    def retire_websockets(self, code: int, grace: float) -> None:
        """When stopping, let open WebSockets go on up to ``grace`` seconds, then close them
        with ``code``; safe from other threads."""
        self.websocket_close_code = code
        self.websocket_grace = max(0.0, grace)

    async def _close_websockets(self, stop_began: float) -> None:
        """Stopping: wait up to the grace for WebSockets to end, then close the rest with a
        close frame (never a bare reset), and give their apps a moment to return."""
        for fd, callback in self._watched.items():  # a retire message sent with the signal
            if select.select([fd], [], [], 0)[0]:
                self._run_watched(fd, callback)
        sessions = self._websockets
        if not sessions:
            return
        loop = asyncio.get_running_loop()
        deadline = stop_began + self.websocket_grace
        while sessions and loop.time() < deadline:
            await asyncio.wait([s.task for s in sessions if s.task is not None],
                               timeout=min(0.25, deadline - loop.time()))
        for session in list(sessions):
            session.farewell(self.websocket_close_code)
        tasks = [s.task for s in sessions if s.task is not None and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=asgi_websocket.CLOSE_TIMEOUT)
        for session in list(sessions):
            session.transport.close()

    def _close_loop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            if hasattr(loop, "shutdown_default_executor"):  # join run_in_executor threads
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = context.get("message", "event loop error")
        hc.log(self.error_log, f"asyncio: {message}", context.get("exception"))
