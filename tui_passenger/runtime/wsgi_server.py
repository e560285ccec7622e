"""A synchronous PEP 3333 WSGI server for one app worker: one request at a time.

The worker listens on its own Unix socket; the reverse proxy keeps persistent keep-alive
connections to it, so this is the hot path. A ``poll`` loop watches the listener, the open
connections, a self-pipe (for :meth:`WSGIServer.request_stop`) and any fds the worker asks
to watch. Each connection has an ``httptools`` parser; parsed requests queue on their
connection (pipelining) and run one at a time in the calling thread.

The app starts as soon as a request's headers are in: ``wsgi.input`` pulls the body from the
socket on demand (blocking), so uploads stream. Stalled clients are the proxy's business
(it enforces timeouts), which keeps sockets blocking and every send/recv a single syscall.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import httptools

from tui_passenger.runtime import http_common as hc

__all__ = ["WSGIServer"]

_ACCEPT = object()
_WAKE = object()
#: Lower-cased header name -> environ key ("" = dropped). Bounded: names come from clients.
_ENV_KEYS: dict[bytes, str] = {}
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
# Response header names the server looks at; the rest pass straight through.
_SPECIAL_RESPONSE = hc.HOP_BY_HOP | {"content-length", "date"}


def _env_key(name: bytes) -> str:
    if b"_" in name:
        # "X-Foo_Bar" and "X-Foo-Bar" would both be HTTP_X_FOO_BAR; drop the ambiguous
        # spelling so a client cannot spoof a header the proxy sets (as nginx and gunicorn do).
        key = ""
    elif name == b"content-type":
        key = "CONTENT_TYPE"
    elif name == b"content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_ENV_KEYS) < 1024:
        _ENV_KEYS[name] = key
    return key


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"WSGI response data must be bytes, not {type(data).__name__}")


class _Request(hc.BodyReader, hc.Framing):
    """One request: its environ, its streaming ``wsgi.input`` and its response state."""

    __slots__ = ("conn", "sock", "env", "keep_alive", "head", "http11", "buf", "complete",
                 "expect_continue", "continue_sent", "discarding", "drained", "status",
                 "headers", "headers_sent", "finished", "chunked", "remaining", "no_body")

    def __init__(self, conn: _Connection, env: dict[str, Any], keep_alive: bool, head: bool,
                 http11: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.sock = conn.sock
        self.env = env
        self.keep_alive = keep_alive
        self.head = head
        self.http11 = http11
        self.expect_continue = expect_continue
        self.buf = bytearray()
        self.complete = self.continue_sent = self.discarding = False
        self.drained = 0
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = self.finished = self.chunked = self.no_body = False
        self.remaining: int | None = None

    def _pull(self) -> None:
        """``wsgi.input`` wants more: block for the next piece of the body and parse it."""
        conn = self.conn
        if conn.error is not None:
            raise hc.InvalidRequestBody(hc.parser_error_reason(conn.error)[1].strip())
        if self.expect_continue and not self.continue_sent:
            # The client waits for this before sending the body; only ask once the app reads.
            self.continue_sent = True
            self._send(hc.CONTINUE_RESPONSE)
        try:
            data = self.sock.recv(hc.RECV_SIZE)
        except OSError as exc:
            raise hc.ClientDisconnected(f"reading the request body failed: {exc}") from exc
        if not data:
            raise hc.ClientDisconnected("the client closed the connection in the request body")
        conn.feed(data)
        if conn.error is not None and not self.complete:
            raise hc.InvalidRequestBody(hc.parser_error_reason(conn.error)[1].strip())

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``; returns the ``write`` callable."""
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        if type(status) is not str or len(status) < 3 or not status[:3].isdigit():
            raise ValueError(f"invalid WSGI status {status!r}")
        self.status = status if len(status) > 3 else status + " "
        self.headers = headers
        return self.write

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.keep_alive = False
            raise hc.ClientDisconnected(f"sending the response failed: {exc}") from exc

    def _build_head(self, known_length: int | None) -> bytes:
        """Status line and headers; decides framing (length, chunked or close) and keep-alive."""
        status = self.status
        if status is None:
            raise AssertionError("the application sent a body before calling start_response()")
        lines = ["HTTP/1.1 ", status, "\r\n"]
        length: int | None = None
        has_date = False
        for name, value in self.headers:
            lname = name.lower()
            if lname in _SPECIAL_RESPONSE:
                if lname == "content-length":
                    length = int(value)
                    if length < 0:
                        raise ValueError(f"negative Content-Length {value!r}")
                elif lname == "date":
                    has_date = True
                else:
                    raise ValueError(f"hop-by-hop header {name!r} is not allowed in a WSGI "
                                     "response (PEP 3333); the server manages the connection")
            lines += (name, ": ", value, "\r\n")
        text = "".join(lines)
        # One CR and one LF per line: anything else is an attempt at response splitting.
        count = len(self.headers) + 1
        if text.count("\n") != count or text.count("\r") != count:
            raise ValueError("line break in a response status or header")
        keep_alive = self.keep_alive and not self.conn.server._stopping
        if self.expect_continue and not self.continue_sent and not self.complete:
            keep_alive = False  # the client may never send the body it was about to
        tail = self.end_head(int(status[:3]), length, known_length, has_date, keep_alive)
        return text.encode("latin-1") + tail

    def write(self, data: bytes) -> None:
        """The ``write`` callable, and how each chunk of the app's iterable is sent."""
        if data.__class__ is not bytes:
            data = _as_bytes(data)
        if self.headers_sent:
            if data := self.frame(data):
                self._send(data)
        elif data:  # headers wait for the first non-empty chunk (PEP 3333)
            head = self._build_head(None)
            self.headers_sent = True
            self._send(head + self.frame(data))

    def send_sequence(self, result: list[bytes] | tuple[bytes, ...]) -> None:
        """A list/tuple body has a known length: one send, with a Content-Length."""
        if self.headers_sent:  # write() was used first
            for chunk in result:
                self.write(chunk)
            return self.finish()
        if len(result) == 1:
            body = result[0]
            if body.__class__ is not bytes:
                body = _as_bytes(body)
        else:
            body = b"".join(result)
        head = self._build_head(len(body))
        self.headers_sent = True
        self._send(head + self.frame(body))
        self.last_chunk()
        self.finished = True

    def finish(self) -> None:
        """End the response: headers if nothing was sent yet, else the last chunk."""
        if not self.headers_sent:
            head = self._build_head(0)
            self.headers_sent = True
            self._send(head)
        if end := self.last_chunk():
            self._send(end)
        self.finished = True


