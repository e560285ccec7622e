"""A synchronous PEP 3333 WSGI server for one app worker: one request at a time.

The worker listens on its own Unix socket; the reverse proxy keeps persistent keep-alive
connections to it, so this is the hot path. A ``poll`` loop watches the listener, the open
connections, a self-pipe (for :meth:`WSGIServer.request_stop`) and any fds the worker asks
to watch. Each connection has a request parser (``httptools``, else :mod:`.http_parser`);
parsed requests queue on their connection (pipelining) and run one at a time in the
calling thread.

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

from tui_passenger.runtime import http_common as hc
from tui_passenger.runtime.http_framing import simple_response
from tui_passenger.runtime.wsgi_request import FileWrapper, WSGIRequest

__all__ = ["WSGIServer"]

#: httptools, or the pure-Python parser in an interpreter without it.
_PARSER = hc.PARSER

_ACCEPT = object()
_WAKE = object()
#: Header name as received -> environ key ("" = dropped; the trusted X-Passenger-* headers
#: map to the markers below). Bounded: names come from clients.
_ENV_KEYS: dict[bytes, str] = {}
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
#: Markers for the proxy's trusted headers: consumed by the server, never shown to the app.
_SCRIPT_NAME, _REMOTE_ADDR, _SCHEME, _PROTOCOL = ("\0script", "\0remote", "\0scheme",
                                                 "\0protocol")
_TRUSTED = {hc.SCRIPT_NAME_KEY: _SCRIPT_NAME, hc.REMOTE_ADDR_KEY: _REMOTE_ADDR,
            hc.SCHEME_KEY: _SCHEME, hc.PROTOCOL_KEY: _PROTOCOL}
#: The keys :meth:`_Connection.on_header` looks at before (or instead of) the environ.
_SPECIAL_KEYS = frozenset({"HTTP_HOST", "HTTP_EXPECT", _SCRIPT_NAME, _REMOTE_ADDR, _SCHEME,
                           _PROTOCOL})
#: What a connection's ``env`` is between requests (never written to).
_NO_ENV: dict[str, Any] = {}


def _env_key(name: bytes) -> str:
    lower = name.lower()
    key = _TRUSTED.get(lower)
    if key is not None:
        pass
    elif b"_" in lower:
        # "X-Foo_Bar" and "X-Foo-Bar" would both be HTTP_X_FOO_BAR; drop the ambiguous
        # spelling so a client cannot spoof a header the proxy sets (as nginx and gunicorn do).
        key = ""
    elif lower == b"content-type":
        key = "CONTENT_TYPE"
    elif lower == b"content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + lower.decode("latin-1").upper().replace("-", "_")
    if len(_ENV_KEYS) < 1024:
        _ENV_KEYS[name] = key
    return key


def _hung_up(sock: socket.socket) -> bool:
    """The peer has closed the connection (POLLHUP: shown for Unix-socket peers)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class _Connection(hc.HeadCollector):
    """A client connection: socket, parser, and the requests parsed but not yet answered."""

    __slots__ = ("server", "sock", "parser", "queue", "parsing", "base_env", "error",
                 "upgraded", "peer", "host_cache", "url", "headers", "head_size", "prefix",
                 "client", "scheme", "host_value", "expect", "client_version", "env")

    def __init__(self, server: WSGIServer, sock: socket.socket, base_env: dict[str, Any],
                 peer: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.base_env = base_env
        self.peer = peer
        self.host_cache = hc.NO_HOST
        self.queue: deque[WSGIRequest] = deque()
        self.parsing: WSGIRequest | None = None
        self.error: BaseException | None = None
        self.upgraded = False
        #: The environ of the request whose head is being parsed (headers go straight in).
        self.env = _NO_ENV
        self.parser = _PARSER.HttpRequestParser(self)

    def feed(self, data: bytes) -> None:
        """Parse received bytes; requests and body chunks land in the queue."""
        try:
            self.parser.feed_data(data)
        except _PARSER.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c, CONNECT) are not supported: the request is answered
            # as a plain one and the connection closed; bytes after its head are ignored.
            self.upgraded = True
            if self.queue:
                self.queue[-1].keep_alive = False
        except _PARSER.HttpParserError as exc:
            self.error = exc

    def on_message_begin(self) -> None:
        hc.HeadCollector.on_message_begin(self)
        self.env = self.base_env.copy()

    def on_header(self, name: bytes, value: bytes) -> None:
        # HeadCollector.on_header's rules, with each header put into the environ at once
        # (no list of pairs to build and walk again): the hot path of every request.
        size = self.head_size + len(name) + len(value)
        if size > hc.MAX_HEAD_SIZE:
            raise hc.HeadTooLarge
        self.head_size = size
        key = _ENV_KEYS.get(name)
        if key is None:
            key = _env_key(name)
        if key in _SPECIAL_KEYS:
            if key == "HTTP_HOST":
                self.host_value = value
            elif key == "HTTP_EXPECT":
                self.expect = value.lower() == b"100-continue"
            else:  # the proxy's trusted headers: used here, hidden from the app
                if key is _SCRIPT_NAME:
                    self.prefix = hc.normalize_prefix(value)
                elif key is _REMOTE_ADDR:
                    self.client = hc.parse_remote_addr(value) or self.client
                elif key is _SCHEME:
                    self.scheme = hc.parse_scheme(value) or self.scheme
                else:  # the client's HTTP version, when not the 1.1 spoken to us
                    self.client_version = hc.client_version(value)
                return
        if key:
            env = self.env
            if env is _NO_ENV:
                return  # a trailer of a chunked body: past the head, not in the environ
            if key in env:  # a repeated header becomes one value, as in CGI
                sep = "; " if key == "HTTP_COOKIE" else ","
                env[key] = f"{env[key]}{sep}{value.decode('latin-1')}"
            else:
                env[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        env, self.env = self.env, _NO_ENV
        method, raw_path, query, path, prefix_length = self.parse_target()
        version = self.parser.get_http_version()
        env["REQUEST_METHOD"] = method
        # The client's version (the proxy speaks HTTP/1.1 to the worker whatever it was).
        client_version = self.client_version or version
        env["SERVER_PROTOCOL"] = _PROTOCOLS.get(client_version) or "HTTP/" + client_version
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
            server_name, server_port = self.server_address()
            env["SERVER_NAME"], env["SERVER_PORT"] = server_name, str(server_port)
        http11 = version == "1.1"
        req = WSGIRequest(self, env, self.parser.should_keep_alive(), method == "HEAD", http11,
                          self.expect and http11)
        env["wsgi.input"] = req
        self.parsing = req
        self.queue.append(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        assert req is not None  # the parser calls this between headers and message end
        if req.discarding:
            req.drained += len(body)
        else:
            req.buf += body

    def on_message_complete(self) -> None:
        req = self.parsing
        assert req is not None
        req.complete = True
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
            "wsgi.file_wrapper": FileWrapper,
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
                for fd, events in self._poll.poll():
                    handler = handlers.get(fd)
                    if handler.__class__ is _Connection:
                        if events & select.POLLHUP and not handler.queue:
                            # The peer closed it (a Unix-socket peer; TCP shows no HUP for
                            # a mere close): nobody can read an answer. The proxy does this
                            # to take back a request queued here behind a slow one: skip it.
                            self._close(handler)
                        else:
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
                    if self._stopping:  # a handler may have called request_stop()
                        break  # type: ignore[unreachable]
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
            if _hung_up(sock):  # closed before we got to it (see serve_forever): skip
                sock.close()
                continue
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
                conn.sock.sendall(simple_response(code, text))
        self._close(conn)

    # --- requests -----------------------------------------------------------------------------

    def _handle(self, req: WSGIRequest) -> bool:
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
            # env["wsgi.input"] is req: without this the pair is a reference cycle, left
            # for the garbage collector (~15% of a hello-world request's CPU in the worker).
            req.env = _NO_ENV
        if not req.keep_alive:
            return False
        return req.complete or self._drain(req)

    def _app_failed(self, req: WSGIRequest, exc: Exception) -> None:
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
                req.sock.sendall(simple_response(code, text, head=req.head))

    def _drain(self, req: WSGIRequest) -> bool:
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
