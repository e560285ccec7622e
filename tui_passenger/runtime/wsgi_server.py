"""A synchronous PEP 3333 WSGI server for one app worker: one request at a time.

The worker listens on its own Unix socket; the reverse proxy keeps persistent keep-alive
connections to it, so this is the hot path. A ``poll`` loop watches the listener, the open
connections, a self-pipe (for :meth:`WSGIServer.request_stop`) and any fds the worker asks
to watch. Each connection has a request parser (``httptools``, else :mod:`.http_parser`),
fed so that each request head is cut out whole once the parser has validated it and split
into the environ in one go (:mod:`.http_head`: no Python callback per header field); parsed
requests queue on their connection (pipelining) and run one at a time in the calling thread.

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
from tui_passenger.runtime.http_head import CHUNKED, HeadCutter, fields_too_large
from tui_passenger.runtime.wsgi_request import FileWrapper, WSGIRequest

__all__ = ["WSGIServer"]

#: httptools, or the pure-Python parser in an interpreter without it.
_PARSER = hc.PARSER

_ACCEPT = object()
_WAKE = object()
#: Header name as received -> environ key ("" = dropped; the trusted X-Passenger-* headers
#: map to the markers below). Bounded: names come from clients.
_ENV_KEYS: dict[str, str] = {}
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
#: Markers for the proxy's trusted headers: consumed by the server, never shown to the app.
_SCRIPT_NAME, _REMOTE_ADDR, _SCHEME, _PROTOCOL = ("\0script", "\0remote", "\0scheme",
                                                 "\0protocol")
_TRUSTED = {hc.SCRIPT_NAME_KEY.decode(): _SCRIPT_NAME, hc.REMOTE_ADDR_KEY.decode(): _REMOTE_ADDR,
            hc.SCHEME_KEY.decode(): _SCHEME, hc.PROTOCOL_KEY.decode(): _PROTOCOL}
#: The keys :meth:`_Connection.on_headers_complete` looks at before (or instead of) the
#: environ.
_SPECIAL_KEYS = frozenset({"HTTP_HOST", "HTTP_EXPECT", _SCRIPT_NAME, _REMOTE_ADDR, _SCHEME,
                           _PROTOCOL})
#: Header field line -> (environ key, value): the proxy sends most lines again and again
#: (Host, User-Agent, X-Forwarded-*), so most are split once. Cleared when full.
_FIELDS: dict[str, tuple[str, str]] = {}
#: What a connection's ``env`` is between requests (never written to).
_NO_ENV: dict[str, Any] = {}


def _env_key(name: str) -> str:
    lower = name.lower()
    key = _TRUSTED.get(lower)
    if key is not None:
        pass
    elif "_" in lower:
        # "X-Foo_Bar" and "X-Foo-Bar" would both be HTTP_X_FOO_BAR; drop the ambiguous
        # spelling so a client cannot spoof a header the proxy sets (as nginx and gunicorn do).
        key = ""
    elif lower == "content-type":
        key = "CONTENT_TYPE"
    elif lower == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + lower.upper().replace("-", "_")
    if len(_ENV_KEYS) < 1024:
        _ENV_KEYS[name] = key
    return key


def _split_url(url: str) -> tuple[str, str]:
    """Raw path and query string of a request target (see :func:`.http_common.split_target`)."""
    raw_path, query_bytes = hc.split_target(url.encode("latin-1"))
    return raw_path.decode("latin-1"), query_bytes.decode("latin-1")


def _hung_up(sock: socket.socket) -> bool:
    """The peer has closed the connection (POLLHUP: shown for Unix-socket peers)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class _Connection(HeadCutter):
    """A client connection: socket, parser, and the requests parsed but not yet answered."""

    __slots__ = ("server", "sock", "parser", "queue", "parsing", "base_env", "error",
                 "upgraded", "peer", "host_cache", "pending", "head", "body_left", "tail")

    def __init__(self, server: WSGIServer, sock: socket.socket, base_env: dict[str, Any],
                 peer: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.base_env = base_env
        self.peer = peer
        #: (Host, scheme) -> (SERVER_NAME, SERVER_PORT): the proxy sends the same Host again
        #: and again.
        self.host_cache: tuple[tuple[str | None, str], tuple[str, str]] = (
            (None, "http"), ("localhost", "80"))
        self.queue: deque[WSGIRequest] = deque()
        self.parsing: WSGIRequest | None = None
        self.error: BaseException | None = None
        self.upgraded = False
        self.reset_feed()
        self.parser = _PARSER.HttpRequestParser(self)

    def feed(self, data: bytes) -> None:
        """Parse received bytes; requests and body chunks land in the queue."""
        try:
            HeadCutter.feed(self, data)
        except _PARSER.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c, CONNECT) are not supported: the request is answered
            # as a plain one and the connection closed; bytes after its head are ignored.
            self.upgraded = True
            if self.queue:
                self.queue[-1].keep_alive = False
        except _PARSER.HttpParserError as exc:
            self.error = exc

    def on_headers_complete(self) -> None:
        # The hot path of every request: the head llhttp has just validated, split here in
        # one go, each field put straight into a copy of the connection's environ template.
        head = self.take_head()
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0]
        method, _, rest = request_line.partition(" ")
        url = rest.lstrip(" ").partition(" ")[0]  # llhttp allows more than one space around it
        if len(head) > hc.MAX_HEAD_SIZE and fields_too_large(url, lines):
            raise hc.HeadTooLarge
        env = self.base_env.copy()
        host = client_version = None
        expect = False
        prefix = ""
        client = self.peer
        scheme = "http"
        fields = _FIELDS
        for line in lines[1:]:
            field = fields.get(line)
            if field is None:
                name, _, value = line.partition(":")
                key = _ENV_KEYS.get(name)
                if key is None:
                    key = _env_key(name)
                # As llhttp: leading whitespace is not part of the value, trailing is.
                field = (key, value.lstrip(" \t"))
                if len(fields) >= 1024:  # bounded: lines come from clients
                    fields.clear()
                fields[line] = field
            key, value = field
            if key in _SPECIAL_KEYS:
                if key == "HTTP_HOST":
                    host = value
                elif key == "HTTP_EXPECT":
                    expect = value.lower() == "100-continue"
                else:  # the proxy's trusted headers: used here, hidden from the app
                    raw = value.encode("latin-1")
                    if key is _SCRIPT_NAME:
                        prefix = hc.normalize_prefix(raw).decode("latin-1")
                    elif key is _REMOTE_ADDR:
                        client = hc.parse_remote_addr(raw) or client
                    elif key is _SCHEME:
                        scheme = hc.parse_scheme(raw) or scheme
                    else:  # the client's HTTP version, when not the 1.1 spoken to us
                        client_version = hc.client_version(raw)
                    continue
            if key:
                if key in env:  # a repeated header becomes one value, as in CGI
                    sep = "; " if key == "HTTP_COOKIE" else ","
                    env[key] = f"{env[key]}{sep}{value}"
                else:
                    env[key] = value
        if url[:1] == "/" and "#" not in url:  # origin form: all the proxy sends
            path, _, query = url.partition("?")
        else:
            path, query = _split_url(url)
        if "%" in path:
            path = hc.unquote_path(path.encode("latin-1")).decode("latin-1")
        version = request_line[-3:]  # "HTTP/1.1": llhttp allows nothing after it
        env["REQUEST_METHOD"] = method
        # The client's version (the proxy speaks HTTP/1.1 to the worker whatever it was).
        client_version = client_version or version
        env["SERVER_PROTOCOL"] = _PROTOCOLS.get(client_version) or "HTTP/" + client_version
        env["RAW_URI"] = url
        env["QUERY_STRING"] = query
        if prefix:
            n = len(prefix)
            # Only at a segment boundary: SCRIPT_NAME + PATH_INFO rebuilds the path.
            if path.startswith(prefix) and (len(path) == n or path[n] == "/"):
                env["SCRIPT_NAME"] = prefix
                path = path[n:]
        env["PATH_INFO"] = path  # PEP 3333: bytes carried in a latin-1 str
        if client is not self.peer:
            env["REMOTE_ADDR"], port = client
            env["REMOTE_PORT"] = str(port)
        if host is not None or scheme != "http":
            env["wsgi.url_scheme"] = scheme
            env["SERVER_NAME"], env["SERVER_PORT"] = self._server_address(host, scheme)
        http11 = version == "1.1"
        req = WSGIRequest(self, env, self.parser.should_keep_alive(), method == "HEAD", http11,
                          expect and http11)
        env["wsgi.input"] = req
        self.queue.append(req)
        if "HTTP_TRANSFER_ENCODING" in env:
            self.body_left = CHUNKED
        elif "CONTENT_LENGTH" in env:
            self.body_left = int(env["CONTENT_LENGTH"])
        self.parsing = req  # until on_message_complete, which comes at once without a body

    def _server_address(self, host: str | None, scheme: str) -> tuple[str, str]:
        """SERVER_NAME and SERVER_PORT: what the client addressed, from Host and the scheme."""
        key = (host, scheme)
        cached = self.host_cache
        if cached[0] != key:
            name, port = hc.split_host(host or "localhost", scheme)
            cached = self.host_cache = (key, (name, str(port)))
        return cached[1]

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
        try:
            result = self.app(req.env, req.start_response)
            if result.__class__ is list or result.__class__ is tuple:
                req.send_sequence(result)  # no close() to call on those
            else:
                try:
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
