"""What the WSGI and ASGI worker servers share.

Both parse requests with ``httptools`` and speak HTTP/1.1 with keep-alive to the reverse
proxy in front of them. Here: the trusted ``X-Passenger-*`` request headers, request-target
and address parsing, request-head collection (:class:`HeadCollector`), response framing
(:class:`Framing`), canned responses, the limits, the blocking ``wsgi.input`` reader and the
ASGI lifespan runner.

Workers import this on start-up: standard library only, and the rarely needed parts
(``urllib.parse``, ``http``, ``asyncio``) are imported where they are used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

#: The app's mount prefix (e.g. ``/api``): WSGI ``SCRIPT_NAME``, ASGI ``root_path``.
SCRIPT_NAME_HEADER = "X-Passenger-Script-Name"
#: The real client's address: ``ip``, ``ip:port`` or ``[v6]:port``.
REMOTE_ADDR_HEADER = "X-Passenger-Remote-Addr"
#: The scheme the client used to reach the proxy: ``http`` or ``https``.
SCHEME_HEADER = "X-Passenger-Scheme"
#: The same names lower-cased, as the servers compare them. The proxy strips client-supplied
#: copies, so a worker trusts these and hides them from the app.
PASSENGER_HEADERS = tuple(h.lower().encode("ascii") for h in
                          (SCRIPT_NAME_HEADER, REMOTE_ADDR_HEADER, SCHEME_HEADER))
SCRIPT_NAME_KEY, REMOTE_ADDR_KEY, SCHEME_KEY = PASSENGER_HEADERS

#: Without ``X-Passenger-Remote-Addr`` a Unix-socket peer is reported as the loopback address
#: (port 0): it is on this machine, and apps and frameworks expect REMOTE_ADDR to be an IP.
DEFAULT_REMOTE_ADDR = "127.0.0.1"
DEFAULT_REMOTE_PORT = 0

#: Bytes asked of the socket per ``recv``.
RECV_SIZE = 64 * 1024
#: Request line plus headers larger than this are refused (llhttp itself has no limit).
MAX_HEAD_SIZE = 64 * 1024
#: A body the app left unread is read and thrown away up to this size before the next request
#: on the connection; beyond it closing the connection is cheaper.
DRAIN_LIMIT = 1024 * 1024

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: Response headers a server manages itself (lower-cased); see RFC 9110 section 7.6.1.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})


class ClientDisconnected(OSError):
    """The client went away while the app was reading the request or sending the response."""


class InvalidRequestBody(OSError):
    """The request body was malformed (e.g. bad chunked encoding); answered with a 400."""


class LifespanError(RuntimeError):
    """The ASGI app refused to start: ``lifespan.startup.failed`` (or failed, lifespan "on")."""


class HeadTooLarge(Exception):
    """The request line and headers exceed :data:`MAX_HEAD_SIZE`."""


# --- request targets and addresses ------------------------------------------------------


def split_target(url: bytes) -> tuple[bytes, bytes]:
    """Split a request target into raw path and query string (fragment dropped)."""
    if b"#" in url:
        url = url.partition(b"#")[0]
    if url[:1] != b"/" and url != b"*":
        # Absolute form ("http://host/p?q"), which HTTP/1.1 servers must accept.
        import httptools

        parsed = httptools.parse_url(url)
        return parsed.path or b"/", parsed.query or b""
    path, _, query = url.partition(b"?")
    return path, query


def unquote_path(raw: bytes) -> bytes:
    """Percent-decode a path; the common escape-free path costs one ``in`` test."""
    if b"%" not in raw:
        return raw
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(raw)


def normalize_prefix(value: bytes) -> bytes:
    """The decoded mount prefix from ``X-Passenger-Script-Name``: ``/api``, or ``b""`` for root."""
    prefix = unquote_path(value.strip()).rstrip(b"/")
    if prefix and not prefix.startswith(b"/"):
        prefix = b"/" + prefix
    return prefix


def prefix_length(path: bytes, prefix: bytes) -> int:
    """How much of the decoded ``path`` the mount ``prefix`` covers: ``len(prefix)`` or 0.

    The prefix only applies at a segment boundary (``/api`` covers ``/api`` and ``/api/x``,
    not ``/apix``), so SCRIPT_NAME + PATH_INFO always rebuilds the requested path.
    """
    n = len(prefix)
    if n and path.startswith(prefix) and (len(path) == n or path[n] == 0x2F):  # "/"
        return n
    return 0


def parse_remote_addr(value: bytes) -> tuple[str, int] | None:
    """``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` as ``(ip, port)``; port 0 when absent."""
    text = value.decode("latin-1").strip()
    port = ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a bare IPv4 address, or a bare IPv6 address (several colons, no brackets)
        host = text
    if not host:
        return None
    return host, int(port) if port.isdigit() else DEFAULT_REMOTE_PORT


def parse_scheme(value: bytes) -> str | None:
    """``http`` or ``https`` from ``X-Passenger-Scheme``; anything else is ignored."""
    scheme = value.strip().lower()
    if scheme == b"https":
        return "https"
    if scheme == b"http":
        return "http"
    return None


def split_host(host: str, scheme: str) -> tuple[str, int]:
    """``Host`` header value as ``(name, port)``; the port defaults from the scheme."""
    if host.startswith("["):  # [v6]:port; keep the brackets so the name rebuilds a URL
        end = host.find("]")
        name, rest = host[:end + 1], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, sep, port = host.rpartition(":")
        if not sep:
            name, port = host, ""
    if port.isdigit():
        return name or "localhost", int(port)
    return name or "localhost", 443 if scheme == "https" else 80


# --- request heads ----------------------------------------------------------------------

_REQUEST_SPECIAL = frozenset({b"host", b"expect", *PASSENGER_HEADERS})
_METHODS: dict[bytes, str] = {}


class HeadCollector:
    """``httptools`` callbacks gathering one request head; both servers' connections use it.

    ``headers`` gets ``(lower-cased name, value)`` pairs. The trusted X-Passenger-* headers
    are consumed here (``prefix``, ``client``, ``scheme``) and never reach the app.
    Subclasses provide ``parser``, ``peer`` (the default client address) and ``host_cache``
    (initially :data:`NO_HOST`).
    """

    __slots__ = ()
    parser: Any
    peer: tuple[str, int]
    host_cache: tuple[tuple[bytes | None, str], tuple[str, int]]

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.prefix = b""
        self.client = self.peer
        self.scheme = "http"
        self.host_value: bytes | None = None
        self.expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD_SIZE:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD_SIZE:
            raise HeadTooLarge
        name = name.lower()
        if name in _REQUEST_SPECIAL:
            if name == b"host":
                self.host_value = value
            elif name == b"expect":
                self.expect = value.lower() == b"100-continue"
            else:  # the proxy's trusted headers: used here, hidden from the app
                if name == SCRIPT_NAME_KEY:
                    self.prefix = normalize_prefix(value)
                elif name == REMOTE_ADDR_KEY:
                    self.client = parse_remote_addr(value) or self.client
                else:
                    self.scheme = parse_scheme(value) or self.scheme
                return
        self.headers.append((name, value))

    def parse_target(self) -> tuple[str, bytes, bytes, bytes, int]:
        """Method, raw path, query, decoded path and the mount prefix's length in it."""
        raw = self.parser.get_method()
        method = _METHODS.get(raw)
        if method is None:
            method = _METHODS.setdefault(raw, raw.decode("ascii"))
        raw_path, query = split_target(self.url)
        path = unquote_path(raw_path)
        return method, raw_path, query, path, prefix_length(path, self.prefix)

    def server_address(self) -> tuple[str, int]:
        """The ``(name, port)`` the client addressed, from ``Host`` and the scheme."""
        key = (self.host_value, self.scheme)
        cached = self.host_cache  # the proxy sends the same Host again and again
        if cached[0] != key:
            host = (self.host_value or b"localhost").decode("latin-1")
            cached = self.host_cache = (key, split_host(host, self.scheme))
        return cached[1]


#: Initial ``HeadCollector.host_cache``: no Host header over http.
NO_HOST = ((None, "http"), ("localhost", 80))


# --- responses --------------------------------------------------------------------------

_status_lines: dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n`` for an integer status, cached."""
    line = _status_lines.get(code)
    if line is None:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1")
        if len(_status_lines) < 1000:
            _status_lines[code] = line
    return line


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_second = -1
_date_line = b""


def date_header() -> bytes:
    """``Date: ...\\r\\n`` (RFC 9110 IMF-fixdate), formatted at most once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        t = time.gmtime(now)
        _date_line = (f"Date: {_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} "
                      f"{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n"
                      ).encode("ascii")
        _date_second = now
    return _date_line


class Framing:
    """Response framing shared by both servers' per-request objects.

    Subclasses hold ``keep_alive``, ``head`` (a HEAD request) and ``http11``; :meth:`end_head`
    sets ``no_body``, ``chunked`` and ``remaining`` (bytes owed to the app's Content-Length).
    """

    __slots__ = ()
    keep_alive: bool
    head: bool
    http11: bool
    no_body: bool
    chunked: bool
    remaining: int | None

    def end_head(self, code: int, length: int | None, known_length: int | None,
                 has_date: bool, keep_alive: bool) -> bytes:
        """Decide framing and keep-alive; returns the head after the app's own headers.

        ``length`` is the app's Content-Length; ``known_length`` the body size when the
        server holds the whole body already (it then adds the Content-Length).
        """
        extra = []
        no_body = code < 200 or code == 204 or code == 304
        chunked = False
        if no_body or length is not None:
            pass  # never a body (nor framing headers), or the app framed it already
        elif known_length is not None:
            extra.append(b"Content-Length: %d\r\n" % known_length)
        elif self.head:
            pass  # nothing follows a HEAD response; its would-be length is unknown
        elif self.http11:
            extra.append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
        else:
            keep_alive = False  # HTTP/1.0 and no length: the body ends at EOF
        if not keep_alive:
            extra.append(b"Connection: close\r\n")
        elif not self.http11:
            extra.append(b"Connection: keep-alive\r\n")
        if not has_date:
            extra.append(date_header())
        extra.append(b"\r\n")
        self.no_body = no_body or self.head
        self.chunked = chunked and not self.head
        self.remaining = length
        self.keep_alive = keep_alive
        return b"".join(extra)

    def frame(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: cut to the Content-Length, chunked, or nothing."""
        if self.no_body or not data:
            return b""
        remaining = self.remaining
        if remaining is not None:
            if len(data) > remaining:
                data = data[:remaining]  # never more than the app's Content-Length
            self.remaining = remaining - len(data)
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def last_chunk(self) -> bytes:
        """What ends the body; one short of its Content-Length can only end at EOF."""
        if self.remaining and not self.no_body:
            self.keep_alive = False
        return b"0\r\n\r\n" if self.chunked else b""


def simple_response(code: int, text: str, *, head: bool = False) -> bytes:
    """A complete plain-text response that closes the connection, for the server's own errors."""
    body = text.encode("utf-8", "replace")
    return b"".join((status_line(code), date_header(), b"Content-Type: text/plain; charset=utf-8"
                     b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body),
                     b"" if head else body))


def _format(exc: BaseException) -> str:
    import traceback  # only when something went wrong: keeps worker start-up lean

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def error_text(exc: BaseException, development: bool) -> str:
    """Body of a 500 response: the traceback in development, nothing revealing otherwise."""
    if development:
        return f"Internal Server Error\n\n{_format(exc)}"
    return "Internal Server Error\n"


def parser_error_reason(exc: BaseException) -> tuple[int, str]:
    """Status and short text for a request ``httptools`` refused."""
    if isinstance(exc.__context__, HeadTooLarge):
        return 431, "Request Header Fields Too Large\n"
    reason = str(exc) or type(exc).__name__
    return 400, f"Bad Request: {reason}\n"


def log(stream: Any, message: str, exc: BaseException | None = None) -> None:
    """Write ``message`` (and the traceback of ``exc``) to the error log, never raising."""
    try:
        if exc is not None:
            message = f"{message}\n{_format(exc).rstrip()}"
        stream.write(message + "\n")
        stream.flush()
    except Exception:  # noqa: BLE001 - a broken error log must not take the server down
        pass


# --- WSGI helpers -------------------------------------------------------------------------


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file-like object in blocks and close it at the end."""

    def __init__(self, filelike: Any, blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        return iter(partial(self.filelike.read, self.blksize), b"")


class BodyReader:
    """File-like reads (PEP 3333 ``wsgi.input``) over ``buf``, refilled by ``_pull()``.

    Subclasses provide ``buf`` (a bytearray), ``complete`` (the whole body is in) and
    ``_pull()`` (block until more of the body is in ``buf``, or raise).
    """

    __slots__ = ()
    buf: bytearray
    complete: bool

    def _pull(self) -> None:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes of the body (all of it by default); short only at the end."""
        buf = self.buf
        if size is None or size < 0:
            while not self.complete:
                self._pull()
        else:
            while len(buf) < size and not self.complete:
                self._pull()
            if size < len(buf):
                data = bytes(buf[:size])
                del buf[:size]
                return data
        data = bytes(buf)
        buf.clear()
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (up to ``size`` bytes), newline included."""
        buf = self.buf
        limit = -1 if size is None else size
        start = 0
        while True:
            end = buf.find(b"\n", start) + 1
            if end:
                break
            if 0 <= limit <= len(buf) or self.complete:
                end = len(buf)
                break
            start = len(buf)
            self._pull()
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Read the remaining lines (stop once ``hint`` bytes are read, if given)."""
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


# --- ASGI lifespan ----------------------------------------------------------------------


class Lifespan:
    """Run an ASGI app's ``lifespan`` scope: startup before serving, shutdown after.

    ``mode`` is "auto" (an app that fails before ``startup.complete`` is taken not to
    support lifespan, as uvicorn does) or "on" (that is an error).
    """

    def __init__(self, app: Any, mode: str, error_log: Any) -> None:
        self.app, self.mode, self.error_log = app, mode, error_log
        #: The lifespan state once startup completed; requests get a copy of it.
        self.state: dict[str, Any] | None = None
        self._task: Any = None

    async def startup(self) -> None:
        """Send ``lifespan.startup``; raise :class:`LifespanError` if the app refuses."""
        import asyncio  # here, not at module level: WSGI workers never pay for it

        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        state: dict[str, Any] = {}
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": state}
        self._queue.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._main(scope))
        outcome, detail = await self._started
        if outcome == "complete":
            self.state = state
        elif outcome == "failed":
            raise LifespanError(detail or "the app sent lifespan.startup.failed")
        elif self.mode == "on":
            cause = detail if isinstance(detail, BaseException) else None
            raise LifespanError(f"lifespan startup did not complete: {detail!r}") from cause
        else:
            log(self.error_log, f"ASGI 'lifespan' protocol appears unsupported ({detail!r});"
                                " continuing without it")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app's answer (if startup completed)."""
        if self.state is None or self._task.done():
            return
        self._queue.put_nowait({"type": "lifespan.shutdown"})
        outcome, detail = await self._stopped
        if outcome == "failed":
            log(self.error_log, f"ASGI lifespan shutdown failed: {detail}")

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._queue.get, self._send)
        except Exception as exc:  # noqa: BLE001 - reported through the futures
            outcome: tuple[str, Any] = ("error", exc)
        else:
            outcome = ("returned", "the app returned")
        if not self._started.done():
            self._started.set_result(outcome)
        elif not self._stopped.done():
            if outcome[0] == "error":
                log(self.error_log, "ASGI lifespan failed:", outcome[1])
            self._stopped.set_result(outcome)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        phase, _, result = kind.removeprefix("lifespan.").partition(".")
        future = {"startup": self._started, "shutdown": self._stopped}.get(phase)
        if future is None or result not in ("complete", "failed"):
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
        if not future.done():
            future.set_result((result, message.get("message", "")))
