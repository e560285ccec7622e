"""What the WSGI and ASGI worker servers share on the request side.

Both parse requests with :data:`PARSER` (``httptools`` when the app's interpreter has it,
else the pure-Python :mod:`.http_parser`) and speak HTTP/1.1 with keep-alive to the reverse
proxy in front of them. Here: the trusted ``X-Passenger-*`` request headers, request-target
and address parsing, request-head collection (:class:`HeadCollector`), the limits, the
exceptions and error reporting. Response framing is in :mod:`.http_framing`, the blocking
``wsgi.input`` in :mod:`.wsgi_request` and the ASGI lifespan runner in :mod:`.asgi_lifespan`.

Workers import this on start-up: standard library only, and the rarely needed parts
(``urllib.parse``, ``traceback``) are imported where they are used.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

#: The app's mount prefix (e.g. ``/api``): WSGI ``SCRIPT_NAME``, ASGI ``root_path``.
SCRIPT_NAME_HEADER = "X-Passenger-Script-Name"
#: The real client's address: ``ip``, ``ip:port`` or ``[v6]:port``.
REMOTE_ADDR_HEADER = "X-Passenger-Remote-Addr"
#: The scheme the client used to reach the proxy: ``http`` or ``https``.
SCHEME_HEADER = "X-Passenger-Scheme"
#: The HTTP version the client spoke, when not HTTP/1.1 (``HTTP/1.0``): the proxy talks
#: HTTP/1.1 with keep-alive to the worker whatever the client's version, and frames the
#: response for the client itself; the app sees the client's version (WSGI SERVER_PROTOCOL,
#: ASGI http_version).
PROTOCOL_HEADER = "X-Passenger-Protocol"
#: The same names lower-cased, as the servers compare them. The proxy strips client-supplied
#: copies, so a worker trusts these and hides them from the app.
PASSENGER_HEADERS = tuple(h.lower().encode("ascii") for h in
                          (SCRIPT_NAME_HEADER, REMOTE_ADDR_HEADER, SCHEME_HEADER,
                           PROTOCOL_HEADER))
SCRIPT_NAME_KEY, REMOTE_ADDR_KEY, SCHEME_KEY, PROTOCOL_KEY = PASSENGER_HEADERS

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


def _parser_module() -> Any:
    """``httptools``, or :mod:`.http_parser` when it is missing or
    ``TUI_PASSENGER_HTTP_PARSER=python`` asks for it (tests, measurements)."""
    if os.environ.get("TUI_PASSENGER_HTTP_PARSER") != "python":
        try:
            import httptools
        except ImportError:  # an app's own virtualenv, with nothing installed in it
            pass
        else:
            return httptools
    from tui_passenger.runtime import http_parser

    return http_parser


#: The request parser module the servers use: ``HttpRequestParser``, ``HttpParserError``,
#: ``HttpParserUpgrade`` and ``parse_url``, as ``httptools`` names them.
PARSER = _parser_module()


# --- request targets and addresses ------------------------------------------------------


def split_target(url: bytes) -> tuple[bytes, bytes]:
    """Split a request target into raw path and query string (fragment dropped)."""
    if b"#" in url:
        url = url.partition(b"#")[0]
    if url[:1] != b"/" and url != b"*":
        # Absolute form ("http://host/p?q"), which HTTP/1.1 servers must accept.
        parsed = PARSER.parse_url(url)
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


@functools.lru_cache(maxsize=1024)  # the same few client connections, request after request
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
_CLIENT_VERSIONS = {b"HTTP/1.0": "1.0", b"HTTP/1.1": "1.1"}


def client_version(value: bytes) -> str | None:
    """The client's HTTP version (``"1.0"``) from an X-Passenger-Protocol value, else None."""
    return _CLIENT_VERSIONS.get(value.strip())

_METHODS: dict[bytes, str] = {}


class HeadCollector:
    """Parser callbacks gathering one request head, field by field (the ASGI server's).

    ``headers`` gets ``(lower-cased name, value)`` pairs. The trusted X-Passenger-* headers
    are consumed here (``prefix``, ``client``, ``scheme``) and never reach the app.
    Subclasses provide ``parser``, ``peer`` (the default client address) and ``host_cache``
    (initially :data:`NO_HOST`).
    """

    if not TYPE_CHECKING:
        # Empty at run time, so the subclasses' own slots are the only storage; hidden from
        # the type checker, which would otherwise refuse the attributes set here.
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
        #: The client's HTTP version (``"1.0"``) from X-Passenger-Protocol, else None.
        self.client_version: str | None = None

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
                elif name == SCHEME_KEY:
                    self.scheme = parse_scheme(value) or self.scheme
                else:
                    self.client_version = client_version(value)
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


class WriteFlow:
    """Write flow control of an asyncio protocol (the ASGI server's connections and
    WebSockets): ``pause_writing``/``resume_writing`` and ``await drain()``.

    Subclasses provide ``loop``, ``closed``, ``write_paused`` and ``drain_waiter``.
    """

    if not TYPE_CHECKING:
        __slots__ = ()  # the subclasses' slots hold the state (see HeadCollector)
    else:
        import asyncio

        loop: asyncio.AbstractEventLoop
        closed: bool
        write_paused: bool
        drain_waiter: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        """The transport's write buffer is over its high-water mark."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The buffer has drained: whoever waits in :meth:`drain` goes on."""
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again."""
        if self.closed:
            return
        if self.drain_waiter is None:
            self.drain_waiter = self.loop.create_future()
        await self.drain_waiter


#: Initial ``HeadCollector.host_cache``: no Host header over http.
NO_HOST = ((None, "http"), ("localhost", 80))


# --- errors -----------------------------------------------------------------------------


def _format(exc: BaseException) -> str:
    import traceback  # only when something went wrong: keeps worker start-up lean

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def error_text(exc: BaseException, development: bool) -> str:
    """Body of a 500 response: the traceback in development, nothing revealing otherwise."""
    if development:
        return f"Internal Server Error\n\n{_format(exc)}"
    return "Internal Server Error\n"


def parser_error_reason(exc: BaseException) -> tuple[int, str]:
    """Status and short text for a request the parser refused."""
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