class _Connection(hc.HeadCollector):
    """A client connection: socket, parser, and the requests parsed but not yet answered."""

    __slots__ = ("server", "sock", "parser", "queue", "parsing", "base_env", "error",
                 "upgraded", "peer", "host_cache", "url", "headers", "head_size", "prefix",
                 "client", "scheme", "host_value", "expect")

    def __init__(self, server: WSGIServer, sock: socket.socket, base_env: dict[str, Any],
                 peer: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.base_env = base_env
        self.peer = peer
        self.host_cache = hc.NO_HOST
        self.queue: deque[_Request] = deque()
        self.parsing: _Request | None = None
        self.error: BaseException | None = None
        self.upgraded = False
        self.parser = httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> None:
        """Parse received bytes; requests and body chunks land in the queue."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c, CONNECT) are not supported: the request is answered
            # as a plain one and the connection closed; bytes after its head are ignored.
            self.upgraded = True
            if self.queue:
                self.queue[-1].keep_alive = False
        except httptools.HttpParserError as exc:
            self.error = exc

    def on_headers_complete(self) -> None:
        env = self.base_env.copy()
        for name, value in self.headers:
            key = _ENV_KEYS.get(name)
            if key is None:
                key = _env_key(name)
            if key:
                if key in env:  # a repeated header becomes one value, as in CGI
                    sep = "; " if key == "HTTP_COOKIE" else ","
                    env[key] = f"{env[key]}{sep}{value.decode('latin-1')}"
                else:
                    env[key] = value.decode("latin-1")
        method, raw_path, query, path, prefix_length = self.parse_target()
        version = self.parser.get_http_version()
        env["REQUEST_METHOD"] = method
        env["SERVER_PROTOCOL"] = _PROTOCOLS.get(version) or "HTTP/" + version
        env["RAW_URI"] = self.url.decode("latin-1")
        env["QUERY_STRING"] = query.decode("latin-1")
        if prefix_length:
            env["SCRIPT_NAME"] = self.prefix.decode("latin-1")
            path = path[prefix_length:]
        env["PATH_INFO"] = path.decode("latin-1")  # PEP 3333: bytes carried in a latin-1 str
        if self.client is not self.peer:
            env["REMOTE_ADDR"], port = self.client
            env["REMOTE_PORT"] = str(port)
        if self.host_value is not None or self.scheme != "http":
            env["wsgi.url_scheme"] = self.scheme
            name, port = self.server_address()
            env["SERVER_NAME"], env["SERVER_PORT"] = name, str(port)
        http11 = version == "1.1"
        req = _Request(self, env, self.parser.should_keep_alive(), method == "HEAD", http11,
                       self.expect and http11)
        env["wsgi.input"] = req
        self.parsing = req
        self.queue.append(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req.discarding:
            req.drained += len(body)
        else:
            req.buf += body

    def on_message_complete(self) -> None:
        self.parsing.complete = True
        self.parsing = None


class WSGIServer:
    """Serve one WSGI app on a listening socket, one request at a time (PEP 3333)."""

    concurrency = 1

    def __init__(self, app: Callable[..., Iterable[bytes]], listener: socket.socket, *,
                 error_log: TextIO | None = None, development: bool = False) -> None:
        self.app = app
        self.listener = listener
        self.error_log = error_log if error_log is not None else sys.stderr
        self.development = development
        self.requests_served = 0
        self._stopping = False
        self._poll: Any = None
        self._handlers: dict[int, Any] = {}  # fd -> _Connection, _ACCEPT, _WAKE or callback
        self._watched: dict[int, Callable[[], None]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._env_template: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": self.error_log,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": hc.FileWrapper,
            "SERVER_SOFTWARE": "tui-passenger",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": hc.DEFAULT_REMOTE_ADDR,
            "REMOTE_PORT": str(hc.DEFAULT_REMOTE_PORT),
        }

    def start(self) -> None:
        """Prepare to serve; the listener is already bound and listening."""
        self.listener.setblocking(False)

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the serving loop whenever ``fd`` is readable."""
        self._watched[fd] = callback
        if self._poll is not None:
            self._register(fd, callback)

    def request_stop(self) -> None:
        """Stop after the request in flight; safe from signal handlers and other threads."""
        self._stopping = True
        if self._wake_w >= 0:
            # A full pipe means a wake-up is pending already.
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"s")

    def serve_forever(self) -> None:
        """Accept and answer requests until :meth:`request_stop`."""
        self.start()
        self._poll = select.poll()
        handlers = self._handlers
        try:
            self._register(self.listener.fileno(), _ACCEPT)
            self._register(self._wake_r, _WAKE)
            for fd, callback in self._watched.items():
                self._register(fd, callback)
            while not self._stopping:
                for fd, _ in self._poll.poll():
                    handler = handlers.get(fd)
                    if handler.__class__ is _Connection:
                        self._on_readable(handler)
                    elif handler is _ACCEPT:
                        self._accept()
                    elif handler is _WAKE:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 512)
                    elif handler is not None:
                        try:
                            handler()
                        except Exception as exc:  # noqa: BLE001 - keep serving
                            hc.log(self.error_log, f"fd {fd} callback failed:", exc)
                    if self._stopping:
                        break
        finally:
            for handler in list(handlers.values()):
                if handler.__class__ is _Connection:
                    self._close(handler)
            handlers.clear()
            self._poll = None
            wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
            os.close(wake_r)
            os.close(wake_w)

    # --- connections ------------------------------------------------------------------------

    def _register(self, fd: int, handler: Any) -> None:
        self._handlers[fd] = handler
        self._poll.register(fd, select.POLLIN)

    def _accept(self) -> None:
        for _ in range(64):
            if self._stopping:
                return
            try:
                sock, _ = self.listener.accept()
                sock.setblocking(True)
                base = self._env_template
                peer = (hc.DEFAULT_REMOTE_ADDR, hc.DEFAULT_REMOTE_PORT)
                if sock.family != socket.AF_UNIX:  # a TCP listener (tests, debugging)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    peer = sock.getpeername()[:2]
                    base = dict(base, REMOTE_ADDR=peer[0], REMOTE_PORT=str(peer[1]))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again in a while
                hc.log(self.error_log, "accept() failed:", exc)
                time.sleep(0.1)  # rather than spin: poll() keeps reporting the listener
                return
            conn = _Connection(self, sock, base, peer)
            self._register(sock.fileno(), conn)
            # A fresh client usually sends its request at once: save a trip through poll().
            self._on_readable(conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if self._handlers.pop(fd, None) is conn:
            self._poll.unregister(fd)
        conn.sock.close()
        conn.parser = None  # break the parser <-> callbacks cycle
        conn.queue.clear()

    def _on_readable(self, conn: _Connection) -> None:
        try:
            # Non-blocking just here: a stale readiness event (say, for an fd number that
            # was closed and reused within one poll batch) must not block the worker.
            data = conn.sock.recv(hc.RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or conn.upgraded:
            self._close(conn)
            return
        conn.feed(data)
        queue = conn.queue
        while queue:
            if self._stopping:
                break
            keep_alive = self._handle(queue[0])
            queue.popleft()
            if not keep_alive:
                break
        else:
            if conn.error is None:
                return
            code, text = hc.parser_error_reason(conn.error)
            with contextlib.suppress(OSError):
                conn.sock.sendall(hc.simple_response(code, text))
        self._close(conn)

    # --- requests -----------------------------------------------------------------------------

    def _handle(self, req: _Request) -> bool:
        """Run the app for one request and answer it; whether the connection may be reused."""
        result = None
        try:
            result = self.app(req.env, req.start_response)
            try:
                if result.__class__ is list or result.__class__ is tuple:
                    req.send_sequence(result)
                else:
                    write = req.write
                    for chunk in result:
                        if chunk:
                            write(chunk)
                    req.finish()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as exc:  # noqa: BLE001 - the app's errors become 500s, not crashes
            self._app_failed(req, exc)
        finally:
            self.requests_served += 1
        if not req.keep_alive:
            return False
        return req.complete or self._drain(req)

    def _app_failed(self, req: _Request, exc: Exception) -> None:
        if isinstance(exc, hc.ClientDisconnected):
            req.keep_alive = False
            return
        where = f"{req.env['REQUEST_METHOD']} {req.env['RAW_URI']}"
        if req.finished:  # the response went out whole; only close() failed
            hc.log(self.error_log, f"Error closing the response to {where}:", exc)
            return
        req.keep_alive = False
        if isinstance(exc, hc.InvalidRequestBody):
            code, text = 400, f"Bad Request: {exc}\n"
        else:
            hc.log(self.error_log, f"Error handling {where}:", exc)
            code, text = 500, hc.error_text(exc, self.development)
        if not req.headers_sent:  # else the client sees a truncated response and EOF
            with contextlib.suppress(OSError):
                req.sock.sendall(hc.simple_response(code, text, head=req.head))

    def _drain(self, req: _Request) -> bool:
        """Read and drop the body the app left unread, so the next request can be parsed."""
        if self._stopping or (req.expect_continue and not req.continue_sent):
            return False  # a client still waiting for 100 Continue may never send the body
        req.discarding = True
        req.buf.clear()
        try:
            while not req.complete:
                if req.drained > hc.DRAIN_LIMIT:
                    return False
                req._pull()
        except OSError:
            return False
        return True
