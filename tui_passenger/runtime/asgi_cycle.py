"""One ASGI HTTP request/response cycle: the scope, ``receive``, ``send`` and response framing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tui_passenger.runtime import http_common as hc
from tui_passenger.runtime.http_framing import Framing, simple_response, status_line

if TYPE_CHECKING:
    import asyncio

    from tui_passenger.runtime.asgi_server import _HttpProtocol

_RESPONSE_SPECIAL = frozenset({b"content-length", b"date", b"connection", b"keep-alive",
                               b"transfer-encoding"})
_DISCONNECT = {"type": "http.disconnect"}


class Cycle(Framing):
    """One request/response: the scope, ``receive`` and ``send`` for one app call."""

    __slots__ = ("proto", "scope", "body", "body_complete", "delivered_all", "waiter",
                 "expect_continue", "keep_alive", "head", "http11", "started", "flushed",
                 "response_complete", "status", "headers", "chunked", "remaining", "no_body",
                 "disconnected", "body_error", "discarded", "task", "websocket")

    def __init__(self, proto: _HttpProtocol, scope: dict[str, Any], keep_alive: bool,
                 head: bool, http11: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.body = bytearray()
        self.keep_alive = keep_alive
        self.head = head
        self.http11 = http11
        self.body_complete = self.delivered_all = self.expect_continue = False
        self.started = self.flushed = self.response_complete = self.chunked = False
        self.no_body = self.disconnected = self.body_error = self.websocket = False
        self.waiter: asyncio.Future[None] | None = None
        self.status = 200
        self.headers: Any = ()
        self.remaining: int | None = None
        self.discarded = 0
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Let a ``receive()`` waiting for body or disconnect look again."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        """ASGI ``receive``: ``http.request`` chunks, then ``http.disconnect``."""
        if self.expect_continue:
            self.expect_continue = False
            if not (self.body_complete or self.flushed or self.disconnected):
                self.proto.transport.write(hc.CONTINUE_RESPONSE)
        while True:
            if self.disconnected or self.response_complete or self.body_error:
                return _DISCONNECT.copy()
            if self.body or (self.body_complete and not self.delivered_all):
                break
            # Nothing new yet; after the whole body this waits for the end of the cycle.
            self.waiter = self.proto.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        body = bytes(self.body)
        self.body.clear()
        more = not self.body_complete
        if not more:
            self.delivered_all = True
        proto = self.proto
        if proto.read_paused:
            proto.maybe_resume()
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI ``send``: ``http.response.start`` then ``http.response.body`` messages."""
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.response_complete:
                return  # further messages are ignored, as the spec says
            if self.disconnected:
                raise hc.ClientDisconnected("the client has disconnected")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.flushed:
                data = self.frame(body)
            else:
                # Headers and the first body chunk go out in one write.
                data = self._head(None if more else len(body)) + self.frame(body)
                self.flushed = True
            proto = self.proto
            if more:
                if data:
                    proto.transport.write(data)
                if proto.write_paused:
                    await proto.drain()
                return
            data += self.last_chunk()
            self.response_complete = True
            proto.transport.write(data)
            self.wake()
            proto.response_complete(self)
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", ())
        elif kind != "http.response.trailers":  # trailers are not supported; ignore them
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")

    def _head(self, known_length: int | None) -> bytes:
        """Status line and headers; decides framing and keep-alive."""
        parts = [status_line(int(self.status))]
        length: int | None = None
        has_date = close = False
        count = 1
        for name, value in self.headers:
            lname = name.lower()
            if lname in _RESPONSE_SPECIAL:
                if lname == b"content-length":
                    length = int(value)
                    if length < 0:
                        raise ValueError(f"negative content-length {value!r}")
                elif lname == b"date":
                    has_date = True
                else:
                    # The server frames the response and manages the connection; an app's
                    # "connection: close" is honoured, the rest dropped (as the spec says).
                    close = close or (lname == b"connection" and b"close" in value.lower())
                    continue
            parts += (name, b": ", value, b"\r\n")
            count += 1
        block = b"".join(parts)
        # One CR and one LF per line: anything else is an attempt at response splitting.
        if block.count(b"\n") != count or block.count(b"\r") != count:
            raise ValueError("line break in a response header")
        keep_alive = self.keep_alive and not close and not self.proto.server._stopping
        if self.expect_continue and not self.body_complete:
            keep_alive = False  # the client may never send the body it was about to
        return block + self.end_head(int(self.status), length, known_length, has_date,
                                     keep_alive)

    async def run(self) -> None:
        """Call the app, and turn its failures into a 500 or a closed connection."""
        server = self.proto.server
        try:
            await server.app(self.scope, self.receive, self.send)
        except hc.ClientDisconnected:
            pass
        except Exception as exc:  # noqa: BLE001 - the app's errors become 500s, not crashes
            self._failed(exc)
        else:
            if not self.response_complete and not self.disconnected:
                what = "completing" if self.started else "starting"
                self._failed(RuntimeError(f"ASGI app returned without {what} the response"))
        finally:
            server._task_done(self)

    def _failed(self, exc: Exception) -> None:
        proto = self.proto
        if self.disconnected or proto.closed:
            if not isinstance(exc, OSError):
                hc.log(proto.server.error_log, f"Error handling {self._where()}:", exc)
            return
        if self.body_error:
            code, text = 400, "Bad Request: malformed request body\n"
        else:
            hc.log(proto.server.error_log, f"Error handling {self._where()}:", exc)
            code, text = 500, hc.error_text(exc, proto.server.development)
        self.keep_alive = False
        if not self.response_complete:
            if not self.flushed:  # else the client sees a truncated response and EOF
                self.flushed = True
                proto.transport.write(simple_response(code, text, head=self.head))
            self.response_complete = True
            self.wake()
            proto.response_complete(self)

    def _where(self) -> str:
        query = self.scope["query_string"].decode("latin-1")
        return f"{self.scope['method']} {self.scope['path']}{'?' if query else ''}{query}"
