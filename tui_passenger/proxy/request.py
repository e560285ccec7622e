"""A request as the client connection received it, and the proxy's counters of them."""

from __future__ import annotations

from collections.abc import Callable

from tui_passenger.proxy.body import RequestBody
from tui_passenger.proxy.pages import Page

#: Called once per answered request with (app name or "-", status, seconds taken).
RequestObserver = Callable[[str, int, float], None]


class Request:
    """A request as received from the client."""

    __slots__ = ("method", "url", "version", "headers", "host", "keep_alive", "body",
                 "error", "head_size", "received", "plain", "websocket", "line_known", "referer",
                 "agent")

    def __init__(self) -> None:
        self.method = "GET"
        self.url = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = ""
        self.keep_alive = True
        self.body: RequestBody | None = None
        self.error: Page | None = None
        self.head_size = 0
        self.received = 0.0
        #: No header the proxy drops or rewrites (hop-by-hop, framing, forwarding, internal):
        #: the headers go to the worker as they came (the fast path of
        #: :func:`~tui_passenger.proxy.headers.build_upstream_request`).
        self.plain = True
        #: An ``Upgrade: websocket`` request (its exchange is a WebSocketExchange).
        self.websocket = False
        #: Its request line was read whole (method and version known: the head has ended).
        self.line_known = False
        #: Its Referer and User-Agent (the last of each; b"" without one), for the access
        #: log: picked out as the head is checked, so a log row carries two values and not
        #: every field (cookies included).
        self.referer = b""
        self.agent = b""


class Stats:
    """Counters the dashboard and /metrics read."""

    __slots__ = ("requests", "by_class", "retries", "errors_502", "errors_503")

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0] * 6  # index = status // 100
        self.retries = 0
        self.errors_502 = 0
        self.errors_503 = 0

    def count(self, status: int) -> None:
        """One response with ``status`` was sent."""
        self.requests += 1
        self.by_class[min(status // 100, 5)] += 1
